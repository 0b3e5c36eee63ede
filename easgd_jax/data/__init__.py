"""Data: embedded default data sets and tfds-backed ones, behind one ``load_dataset``."""

from __future__ import annotations

import dataclasses

from easgd_jax.data import embedded
from easgd_jax.data.augment import RandomCrop, center_crop
from easgd_jax.data.dataset import Dataset
from easgd_jax.data.sampler import WorkerSampler
from easgd_jax.data.tfds_data import TFDS_NAMES, DatasetNotPreparedError, load_tfds

EMBEDDED_NAMES = ("mnist1d", "digits")
DATASET_NAMES = EMBEDDED_NAMES + TFDS_NAMES
# What one example of each data set is, for the models' INPUT_KINDS: "signal" ([length]) or
# "image" ([height, width, channels]).
INPUT_KINDS = {"mnist1d": "signal", "digits": "image", "mnist": "image", "cifar10": "image",
               "imagenet2012": "image"}


def load_dataset(name: str, data_dir: str | None = None, image_size: int = 221,
                 crop: int = 0) -> Dataset:
    """Loads a data set by name: ``mnist1d`` and ``digits`` (embedded) or a tfds name.

    ``crop`` > 0 (image data sets): train on random ``crop x crop`` windows, drawn per
    example and step by ``dataset.augment`` (pass it to :class:`WorkerSampler`), and test on
    the centre window (``test_x`` is cropped here); the EASGD paper's CIFAR-10 pipeline is
    ``load_dataset("cifar10", data_dir, crop=28)``. ``image_size``: the side of the
    imagenet2012 squares (crops are taken from them).
    """
    if crop < 0:
        raise ValueError(f"crop must be >= 0, got {crop}.")
    if name == "imagenet2012":
        return load_tfds(name, data_dir, image_size=image_size, crop=crop)
    if name == "mnist1d":
        dataset = embedded.mnist1d()
    elif name == "digits":
        dataset = embedded.digits()
    elif name in TFDS_NAMES:
        dataset = load_tfds(name, data_dir, image_size=image_size)
    else:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASET_NAMES)}.")
    return with_crops(dataset, crop) if crop else dataset


def with_crops(dataset: Dataset, crop: int) -> Dataset:
    """``dataset`` trained on random ``crop x crop`` windows and tested on the centre one."""
    if dataset.train_x.ndim != 4:
        raise ValueError(f"{dataset.name}: crops need images [n, height, width, channels]; its "
                         f"examples have shape {dataset.example_shape}.")
    if dataset.augment is not None:
        raise ValueError(f"{dataset.name} is already augmented ({dataset.augment}).")
    return dataclasses.replace(dataset, test_x=center_crop(dataset.test_x, crop),
                               augment=RandomCrop(crop))


__all__ = ["DATASET_NAMES", "INPUT_KINDS", "Dataset", "DatasetNotPreparedError", "RandomCrop",
           "WorkerSampler", "center_crop", "load_dataset", "with_crops"]
