"""Data: embedded default data sets and tfds-backed ones, behind one ``load_dataset``."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

from easgd_jax.data import embedded
from easgd_jax.data.augment import RandomCrop, center_crop
from easgd_jax.data.dataset import Dataset, hold_out, optimum_metrics
from easgd_jax.data.sampler import WorkerSampler
from easgd_jax.data.synthetic_lm import synthetic_lm as _synthetic_lm  # module name kept
from easgd_jax.data.text import TEXT_NAMES, load_text
from easgd_jax.data.tfds_data import TFDS_NAMES, DatasetNotPreparedError, load_tfds

EMBEDDED_NAMES = ("mnist1d", "digits")
# Language-model data (token windows): generated with a known optimum, or tfds text.
LM_NAMES = ("synthetic_lm",) + TEXT_NAMES
DATASET_NAMES = EMBEDDED_NAMES + TFDS_NAMES + LM_NAMES
# What one example of each data set is, for the models' INPUT_KINDS: "signal" ([length]),
# "image" ([height, width, channels]) or "token" ([length] token ids).
INPUT_KINDS = {"mnist1d": "signal", "digits": "image", "mnist": "image", "cifar10": "image",
               "imagenet2012": "image", **{name: "token" for name in LM_NAMES}}


# data.kwargs every data set takes: the validation split held out from the training set.
COMMON_KWARGS = ("validation_size",)


def _loader(name: str) -> Callable[..., Dataset] | None:
    """The loader whose keyword arguments ``data.kwargs`` holds (LM data sets, MNIST-1D's
    sizes), else None."""
    if name == "synthetic_lm":
        return _synthetic_lm
    if name == "mnist1d":
        return embedded.mnist1d
    if name in TEXT_NAMES:
        return load_text
    return None


def check_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """Raises ValueError when ``kwargs`` (``config.data.kwargs``) holds a name that data set
    ``name``'s loader does not take: every data set takes ``validation_size``, the LM data
    sets their loader's arguments, MNIST-1D ``num_train`` and ``num_test``."""
    loader = _loader(name)
    taken = set(COMMON_KWARGS) | (set() if loader is None else (
        set(inspect.signature(loader).parameters) - {"name", "data_dir"}))
    unknown = sorted(set(kwargs) - taken)
    if unknown:
        raise ValueError(f"data set {name!r} does not take {', '.join(unknown)}; it takes "
                         f"{', '.join(sorted(taken)) or 'none'}.")


def load_dataset(name: str, data_dir: str | None = None, image_size: int = 221,
                 crop: int = 0, **kwargs: Any) -> Dataset:
    """Loads a data set by name: ``mnist1d`` and ``digits`` (embedded) or a tfds name; the
    language-model data ``synthetic_lm`` (generated, its optimum known:
    :mod:`easgd_jax.data.synthetic_lm`), ``tiny_shakespeare`` and ``lm1b`` (tfds, byte-level:
    :mod:`easgd_jax.data.text`) take their ``kwargs`` (e.g. ``context``).

    ``crop`` > 0 (image data sets): train on random ``crop x crop`` windows, drawn per
    example and step by ``dataset.augment`` (pass it to :class:`WorkerSampler`), and test on
    the centre window (``test_x`` is cropped here); the EASGD paper's CIFAR-10 pipeline is
    ``load_dataset("cifar10", data_dir, crop=28)``. ``image_size``: the side of the
    imagenet2012 squares (crops are taken from them).

    ``validation_size`` (any data set, in ``kwargs``): that many training examples held out
    as a validation split (:func:`~easgd_jax.data.dataset.hold_out`; 0, the default, holds
    out none and leaves the data as it was). MNIST-1D takes ``num_train`` and ``num_test``
    (:func:`~easgd_jax.data.embedded.mnist1d`).
    """
    if crop < 0:
        raise ValueError(f"crop must be >= 0, got {crop}.")
    check_kwargs(name, kwargs)
    validation_size = int(kwargs.pop("validation_size", 0))
    if name in (*LM_NAMES, "imagenet2012"):
        if validation_size and name == "imagenet2012" and crop:
            raise ValueError("imagenet2012 with crops takes no validation_size (its crops "
                             "are drawn inside the tfds pipeline).")
        return hold_out(_load(name, data_dir, image_size, crop, **kwargs), validation_size)
    dataset = hold_out(_load(name, data_dir, image_size, 0, **kwargs), validation_size)
    return with_crops(dataset, crop) if crop else dataset


def _load(name: str, data_dir: str | None, image_size: int, crop: int,
          **kwargs: Any) -> Dataset:
    """:func:`load_dataset` before the validation split (and, but for imagenet2012, the
    crops)."""
    if name == "synthetic_lm":
        return _synthetic_lm(**kwargs)
    if name in TEXT_NAMES:
        return load_text(name, data_dir, **kwargs)
    if name == "imagenet2012":
        return load_tfds(name, data_dir, image_size=image_size, crop=crop)
    if name == "mnist1d":
        dataset = embedded.mnist1d(**kwargs)
    elif name == "digits":
        dataset = embedded.digits()
    elif name in TFDS_NAMES:
        dataset = load_tfds(name, data_dir, image_size=image_size)
    else:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASET_NAMES)}.")
    return dataset


def with_crops(dataset: Dataset, crop: int) -> Dataset:
    """``dataset`` trained on random ``crop x crop`` windows and tested on the centre one."""
    if dataset.train_x.ndim != 4:
        raise ValueError(f"{dataset.name}: crops need images [n, height, width, channels]; its "
                         f"examples have shape {dataset.example_shape}.")
    if dataset.augment is not None:
        raise ValueError(f"{dataset.name} is already augmented ({dataset.augment}).")
    val_x = None if dataset.val_x is None else center_crop(dataset.val_x, crop)
    return dataclasses.replace(dataset, test_x=center_crop(dataset.test_x, crop),
                               val_x=val_x, augment=RandomCrop(crop))


__all__ = ["DATASET_NAMES", "INPUT_KINDS", "LM_NAMES", "Dataset", "DatasetNotPreparedError",
           "RandomCrop", "WorkerSampler", "center_crop", "check_kwargs", "hold_out", "load_dataset",
           "optimum_metrics", "with_crops"]
