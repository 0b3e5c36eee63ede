"""Running averages of iterates, shared by ASGD/MVASGD (``baselines``) and
ADOWNPOUR/MVADOWNPOUR (``distbelief``).

The EASGD paper (Zhang, Choromanska & LeCun, NIPS 2015, arXiv 1412.6651, Section 5) averages
with the recursion

    z_t = (1 - a_t) z_{t-1} + a_t x_t,   z_0 = x_0

with a_t = 1 / (t + 1) (Polyak: z_t is the plain mean of x_0..x_t) or a constant a in
(0, 1] (an exponential moving average; paper: 0.001).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax


def polyak_rate(count: jax.Array) -> jax.Array:
    """a_t = 1 / (t + 1): with it, z_t is the plain mean of the t + 1 values x_0..x_t."""
    return 1.0 / (count.astype(jnp.float32) + 1.0)


def constant_rate(rate: float) -> Callable[[jax.Array], float]:
    """a_t = a for every t: an exponential moving average."""
    return lambda _count: rate


def running_average(
    average: optax.Params, value: optax.Params, rate: jax.Array | float
) -> optax.Params:
    """z <- (1 - a) z + a x, leaf by leaf, in the dtype of z (exactly z = x when a = 1)."""
    return jax.tree.map(
        lambda z, x: ((1.0 - rate) * z + rate * x).astype(z.dtype), average, value)
