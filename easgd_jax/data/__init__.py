"""Data: embedded default data sets and tfds-backed ones, behind one ``load_dataset``."""

from __future__ import annotations

from easgd_jax.data import embedded
from easgd_jax.data.dataset import Dataset
from easgd_jax.data.sampler import WorkerSampler
from easgd_jax.data.tfds_data import TFDS_NAMES, load_tfds

EMBEDDED_NAMES = ("mnist1d", "digits")
DATASET_NAMES = EMBEDDED_NAMES + TFDS_NAMES


def load_dataset(name: str, data_dir: str | None = None, image_size: int = 221) -> Dataset:
    """Loads a data set by name: ``mnist1d`` and ``digits`` (embedded) or a tfds name."""
    if name == "mnist1d":
        return embedded.mnist1d()
    if name == "digits":
        return embedded.digits()
    if name in TFDS_NAMES:
        return load_tfds(name, data_dir, image_size=image_size)
    raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASET_NAMES)}.")


__all__ = ["DATASET_NAMES", "Dataset", "WorkerSampler", "load_dataset"]
