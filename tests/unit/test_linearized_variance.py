"""The stationary variance of ``analysis.linearized`` (a discrete Lyapunov equation on the
map and its derivative with respect to the gradient noise) against Monte Carlo of the REAL
synchronous transformations (issue 31, item 3): EAMSGD (Zhang, Choromanska & LeCun, NIPS
2015, Algorithm 2, synchronous form) with tau = 2 and DiLoCo (Douillard et al. 2023) with its
outer Nesterov step, p = 4 workers, g_i = h x_i - xi_i, xi_i ~ N(0, sigma^2). Batch means
over independent chains (``analysis.montecarlo.monte_carlo_variance``); |z| < 4 at fixed
seeds. Kept small (64 chains x 300 periods), marked slow."""

from __future__ import annotations

import pytest

from analysis.montecarlo import monte_carlo_variance

CASES = {
    "eamsgd": dict(learning_rate=0.05, momentum=0.5, beta=0.9, period=2),
    "diloco": dict(learning_rate=0.05, momentum=0.0, period=4, outer_learning_rate=0.7,
                   outer_momentum=0.9),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_lyapunov_variance_matches_monte_carlo_of_the_transformation(name):
    check = monte_carlo_variance(name, 4, 1.0, 0.8, chains=64, periods=300, seed=1,
                                 **CASES[name])
    print(f"{name}: Var = {check.estimate:.6f} +- {check.stderr:.6f} (Monte Carlo, "
          f"{check.chains} chains x {check.periods} periods after {check.burn_in}), "
          f"Lyapunov {check.predicted:.6f}, z = {check.z_score:+.2f}")
    assert check.stderr < 0.05 * check.predicted  # the check has power
    assert abs(check.z_score) < 4.0
