"""Outer optimizers: DiLoCo (Douillard et al., 2023, arXiv 2311.08105) and its relatives.

p workers hold x_1..x_p and share a center x~ (replicated in every worker's state, as
EASGD's is). Each worker runs ``period`` = H local steps of its own ``inner`` optimizer; the
outer step then closes the block (reference, section 6b):

    x_i <- x_i + inner(g_i(x_i))                      every local step t
    if (t + 1) mod H == 0:                            the last step of each block
        delta = x~ - mean_i x_i                       (ONE all-reduce; the outer "gradient")
        x~    <- x~ + outer.update(delta, outer_state, x~)
        x_i   <- x~                                   for every worker; inner state kept

The sign makes a descent outer step move x~ toward the workers: with ``outer =
optax.sgd(1.0)``, x~ <- mean_i x_i, periodic model averaging (local SGD); with H = 1 and
``inner = optax.sgd(eta)`` that is data-parallel SGD; with one worker, ``optax.lookahead``
with an SGD slow step. EASGD's center step is an outer SGD step of rate beta = p alpha on
the same delta, but EASGD only pulls the workers (elastic force) instead of resetting them.

The outer step happens on the LAST step of each period, so the registry's ``Spec`` for
``diloco`` says ``exchange_step="last"`` and the synchronous executor traces its rounds
with the communication step last.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from easgd_jax.algorithms import checks, clock
from easgd_jax.algorithms.base import AxisName, fresh_copy
from easgd_jax.algorithms.collectives import tree_pmean


class DilocoState(NamedTuple):
    """State of :func:`diloco` on one worker.

    Attributes:
        count: the local clock t (int32); the outer step closes the block when
            ``(count + 1) % period == 0``.
        center: the center x~ (the outer parameters), identical on every worker.
        outer_state: the outer optimizer's state (e.g. its Nesterov momentum), identical on
            every worker.
        inner_state: the worker's inner optimizer state (kept across outer steps).
    """

    count: jax.Array
    center: optax.Params
    outer_state: optax.OptState
    inner_state: optax.OptState


def outer_gradient(center: optax.Params, mean: optax.Params) -> optax.Updates:
    """DiLoCo's outer "gradient" delta = x~ - mean_i x_i, in the center's dtype."""
    return jax.tree.map(lambda c, m: (c - m).astype(c.dtype), center, mean)


def diloco(
    inner: optax.GradientTransformation,
    outer: optax.GradientTransformation,
    period: int,
    axis_name: AxisName = "workers",
) -> optax.GradientTransformation:
    """DiLoCo (Douillard et al., 2023): ``period`` inner steps, then one outer step.

        x_i <- x_i + inner(g_i);   if (t + 1) mod H == 0:
            x~ <- x~ + outer.update(x~ - mean_i x_i);   x_i <- x~

    Args:
        inner: the workers' optimizer (the paper: AdamW), any optax transformation.
        outer: the center's optimizer applied to the outer gradient x~ - mean_i x_i (the
            paper: ``optax.sgd(0.7, momentum=0.9, nesterov=True)``; ``optax.sgd(1.0)``
            gives periodic model averaging).
        period: H >= 1, the inner steps per outer step.
        axis_name: the mapped worker axis of the all-reduce.

    Returns:
        A ``GradientTransformation`` with state :class:`DilocoState`. ``init`` sets the
        center to the given params: every worker must start from the same point.
        ``update`` requires ``params``.
    """
    checks.check_period("period", period)
    checks.check_axis_name(axis_name)

    def init_fn(params: optax.Params) -> DilocoState:
        return DilocoState(count=jnp.zeros([], jnp.int32), center=fresh_copy(params),
                           outer_state=outer.init(params), inner_state=inner.init(params))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("diloco needs params: call update(grads, state, params).")
        local, inner_state = inner.update(updates, state.inner_state, params)

        def outer_step(operand):
            center, outer_state = operand
            moved = optax.apply_updates(params, local)  # x_i after its inner step
            delta = outer_gradient(center, tree_pmean(moved, axis_name))
            outer_updates, outer_state = outer.update(delta, outer_state, center)
            center = optax.apply_updates(center, outer_updates)
            reset = jax.tree.map(lambda c, x: (c - x).astype(x.dtype), center, params)
            return reset, (center, outer_state)

        def inner_only(operand):
            return local, operand

        new_updates, (center, outer_state) = clock.on_clock(
            state.count + 1, period, outer_step, inner_only,
            (state.center, state.outer_state))
        return new_updates, DilocoState(
            count=optax.safe_int32_increment(state.count), center=center,
            outer_state=outer_state, inner_state=inner_state)

    return optax.GradientTransformation(init_fn, update_fn)


def _nesterov_sgd(learning_rate: optax.ScalarOrSchedule, momentum: float
                  ) -> optax.GradientTransformation:
    """``optax.sgd`` with Nesterov momentum (plain SGD at momentum 0)."""
    if momentum == 0:
        return optax.sgd(learning_rate)
    return optax.sgd(learning_rate, momentum=momentum, nesterov=True)


def nesterov_diloco(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float,
    period: int,
    outer_learning_rate: float = 0.7,
    outer_momentum: float = 0.9,
    axis_name: AxisName = "workers",
) -> optax.GradientTransformation:
    """DiLoCo with Nesterov SGD inside and out (registry name ``diloco``).

        inner = optax.sgd(learning_rate, momentum, nesterov=True)
        outer = optax.sgd(outer_learning_rate, outer_momentum, nesterov=True)

    Args:
        learning_rate: the inner rate eta, a number or an optax schedule.
        momentum: the inner Nesterov momentum in [0, 1).
        period: H, inner steps per outer step.
        outer_learning_rate: the outer rate (DiLoCo: 0.7; 1.0 with momentum 0 is local SGD).
        outer_momentum: the outer Nesterov momentum in [0, 1) (DiLoCo: 0.9).
        axis_name: the worker axis of the all-reduce.
    """
    checks.check_rate("learning_rate", learning_rate)
    checks.check_momentum(momentum)
    checks.check_rate("outer_learning_rate", outer_learning_rate)
    checks.check_interval("outer_momentum", outer_momentum, 0.0, 1.0)
    if outer_momentum == 1.0:
        raise ValueError("outer_momentum must be < 1, got 1.0.")
    return diloco(_nesterov_sgd(learning_rate, momentum),
                  _nesterov_sgd(outer_learning_rate, outer_momentum), period, axis_name)
