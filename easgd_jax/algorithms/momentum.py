"""Nesterov momentum written on the look-ahead point, as in EAMSGD's local step.

The EASGD paper (Zhang, Choromanska & LeCun, 2015, Algorithm 2) writes the local step of
worker i as

        v_i <- delta * v_i - eta * g(x_i + delta * v_i)
        x_i <- x_i + v_i

with the gradient taken at the look-ahead point w_i = x_i + delta * v_i. Optax computes
gradients at ``params``, so this transformation keeps ``params = w`` (the Sutskever et al.,
2013 change of variables) and stores v in its state. With g = grad f(w_t):

        v_{t+1} = delta * v_t - eta_t * g
        w_{t+1} = w_t + v_{t+1} + delta * (v_{t+1} - v_t)        (= x_{t+1} + delta * v_{t+1})

so the update is ``-eta_t * g + delta * v_{t+1}``. The worker variable x = w - delta * v is
recovered by :func:`nesterov_origin`; the elastic force of EAMSGD acts on it. delta = 0 is
plain SGD.

:func:`nesterov_sgd` is optax's own Nesterov SGD (gradient at the params), the inner and outer
optimizer of DiLoCo and the outer step of ``eamsgd_outer``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from easgd_jax.algorithms import checks


class NesterovState(NamedTuple):
    """State of :func:`nesterov`: the step count and the velocity v (in parameter units)."""

    count: jax.Array
    velocity: optax.Updates


def nesterov(
    learning_rate: optax.ScalarOrSchedule, momentum: float
) -> optax.GradientTransformationExtraArgs:
    """Nesterov momentum on the look-ahead point w = x + delta * v.

    Args:
        learning_rate: eta, a number or an optax schedule of the step count.
        momentum: delta in [0, 1).

    Returns:
        A transformation whose updates move w; ``nesterov_origin`` gives x. ``update``
        ignores extra arguments.
    """
    checks.check_rate("learning_rate", learning_rate)
    checks.check_momentum(momentum)
    rate = checks.schedule_value(learning_rate)

    def init_fn(params: optax.Params) -> NesterovState:
        return NesterovState(
            count=jnp.zeros([], jnp.int32),
            velocity=jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        eta = rate(state.count)
        velocity = jax.tree.map(
                lambda v, g: (momentum * v - eta * g).astype(v.dtype), state.velocity, updates)
        new_updates = jax.tree.map(
                lambda v, g: (-eta * g + momentum * v).astype(v.dtype), velocity, updates)
        return new_updates, NesterovState(optax.safe_int32_increment(state.count), velocity)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def nesterov_origin(momentum: float) -> Callable[[optax.Params, NesterovState], optax.Params]:
    """Returns ``(params, state) -> x = w - delta * v``, the point the look-ahead starts from."""

    def origin(params: optax.Params, state: NesterovState) -> optax.Params:
        return jax.tree.map(
            lambda w, v: (w - momentum * v).astype(w.dtype), params, state.velocity)

    return origin


def nesterov_sgd(learning_rate: optax.ScalarOrSchedule, momentum: float,
                 prefix: str = "") -> optax.GradientTransformation:
    """``optax.sgd(learning_rate, momentum, nesterov=True)``: m <- g + mu m;
    u = -eta (g + mu m), with its arguments checked (named ``{prefix}learning_rate``,
    ``{prefix}momentum``).

    At momentum 0 it is plain SGD (u = -eta (g + 0 m)) with the same state structure, so
    that an injected momentum (``optax.inject_hyperparams``) and a constant one build the
    same state.
    """
    checks.check_rate(f"{prefix}learning_rate", learning_rate)
    checks.check_momentum(momentum, f"{prefix}momentum")
    return optax.sgd(learning_rate, momentum=momentum, nesterov=True)
