"""Data sets that ship inside Python packages: no download, so the main job runs anywhere.

- ``mnist1d``: MNIST-1D (Greydanus, 2020), 4000 train / 1000 test signals of length 40 in
  10 classes, generated locally by the ``mnist1d`` package with its default arguments
  (seeded, so every machine gets the same data); ``num_train`` / ``num_test``
  (``config.data.kwargs``) generate any other number with the same arguments (issue 33:
  e.g. 40000 training examples, out of the regime where 4000 are memorised). Generated once
  per machine and kept in ``$EASGD_JAX_DATA_CACHE`` (default ``~/.cache/easgd_jax``;
  ``none``: no cache) as an .npz named by the sizes and the package's version, written
  atomically; a file that does not read back is generated again.
- ``digits``: scikit-learn's 8x8 handwritten digits (1797 real images), split 80/20 with a
  fixed permutation.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os

import numpy as np
from absl import logging

from easgd_jax.data.dataset import Dataset

MNIST1D_TRAIN, MNIST1D_TEST = 4000, 1000  # the package's defaults: 5000 samples, 80/20


def cache_dir() -> str | None:
    """Where generated data is kept: ``$EASGD_JAX_DATA_CACHE``, default
    ``$XDG_CACHE_HOME/easgd_jax`` (``~/.cache/easgd_jax``); None when it is ``none``."""
    root = os.environ.get("EASGD_JAX_DATA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "easgd_jax")
    return None if root.lower() == "none" else root


def _mnist1d_file(num_train: int, num_test: int) -> str | None:
    root = cache_dir()
    if root is None:
        return None
    from importlib.metadata import version

    return os.path.join(root, f"mnist1d-{version('mnist1d')}-{num_train}-{num_test}.npz")


def _read_cached(path: str | None) -> dict[str, np.ndarray] | None:
    if path is None or not os.path.exists(path):
        return None
    try:
        with np.load(path) as f:  # the zip's CRC checks every array
            return {k: f[k] for k in ("x", "y", "split")}
    except Exception as e:  # noqa: BLE001 (a damaged file is generated again)
        logging.warning("generated data at %s does not read back (%s): generating it again.",
                        path, e)
        return None


def _write_cached(path: str | None, arrays: dict[str, np.ndarray]) -> None:
    if path is None:
        return
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, path)  # atomic: a reader sees the whole file or none
    except OSError as e:
        logging.warning("could not keep generated data at %s (%s).", path, e)


@functools.cache
def mnist1d(num_train: int = MNIST1D_TRAIN, num_test: int = MNIST1D_TEST) -> Dataset:
    """MNIST-1D with the package's default generation arguments (seed 42): 4000/1000 by
    default; otherwise ``num_train + num_test`` samples (a multiple of 10: the package
    makes the same number per class) generated with the same arguments and split there
    (the first ``num_train`` of the package's shuffled order train). Kept on disk after
    the first generation (module docstring)."""
    path = _mnist1d_file(num_train, num_test)
    arrays = _read_cached(path)
    if arrays is None:
        arrays = _generate_mnist1d(num_train, num_test)
        _write_cached(path, arrays)
    x, y, split = arrays["x"], arrays["y"], int(arrays["split"])
    return Dataset(name="mnist1d", train_x=x[:split], train_y=y[:split], test_x=x[split:],
                   test_y=y[split:], num_classes=10)


def _generate_mnist1d(num_train: int, num_test: int) -> dict[str, np.ndarray]:
    """The ``mnist1d`` package's samples: {"x", "y", "split"} (train before test)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    if (num_train, num_test) != (MNIST1D_TRAIN, MNIST1D_TEST):
        total = num_train + num_test
        if num_train < 1 or num_test < 1 or total % 10:
            raise ValueError(f"mnist1d: num_train + num_test must be a positive multiple of "
                             f"10 (the classes), each >= 1; got {num_train} + {num_test}.")
        args.num_samples, args.train_split = total, num_train / total
    data = make_dataset(args)
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)
    y = np.concatenate([data["y"], data["y_test"]]).astype(np.int32)
    split = len(data["y"]) if (num_train, num_test) == (MNIST1D_TRAIN, MNIST1D_TEST) \
        else num_train
    return {"x": x, "y": y, "split": np.asarray(split)}


def digits_file() -> str:
    """The path of scikit-learn's ``datasets/data/digits.csv.gz`` (1797 rows of 64 pixels in
    0-16 and the label), found without importing scikit-learn (about 1.5 CPU-s a process)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise ImportError("the digits data set ships with scikit-learn: pip install "
                          "scikit-learn (a dependency of easgd-jax).")
    return os.path.join(os.path.dirname(spec.origin), "datasets", "data", "digits.csv.gz")


@functools.cache
def digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits as [n, 8, 8, 1] images in [0, 1], read as
    ``sklearn.datasets.load_digits`` reads them (the same arrays)."""
    with gzip.open(digits_file(), mode="rt", encoding="utf-8") as f:
        table = np.loadtxt(f, delimiter=",")
    x = (table[:, :-1].reshape(-1, 8, 8) / 16.0).astype(np.float32)[..., None]
    y = table[:, -1].astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    return Dataset("digits", x[train], y[train], x[test], y[test], num_classes=10)
