"""analysis.linearized against every hand derivation there is (issue 31, item 2), each to
1e-12 in float64: the maps are derived by ``jax.jacfwd`` of the project's own
transformations and asynchronous rules, the references by hand.

- round-robin EASGD (the asynchronous rule, one worker per tick) is
  ``analysis.roundrobin.easgd_cycle_map``, radius 0.999270 at p = 3, eta = 0.001,
  alpha = eta rho, rho = 2.5 (Zhang, Choromanska & LeCun, NIPS 2015, Section 4);
- synchronous EASGD: the 2x2 mean system's eigenvalues plus 1 - alpha - eta h for the p - 1
  difference modes (the supplement's quadratic case);
- EAMSGD with alpha = 0: each worker is Nesterov momentum (Sutskever et al. 2013, the
  paper's Algorithm 2 form), its 2x2 map to the power tau, the center fixed;
- DiLoCo (Douillard et al. 2023) with inner SGD: outer SGD(1) is (1 - eta h)^H, an outer
  Nesterov step the 2x2 Nesterov map on the effective curvature 1 - (1 - eta h)^H;
- data-parallel SGD is 1 - eta mean_i h_i;
- one worker's round robin (the asynchronous rule) has synchronous EAMSGD's spectrum;
- the stationary variance of synchronous EASGD is the closed form
  ``analysis.synchronous.center_variance``.
"""

from __future__ import annotations

import numpy as np
import pytest

from analysis import linearized, roundrobin, synchronous

TOL = 1e-12


def _nesterov_x(eta_h: float, delta: float) -> np.ndarray:
    """Nesterov momentum on (x, v), the EASGD paper's Algorithm 2 on h x^2 / 2:
    v <- delta v - eta h (x + delta v);  x <- x + v."""
    v_row = np.array([-eta_h, delta * (1.0 - eta_h)])
    return np.array([[1.0, 0.0], [0.0, 0.0]]) + np.array([v_row, v_row])


def _optax_nesterov(rate: float, curvature: float, mu: float) -> np.ndarray:
    """optax.sgd(rate, mu, nesterov=True) on (c, m), gradient curvature * c:
    m <- g + mu m;  c <- c - rate (g + mu m)."""
    return np.array([[1.0 - rate * curvature * (1.0 + mu), -rate * mu * mu],
                     [curvature, mu]])


def test_round_robin_easgd_is_the_papers_cycle_map():
    eta, rho, p = 1e-3, 2.5, 3
    lin = linearized.linearize("easgd", p, 1.0, "round_robin", learning_rate=eta,
                               moving_rate=eta * rho)
    assert lin.labels == ("workers.params[0]", "workers.params[1]", "workers.params[2]",
                          "master.center")
    reference = roundrobin.easgd_cycle_map(p, eta, 1.0, eta * rho)
    diff = np.abs(lin.matrix - reference).max()
    print(f"round-robin EASGD: max |M - easgd_cycle_map| = {diff:.3g}")
    assert diff <= TOL
    radius = float(roundrobin.spectral_radius(lin.matrix))
    print(f"radius {radius:.6f} (paper: 0.999270)")
    assert round(radius, 6) == 0.999270


def test_sync_easgd_eigenvalues_are_the_mean_system_and_the_difference_modes():
    p, eta, h, betas = 4, 0.1, 1.3, np.array([0.05, 0.3, 0.6, 0.9, 1.2, 1.5])
    lin = linearized.linearize("easgd", p, h, learning_rate=eta, beta=betas)
    assert lin.labels == (*(f"params[{i}]" for i in range(p)), "opt_state.center")
    for k, beta in enumerate(betas):
        alpha = beta / p
        got = np.sort_complex(np.linalg.eigvals(lin.matrix[k]))
        want = np.sort_complex(np.concatenate([
            synchronous.sync_eigenvalues(eta, beta, p, h), [1.0 - alpha - eta * h] * (p - 1)]))
        diff = np.abs(got - want).max()
        print(f"sync EASGD beta = {beta}: max |eig M - (2x2 mean system, 1 - alpha - eta h)|"
              f" = {diff:.3g}")
        assert diff <= TOL


def test_eamsgd_without_elastic_force_is_nesterov_momentum_to_the_power_tau():
    p, eta, h, delta, tau = 2, 0.1, 1.7, 0.9, 3
    lin = linearized.linearize("eamsgd", p, h, learning_rate=eta, momentum=delta,
                               moving_rate=0.0, period=tau)
    labels = list(lin.labels)
    assert labels == ["params[0]", "params[1]", "opt_state.center",
                      "opt_state.inner_state.velocity[0]", "opt_state.inner_state.velocity[1]"]
    # the params are the look-ahead points w = x + delta v: conjugate the (x, v) map
    to_w = np.array([[1.0, delta], [0.0, 1.0]])
    block = to_w @ np.linalg.matrix_power(_nesterov_x(eta * h, delta), tau) @ np.linalg.inv(
        to_w)
    want = np.zeros((5, 5))
    for i in range(p):
        rows = [labels.index(f"params[{i}]"), labels.index(f"opt_state.inner_state.velocity[{i}]")]
        want[np.ix_(rows, rows)] = block
    want[2, 2] = 1.0  # alpha = 0: the center never moves
    diff = np.abs(lin.matrix - want).max()
    print(f"EAMSGD alpha = 0: max |M - blockdiag(N^tau, 1)| = {diff:.3g}")
    assert diff <= TOL


