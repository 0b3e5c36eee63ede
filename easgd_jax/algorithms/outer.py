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

Asynchronous DiLoCo (:func:`async_diloco`; Liu et al. 2024, "Asynchronous Local-SGD"),
worker i on its own clock t_i: the inner step, and after each block of H steps it sends its
displacement since it last started from the center; the master applies ONE outer step per
arrival and the worker restarts from the new center:

    x_i <- x_i + inner(g(x_i));  s_i <- s_i + inner(g(x_i))        (s_i: the displacement)
    if (t_i + 1) mod H == 0:   master: x~ <- x~ + outer.update(-s_i)   (= x~_read - x_i)
                               x_i <- x~;  s_i <- 0
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from easgd_jax.algorithms import base, checks, clock, exchange
from easgd_jax.algorithms.base import AsyncRule, AsyncWorkerState, AxisName, fresh_copy
from easgd_jax.algorithms.baselines import warmup_cosine
from easgd_jax.algorithms.collectives import axis_size
from easgd_jax.algorithms.momentum import nesterov_sgd


class DilocoState(NamedTuple):
    """State of :func:`diloco` on one worker (every option: the fields an option does not
    use are None, an empty pytree node).

    Attributes:
        count: the local clock t (int32); the outer step closes the block when
            ``(count + 1) % period == 0`` (``% (period / F)`` with F fragments).
        center: the center x~ (the outer parameters), identical on every worker.
        outer_state: the outer optimizer's state (e.g. its Nesterov momentum), identical on
            every worker; a tuple of F states with F > 1 fragments.
        inner_state: the worker's inner optimizer state (kept across outer steps).
        residual: the worker's rounding residual e_i of its last cast message, in the
            center's dtypes and shapes (per worker); None without ``error_feedback``.
        copies_agree: True while every outer step found the workers' copies of the center
            equal (a boolean); :func:`easgd_jax.check_agreement` reads it.
    """

    count: jax.Array
    center: optax.Params
    outer_state: optax.OptState
    inner_state: optax.OptState
    residual: optax.Updates = None
    copies_agree: jax.Array = None


# The former name of the state with error feedback: the same type.
DilocoFeedbackState = DilocoState


def outer_gradient(center: optax.Params, mean: optax.Params) -> optax.Updates:
    """DiLoCo's outer "gradient" delta = x~ - mean_i x_i, in the center's dtype."""
    return jax.tree.map(lambda c, m: (c - m).astype(c.dtype), center, mean)


