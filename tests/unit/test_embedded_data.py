"""The embedded data sets: digits read from scikit-learn's file without importing it gives
``sklearn.datasets.load_digits``'s arrays."""

import numpy as np
from sklearn.datasets import load_digits

from easgd_jax.data import embedded


def test_digits_are_load_digits_arrays():
    bunch = load_digits()
    data = embedded.digits.__wrapped__()  # not the cached one: read again here
    x = np.concatenate([data.train_x, data.test_x])
    y = np.concatenate([data.train_y, data.test_y])
    order = np.random.default_rng(0).permutation(len(bunch.target))
    n_test = int(round(0.2 * len(order)))
    expected_order = np.concatenate([order[n_test:], order[:n_test]])
    np.testing.assert_array_equal(x, (bunch.images / 16.0).astype(np.float32)[expected_order,
                                                                               ..., None])
    np.testing.assert_array_equal(y, bunch.target[expected_order].astype(np.int32))
    assert x.dtype == np.float32 and y.dtype == np.int32 and x.shape == (1797, 8, 8, 1)


def test_mnist1d_is_generated_once_and_read_back_the_same(tmp_path, monkeypatch):
    monkeypatch.setenv("EASGD_JAX_DATA_CACHE", str(tmp_path))
    generated = embedded.mnist1d.__wrapped__(40, 10)
    (path,) = tmp_path.glob("mnist1d-*-40-10.npz")

    def no_generation(*args):
        raise AssertionError("generated again")

    with monkeypatch.context() as m:
        m.setattr(embedded, "_generate_mnist1d", no_generation)
        read = embedded.mnist1d.__wrapped__(40, 10)
    for field in ("train_x", "train_y", "test_x", "test_y"):
        np.testing.assert_array_equal(getattr(read, field), getattr(generated, field))
        assert getattr(read, field).dtype == getattr(generated, field).dtype
    assert read.train_x.shape == (40, 40) and read.test_y.shape == (10,)
    path.write_bytes(path.read_bytes()[:100])  # damaged: generated again, and kept again
    again = embedded.mnist1d.__wrapped__(40, 10)
    np.testing.assert_array_equal(again.train_x, generated.train_x)
    assert embedded._read_cached(str(path)) is not None
    monkeypatch.setenv("EASGD_JAX_DATA_CACHE", "none")
    assert embedded.cache_dir() is None
