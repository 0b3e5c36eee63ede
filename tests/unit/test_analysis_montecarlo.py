"""Monte-Carlo check: easgd_jax.easgd on a noisy quadratic vs the closed-form variance."""

import pytest

from analysis.montecarlo import monte_carlo_center_variance
from analysis.synchronous import stationary_covariance


def test_monte_carlo_agrees_with_closed_form():
    eta, beta, p, h, sigma = 0.1, 0.9, 4, 1.0, 1.0
    res = monte_carlo_center_variance(eta, beta, p, h, sigma, chains=256, steps=2000, seed=0)
    closed = stationary_covariance(eta, beta, p, h, sigma)
    assert res.closed_form == pytest.approx(closed[1, 1])
    # relative standard error ~ 1 %, from 256 independent chains (batch means)
    assert 0.002 < res.stderr / res.estimate < 0.03
    assert abs(res.z_score) < 4.0
    y_z = (res.worker_mean_variance - closed[0, 0]) / res.worker_mean_stderr
    assert abs(y_z) < 4.0
    # the test has power: forgetting the 1/p in the noise variance, or the beta^2, is rejected
    assert abs(res.estimate - p * closed[1, 1]) > 10 * res.stderr
    assert abs(res.estimate - closed[1, 1] / beta) > 10 * res.stderr
