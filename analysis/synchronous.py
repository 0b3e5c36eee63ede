"""Synchronous EASGD on a noisy 1-D quadratic: the 2x2 mean system and its stationary variance.

Supplement of Zhang, Choromanska & LeCun, "Deep learning with Elastic Averaging SGD"
(NIPS 2015, arXiv 1412.6651), quadratic case. Objective F(x) = h x^2 / 2 with stochastic
gradients g_i = h x_i - xi_i, E xi_i = 0, E xi_i^2 = sigma^2, independent over workers and
time. Synchronous EASGD (eqs 5-6, old values on both right-hand sides), beta = p * alpha::

    x_i <- x_i - eta*g_i - alpha*(x_i - x~)
    x~  <- x~ + alpha * sum_i (x_i - x~)  =  (1 - beta) x~ + beta * y,   y = mean_i x_i

Averaging the worker rule over i closes the system on z = (y, x~)::

    z_{t+1} = M z_t + (eta * mean_i xi_i, 0),
    M = [[1 - alpha - eta*h, alpha],
         [beta,              1 - beta]]

so the noise enters only the first coordinate, with variance q = eta^2 sigma^2 / p, and the
stationary covariance S solves the discrete Lyapunov equation S = M S M^T + diag(q, 0).

Closed form. Write T = tr M = 2 - alpha - beta - eta*h and D = det M =
(1 - alpha - eta*h)(1 - beta) - alpha*beta. Eliminating y (beta y_t = x~_{t+1} - (1-beta) x~_t)
turns the center into an AR(2) process::

    x~_{t+2} = T x~_{t+1} - D x~_t + beta * eta * mean_i xi_{i,t},

whose stationary variance is gamma_0 = (1 + D) w / ((1 - D) ((1 + D)^2 - T^2)) with
w = beta^2 eta^2 sigma^2 / p, and lag-one autocovariance gamma_1 = T gamma_0 / (1 + D). With
1 - T + D = beta*eta*h, 1 + T + D = (2 - alpha - eta*h)(2 - beta) - alpha*beta,
1 - D = alpha + beta + eta*h*(1 - beta), this is::

    Var x~ = beta eta sigma^2 (2 - alpha - beta - eta h (1 - beta))
             / (p h (alpha + beta + eta h (1 - beta)) ((2 - alpha - eta h)(2 - beta) - alpha beta))

and the rest of S follows from y_t = (x~_{t+1} - (1 - beta) x~_t) / beta::

    Cov(y, x~) = (gamma_1 - (1 - beta) gamma_0) / beta
    Var y      = ((1 + (1 - beta)^2) gamma_0 - 2 (1 - beta) gamma_1) / beta^2

Stability (Jury conditions on z^2 - T z + D): |eig M| < 1 iff 1 - T + D > 0, 1 + T + D > 0 and
|D| < 1, i.e. beta*eta*h > 0, (2 - alpha - eta*h)(2 - beta) > alpha*beta and |D| < 1. For
0 < beta < 2 the middle one reads eta*h < 2 - 2 alpha / (2 - beta).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]

__all__ = [
    "center_variance",
    "stationary_covariance",
    "stationary_covariance_lyapunov",
    "sync_eigenvalues",
    "sync_matrix",
    "sync_spectral_radius",
    "sync_stable_analytic",
]


def _params(*args: ArrayLike) -> list[Array]:
    return list(np.broadcast_arrays(*[np.asarray(a, dtype=np.float64) for a in args]))


def _trace_det(eta: ArrayLike, beta: ArrayLike, p: ArrayLike, h: ArrayLike):
    eta, beta, p, h = _params(eta, beta, p, h)
    alpha = beta / p
    u = eta * h
    trace = 2.0 - alpha - beta - u
    det = (1.0 - alpha - u) * (1.0 - beta) - alpha * beta
    return eta, beta, p, h, alpha, trace, det


def sync_matrix(eta: ArrayLike, beta: ArrayLike, p: ArrayLike, h: ArrayLike = 1.0) -> Array:
    """``M = [[1 - alpha - eta*h, alpha], [beta, 1 - beta]]``, alpha = beta / p, ``(*B, 2, 2)``."""
    eta, beta, p, h = _params(eta, beta, p, h)
    alpha = beta / p
    m = np.empty((*eta.shape, 2, 2))
    m[..., 0, 0] = 1.0 - alpha - eta * h
    m[..., 0, 1] = alpha
    m[..., 1, 0] = beta
    m[..., 1, 1] = 1.0 - beta
    return m


def sync_eigenvalues(
    eta: ArrayLike, beta: ArrayLike, p: ArrayLike, h: ArrayLike = 1.0
) -> NDArray[np.complex128]:
    """Both eigenvalues of M, (T +- sqrt(T^2 - 4D)) / 2, shape ``(*B, 2)``, complex."""
    *_, trace, det = _trace_det(eta, beta, p, h)
    root = np.sqrt((trace**2 - 4.0 * det).astype(np.complex128))
    return np.stack([(trace + root) / 2.0, (trace - root) / 2.0], axis=-1)


def sync_spectral_radius(
    eta: ArrayLike, beta: ArrayLike, p: ArrayLike, h: ArrayLike = 1.0
) -> Array:
    """``max |eig M|``: the rate at which the means of (y, x~) converge."""
    return np.abs(sync_eigenvalues(eta, beta, p, h)).max(-1)


def sync_stable_analytic(
    eta: ArrayLike, beta: ArrayLike, p: ArrayLike, h: ArrayLike = 1.0
) -> NDArray[np.bool_]:
    """Jury conditions: beta eta h > 0, (2 - alpha - eta h)(2 - beta) > alpha beta, ``|D| < 1``."""
    eta, beta, p, h, alpha, trace, det = _trace_det(eta, beta, p, h)
    return (1.0 - trace + det > 0.0) & (1.0 + trace + det > 0.0) & (np.abs(det) < 1.0)


def center_variance(
    eta: ArrayLike,
    beta: ArrayLike,
    p: ArrayLike,
    h: ArrayLike = 1.0,
    sigma: ArrayLike = 1.0,
) -> Array:
    """Closed-form stationary Var x~ (AR(2) form, see the module docstring); NaN if unstable."""
    return stationary_covariance(eta, beta, p, h, sigma)[..., 1, 1]


def stationary_covariance(
    eta: ArrayLike,
    beta: ArrayLike,
    p: ArrayLike,
    h: ArrayLike = 1.0,
    sigma: ArrayLike = 1.0,
) -> Array:
    """Closed-form stationary covariance of (y, x~), shape ``(*B, 2, 2)``; NaN where unstable."""
    eta, beta, p, h, alpha, trace, det = _trace_det(eta, beta, p, h)
    sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64), eta.shape)
    u = eta * h
    noise = beta * eta**2 * sigma**2 / p  # beta^2 eta^2 sigma^2 / p, one beta cancelled below
    with np.errstate(divide="ignore", invalid="ignore"):
        # (1 + D)^2 - T^2 = (1 - T + D)(1 + T + D) = beta*u * (1 + T + D)
        gamma0 = (1.0 + det) * noise / ((1.0 - det) * u * (1.0 + trace + det))
        gamma1 = trace * gamma0 / (1.0 + det)
        cov_yc = (gamma1 - (1.0 - beta) * gamma0) / beta
        var_y = ((1.0 + (1.0 - beta) ** 2) * gamma0 - 2.0 * (1.0 - beta) * gamma1) / beta**2
    s = np.stack([np.stack([var_y, cov_yc], -1), np.stack([cov_yc, gamma0], -1)], -2)
    stable = sync_stable_analytic(eta, beta, p, h)
    return np.where(stable[..., None, None], s, np.nan)


def stationary_covariance_lyapunov(
    eta: float, beta: float, p: float, h: float = 1.0, sigma: float = 1.0
) -> Array:
    """Numerical S = M S M^T + diag(eta^2 sigma^2 / p, 0) by scipy.linalg (independent check)."""
    from scipy.linalg import solve_discrete_lyapunov

    m = sync_matrix(eta, beta, p, h)
    q = np.diag([eta**2 * sigma**2 / p, 0.0])
    return solve_discrete_lyapunov(m, q)
