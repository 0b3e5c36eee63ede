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
:func:`elastic_exchange`, which the asynchronous rules apply one worker at a time.

Asynchronous EASGD (Algorithm 1), :func:`async_easgd`, worker i on its own clock t_i, forever:

    x <- x_i                                   (snapshot)
    if tau divides t_i:  x_i <- x_i - alpha (x - x~);   master: x~ <- x~ + alpha (x - x~)
    x_i <- x_i - eta g(x);   t_i <- t_i + 1

Asynchronous EAMSGD (Algorithm 2), :func:`async_eamsgd`: the local step is Nesterov momentum
at the snapshot, v_i <- delta v_i - eta g(x + delta v_i); x_i <- x_i + v_i (the elastic term
never enters v). Both follow the protocol of :class:`~easgd_jax.algorithms.base.AsyncRule`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from easgd_jax.algorithms import base, checks, clock, exchange
from easgd_jax.algorithms.base import AsyncRule, AsyncWorkerState, AxisName, CenterState
from easgd_jax.algorithms.collectives import check_agreement
from easgd_jax.algorithms.momentum import nesterov, nesterov_origin, nesterov_sgd


class ElasticAveragingState(NamedTuple):
    """State of :func:`elastic_averaging` on one worker (every option: the fields an option
    does not use are None, an empty pytree node).

    Attributes:
        count: the local clock t_i (int32); the exchange happens when ``count % period == 0``
            (``count % (period / F) == 0`` with F fragments).
        center: the center variable x~, identical on every worker.
        inner_state: the state of the local optimizer.
        outer_state: the state of the ``outer`` optimizer of the center, identical on every
            worker (a tuple of F states with F > 1 fragments); None without one.
        residual: the worker's rounding residual e_i of its last cast message, in the
            center's dtypes and shapes (per worker); None without ``error_feedback``.
        copies_agree: True while every exchange found the workers' copies of the center
            equal (a boolean); :func:`easgd_jax.check_agreement` reads it.
    """

    count: jax.Array
    center: optax.Params
    inner_state: optax.OptState
    outer_state: optax.OptState = None
    residual: optax.Updates = None
    copies_agree: jax.Array = None


# The former names of the states with an outer optimizer / with error feedback: the same type.
ElasticOuterState = ElasticAveragingState
ElasticFeedbackState = ElasticAveragingState


def elastic_exchange(
    worker: optax.Params, center: optax.Params, moving_rate: float
) -> tuple[optax.Updates, optax.Updates]:
    """The elastic exchange of one worker with the center, on the old values.

    Returns ``(worker_delta, center_delta)`` = ``(-alpha (x_i - x~), +alpha (x_i - x~))``:
    the force is symmetric. Synchronous EASGD sums the center deltas over the workers. Each
    delta is in the dtype of what it moves (a float32 center of bfloat16 workers).
    """
    center_delta = jax.tree.map(
        lambda x, c: (moving_rate * (x - c)).astype(c.dtype), worker, center)
    worker_delta = jax.tree.map(lambda d, x: (-d).astype(x.dtype), center_delta, worker)
    return worker_delta, center_delta