def diloco(
    inner: optax.GradientTransformation,
    outer: optax.GradientTransformation,
    period: int,
    axis_name: AxisName = "workers",
    center_dtype: Any = base.CENTER_DTYPE,
    *,
    num_fragments: int | None = None,
    exchange_dtype: Any = None,
    error_feedback: bool = False,
    on_disagreement: str = "nan",
) -> optax.GradientTransformationExtraArgs:
    """DiLoCo (Douillard et al., 2023): ``period`` inner steps, then one outer step.

        x_i <- x_i + inner(g_i);   if (t + 1) mod H == 0:
            x~ <- x~ + outer.update(x~ - mean_i x_i);   x_i <- x~

    Streaming fragments (``num_fragments`` = F > 1, :mod:`easgd_jax.algorithms.exchange`):
    the raveled parameters are cut into F contiguous slices; with s = H / F,

        if (t + 1) mod s == 0:   f = ((t + 1) / s) mod F
            x~_f <- x~_f + outer_f.update(x~_f - mean_i x_{i,f});   x_{i,f} <- x~_f

    each fragment with its own outer state outer_f (F = 1: the rule above exactly).

    Compressed exchange (``exchange_dtype``): each worker sends its displacement from the
    center, cast; the outer gradient is minus the mean of the casts, back in float32:

        r_i = (x_{i,f} - x~_f) + e_i;   w_i = cast(r_i);   e_i <- r_i - w_i   (e_i = 0
        without ``error_feedback``);    x~_f - mean_i x_{i,f}  ~  -(sum_i w_i) / p

    Args:
        inner: the workers' optimizer (the paper: AdamW), any optax transformation.
        outer: the center's optimizer applied to the outer gradient x~ - mean_i x_i (the
            paper: ``optax.sgd(0.7, momentum=0.9, nesterov=True)``; ``optax.sgd(1.0)``
            gives periodic model averaging).
        period: H >= 1, the inner steps per outer step.
        axis_name: the mapped worker axis of the all-reduce.
        center_dtype: the center (and the outer state) is kept in ``promote_types(param
            dtype, center_dtype)``: float32 by default, as EASGD's; None keeps the params'.
        num_fragments: F dividing H, or None (= 1): the streaming fragments.
        exchange_dtype: None (the all-reduce in the center's dtype, of the x_i), or the
            dtype of the all-reduced displacements, e.g. ``"bfloat16"``.
        error_feedback: keep each worker's rounding residual e_i (the state's
            ``residual``) and add it to its next message.
        on_disagreement: what the outer step does when the workers' centers differ:
            ``"nan"`` (the default: a NaN center, the disagreement recorded in the state's
            ``copies_agree`` for :func:`easgd_jax.check_agreement`, no host callback) or
            ``"raise"`` (also a host callback that raises at the exchange); see
            :func:`~easgd_jax.algorithms.collectives.check_on_disagreement`.

    Returns:
        A ``GradientTransformationExtraArgs`` with state :class:`DilocoState` for every
        option (``residual`` None without error feedback; ``outer_state`` a tuple of F
        states with fragments). ``init`` runs per worker and sets the center to that
        worker's params: every worker must start from the same point
        (``easgd_jax.replicate``); each outer step checks, in its one all-reduce, that the
        workers' centers agree (as EASGD's exchange does). ``update`` requires ``params``;
        its extra argument ``communicate`` (None, True or False) is the phase of the clock
        (t + 1) mod (H / F) when the caller knows it (:mod:`easgd_jax.algorithms.clock`),
        the other extra arguments go to ``inner``.
    """
    checks.check_period("period", period)
    checks.check_axis_name(axis_name)
    base.check_center_dtype(center_dtype)
    sync = exchange.make_exchange(period, num_fragments, exchange_dtype, error_feedback,
                                  axis_name, on_disagreement)
    inner = optax.with_extra_args_support(inner)

    def init_fn(params: optax.Params) -> DilocoState:
        center = base.center_copy(params, center_dtype)
        outer_state, residual = sync.init(center, outer)
        return DilocoState(jnp.zeros([], jnp.int32), center, outer_state, inner.init(params),
                           residual, jnp.ones([], bool))

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError("diloco needs params: call update(grads, state, params).")
        phase, extra_args = clock.phase_argument(extra_args)
        local, inner_state = inner.update(updates, state.inner_state, params, **extra_args)

        def message(part, center):  # x_{i,f}, or x_{i,f} - x~_f when compressed
            moved = optax.apply_updates(params, local)  # x_i after its inner step
            moved = part.take(jax.tree.map(lambda x, c: x.astype(c.dtype), moved, center))
            if sync.wire_dtype is None:
                return moved, None
            return jax.tree.map(lambda x, c: x - c, moved, part.take(center)), None

        def apply(part, total, center_f, outer_state, aux):
            del aux  # center_f: NaN if the centers disagreed
            if sync.wire_dtype is None:
                mean = jax.tree.map(lambda t: t / axis_size(axis_name), total)
                delta = outer_gradient(center_f, mean)
            else:
                delta = jax.tree.map(lambda t: -t / axis_size(axis_name), total)
            outer_updates, outer_state = outer.update(delta, outer_state, center_f)
            center_f = optax.apply_updates(center_f, outer_updates)
            reset = jax.tree.map(lambda c, x: c - x.astype(c.dtype), center_f,
                                 part.take(params))
            new_updates = jax.tree.map(lambda u, x: u.astype(x.dtype),
                                       part.put(local, reset), params)
            return new_updates, center_f, outer_state

        new_updates, (center, outer_state, residual, copies_agree) = sync.run(
            state.count + 1, phase, state.center, state.outer_state, state.residual,
            state.copies_agree, message, apply, local)
        return new_updates, DilocoState(optax.safe_int32_increment(state.count), center,
                                        outer_state, inner_state, residual, copies_agree)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def nesterov_diloco(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float,
    period: int,
    outer_learning_rate: float = 0.7,
    outer_momentum: float = 0.9,
    axis_name: AxisName = "workers",
    center_dtype: Any = base.CENTER_DTYPE,
    num_fragments: int | None = None,
    exchange_dtype: str | None = None,
    error_feedback: bool = False,
    on_disagreement: str = "nan",
) -> optax.GradientTransformationExtraArgs:
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
        center_dtype: as in :func:`diloco`.
        num_fragments: F, streaming fragments (None: 1), as in :func:`diloco`.
        exchange_dtype: the dtype of the all-reduced displacements (None: uncompressed).
        error_feedback: feed each worker's rounding residual into its next message.
        on_disagreement: ``"nan"`` (default) or ``"raise"``, as in :func:`diloco`.
    """
    return diloco(nesterov_sgd(learning_rate, momentum),
                  nesterov_sgd(outer_learning_rate, outer_momentum, "outer_"), period, axis_name,
                  center_dtype, num_fragments=num_fragments, exchange_dtype=exchange_dtype,
                  error_feedback=error_feedback, on_disagreement=on_disagreement)


def adamw_diloco(
    learning_rate: float,
    period: int,
    warmup_steps: int = 0,
    decay_steps: int = 0,
    b1: float = 0.9,
    b2: float = 0.95,
    weight_decay: float = 0.1,
    outer_learning_rate: float = 0.7,
    outer_momentum: float = 0.9,
    axis_name: AxisName = "workers",
    center_dtype: Any = base.CENTER_DTYPE,
    num_fragments: int | None = None,
    on_disagreement: str = "nan",
) -> optax.GradientTransformationExtraArgs:
    """DiLoCo as its paper runs it on language models (Douillard et al. 2023, arXiv
    2311.08105, Algorithm 1; registry name ``diloco_adamw``): inner AdamW with a linear
    warm-up and cosine decay, outer Nesterov momentum::

        inner = optax.adamw(warmup_cosine(eta, W, D), b1, b2, weight_decay=lambda)
        outer = optax.sgd(outer_learning_rate, outer_momentum, nesterov=True)

    Each worker's AdamW state (and its schedule's count, the local step) is its own and kept
    across outer steps, as in the paper.

    Args:
        learning_rate: the inner peak rate eta.
        period: H, inner steps per outer step.
        warmup_steps, decay_steps: the inner schedule
            (:func:`~easgd_jax.algorithms.baselines.warmup_cosine`).
        b1, b2: Adam's moment decay rates in [0, 1).
        weight_decay: lambda >= 0, decoupled.
        outer_learning_rate: the outer rate (the paper: 0.7).
        outer_momentum: the outer Nesterov momentum in [0, 1) (the paper: 0.9).
        axis_name: the worker axis of the all-reduce.
        center_dtype: as in :func:`diloco`.
        num_fragments: F, streaming fragments (None: 1), as in :func:`diloco`.
        on_disagreement: ``"nan"`` (default) or ``"raise"``, as in :func:`diloco`.
    """
    checks.check_momentum(b1, "b1")
    checks.check_momentum(b2, "b2")
    checks.check_interval("weight_decay", weight_decay, 0.0, float("inf"))
    inner = optax.adamw(warmup_cosine(learning_rate, warmup_steps, decay_steps), b1, b2,
                        weight_decay=weight_decay)
    return diloco(inner, nesterov_sgd(outer_learning_rate, outer_momentum, "outer_"), period,
                  axis_name, center_dtype, num_fragments=num_fragments,
                  on_disagreement=on_disagreement)


# --------------------------------------------------------------------------- asynchronous


class DilocoExtra(NamedTuple):
    """The ``extra`` of an asynchronous DiLoCo worker: the state of its inner optimizer
    (``optax.sgd(eta, mu, nesterov=True)``, whose trace is m_i) and its displacement s_i
    since it last started from the center."""

    inner_state: optax.OptState
    displacement: optax.Updates


class DilocoMasterState(NamedTuple):
    """The master of asynchronous DiLoCo: the center x~ and the state of the outer
    optimizer (``optax.sgd(eta_o, mu_o, nesterov=True)``, whose trace is M)."""

    center: optax.Params
    outer_state: optax.OptState


def async_diloco(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float,
    period: int,
    outer_learning_rate: float = 0.7,
    outer_momentum: float = 0.9,
    num_workers: int = 1,
) -> AsyncRule[DilocoExtra, DilocoMasterState]:
    """Asynchronous DiLoCo with Nesterov SGD inside and out: one outer step per arrival.

        m_i <- g + mu m_i;  u = -eta (g + mu m_i);  x_i <- x_i + u;  s_i <- s_i + u
        (t_i + 1) mod H == 0:  master: d = -s_i / p          (= (x~_read - x_i) / p)
                                       M <- d + mu_o M;  x~ <- x~ - eta_o (d + mu_o M)
                               x_i <- x~;  s_i <- 0       (the inner trace m_i is kept)

    Each arrival carries ONE worker's displacement where the synchronous outer step averages
    p of them: it counts 1/p (as asynchronous EASGD's alpha = beta / p), so that p arrivals
    move the center about as far as one synchronous outer step. With one worker it is
    :func:`nesterov_diloco` exactly (the inner step happens in ``before``, so the exchange
    closes the block on the step's new x_i).

    Both steps are optax's Nesterov SGD
    (:func:`~easgd_jax.algorithms.momentum.nesterov_sgd`): the inner one's state in the
    worker's ``extra`` (a schedule runs on its count, the local clock t_i), the outer one's
    in the master.

    Args:
        learning_rate: the inner rate eta, a number or an optax schedule of t_i.
        momentum: the inner Nesterov momentum in [0, 1).
        period: H, inner steps per block.
        outer_learning_rate: the outer rate eta_o.
        outer_momentum: the outer Nesterov momentum mu_o in [0, 1).
        num_workers: p (the executor passes it).
    """
    inner = nesterov_sgd(learning_rate, momentum)  # checks both
    checks.check_period("period", period)
    checks.check_period("num_workers", num_workers)
    outer = nesterov_sgd(outer_learning_rate, outer_momentum, "outer_")

    def zeros(tree):
        return jax.tree.map(jnp.zeros_like, tree)

    def init_worker(params):
        return base.init_worker(params, DilocoExtra(inner.init(params), zeros(params)))

    def init_master(params):
        return DilocoMasterState(fresh_copy(params), outer.init(params))

    def before(worker, grad, loss):
        del loss
        step, inner_state = inner.update(grad, worker.extra.inner_state, worker.params)
        return AsyncWorkerState(base.tree_add(worker.params, step), worker.count, DilocoExtra(
            inner_state, base.tree_add(worker.extra.displacement, step)))

    def communicates(count, total):
        del total
        return (count + 1) % period == 0

    def message(worker, grad, index):
        del grad, index
        return (worker.extra.displacement,), ()

    def exchange(master, vectors, scalars):
        del scalars
        (displacement,) = vectors
        delta = jax.tree.map(lambda d: -d / num_workers, displacement)  # (x~_read - x_i)/p
        center_delta, outer_state = outer.update(delta, master.outer_state, master.center)
        center = base.tree_add(master.center, center_delta)
        return DilocoMasterState(center, outer_state), center_delta, (center,)

    def receive(worker, replies):
        (center,) = replies
        params = jax.tree.map(lambda c, x: c.astype(x.dtype), center, worker.params)
        return AsyncWorkerState(params, worker.count,
                                DilocoExtra(worker.extra.inner_state, zeros(params)))

    def after(worker, grad, communicated):
        del grad, communicated
        return worker._replace(count=optax.safe_int32_increment(worker.count))

    return AsyncRule(
        name="diloco", init_worker=init_worker, init_master=init_master,
        gradient_point=lambda worker: worker.params, communicates=communicates,
        before=before, message=message, exchange=exchange, receive=receive, after=after)
