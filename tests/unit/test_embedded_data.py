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
