"""Monte-Carlo check of the stationary center variance, running the library's own ``easgd``.

Zhang, Choromanska & LeCun (NIPS 2015, arXiv 1412.6651), supplement, quadratic case: p
workers run synchronous EASGD (eqs 5-6) on F(x) = h x^2 / 2 with gradients
g_i = h x_i - xi_i, xi_i ~ N(0, sigma^2) independent over workers, time and chains::

    x_i <- x_i - eta*g_i - alpha*(x_i - x~);   x~ <- x~ + alpha * sum_i (x_i - x~),
    alpha = beta / p.

The transformation is ``easgd_jax.easgd(..., period=1, axis_name="workers")`` under
``jax.vmap(axis_name="workers")`` over the p workers, vmapped again over independent chains,
with ``jax.lax.scan`` as the clock. Every chain starts at the optimum x_i = x~ = 0, runs a
burn-in long enough that the transient rho(M)^(2t) is below 1e-10, then records x~ for
``steps`` steps. The stationary mean is exactly 0, so Var x~ = E x~^2.

Error bars: the samples of one chain are autocorrelated (lag-k correlation ~ rho(M)^k), so
the chains play the role of batches in a batch-means estimate. Each chain gives
v_k = mean_t x~_t^2; the v_k are independent and identically distributed, the estimate is
their mean and its standard error is std(v_k) / sqrt(chains). No assumption about the
autocorrelation time is needed; ``effective_samples`` reports what it came to.

jax, optax and easgd_jax are imported lazily, inside the function, so that the rest of
``analysis`` imports without jax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from analysis.synchronous import stationary_covariance, sync_spectral_radius

__all__ = [
    "MonteCarloResult",
    "VarianceCheck",
    "monte_carlo_center_variance",
    "monte_carlo_variance",
]


@dataclass(frozen=True)
class MonteCarloResult:
    """Monte-Carlo estimate of the stationary Var x~ next to the closed form."""

    eta: float
    beta: float
    p: int
    h: float
    sigma: float
    chains: int
    steps: int
    burn_in: int
    estimate: float  # mean over chains of mean_t x~_t^2
    stderr: float  # std over chains / sqrt(chains)
    closed_form: float
    effective_samples: float  # Var(x~^2) / stderr^2: independent draws the run was worth
    worker_mean_variance: float  # the same estimator for y = mean_i x_i ...
    worker_mean_stderr: float
    worker_mean_closed_form: float  # ... and its closed form, S[0, 0]

    @property
    def z_score(self) -> float:
        """(estimate - closed form) / stderr."""
        return (self.estimate - self.closed_form) / self.stderr

    def interval(self, z: float = 3.0) -> tuple[float, float]:
        """estimate +- z * stderr."""
        return self.estimate - z * self.stderr, self.estimate + z * self.stderr


def _burn_in(eta: float, beta: float, p: int, h: float) -> int:
    rate = float(sync_spectral_radius(eta, beta, p, h))
    if not rate < 1.0:
        raise ValueError(f"unstable parameters (rho(M) = {rate:.6f} >= 1)")
    return max(10, math.ceil(math.log(1e-10) / (2.0 * math.log(rate))))


def monte_carlo_center_variance(
    eta: float,
    beta: float,
    p: int,
    h: float = 1.0,
    sigma: float = 1.0,
    chains: int = 256,
    steps: int = 2000,
    burn_in: int | None = None,
    seed: int = 0,
    x64: bool = False,
) -> MonteCarloResult:
    """Run ``chains`` independent copies of p-worker sync EASGD and estimate Var x~.

    Runs in float32 unless ``x64`` (then inside ``jax.enable_x64()``, float64 throughout).
    """
    import jax

    if x64:
        with jax.enable_x64(True):
            return _run(eta, beta, p, h, sigma, chains, steps, burn_in, seed, "float64")
    return _run(eta, beta, p, h, sigma, chains, steps, burn_in, seed, "float32")


def _run(
    eta: float,
    beta: float,
    p: int,
    h: float,
    sigma: float,
    chains: int,
    steps: int,
    burn_in: int | None,
    seed: int,
    dtype: str,
) -> MonteCarloResult:
    import jax
    import jax.numpy as jnp
    import optax

    import easgd_jax

    if burn_in is None:
        burn_in = _burn_in(eta, beta, p, h)
    alpha = beta / p
    tx = easgd_jax.easgd(learning_rate=eta, moving_rate=alpha, period=1, axis_name="workers")

    def worker_step(params, state, noise):
        grads = h * params - noise  # g_i = h x_i - xi_i
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    # inner vmap: the p workers of one chain (collectives over "workers"); outer: the chains
    step_all = jax.vmap(jax.vmap(worker_step, axis_name="workers"))

    def tick(carry, key):
        params, state = carry
        noise = sigma * jax.random.normal(key, params.shape, params.dtype)
        params, state = step_all(params, state, noise)
        center = easgd_jax.center(state)[:, 0]  # identical on every worker
        return (params, state), (params.mean(axis=1), center)

    @jax.jit
    def run(key):
        params = jnp.zeros((chains, p), dtype)
        state = jax.vmap(jax.vmap(tx.init))(params)
        burn_key, key = jax.random.split(key)
        carry, _ = jax.lax.scan(tick, (params, state), jax.random.split(burn_key, burn_in))
        _, (y, c) = jax.lax.scan(tick, carry, jax.random.split(key, steps))
        return y, c  # (steps, chains) each

    y, c = (np.asarray(a, dtype=np.float64) for a in run(jax.random.key(seed)))
    per_chain = (c**2).mean(axis=0)
    estimate = float(per_chain.mean())
    stderr = float(per_chain.std(ddof=1) / math.sqrt(chains))
    per_chain_y = (y**2).mean(axis=0)
    closed = stationary_covariance(eta, beta, p, h, sigma)
    return MonteCarloResult(
        eta=eta,
        beta=beta,
        p=p,
        h=h,
        sigma=sigma,
        chains=chains,
        steps=steps,
        burn_in=burn_in,
        estimate=estimate,
        stderr=stderr,
        closed_form=float(closed[1, 1]),
        effective_samples=float((c**2).var() / stderr**2),
        worker_mean_variance=float(per_chain_y.mean()),
        worker_mean_stderr=float(per_chain_y.std(ddof=1) / math.sqrt(chains)),
        worker_mean_closed_form=float(closed[0, 0]),
    )


# --------------------------------------------------------------------------- any algorithm


@dataclass(frozen=True)
class VarianceCheck:
    """Monte-Carlo stationary variance of an algorithm's evaluated point next to the
    Lyapunov prediction of ``analysis.linearized.stationary_center_variance``."""

    name: str
    num_workers: int
    hparams: dict
    chains: int
    periods: int  # recorded periods per chain
    burn_in: int  # periods run before recording
    estimate: float  # mean over chains of mean over periods of point^2
    stderr: float  # std over chains / sqrt(chains)
    predicted: float

    @property
    def z_score(self) -> float:
        """(estimate - prediction) / stderr."""
        return (self.estimate - self.predicted) / self.stderr


def monte_carlo_variance(
    name: str,
    num_workers: int,
    curvature: float = 1.0,
    noise_std: float = 1.0,
    chains: int = 256,
    periods: int = 400,
    seed: int = 0,
    **hparams,
) -> VarianceCheck:
    """Run ``chains`` independent noisy copies of the REAL synchronous transformation of a
    registered algorithm (``Spec.build`` under ``jax.vmap`` over the workers, vmapped again
    over the chains, float64), g_i = h x_i - xi_i with xi_i ~ N(0, noise_std^2), and
    estimate the stationary variance of its evaluated point at period boundaries.

    Every chain starts at the optimum, runs a burn-in long enough that rho(M)^(2k) < 1e-10
    (k periods, rho the linearized map's spectral radius), then records the point for
    ``periods`` periods; the estimate is the mean of x~^2 (the stationary mean is 0) and its
    error bar the batch means over the independent chains, as
    :func:`monte_carlo_center_variance` does.
    """
    import jax
    import jax.numpy as jnp

    from analysis import linearized

    predicted = float(linearized.stationary_center_variance(
        name, num_workers, curvature, noise_std, **hparams))
    lin = linearized.linearize(name, num_workers, curvature, **hparams)
    rate = float(np.abs(np.linalg.eigvals(lin.matrix)).max())
    if not rate < 1.0:
        raise ValueError(f"unstable parameters (rho(M) = {rate:.6f} >= 1)")
    burn_in = max(10, math.ceil(math.log(1e-10) / (2.0 * math.log(max(rate, 1e-300)))))
    setup = linearized._setup(name, num_workers, curvature, "sync", None, hparams)
    program = setup.program
    traced = {k: jnp.asarray(v[0]) for k, v in setup.traced.items()}
    per_period = program.static_steps * num_workers

    with jax.enable_x64(True):
        h = jnp.asarray(setup.curvature)

        def chain(key):
            noise = noise_std * jax.random.normal(key, (burn_in + periods, per_period),
                                                  jnp.float64)
            return program.simulate(traced, h, noise, burn_in + periods)[burn_in:]

        points = jax.jit(jax.vmap(chain))(jax.random.split(jax.random.key(seed), chains))
        per_chain = np.asarray(points, np.float64) ** 2
    per_chain = per_chain.reshape(chains, -1).mean(axis=1)
    return VarianceCheck(
        name=name, num_workers=num_workers, hparams=dict(hparams), chains=chains,
        periods=periods, burn_in=burn_in, estimate=float(per_chain.mean()),
        stderr=float(per_chain.std(ddof=1) / math.sqrt(chains)), predicted=predicted)
