"""tfds-backed data sets, read with the real tfds code from a prepared ``data_dir``.

Data sets are read through ``tfds.data_source`` (random access, no TensorFlow needed at
training time), which requires them prepared in the ``array_record`` format. Nothing is
downloaded here: a data set missing from ``data_dir`` fails at once with the command that
prepares it (run where the internet and TensorFlow are available):

    tfds build mnist --data_dir=DATA_DIR --file_format=array_record

(for imagenet2012, place the ILSVRC2012 archives in DATA_DIR/downloads/manual first).
Small data sets (mnist, cifar10) are decoded once into memory; imagenet2012 is read lazily,
image by image, as the workers sample it.

The EASGD paper's pipelines (Zhang et al. 2015, arXiv 1412.6651, Section 5.1): CIFAR-10
normalised per channel with the training split's mean and standard deviation, trained on
random 28x28 crops (``crop=28``: see :func:`easgd_jax.data.load_dataset`), tested on the
centre crop; ImageNet resized (shorter side ``image_size``) and centre-cropped to a square,
then, with ``crop``, trained on random ``crop x crop`` windows and tested on the centre one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from easgd_jax.data.augment import RandomCrop, center_crop
from easgd_jax.data.dataset import Dataset

# Per-channel statistics of ImageNet (its training split is too large to scan at load time;
# CIFAR-10's are computed from the loaded training split, see channel_statistics).
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

TFDS_NAMES = ("mnist", "cifar10", "imagenet2012")


class DatasetNotPreparedError(FileNotFoundError):
    """A tfds data set is not prepared in ``data_dir``; the message says how to prepare it."""


def _data_source(name: str, split: str, data_dir: str | None):
    """``tfds.data_source`` with ``download=False``; a clear error if it is not prepared."""
    import tensorflow_datasets as tfds

    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # tfds raises several types for "not there"; all mean the same
        builder = tfds.builder(name, data_dir=data_dir)
        if builder.is_prepared():
            raise
        raise DatasetNotPreparedError(
            f"tfds data set {name!r} is not prepared in data_dir={data_dir!r} "
            f"(looked in {builder.data_path}). Prepare it once, on a machine with internet "
            f"access and TensorFlow, with:\n    tfds build {name} --data_dir=DATA_DIR "
            "--file_format=array_record\nthen pass --config.data.data_dir=DATA_DIR. The "
            "embedded data sets (mnist1d, digits) need no preparation.") from e


def _records(source, indices) -> list[dict]:
    # Item by item: tfds.testing.mock_data's sources do not implement __getitems__.
    return [source[int(i)] for i in indices]


def _read_all(source) -> tuple[np.ndarray, np.ndarray]:
    records = _records(source, range(len(source)))
    images = np.stack([np.asarray(r["image"]) for r in records])
    labels = np.asarray([r["label"] for r in records], np.int32)
    return images, labels


def channel_statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of ``[n, height, width, channels]`` images,
    accumulated in float64."""
    flat = images.reshape(-1, images.shape[-1])
    mean = flat.mean(axis=0, dtype=np.float64)
    std = np.sqrt(np.maximum(np.mean(np.square(flat, dtype=np.float64), axis=0) - mean**2, 0))
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def load_tfds(name: str, data_dir: str | None, image_size: int = 221, crop: int = 0) -> Dataset:
    """Loads ``name`` (one of ``TFDS_NAMES``) from ``data_dir``, normalised, as a Dataset.

    ``crop`` (imagenet2012 only here; :func:`easgd_jax.data.load_dataset` crops the others):
    random ``crop x crop`` windows of the ``image_size`` squares for training, the centre
    window for testing; 0 keeps the squares.
    """
    if name == "mnist":
        splits = [_read_all(_data_source(name, s, data_dir)) for s in ("train", "test")]
        (tx, ty), (vx, vy) = [((x.astype(np.float32) / 255.0), y) for x, y in splits]
        return Dataset(name, tx, ty, vx, vy, num_classes=10)
    if name == "cifar10":
        splits = [_read_all(_data_source(name, s, data_dir)) for s in ("train", "test")]
        (tx, ty), (vx, vy) = [(x.astype(np.float32) / 255.0, y) for x, y in splits]
        mean, std = channel_statistics(tx)  # of the training split, applied to both
        tx, vx = (tx - mean) / std, (vx - mean) / std
        return Dataset(name, tx, ty, vx, vy, num_classes=10)
    if name == "imagenet2012":
        train = LazyImages(_data_source(name, "train", data_dir), image_size)
        test = LazyImages(_data_source(name, "validation", data_dir), image_size, crop)
        return Dataset(name, train, train.labels, test, test.labels, num_classes=1000,
                       augment=RandomCrop(crop) if crop else None)
    raise ValueError(f"unknown tfds data set {name!r}; known: {', '.join(TFDS_NAMES)}.")


@dataclasses.dataclass
class LazyImages:
    """Random-access images decoded, resized (shorter side) and centre-cropped on demand.

    Indexing with an integer array returns a float32 ``[n, size, size, 3]`` batch (``[n, crop,
    crop, 3]``, the centre of each square, when ``crop``); only the labels are read up front.
    """

    source: object
    size: int
    crop: int = 0

    def __post_init__(self):
        self.labels = np.asarray(
            [r["label"] for r in _records(self.source, range(len(self.source)))],
            np.int32)

    def __len__(self) -> int:
        return len(self.source)

    @property
    def shape(self) -> tuple[int, ...]:
        side = self.crop or self.size
        return (len(self), side, side, 3)

    def __getitem__(self, index: Sequence[int] | np.ndarray) -> np.ndarray:
        flat = np.asarray(index).reshape(-1)
        records = _records(self.source, flat)
        images = np.stack([_resize_center_crop(np.asarray(r["image"]), self.size)
                           for r in records])
        if self.crop:
            images = center_crop(images, self.crop)
        images = (images.astype(np.float32) / 255.0 - _IMAGENET_MEAN) / _IMAGENET_STD
        return images.reshape(*np.shape(index), *self.shape[1:])


def _resize_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if image.ndim == 2 or image.shape[-1] == 1:
        image = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=-1)
    h, w = image.shape[:2]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resized[top:top + size, left:left + size]
