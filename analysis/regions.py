"""Stability regions and stationary variances of the registered algorithms (issue 31 figures).

Every number here comes from :mod:`analysis.linearized`, i.e. from ``jax.jacfwd`` of the
project's own transformations on F_i(x) = h_i x^2 / 2; the analytic curves drawn beside them
(Nesterov's 2x2 bound, DOWNPOUR's tau = 1 bound) are references, not inputs. Each function
returns plain arrays for :mod:`analysis.plots`.

- :func:`eamsgd_region`: EAMSGD (Zhang, Choromanska & LeCun, NIPS 2015, Algorithm 2,
  synchronous; tau = 1 and the paper's tau = 10) over (eta h, delta) at several alpha.
- :func:`diloco_outer_region`: DiLoCo (Douillard et al. 2023, arXiv 2311.08105) over
  (outer rate, outer momentum) for several H; the paper's point is (0.7, 0.9).
- :func:`diloco_period_region`: DiLoCo over (eta h, H), H = 1..500, outer Nesterov vs outer
  SGD(1) (local SGD).
- :func:`downpour_region`: synchronous DOWNPOUR (Dean et al. 2012, the EASGD paper's
  baseline) over (eta h, tau): the master applies the SUM of p pushes.
- :func:`variance_by_workers`: the stationary variance of the center of EASGD, EAMSGD and
  DiLoCo as p grows.
- :func:`heterogeneous_radius`: the spectral radius against eta when the workers' curvatures
  differ.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from analysis import linearized
from analysis.roundrobin import grid_centres

Array = NDArray[np.float64]

P = 4  # workers of every map here unless stated
TAU = 10  # the EASGD paper's communication period
EAMSGD_BETAS = (0.1, 0.9, 1.5)  # beta = p alpha; the paper's 0.9
EAMSGD_TAUS = (1, TAU)
DILOCO_HS = (1, 10, 100, 500)
DILOCO_INNER_ETA_H = 0.05
DILOCO_POINT = (0.7, 0.9)  # the DiLoCo papers' outer rate and momentum
DILOCO_P = 2  # the workers restart from the center: p enters DiLoCo's map only by the mean
DOWNPOUR_PS = (4, 8)
VARIANCE_PS = (1, 4, 16)
VARIANCE_ETA, VARIANCE_SIGMA = 0.05, 1.0
SPREADS = (0.0, 0.5, 0.9)  # h_i = 1 + s * linspace(-1, 1, p)

# The three algorithms compared in the variance and heterogeneity figures (p = P, tau = 10).
COMPARED: dict[str, tuple[str, dict]] = {
    "EASGD": ("easgd", {"beta": 0.9, "period": TAU}),
    "EAMSGD": ("eamsgd", {"momentum": 0.9, "beta": 0.9, "period": TAU}),
    "DiLoCo": ("diloco", {"momentum": 0.0, "period": TAU, "outer_learning_rate": 0.7,
                          "outer_momentum": 0.9}),
    "data-parallel SGD": ("data_parallel_sgd", {}),
}


def eamsgd_region(n: int = 64, betas: Sequence[float] = EAMSGD_BETAS,
                  taus: Sequence[int] = EAMSGD_TAUS
                  ) -> tuple[Array, Array, dict[tuple[int, float], Array]]:
    """Radius of one period (p = 4) over eta h in (0, 2.5) and delta in (0, 1):
    ``(eta_h, deltas, {(tau, beta): radius[delta, eta_h]})``."""
    eta_h, deltas = grid_centres(2.5, n), grid_centres(1.0, n)
    radii = {(tau, beta): linearized.linearized_radius(
        "eamsgd", P, 1.0, learning_rate=eta_h[None, :], momentum=deltas[:, None], beta=beta,
        period=tau) for tau in taus for beta in betas}
    return eta_h, deltas, radii


def diloco_outer_region(n: int = 64, hs: Sequence[int] = DILOCO_HS
                        ) -> tuple[Array, Array, dict[int, Array]]:
    """Radius of one DiLoCo period (inner SGD at eta h = 0.05, p = 2) over the outer rate in
    (0, 3) and the outer momentum in (0, 1): ``(rates, momenta, {H: radius[mu, rate]})``."""
    rates, momenta = grid_centres(3.0, n), grid_centres(1.0, n)
    radii = {}
    for h in hs:
        radii[h] = linearized.linearized_radius(
            "diloco", DILOCO_P, 1.0, learning_rate=DILOCO_INNER_ETA_H, momentum=0.0,
            period=np.asarray(h)[None, None] + np.zeros((n, n), int),
            outer_learning_rate=rates[None, :], outer_momentum=momenta[:, None])
    return rates, momenta, radii


def diloco_period_region(n: int = 128, max_period: int = 500
                         ) -> tuple[Array, Array, dict[str, Array]]:
    """Radius of one DiLoCo period (p = 2) over eta h in (0, 2.2) and H = 1..500 (log spaced),
    outer Nesterov (0.7, 0.9) and outer SGD(1): ``(eta_h, hs, {label: radius[H, eta_h]})``."""
    eta_h = grid_centres(2.2, n)
    hs = np.unique(np.round(np.geomspace(1, max_period, 38)).astype(int))  # 32 distinct
    outers = {"outer Nesterov, rate 0.7, momentum 0.9": (0.7, 0.9),
              "outer SGD(1): local SGD": (1.0, 0.0)}
    radii = {label: linearized.linearized_radius(
        "diloco", DILOCO_P, 1.0, learning_rate=eta_h[None, :], momentum=0.0,
        period=hs[:, None],
        outer_learning_rate=rate, outer_momentum=mu) for label, (rate, mu) in outers.items()}
    return eta_h, hs.astype(float), radii


def downpour_region(n: int = 128, max_period: int = 32, ps: Sequence[int] = DOWNPOUR_PS
                    ) -> tuple[Array, Array, dict[int, Array]]:
    """Radius of one synchronous DOWNPOUR period over eta h in (0, 2.2) and tau = 1..32:
    ``(eta_h, taus, {p: radius[tau, eta_h]})``."""
    eta_h = grid_centres(2.2, n)
    taus = np.arange(1, max_period + 1)
    radii = {p: linearized.linearized_radius("downpour", p, 1.0, learning_rate=eta_h[None, :],
                                             period=taus[:, None]) for p in ps}
    return eta_h, taus.astype(float), radii


def variance_by_workers(ps: Sequence[int] = VARIANCE_PS) -> dict[str, Array]:
    """Stationary Var x~ (eta = 0.05, h = 1, sigma = 1) for each of :data:`COMPARED` at each
    p: ``{label: variances[len(ps)]}``."""
    return {label: np.array([float(linearized.stationary_center_variance(
        name, p, 1.0, VARIANCE_SIGMA, learning_rate=VARIANCE_ETA, **hp)) for p in ps])
        for label, (name, hp) in COMPARED.items()}


def curvatures(spread: float, p: int = P) -> Array:
    """h_i = 1 + spread * linspace(-1, 1, p): mean 1, from 1 - spread to 1 + spread."""
    return 1.0 + spread * np.linspace(-1.0, 1.0, p)


def heterogeneous_radius(n: int = 256, spreads: Sequence[float] = SPREADS
                         ) -> tuple[Array, dict[str, dict[float, Array]]]:
    """Radius of one period against eta in (0, 2.4) for each of :data:`COMPARED` and each
    spread of the curvatures: ``(etas, {label: {spread: radius[eta]}})``."""
    etas = grid_centres(2.4, n)
    out: dict[str, dict[float, Array]] = {}
    for label, (name, hp) in COMPARED.items():
        out[label] = {s: linearized.linearized_radius(name, P, curvatures(s), learning_rate=etas,
                                                      **hp) for s in spreads}
    return etas, out