def elastic_averaging(
    inner: optax.GradientTransformation,
    moving_rate: float,
    period: int = 1,
    axis_name: AxisName = "workers",
    *,
    worker_variable: Callable[[optax.Params, Any], optax.Params] | None = None,
    outer: optax.GradientTransformation | None = None,
    center_dtype: Any = base.CENTER_DTYPE,
    num_fragments: int | None = None,
    exchange_dtype: Any = None,
    error_feedback: bool = False,
    on_disagreement: str = "nan",
) -> optax.GradientTransformationExtraArgs:
    """Wraps the local optimizer ``inner`` with the elastic exchange of synchronous EASGD.

    Update of worker i at local step t (eqs 5-6 of Zhang et al., 2015):

        u_i = inner(g_i) - alpha * (x_i - x~) * [tau | t]
        x~ <- x~ + alpha * sum_i (x_i - x~) * [tau | t]

    With an ``outer`` optimizer the center's move is an outer step on the negated elastic
    sum, the outer "gradient" (beta (x~ - mean_i x_i), DiLoCo's delta scaled by beta):

        x~ <- x~ + outer.update(-alpha * sum_i (x_i - x~), outer_state, x~)

    and the worker side is unchanged; ``outer = optax.sgd(1.0)`` (or None) is EASGD exactly.

    Streaming fragments (``num_fragments`` = F > 1, :mod:`easgd_jax.algorithms.exchange`):
    the raveled parameters are cut into F contiguous slices; with s = tau / F,

        if s | t:   f = (t / s) mod F;   x_{i,f} <- x_{i,f} - alpha (x_{i,f} - x~_f)
                    x~_f <- x~_f + alpha sum_i (x_{i,f} - x~_f)      (or outer_f's step)

    the other fragments untouched, each fragment with its own outer state (F = 1: the rule
    above exactly).

    Compressed exchange (``exchange_dtype``): the center's move is built from the workers'
    elastic differences cast before the all-reduce; the workers' own force stays exact:

        r_i = alpha (x_{i,f} - x~_f) + e_i;   w_i = cast(r_i);   e_i <- r_i - w_i   (e_i = 0
        without ``error_feedback``);   x~_f <- x~_f + sum_i w_i   (or outer_f on -sum_i w_i)

    so what the center did not receive of the (symmetric) force is, with feedback, sent at
    the worker's next exchange of that fragment.

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
        outer: an optax optimizer for the center (e.g. ``optax.sgd(1.0, momentum=0.9,
            nesterov=True)``), or None: the plain center step.
        center_dtype: the center is kept in ``promote_types(param dtype, center_dtype)``:
            float32 by default, so bfloat16 params get a float32 center (a bf16 center
            cannot take the small elastic steps); None keeps the params' dtype.
        num_fragments: F dividing tau, or None (= 1): the streaming fragments.
        exchange_dtype: None (the all-reduce in the center's dtype), or the dtype of the
            all-reduced elastic differences, e.g. ``"bfloat16"``.
        error_feedback: keep each worker's rounding residual e_i (the state's
            ``residual``) and add it to its next message.
        on_disagreement: what the exchange does when the workers' centers differ:
            ``"nan"`` (the default: a NaN center, the disagreement recorded in the state's
            ``copies_agree`` for :func:`easgd_jax.check_agreement`, no host callback) or
            ``"raise"`` (also a host callback that raises at the exchange); see
            :func:`~easgd_jax.algorithms.collectives.check_on_disagreement`.

    Returns:
        An optax ``GradientTransformationExtraArgs`` with state
        :class:`ElasticAveragingState` for every option (``outer_state`` None without an
        ``outer`` optimizer, a tuple of F states with fragments; ``residual`` None without
        error feedback).
        ``init`` runs once PER WORKER (``jax.vmap(tx.init)(stacked_params)``) and sets the
        center to that worker's params: every worker must start from the same point (as in
        the paper; ``easgd_jax.replicate(params, p)``) for the replicated centers to agree.
        Every exchange checks that they do, in its one all-reduce; when they differ the
        center turns NaN and :func:`easgd_jax.center` / :func:`easgd_jax.check_agreement`
        raise an error naming the cause. ``update`` requires ``params``; its extra
        argument ``communicate`` (None, True or False) is the phase of the clock when the
        caller knows it (:mod:`easgd_jax.algorithms.clock`), the other extra arguments go
        to ``inner``.

    In an ``optax.chain`` the elastic transformation must come LAST: a transformation
    after it (``optax.scale``, clipping) would act on the elastic force too, e.g.
    ``chain(eamsgd, scale(0.5))`` halves alpha as well as eta. Put gradient
    transformations first (``chain(clip_by_global_norm(1.0), eamsgd(...))``);
    :func:`easgd_jax.algorithms.check_chain_order` refuses a state built otherwise.
    """
    checks.check_interval("moving_rate", moving_rate, 0.0, 1.0)
    checks.check_period("period", period)
    checks.check_axis_name(axis_name)
    base.check_center_dtype(center_dtype)
    sync = exchange.make_exchange(period, num_fragments, exchange_dtype, error_feedback,
                                  axis_name, on_disagreement)
    alpha = checks.scalar(moving_rate)
    inner = optax.with_extra_args_support(inner)

    def init_fn(params: optax.Params) -> ElasticAveragingState:
        center = base.center_copy(params, center_dtype)
        outer_state, residual = sync.init(center, outer)
        return ElasticAveragingState(jnp.zeros([], jnp.int32), center, inner.init(params),
                                     outer_state, residual, jnp.ones([], bool))

    def move_center(center, outer_state, elastic_sum):
        if outer is None:
            return jax.tree.map(lambda c, d: c + d, center, elastic_sum), outer_state
        gradient = jax.tree.map(jnp.negative, elastic_sum)
        outer_updates, outer_state = outer.update(gradient, outer_state, center)
        return optax.apply_updates(center, outer_updates), outer_state

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError("elastic_averaging needs params: call update(grads, state, params).")
        phase, extra_args = clock.phase_argument(extra_args)
        base.check_per_worker(state.center, params)
        worker = params if worker_variable is None else worker_variable(params, state.inner_state)
        local_updates, inner_state = inner.update(updates, state.inner_state, params,
                                                  **extra_args)

        def message(part, center):  # alpha (x_{i,f} - x~_f), and the worker's own force
            worker_delta, center_delta = elastic_exchange(part.take(worker),
                                                          part.take(center), alpha)
            return center_delta, worker_delta

        def apply(part, total, center_f, outer_state, worker_delta):
            center_f, outer_state = move_center(center_f, outer_state, total)
            if sync.fragments > 1:
                worker_delta = part.put(jax.tree.map(jnp.zeros_like, worker), worker_delta)
            return worker_delta, center_f, outer_state

        worker_delta, (center, outer_state, residual, copies_agree) = sync.run(
            state.count, phase, state.center, state.outer_state, state.residual,
            state.copies_agree, message, apply, jax.tree.map(jnp.zeros_like, worker))
        new_updates = jax.tree.map(
            lambda u, d: (u + d).astype(u.dtype), local_updates, worker_delta)
        return new_updates, ElasticAveragingState(optax.safe_int32_increment(state.count),
                                                  center, inner_state, outer_state, residual,
                                                  copies_agree)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def easgd(
    learning_rate: optax.ScalarOrSchedule,
    moving_rate: float,
    period: int = 1,
    axis_name: AxisName = "workers",
    center_dtype: Any = base.CENTER_DTYPE,
    num_fragments: int | None = None,
    exchange_dtype: str | None = None,
    error_feedback: bool = False,
    on_disagreement: str = "nan",
) -> optax.GradientTransformationExtraArgs:
    """Synchronous EASGD (Zhang et al., 2015, eqs 5-6): elastic averaging over plain SGD.

        x_i <- x_i - eta * g_i(x_i) - alpha * (x_i - x~) * [tau | t]
        x~  <- x~ + alpha * sum_i (x_i - x~) * [tau | t]

    Args:
        learning_rate: eta, a number or an optax schedule.
        moving_rate: alpha (paper: 0.9 / p).
        period: tau.
        axis_name: the worker axis of the collective.
        center_dtype: the center's dtype, at least (float32: bfloat16 params get a float32
            center); None: the params'. See :func:`elastic_averaging` (init per worker,
            last in a chain).
        num_fragments, exchange_dtype, error_feedback: the streaming fragments and the
            compressed exchange of :func:`elastic_averaging` (default: off).
        on_disagreement: ``"nan"`` (default) or ``"raise"``, as in :func:`elastic_averaging`.
    """
    checks.check_rate("learning_rate", learning_rate)
    return elastic_averaging(optax.sgd(learning_rate), moving_rate, period, axis_name,
                             center_dtype=center_dtype, num_fragments=num_fragments,
                             exchange_dtype=exchange_dtype, error_feedback=error_feedback,
                             on_disagreement=on_disagreement)


