"""Tests for analysis.synchronous: noisy synchronous EASGD on a 1-D quadratic."""

import numpy as np
import pytest

from analysis import synchronous as sync


def _random_stable(rng, n):
    """Random (eta, beta, p, h) draws inside the stability region."""
    out = []
    while len(out) < n:
        p = int(rng.integers(1, 33))
        h = rng.uniform(0.3, 3.0)
        eta, beta = rng.uniform(0.01, 2.0) / h, rng.uniform(0.01, 1.99)
        if sync.sync_spectral_radius(eta, beta, p, h) < 0.999:
            out.append((eta, beta, p, h))
    return out


def test_worker_mean_and_center_follow_m():
    """One step of p explicit workers (rules written here) moves (mean, center) by M."""
    rng = np.random.default_rng(0)
    p, eta, h, beta = 5, 0.3, 1.7, 0.9
    alpha = beta / p
    x, c, xi = rng.normal(size=p), rng.normal(), rng.normal(size=p)
    x_new = x - eta * (h * x - xi) - alpha * (x - c)
    c_new = c + alpha * np.sum(x - c)
    m = sync.sync_matrix(eta, beta, p, h)
    expected = m @ np.array([x.mean(), c]) + np.array([eta * xi.mean(), 0.0])
    np.testing.assert_allclose([x_new.mean(), c_new], expected, rtol=1e-12)


def test_eigenvalues_and_analytic_stability_match_numpy():
    rng = np.random.default_rng(1)
    n = 5000
    eta, beta = rng.uniform(-0.5, 2.5, n), rng.uniform(-0.5, 2.5, n)
    p, h = rng.integers(1, 65, n), rng.uniform(0.5, 2.0, n)
    alpha = beta / p
    m = np.stack([np.stack([1 - alpha - eta * h, alpha], -1), np.stack([beta, 1 - beta], -1)], -2)
    ref = np.sort_complex(np.linalg.eigvals(m))
    np.testing.assert_allclose(np.sort_complex(sync.sync_eigenvalues(eta, beta, p, h)), ref,
                               atol=1e-7)  # fmt: skip
    radius = np.abs(ref).max(-1)
    keep = np.abs(radius - 1.0) > 1e-9
    analytic = sync.sync_stable_analytic(eta, beta, p, h)
    assert 0.1 < analytic.mean() < 0.9
    np.testing.assert_array_equal(analytic[keep], radius[keep] < 1.0)


def test_closed_form_matches_lyapunov():
    rng = np.random.default_rng(2)
    for eta, beta, p, h in _random_stable(rng, 200):
        sigma = rng.uniform(0.1, 3.0)
        closed = sync.stationary_covariance(eta, beta, p, h, sigma)
        lyap = sync.stationary_covariance_lyapunov(eta, beta, p, h, sigma)
        np.testing.assert_allclose(closed, lyap, rtol=1e-7, atol=1e-14)
        assert sync.center_variance(eta, beta, p, h, sigma) == pytest.approx(lyap[1, 1])


def test_closed_form_matches_power_series():
    """S = sum_k M^k Q M^kT, summed directly (no scipy, no AR(2) algebra)."""
    eta, beta, p, h, sigma = 0.1, 0.9, 4, 1.0, 1.0
    m = np.array([[1 - beta / p - eta * h, beta / p], [beta, 1 - beta]])
    q = np.diag([eta**2 * sigma**2 / p, 0.0])
    s, mk = np.zeros((2, 2)), np.eye(2)
    for _ in range(2000):
        s += mk @ q @ mk.T
        mk = m @ mk
    np.testing.assert_allclose(sync.stationary_covariance(eta, beta, p, h, sigma), s, rtol=1e-10)
    # the expanded formula of the docstring, written out once more
    alpha, u = beta / p, eta * h
    num = beta * eta * sigma**2 * (2 - alpha - beta - u * (1 - beta))
    den = p * h * (alpha + beta + u * (1 - beta)) * ((2 - alpha - u) * (2 - beta) - alpha * beta)
    assert s[1, 1] == pytest.approx(num / den, rel=1e-10)


def test_unstable_parameters_give_nan():
    assert not sync.sync_stable_analytic(1.9, 1.9, 2)
    assert np.isnan(sync.center_variance(1.9, 1.9, 2)).all()
    v = sync.center_variance(0.1, np.array([0.5, 1.99]), 1)
    assert np.isfinite(v[0]) and np.isnan(v[1])
