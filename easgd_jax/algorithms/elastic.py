"""Elastic averaging: EASGD and EAMSGD (Zhang, Choromanska & LeCun, NIPS 2015, arXiv 1412.6651).

p workers hold x_1..x_p and share a center x~. With eta the learning rate, alpha = eta * rho
the moving rate and tau the communication period, worker i at its local step t does
(eqs 5-6 of the paper, both right-hand sides on the OLD values):

    if tau divides t:   d_i = x_i - x~
                        x_i <- x_i - alpha * d_i            (elastic force on the worker)
                        x~  <- x~ + alpha * sum_i d_i       (= (1 - beta) x~ + beta * mean_i x_i)
    x_i <- x_i + local_step(g_i)                            (g_i taken before the exchange)

with beta = p * alpha; the first step (t = 0) communicates. The center is replicated in every
worker's state and kept identical by one all-reduce (``lax.psum`` over ``axis_name``) of the
elastic differences every tau steps, the server-free form of EASGD: the same code runs
under ``jax.vmap(axis_name=...)``, under ``jax.shard_map`` or both nested.

``elastic_averaging`` wraps any optax optimizer as the local step; ``easgd`` is elastic
averaging over plain SGD and ``eamsgd`` over Nesterov momentum with the gradient at the
look-ahead point (Algorithm 2). The exchange itself is the pure function
:func:`elastic_exchange`, which asynchronous executors apply one worker at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.flatten_util import ravel_pytree

from easgd_jax.algorithms import _validate, clock
from easgd_jax.algorithms.momentum import nesterov, nesterov_origin
from easgd_jax.algorithms.trees import fresh_copy

AxisName = str | tuple[str, ...]


class ElasticAveragingState(NamedTuple):
    """State of :func:`elastic_averaging` on one worker.

    Attributes:
        count: the local clock t_i (int32); the exchange happens when ``count % period == 0``.
        center: the center variable x~, identical on every worker.
        inner_state: the state of the local optimizer.
    """

    count: jax.Array
    center: optax.Params
    inner_state: optax.OptState


def elastic_exchange(
    worker: optax.Params, center: optax.Params, moving_rate: float
) -> tuple[optax.Updates, optax.Updates]:
    """The elastic exchange of one worker with the center, on the old values.

    Returns ``(worker_delta, center_delta)`` = ``(-alpha (x_i - x~), +alpha (x_i - x~))``:
    the force is symmetric. Synchronous EASGD sums the center deltas over the workers.
    """
    center_delta = jax.tree.map(
        lambda x, c: (moving_rate * (x - c)).astype(c.dtype), worker, center)
    worker_delta = jax.tree.map(lambda d: -d, center_delta)
    return worker_delta, center_delta


def tree_psum(tree: optax.Updates, axis_name: AxisName) -> optax.Updates:
    """``lax.psum`` of a whole pytree as ONE all-reduce of its flattened leaves.

    One collective per exchange is the whole communication of EASGD; it also keeps XLA:CPU
    from running several blocking all-reduces at once on its small intra-op thread pool,
    which can deadlock simulated devices on a machine with few cores.
    """
    flat, unravel = ravel_pytree(tree)
    return unravel(lax.psum(flat, axis_name))


def elastic_averaging(
    inner: optax.GradientTransformation,
    moving_rate: float,
    period: int = 1,
    axis_name: AxisName = "workers",
    *,
    worker_variable: Callable[[optax.Params, Any], optax.Params] | None = None,
) -> optax.GradientTransformation:
    """Wraps the local optimizer ``inner`` with the elastic exchange of synchronous EASGD.

    Update of worker i at local step t (eqs 5-6 of Zhang et al., 2015):

        u_i = inner(g_i) - alpha * (x_i - x~) * [tau | t]
        x~ <- x~ + alpha * sum_i (x_i - x~) * [tau | t]

    Args:
        inner: the local optimizer, e.g. ``optax.sgd(eta)``; it sees only the gradient.
        moving_rate: alpha = eta * rho >= 0. The paper uses beta = p * alpha = 0.9.
            alpha = 0 gives p independent copies of ``inner``.
        period: tau >= 1, the communication period; step 0 communicates.
        axis_name: the name(s) of the mapped worker axis the collective runs over
            (a ``vmap`` axis, a ``shard_map`` mesh axis, or a tuple of both).
        worker_variable: maps ``(params, inner_state)`` to the worker variable x_i the
            elastic force acts on, for local optimizers whose params are not x_i (the
            look-ahead point of Nesterov momentum). ``None``: x_i = params.

    Returns:
        An optax ``GradientTransformation`` with state :class:`ElasticAveragingState`.
        ``init`` sets the center to the given params: every worker must start from the same
        point (as in the paper) for the replicated centers to agree. ``update`` requires
        ``params``.
    """
    _validate.check_interval("moving_rate", moving_rate, 0.0, 1.0)
    _validate.check_period("period", period)
    _validate.check_axis_name(axis_name)
    alpha = float(moving_rate)

    def init_fn(params: optax.Params) -> ElasticAveragingState:
        return ElasticAveragingState(
            count=jnp.zeros([], jnp.int32),
            center=fresh_copy(params),
            inner_state=inner.init(params),
        )

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("elastic_averaging needs params: call update(grads, state, params).")
        worker = params if worker_variable is None else worker_variable(params, state.inner_state)
        local_updates, inner_state = inner.update(updates, state.inner_state, params)

        def exchange(center):
            worker_delta, center_delta = elastic_exchange(worker, center, alpha)
            center = jax.tree.map(
                lambda c, d: c + d, center, tree_psum(center_delta, axis_name))
            return worker_delta, center

        def no_exchange(center):
            return jax.tree.map(jnp.zeros_like, worker), center

        worker_delta, center = clock.on_clock(
            state.count, period, exchange, no_exchange, state.center)
        new_updates = jax.tree.map(
            lambda u, d: (u + d).astype(u.dtype), local_updates, worker_delta)
        return new_updates, ElasticAveragingState(
            count=optax.safe_int32_increment(state.count), center=center,
            inner_state=inner_state)

    return optax.GradientTransformation(init_fn, update_fn)


def easgd(
    learning_rate: optax.ScalarOrSchedule,
    moving_rate: float,
    period: int = 1,
    axis_name: AxisName = "workers",
) -> optax.GradientTransformation:
    """Synchronous EASGD (Zhang et al., 2015, eqs 5-6): elastic averaging over plain SGD.

        x_i <- x_i - eta * g_i(x_i) - alpha * (x_i - x~) * [tau | t]
        x~  <- x~ + alpha * sum_i (x_i - x~) * [tau | t]

    Args:
        learning_rate: eta, a number or an optax schedule.
        moving_rate: alpha (paper: 0.9 / p).
        period: tau.
        axis_name: the worker axis of the collective.
    """
    _validate.check_rate("learning_rate", learning_rate)
    return elastic_averaging(optax.sgd(learning_rate), moving_rate, period, axis_name)


def eamsgd(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float,
    moving_rate: float,
    period: int = 1,
    axis_name: AxisName = "workers",
) -> optax.GradientTransformation:
    """EAMSGD (Zhang et al., 2015, Algorithm 2): elastic averaging over Nesterov momentum.

        if tau | t:  x_i <- x_i - alpha (x_i - x~);  x~ <- x~ + alpha sum_i (x_i - x~)
        v_i <- delta v_i - eta g_i(x_i + delta v_i);  x_i <- x_i + v_i

    with x_i on the right-hand sides the value before the exchange. ``params`` are the
    look-ahead points w_i = x_i + delta v_i, where the caller takes the gradient; the elastic
    term never enters v. delta = 0 gives :func:`easgd`. Paper: delta = 0.99, alpha = 0.9 / p.

    Args:
        learning_rate: eta, a number or an optax schedule.
        momentum: delta in [0, 1).
        moving_rate: alpha.
        period: tau.
        axis_name: the worker axis of the collective.
    """
    return elastic_averaging(
        nesterov(learning_rate, momentum), moving_rate, period, axis_name,
        worker_variable=nesterov_origin(momentum))


def center(opt_state: optax.OptState) -> optax.Params:
    """The center x~ held in an optimizer state (searched by field name, at any depth)."""
    found = optax.tree_utils.tree_get(opt_state, "center")
    if found is None:
        raise ValueError("this optimizer state holds no center.")
    return found
