"""Data sets that ship inside Python packages: no download, so the main job runs anywhere.

- ``mnist1d``: MNIST-1D (Greydanus, 2020), 4000 train / 1000 test signals of length 40 in
  10 classes, generated locally by the ``mnist1d`` package with its default arguments
  (seeded, so every machine gets the same data).
- ``digits``: scikit-learn's 8x8 handwritten digits (1797 real images), split 80/20 with a
  fixed permutation.
"""

from __future__ import annotations

import functools

import numpy as np

from easgd_jax.data.dataset import Dataset


@functools.cache
def mnist1d() -> Dataset:
    """MNIST-1D with the package's default generation arguments (seed 42, 4000/1000)."""
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())
    return Dataset(
        name="mnist1d",
        train_x=np.asarray(data["x"], np.float32),
        train_y=np.asarray(data["y"], np.int32),
        test_x=np.asarray(data["x_test"], np.float32),
        test_y=np.asarray(data["y_test"], np.int32),
        num_classes=10,
    )


@functools.cache
def digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits as [n, 8, 8, 1] images in [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., None]
    y = bunch.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    return Dataset("digits", x[train], y[train], x[test], y[test], num_classes=10)