def eamsgd(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float,
    moving_rate: float,
    period: int = 1,
    axis_name: AxisName = "workers",
    center_dtype: Any = base.CENTER_DTYPE,
    num_fragments: int | None = None,
    exchange_dtype: str | None = None,
    error_feedback: bool = False,
    on_disagreement: str = "nan",
) -> optax.GradientTransformationExtraArgs:
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
        center_dtype: the center's dtype, at least (float32: bfloat16 params get a float32
            center); None: the params'. See :func:`elastic_averaging` (init per worker,
            last in a chain).
        num_fragments, exchange_dtype, error_feedback: the streaming fragments and the
            compressed exchange of :func:`elastic_averaging` (default: off).
        on_disagreement: ``"nan"`` (default) or ``"raise"``, as in :func:`elastic_averaging`.
    """
    return elastic_averaging(
        nesterov(learning_rate, momentum), moving_rate, period, axis_name,
        worker_variable=nesterov_origin(momentum), center_dtype=center_dtype,
        num_fragments=num_fragments, exchange_dtype=exchange_dtype,
        error_feedback=error_feedback, on_disagreement=on_disagreement)


def eamsgd_outer(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float,
    moving_rate: float,
    period: int = 1,
    outer_learning_rate: float = 1.0,
    outer_momentum: float = 0.0,
    axis_name: AxisName = "workers",
    center_dtype: Any = base.CENTER_DTYPE,
    num_fragments: int | None = None,
    exchange_dtype: str | None = None,
    error_feedback: bool = False,
    on_disagreement: str = "nan",
) -> optax.GradientTransformationExtraArgs:
    """EAMSGD whose center takes an outer Nesterov step (registry name ``eamsgd_outer``)::

        if tau | t:  x_i <- x_i - alpha (x_i - x~)
                     x~  <- x~ + outer(-alpha sum_i (x_i - x~))
        v_i <- delta v_i - eta g_i(x_i + delta v_i);  x_i <- x_i + v_i

    with ``outer = optax.sgd(outer_learning_rate, outer_momentum, nesterov=True)``. The
    defaults (rate 1, momentum 0) are :func:`eamsgd` exactly; momentum = 0 inside is EASGD
    with an outer step.

    Args:
        learning_rate: eta, a number or an optax schedule.
        momentum: delta in [0, 1), the workers' Nesterov momentum.
        moving_rate: alpha.
        period: tau.
        outer_learning_rate: the outer rate (>= 0).
        outer_momentum: the outer Nesterov momentum in [0, 1).
        axis_name: the worker axis of the collective.
        center_dtype: as in :func:`elastic_averaging`.
        num_fragments, exchange_dtype, error_feedback: the streaming fragments and the
            compressed exchange of :func:`elastic_averaging` (default: off).
        on_disagreement: ``"nan"`` (default) or ``"raise"``, as in :func:`elastic_averaging`.
    """
    # At momentum 0 the Nesterov form is plain SGD, exactly (u = -eta (g + 0 m)).
    outer = nesterov_sgd(outer_learning_rate, outer_momentum, "outer_")
    return elastic_averaging(
        nesterov(learning_rate, momentum), moving_rate, period, axis_name,
        worker_variable=nesterov_origin(momentum), outer=outer, center_dtype=center_dtype,
        num_fragments=num_fragments, exchange_dtype=exchange_dtype,
        error_feedback=error_feedback, on_disagreement=on_disagreement)


def center(opt_state: optax.OptState, worker: int | None = None) -> optax.Params:
    """The center x~ held in an optimizer state (searched by field name, at any depth).

    Args:
        opt_state: one worker's state, or the workers' states stacked along a leading axis
            (``jax.vmap(tx.init)``, the state a ``shard_map``/``vmap`` training step
            returns), or a ``flax.nnx.Optimizer``'s ``opt_state``.
        worker: None: the center as stored (stacked states give p identical copies,
            ``[p, ...]`` per leaf). An index: that worker's copy, without the worker axis
            (``center(stacked_state, worker=0)`` is THE center of a stacked run).

    Returns:
        The center as a pytree of arrays; Flax nnx ``Variable`` wrappers (``OptVariable``)
        are unwrapped and an ``nnx.State`` becomes a plain nested dict, like ``params``.
    """
    found = optax.tree_utils.tree_get(opt_state, "center")
    if found is None:
        raise ValueError("this optimizer state holds no center.")
    check_agreement(opt_state)
    found = _unwrap_nnx(found)
    if worker is None:
        return found
    if isinstance(worker, bool) or not isinstance(worker, int):
        raise ValueError(f"worker must be an int index or None, got {worker!r}.")
    leaves = jax.tree.leaves(found)
    size = leaves[0].shape[0] if leaves and leaves[0].ndim else 0
    if not all(a.ndim and a.shape[0] == size for a in leaves) or not -size <= worker < size:
        raise ValueError(
            f"center(..., worker={worker}) takes one copy along the leading worker axis of "
            f"a stacked state; this center's leaves have shapes "
            f"{[tuple(a.shape) for a in leaves][:4]}. For one worker's own state use "
            "center(state) (worker=None).")
    return jax.tree.map(lambda a: _take_worker(a, worker), found)


def _take_worker(a: Any, worker: int) -> Any:
    """``a[worker]``; on a mesh with ``Explicit`` axes (where an index of a sharded axis
    must name its output sharding) the copy keeps the sharding of the other axes."""
    sharding = getattr(a, "sharding", None)
    if not isinstance(sharding, jax.sharding.NamedSharding):
        return a[worker]
    mesh = sharding.mesh
    explicit = {name for name, kind in zip(mesh.axis_names, mesh.axis_types, strict=True)
                if kind == jax.sharding.AxisType.Explicit}
    if not explicit:
        return a[worker]

    def kept(entry):  # the Explicit axes of one dimension's entry (Auto ones are XLA's)
        names = entry if isinstance(entry, tuple) else (entry,)
        names = tuple(n for n in names if n in explicit)
        return names if len(names) > 1 else (names[0] if names else None)

    spec = jax.sharding.PartitionSpec(*(kept(e) for e in sharding.spec[1:]))
    return a.at[worker].get(out_sharding=jax.sharding.NamedSharding(mesh, spec))


def _unwrap_nnx(tree: Any) -> Any:
    """``tree`` with flax.nnx Variables replaced by their values and nnx States by dicts
    (nothing to do, and nothing imported, when flax.nnx is not in use)."""
    if "flax.nnx" not in sys.modules:
        return tree
    from flax import nnx

    if isinstance(tree, nnx.State):
        tree = nnx.to_pure_dict(tree)
    return jax.tree.map(lambda v: v.get_value() if isinstance(v, nnx.Variable) else v, tree,
                        is_leaf=lambda v: isinstance(v, nnx.Variable))


# --------------------------------------------------------------------------- asynchronous


class ElasticExtra(NamedTuple):
    """The ``extra`` of an asynchronous elastic worker: the state of its local optimizer
    (:func:`async_easgd`: ``optax.sgd``'s; :func:`async_eamsgd`: the look-ahead Nesterov
    momentum's, whose ``velocity`` is v_i)."""

    inner_state: optax.OptState


# The former name of the extra of asynchronous EAMSGD: the same type.
EamsgdExtra = ElasticExtra


def _elastic_master_exchange(alpha: float):
    def exchange(master: CenterState, vectors: base.Vectors, scalars: base.Scalars):
        del scalars
        (x,) = vectors
        worker_delta, center_delta = elastic_exchange(x, master.center, alpha)
        return (CenterState(base.tree_add(master.center, center_delta)), center_delta,
                (worker_delta,))

    return exchange


def _async_elastic(name: str, inner: optax.GradientTransformation, moving_rate: float,
                   period: int, momentum: float | None) -> AsyncRule[ElasticExtra, CenterState]:
    """Algorithms 1-2 of Zhang et al. (2015) over the local optimizer ``inner``: the elastic
    exchange with the master every tau local steps, on the snapshot x; then the local step
    on the gradient at the snapshot (``momentum`` None) or at its look-ahead point
    x + delta v_i (``inner`` is :func:`~easgd_jax.algorithms.momentum.nesterov`, whose
    new velocity v_i moves x_i)."""
    checks.check_interval("moving_rate", moving_rate, 0.0, 1.0)
    checks.check_period("period", period)
    alpha = checks.scalar(moving_rate)  # (a traced rate stays traced: grids under vmap)

    def init_worker(params):
        return base.init_worker(params, ElasticExtra(inner.init(params)))

    def gradient_point(worker):
        if momentum is None:
            return worker.params
        return jax.tree.map(lambda x, v: (x + momentum * v).astype(x.dtype), worker.params,
                            worker.extra.inner_state.velocity)

    def after(worker, grad, communicated):
        del communicated
        updates, inner_state = inner.update(grad, worker.extra.inner_state, worker.params)
        step = updates if momentum is None else inner_state.velocity  # x_i <- x_i + v_i
        return AsyncWorkerState(base.tree_add(worker.params, step),
                                optax.safe_int32_increment(worker.count),
                                ElasticExtra(inner_state))

    return AsyncRule(
        name=name, init_worker=init_worker, init_master=base.init_center_master,
        gradient_point=gradient_point, communicates=base.periodic(period),
        before=base.keep_worker, message=base.send_params,
        exchange=_elastic_master_exchange(alpha), receive=base.receive_delta, after=after)


def async_easgd(
    learning_rate: optax.ScalarOrSchedule, moving_rate: float, period: int = 1
) -> AsyncRule[ElasticExtra, CenterState]:
    """Asynchronous EASGD (Algorithm 1): elastic exchange every tau local steps, then SGD.

        tau | t_i:  x_i <- x_i - alpha (x - x~);  x~ <- x~ + alpha (x - x~)
        x_i <- x_i - eta g(x)                              (x: the snapshot before the exchange)

    The local step is ``optax.sgd(learning_rate)`` (its state in the worker's ``extra``;
    a schedule runs on its count, the local clock t_i).

    Args:
        learning_rate: eta, a number or an optax schedule of the local clock t_i.
        moving_rate: alpha in [0, 1] (paper: 0.9 / p).
        period: tau >= 1.
    """
    checks.check_rate("learning_rate", learning_rate)
    return _async_elastic("easgd", optax.sgd(learning_rate), moving_rate, period, None)


def async_eamsgd(
    learning_rate: optax.ScalarOrSchedule, momentum: float, moving_rate: float, period: int = 1
) -> AsyncRule[ElasticExtra, CenterState]:
    """Asynchronous EAMSGD (Algorithm 2): Algorithm 1 with a Nesterov local step.

        tau | t_i:  x_i <- x_i - alpha (x - x~);  x~ <- x~ + alpha (x - x~)
        v_i <- delta v_i - eta g(x + delta v_i);  x_i <- x_i + v_i

    ``params`` of the worker state hold x_i and ``extra`` (:class:`ElasticExtra`) the state
    of :func:`~easgd_jax.algorithms.momentum.nesterov` (the local optimizer of synchronous
    EAMSGD), whose velocity is v_i; the gradient is taken at the look-ahead point
    x + delta v_i of the snapshot. delta = 0 is :func:`async_easgd`. (``optax.sgd(...,
    nesterov=True)`` writes the same rule as u = -eta (g + delta m) on a trace m, a
    different rounding: the paper's form is kept.)

    Args:
        learning_rate: eta, a number or an optax schedule of the local clock.
        momentum: delta in [0, 1) (paper: 0.99).
        moving_rate: alpha in [0, 1].
        period: tau >= 1.
    """
    inner = nesterov(learning_rate, momentum)  # checks both
    return _async_elastic("eamsgd", inner, moving_rate, period, checks.scalar(momentum))