def test_diloco_with_outer_sgd_one_is_local_sgd():
    p, eta, h, period = 2, 0.15, 1.0, 8  # (the next test's program)
    lin = linearized.linearize("diloco", p, h, learning_rate=eta, momentum=0.0, period=period,
                               outer_learning_rate=1.0, outer_momentum=0.0)
    a = (1.0 - eta * h) ** period
    assert lin.labels == ("params", "opt_state.center")  # the workers restart from x~
    diff = np.abs(lin.matrix - np.array([[a, 0.0], [a, 0.0]])).max()
    radius = float(roundrobin.spectral_radius(lin.matrix))
    print(f"DiLoCo outer SGD(1): max |M - [[a, 0], [a, 0]]| = {diff:.3g}, "
          f"|radius - (1 - eta h)^H| = {abs(radius - a):.3g}")
    assert diff <= TOL and abs(radius - a) <= TOL


def test_diloco_outer_nesterov_is_nesterov_on_the_effective_curvature():
    p, eta, h, period, rate, mu = 2, 0.05, 1.0, 8, 0.7, 0.9
    lin = linearized.linearize("diloco", p, h, learning_rate=eta, momentum=0.0, period=period,
                               outer_learning_rate=rate, outer_momentum=mu)
    assert lin.labels == ("params", "opt_state.center", "opt_state.outer_state.0.trace")
    kappa = 1.0 - (1.0 - eta * h) ** period
    nesterov = _optax_nesterov(rate, kappa, mu)
    # on x = x~ (where every outer step leaves the workers) M acts as the 2x2 map on (x~, M)
    embed = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    diff = np.abs(lin.matrix @ embed - embed @ nesterov).max()
    got = np.sort_complex(np.linalg.eigvals(lin.matrix))
    want = np.sort_complex(np.concatenate([np.linalg.eigvals(nesterov), [0.0]]))
    print(f"DiLoCo outer Nesterov: max |M E - E N(1 - (1 - eta h)^H)| = {diff:.3g}, "
          f"eigenvalues {np.abs(got - want).max():.3g}")
    assert diff <= TOL and np.abs(got - want).max() <= TOL


def test_data_parallel_sgd_is_sgd_on_the_mean_curvature():
    curvatures = np.array([0.5, 1.0, 2.5])
    lin = linearized.linearize("data_parallel_sgd", 3, curvatures, learning_rate=0.3)
    assert lin.labels == ("params",)  # the all-reduce keeps the copies equal
    diff = abs(lin.matrix[0, 0] - (1.0 - 0.3 * curvatures.mean()))
    print(f"data-parallel SGD: |M - (1 - eta mean h)| = {diff:.3g}")
    assert lin.matrix.shape == (1, 1) and diff <= TOL


def test_grid_is_the_points_one_by_one():
    etas, betas = np.array([0.1, 0.5, 1.9]), np.array([[0.2], [0.9]])
    grid = linearized.linearized_radius("easgd", 4, 1.0, learning_rate=etas, beta=betas)
    assert grid.shape == (2, 3)
    want = synchronous.sync_spectral_radius(etas, betas, 4, 1.0)
    want = np.maximum(want, np.abs(1.0 - betas / 4 - etas))  # the difference modes
    assert np.abs(grid - want).max() <= TOL


def test_stationary_variance_is_the_closed_form_for_sync_easgd():
    p, eta, h, sigma, betas = 4, 0.1, 1.0, 0.7, np.array([0.1, 0.5, 0.9, 1.3, 1.5, 1.7])
    got = linearized.stationary_center_variance("easgd", p, h, sigma, learning_rate=eta,
                                                beta=betas)
    want = synchronous.center_variance(eta, betas, p, h, sigma)
    assert np.isnan(got[-1]) and np.isnan(want[-1])  # alpha + beta > 2: unstable
    rel = np.abs(got[:-1] / want[:-1] - 1.0).max()
    print(f"sync EASGD Var x~: Lyapunov vs closed form, max relative difference {rel:.3g}")
    assert rel <= 1e-10


def test_nonlinear_rules_are_refused_or_linearized_at_a_stated_point():
    with pytest.raises(ValueError, match="not linear on a quadratic") as info:
        linearized.linearize("amsgrad_sync", 2, 1.0, learning_rate=1e-3)
    assert "\n" not in str(info.value) and "AMSGrad" in str(info.value)
    lin = linearized.linearize("lsgd_nesterov", 2, 1.0, learning_rate=0.1, momentum=0.5,
                               pull=0.2, period=1)
    assert "leader is worker 0" in lin.note and "opt_state.losses" in lin.note
    assert lin.linearity_gap > 1e-6  # it is not linear: the stated point is what is read


def test_one_worker_round_robin_is_the_synchronous_algorithm():
    # Algorithm 2 with p = 1 is synchronous EAMSGD: the asynchronous rule (params x, the
    # gradient at x + delta v) and the transformation (params w = x + delta v) in different
    # coordinates, the same spectrum
    hp = dict(learning_rate=0.3, momentum=0.8, moving_rate=0.4, period=3)
    rr = linearized.linearize("eamsgd", 1, 1.2, "round_robin", **hp)
    sync = linearized.linearize("eamsgd", 1, 1.2, **hp)
    assert rr.labels == ("workers.params", "workers.extra.inner_state.velocity",
                         "master.center")
    got, want = (np.sort_complex(np.linalg.eigvals(m.matrix)) for m in (rr, sync))
    print(f"EAMSGD p = 1: round robin vs sync, max |eigenvalue difference| = "
          f"{np.abs(got - want).max():.3g}")
    assert np.abs(got - want).max() <= TOL
