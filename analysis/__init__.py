"""Stability of round-robin EASGD vs linearized ADMM and noisy synchronous EASGD (1-D quadratics).

Numerical reproduction of Section 4 and the quadratic analysis of the supplement of
Zhang, Choromanska & LeCun, "Deep learning with Elastic Averaging SGD" (NIPS 2015,
arXiv 1412.6651). Its modules::

    analysis.roundrobin   cycle maps of round-robin EASGD and ADMM, spectral radii, grids,
                          the analytic EASGD condition, trajectories
    analysis.synchronous  the 2x2 mean system of noisy synchronous EASGD, its stability and
                          closed-form stationary covariance (plus a scipy Lyapunov check)
    analysis.montecarlo   Monte-Carlo check of that variance with easgd_jax.easgd (imports jax),
                          and of the variance of any registered algorithm
    analysis.linearized   any registered algorithm on F_i(x) = h_i x^2 / 2, read from its own
                          code: the matrix of one period (sync) or round-robin cycle, its
                          spectral radius over vmapped grids, the stationary variance of the
                          evaluated point (imports jax when called)
    analysis.regions      the data of the figures of analysis.linearized
    analysis.plots        the figures (matplotlib, Agg)

Regenerate every figure with ``python -m analysis --out figures/``. Importing this package
does not import jax or matplotlib.

    >>> import analysis
    >>> analysis.linearized_radius("eamsgd", 4, learning_rate=0.1, momentum=0.99,
    ...                            beta=0.9, period=10)        # < 1: stable on h x^2 / 2
"""

from analysis.linearized import (
    linearize,
    linearized_map,
    linearized_radius,
    stationary_center_variance,
)
from analysis.roundrobin import (
    admm_cycle_map,
    admm_cycle_radius,
    admm_worker_map,
    easgd_analytic_stable,
    easgd_block_radius,
    easgd_cycle_map,
    easgd_cycle_radius,
    easgd_worker_map,
    radius_map,
    spectral_radius,
    trajectory,
)
from analysis.synchronous import (
    center_variance,
    stationary_covariance,
    stationary_covariance_lyapunov,
    sync_eigenvalues,
    sync_matrix,
    sync_spectral_radius,
    sync_stable_analytic,
)

__all__ = [
    "admm_cycle_map",
    "admm_cycle_radius",
    "admm_worker_map",
    "center_variance",
    "easgd_analytic_stable",
    "easgd_block_radius",
    "easgd_cycle_map",
    "easgd_cycle_radius",
    "easgd_worker_map",
    "linearize",
    "linearized_map",
    "linearized_radius",
    "radius_map",
    "spectral_radius",
    "stationary_center_variance",
    "stationary_covariance",
    "stationary_covariance_lyapunov",
    "sync_eigenvalues",
    "sync_matrix",
    "sync_spectral_radius",
    "sync_stable_analytic",
    "trajectory",
]
