"""DOWNPOUR and its variants, the baselines of the EASGD paper: synchronous rounds and the
asynchronous rule.

The module is named after DistBelief (Dean et al., NIPS 2012), the system DOWNPOUR and its
server-side Adagrad come from, so that ``easgd_jax.downpour`` is the transformation and
shadows no module.

DOWNPOUR (Dean et al., NIPS 2012) as implemented in the EASGD authors' code (Zhang,
Choromanska & LeCun, NIPS 2015, arXiv 1412.6651, Section 5): p workers hold x_1..x_p, the
master holds the center x~, eta is the learning rate and tau the communication period.
Worker i at its local step t (t = 0 first, so the first step communicates) does

    d_i = -eta * g_i(x_i);   acc_i <- acc_i + d_i
    if tau divides t:   x~ <- x~ + sum_i acc_i        (the master applies every push)
                        x_i <- x~;  acc_i <- 0        (each worker fetches the new center)
    else:               x_i <- x_i + d_i

tau = 1 is synchronous parameter-server SGD on the SUM of the p gradients:
x~ <- x~ - eta * sum_i g_i(x~), and every worker holds x~.

Variants (all with the center replicated in every worker's state and kept identical by one
all-reduce, ``lax.psum`` over ``axis_name``, per communication step):

- MDOWNPOUR (tau = 1): Nesterov momentum on the master, velocity v on the center,
      v <- delta * v - eta * sum_i g_i(x~ + delta * v);   x~ <- x~ + v
  every worker's params are the look-ahead point x~ + delta * v.
- ADOWNPOUR: DOWNPOUR whose master also keeps z <- (1 - a_t) z + a_t x~ after each center
  update, a_t = 1 / (t + 1), t the master clock (center updates so far), z_0 = x~_0: z is the
  mean of the centers x~_0..x~_t.
- MVADOWNPOUR: the same with a constant rate a (paper: 0.001).
- ``downpour(..., server_adagrad=True)``: the master applies the pushes through Adagrad, as
  DistBelief's parameter server (Dean et al., 2012): per coordinate
      G <- G + sum_i acc_i^2;   x~ <- x~ + gamma * sum_i acc_i / sqrt(eps + G)

Conventions of this synchronous form: the master applies the SUM of the p pushes (as the
paper's master, which applies every worker's push); one synchronous exchange is one
center update (one tick of the master clock), where an asynchronous master would count p.
The rule of one worker's exchange is the pure function :func:`downpour_exchange`,
MDOWNPOUR's master update :func:`nesterov_master_step` and the master's Adagrad
:func:`server_adagrad_step`, so that asynchronous executors can apply them one worker at a
time.

Asynchronous DOWNPOUR (:func:`async_downpour`, the EASGD authors' code), worker i on its own
clock t_i: d = -eta g(x_i); acc_i += d; if tau divides t_i: master x~ += acc_i; x_i <- x~;
acc_i <- 0, else x_i += d (optionally the master applies the push through DistBelief's
Adagrad). It follows the protocol of :class:`~easgd_jax.algorithms.base.AsyncRule`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from easgd_jax.algorithms import base, checks, clock
from easgd_jax.algorithms.averages import constant_rate, polyak_rate, running_average
from easgd_jax.algorithms.base import AsyncRule, AsyncWorkerState, AxisName, CenterState, fresh_copy
from easgd_jax.algorithms.collectives import check_on_disagreement, tree_psum_checking


class DownpourState(NamedTuple):
    """State of :func:`downpour` on one worker.

    Attributes:
        count: the local clock t_i (int32); the exchange happens when ``count % period == 0``.
        center: the center x~, identical on every worker.
        accumulator: acc_i, the sum of the local steps d_i since the last push.
        copies_agree: True while every exchange found the workers' copies of the center
            equal (a boolean); :func:`easgd_jax.check_agreement` reads it.
    """

    count: jax.Array
    center: optax.Params
    accumulator: optax.Updates
    copies_agree: jax.Array = None


class AveragedDownpourState(NamedTuple):
    """State of :func:`adownpour` and :func:`mvadownpour` on one worker.

    Attributes:
        count: the local clock t_i (int32).
        center: the center x~, identical on every worker.
        accumulator: acc_i, the sum of the local steps since the last push.
        center_count: the master clock (int32), the number of center updates so far.
        average: z, the (moving) average of the centers; what the training loop evaluates.
        copies_agree: True while every exchange found the workers' copies of the center
            equal (a boolean); :func:`easgd_jax.check_agreement` reads it.
    """

    count: jax.Array
    center: optax.Params
    accumulator: optax.Updates
    center_count: jax.Array
    average: optax.Params
    copies_agree: jax.Array = None


class AdagradDownpourState(NamedTuple):
    """State of :func:`downpour` with ``server_adagrad=True`` on one worker.

    Attributes:
        count: the local clock t_i (int32).
        center: the center x~, identical on every worker.
        accumulator: acc_i, the sum of the local steps since the last push.
        adagrad_sum: G, the master's per-coordinate sum of the squared pushes.
        copies_agree: True while every exchange found the workers' copies of the center
            equal (a boolean); :func:`easgd_jax.check_agreement` reads it.
    """

    count: jax.Array
    center: optax.Params
    accumulator: optax.Updates
    adagrad_sum: optax.Updates
    copies_agree: jax.Array = None


class MomentumDownpourState(NamedTuple):
    """State of :func:`mdownpour` on one worker.

    Attributes:
        count: the step count (int32), also the master clock (every step communicates).
        center: the center x~, identical on every worker.
        velocity: the master's velocity v, identical on every worker.
        copies_agree: True while every exchange found the workers' copies of the center
            equal (a boolean); :func:`easgd_jax.check_agreement` reads it.
    """

    count: jax.Array
    center: optax.Params
    velocity: optax.Updates
    copies_agree: jax.Array = None


def downpour_exchange(
    worker: optax.Params, accumulator: optax.Updates, center: optax.Params
) -> tuple[optax.Updates, optax.Updates]:
    """One worker's DOWNPOUR exchange with the master: push acc_i, then fetch the center.

    Returns ``(worker_delta, center_delta)`` = ``(x~ + acc_i - x_i, acc_i)``: the master
    applies the push, x~ <- x~ + acc_i, and the worker then holds the updated center. An
    asynchronous executor applies it one worker at a time (``center`` = the master's value
    at that moment); synchronous DOWNPOUR sums the center deltas over all workers first, so
    every worker fetches x~ + sum_j acc_j instead.
    """
    center_delta = jax.tree.map(lambda c, a: a.astype(c.dtype), center, accumulator)
    worker_delta = jax.tree.map(
        lambda x, c, a: (c + a - x).astype(x.dtype), worker, center, center_delta)
    return worker_delta, center_delta


def nesterov_master_step(
    center: optax.Params,
    velocity: optax.Updates,
    gradient: optax.Updates,
    learning_rate: jax.Array | float,
    momentum: float,
) -> tuple[optax.Params, optax.Updates, optax.Params]:
    """MDOWNPOUR's master update for one push ``gradient`` (taken at x~ + delta * v).

        v <- delta * v - eta * gradient;   x~ <- x~ + v

    Returns ``(center, velocity, lookahead)``, with ``lookahead`` = x~ + delta * v the point
    the workers fetch and take their next gradient at. Synchronous MDOWNPOUR applies it once
    per step to the sum of the p gradients; an asynchronous master applies it per push.
    """
    velocity = jax.tree.map(
        lambda v, g: (momentum * v - learning_rate * g).astype(v.dtype), velocity, gradient)
    center = jax.tree.map(lambda c, v: (c + v).astype(c.dtype), center, velocity)
    lookahead = jax.tree.map(lambda c, v: (c + momentum * v).astype(c.dtype), center, velocity)
    return center, velocity, lookahead


def server_adagrad_step(
    push: optax.Updates,
    squared_push: optax.Updates,
    adagrad_sum: optax.Updates,
    rate: float,
    eps: float,
) -> tuple[optax.Updates, optax.Updates]:
    """The DistBelief master's Adagrad (Dean et al., 2012) applied to the pushes.

        G <- G + squared_push;   center_delta = gamma * push / sqrt(eps + G)

    per coordinate. One worker's push: ``squared_push = push**2``; synchronous DOWNPOUR
    passes the sums over the workers of the pushes and of their squares. Returns
    ``(center_delta, G)``.
    """
    adagrad_sum = jax.tree.map(
        lambda g, s: (g + s).astype(g.dtype), adagrad_sum, squared_push)
    center_delta = jax.tree.map(
        lambda a, g: (rate * a / jnp.sqrt(eps + g)).astype(a.dtype), push, adagrad_sum)
    return center_delta, adagrad_sum


def _local_step(updates: optax.Updates, params: optax.Params, eta: Any) -> optax.Updates:
    """d = -eta * g, in the dtype of the params."""
    return jax.tree.map(lambda g, x: (-eta * g).astype(x.dtype), updates, params)


def _downpour(
    learning_rate: optax.ScalarOrSchedule,
    period: int,
    axis_name: AxisName,
    average_rate: Callable[[jax.Array], jax.Array | float] | None = None,
    adagrad: tuple[float, float] | None = None,
    center_dtype: Any = base.CENTER_DTYPE,
    on_disagreement: str = "nan",
) -> optax.GradientTransformationExtraArgs:
    """DOWNPOUR(tau); with ``average_rate`` the master also keeps z (field ``average``), with
    ``adagrad = (gamma, eps)`` it applies the pushes through Adagrad. ``update`` takes the
    phase of the clock as its extra argument ``communicate`` (None: the clock decides;
    :mod:`easgd_jax.algorithms.clock`) and ignores other extra arguments."""
    checks.check_rate("learning_rate", learning_rate)
    checks.check_period("period", period)
    checks.check_axis_name(axis_name)
    base.check_center_dtype(center_dtype)
    check_on_disagreement(on_disagreement)
    rate = checks.schedule_value(learning_rate)

    def init_fn(params: optax.Params):
        center = base.center_copy(params, center_dtype)
        common = dict(count=jnp.zeros([], jnp.int32), center=center,
                      accumulator=jax.tree.map(jnp.zeros_like, params),
                      copies_agree=jnp.ones([], bool))
        if average_rate is not None:
            return AveragedDownpourState(
                **common, center_count=jnp.zeros([], jnp.int32),
                average=base.center_copy(params, center_dtype))
        if adagrad is not None:
            return AdagradDownpourState(
                **common, adagrad_sum=jax.tree.map(jnp.zeros_like, center))
        return DownpourState(**common)

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError("downpour needs params: call update(grads, state, params).")
        phase, _ = clock.phase_argument(extra_args)
        base.check_per_worker(state.center, params)
        step = _local_step(updates, params, rate(state.count))
        accumulator = jax.tree.map(lambda a, d: (a + d).astype(a.dtype), state.accumulator, step)
        # The master's part of the state: x~, and the master clock and z, or the Adagrad sum.
        master = {k: v for k, v in state._asdict().items() if k not in ("count", "accumulator")}

        def exchange(master):
            master = dict(master)
            _, push = downpour_exchange(params, accumulator, master["center"])
            if adagrad is None:
                center_delta, master["center"], agree = tree_psum_checking(
                    push, master["center"], axis_name, on_disagreement=on_disagreement)
            else:
                squared = jax.tree.map(jnp.square, push)
                (push, squared), master["center"], agree = tree_psum_checking(
                    (push, squared), master["center"], axis_name,  # one all-reduce
                    on_disagreement=on_disagreement)
                center_delta, master["adagrad_sum"] = server_adagrad_step(
                    push, squared, master["adagrad_sum"], *adagrad)
            master["copies_agree"] = master["copies_agree"] & agree
            center = jax.tree.map(
                lambda c, d: (c + d).astype(c.dtype), master["center"], center_delta)
            master["center"] = center
            if average_rate is not None:
                master["center_count"] = optax.safe_int32_increment(master["center_count"])
                master["average"] = running_average(
                    master["average"], center, average_rate(master["center_count"]))
            worker_delta = jax.tree.map(lambda c, x: (c - x).astype(x.dtype), center, params)
            return worker_delta, jax.tree.map(jnp.zeros_like, accumulator), master

        def local(master):
            return step, accumulator, master

        new_updates, accumulator, master = clock.on_clock(
            state.count, period, exchange, local, master, phase)
        return new_updates, type(state)(
            count=optax.safe_int32_increment(state.count), accumulator=accumulator, **master)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def downpour(
    learning_rate: optax.ScalarOrSchedule,
    period: int = 1,
    axis_name: AxisName = "workers",
    *,
    server_adagrad: bool = False,
    adagrad_rate: float = 0.01,
    adagrad_eps: float = 1e-8,
    center_dtype: Any = base.CENTER_DTYPE,
    on_disagreement: str = "nan",
) -> optax.GradientTransformationExtraArgs:
    """DOWNPOUR(tau) in synchronous rounds (the EASGD authors' version).

        d_i = -eta g_i(x_i);  acc_i += d_i
        tau | t:  x~ += sum_i acc_i;  x_i <- x~;  acc_i <- 0      else:  x_i += d_i

    tau = 1: x~ <- x~ - eta sum_i g_i(x~), synchronous parameter-server SGD.

    With ``server_adagrad`` the master applies the pushes through Adagrad, as DistBelief's
    parameter server does (Dean et al., 2012): per coordinate,

        G <- G + sum_i acc_i^2;   x~ <- x~ + gamma * sum_i acc_i / sqrt(eps + G)

    (sums of the squares of the individual pushes, as an asynchronous master applying them
    one at a time would accumulate). eta then only scales the workers' local steps between
    pushes and the pushes' size relative to eps: the first exchange moves each coordinate by
    about gamma. No warm start: all workers start together.

    Args:
        learning_rate: eta, a number or an optax schedule of the local clock.
        period: tau >= 1; step 0 communicates.
        axis_name: the worker axis of the all-reduce.
        server_adagrad: apply the pushes through the master's Adagrad (False: plain sum).
        adagrad_rate: gamma >= 0, Adagrad's rate on the master (in parameter units).
        adagrad_eps: eps > 0 under the square root.
        center_dtype: the master's arrays (x~, G) are kept in at least this dtype
            (float32: bfloat16 params get a float32 center); None: the params'.
        on_disagreement: what an exchange does when the workers' centers differ:
            ``"nan"`` (default) or ``"raise"``
            (:func:`~easgd_jax.algorithms.collectives.check_on_disagreement`).

    Returns:
        An optax ``GradientTransformation`` with state :class:`DownpourState`
        (:class:`AdagradDownpourState` with ``server_adagrad``); ``update`` requires
        ``params``. The training loop evaluates the center.
    """
    if not isinstance(server_adagrad, bool):
        raise ValueError(f"server_adagrad must be True or False, got {server_adagrad!r}.")
    if callable(adagrad_rate):
        raise ValueError(f"adagrad_rate must be a number >= 0, got {adagrad_rate!r}.")
    checks.check_rate("adagrad_rate", adagrad_rate)
    checks.check_positive("adagrad_eps", adagrad_eps)
    adagrad = ((checks.scalar(adagrad_rate), checks.scalar(adagrad_eps)) if server_adagrad
               else None)
    return _downpour(learning_rate, period, axis_name, adagrad=adagrad,
                     center_dtype=center_dtype, on_disagreement=on_disagreement)


def adownpour(
    learning_rate: optax.ScalarOrSchedule,
    period: int = 1,
    axis_name: AxisName = "workers",
    center_dtype: Any = base.CENTER_DTYPE,
    on_disagreement: str = "nan",
) -> optax.GradientTransformationExtraArgs:
    """ADOWNPOUR: :func:`downpour` whose master keeps the Polyak average of its centers.

        after the k-th center update:  z <- (1 - 1/(k+1)) z + 1/(k+1) x~     (z_0 = x~_0)

    so z is the mean of x~_0..x~_k; stored in ``average``, which the training loop evaluates.

    Args:
        learning_rate: eta, a number or an optax schedule of the local clock.
        period: tau >= 1.
        axis_name: the worker axis of the all-reduce.
        center_dtype: x~ and z are kept in at least this dtype (float32); None: the params'.
        on_disagreement: ``"nan"`` (default) or ``"raise"``, as in :func:`downpour`.
    """
    return _downpour(learning_rate, period, axis_name, average_rate=polyak_rate,
                     center_dtype=center_dtype, on_disagreement=on_disagreement)


def mvadownpour(
    learning_rate: optax.ScalarOrSchedule,
    moving_average_rate: float,
    period: int = 1,
    axis_name: AxisName = "workers",
    center_dtype: Any = base.CENTER_DTYPE,
    on_disagreement: str = "nan",
) -> optax.GradientTransformationExtraArgs:
    """MVADOWNPOUR: :func:`downpour` whose master keeps a moving average of its centers.

        after each center update:  z <- (1 - a) z + a x~      (z_0 = x~_0)

    Args:
        learning_rate: eta, a number or an optax schedule of the local clock.
        moving_average_rate: a in (0, 1] (paper: 0.001); a = 1 makes z the center.
        period: tau >= 1.
        axis_name: the worker axis of the all-reduce.
        center_dtype: x~ and z are kept in at least this dtype (float32: a bfloat16 z
            with a = 0.001 would never move); None: the params'.
        on_disagreement: ``"nan"`` (default) or ``"raise"``, as in :func:`downpour`.
    """
    checks.check_moving_average_rate(moving_average_rate)
    return _downpour(learning_rate, period, axis_name,
                     average_rate=constant_rate(checks.scalar(moving_average_rate)),
                     center_dtype=center_dtype, on_disagreement=on_disagreement)


def mdownpour(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float,
    axis_name: AxisName = "workers",
    center_dtype: Any = base.CENTER_DTYPE,
    on_disagreement: str = "nan",
) -> optax.GradientTransformationExtraArgs:
    """MDOWNPOUR: DOWNPOUR (tau = 1) with Nesterov momentum on the master.

        v <- delta v - eta sum_i g_i(x~ + delta v);   x~ <- x~ + v

    Every step communicates (one all-reduce of the gradients); the master applies the SUM of
    the p gradients, so the step size relative to one worker's gradient is p * eta. Every
    worker's params are the look-ahead point x~ + delta v, where it takes its gradient (the
    update sets them to it exactly, so workers that start at x~_0 stay identical); the
    center x~ is in the state and is what the training loop evaluates. delta = 0 gives
    ``downpour(learning_rate, period=1)``.

    Args:
        learning_rate: eta, a number or an optax schedule of the step count.
        momentum: delta in [0, 1) (paper: 0.99 for the workers of EAMSGD).
        axis_name: the worker axis of the all-reduce.
        center_dtype: x~ and v are kept in at least this dtype (float32); None: the
            params'.
        on_disagreement: ``"nan"`` (default) or ``"raise"``, as in :func:`downpour`.

    Returns:
        An optax ``GradientTransformationExtraArgs`` with state
        :class:`MomentumDownpourState`; ``update`` requires ``params`` and ignores extra
        arguments (every step communicates, whatever ``communicate`` says).
    """
    checks.check_rate("learning_rate", learning_rate)
    checks.check_momentum(momentum)
    checks.check_axis_name(axis_name)
    base.check_center_dtype(center_dtype)
    check_on_disagreement(on_disagreement)
    rate = checks.schedule_value(learning_rate)
    delta = checks.scalar(momentum)

    def init_fn(params: optax.Params) -> MomentumDownpourState:
        center = base.center_copy(params, center_dtype)
        return MomentumDownpourState(
            count=jnp.zeros([], jnp.int32), center=center,
            velocity=jax.tree.map(jnp.zeros_like, center), copies_agree=jnp.ones([], bool))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("mdownpour needs params: call update(grads, state, params).")
        base.check_per_worker(state.center, params)
        push, center, agree = tree_psum_checking(updates, state.center, axis_name,
                                                 on_disagreement=on_disagreement)
        state = state._replace(center=center)
        center, velocity, lookahead = nesterov_master_step(
            state.center, state.velocity, push, rate(state.count), delta)
        new_updates = jax.tree.map(lambda w, x: (w - x).astype(x.dtype), lookahead, params)
        return new_updates, MomentumDownpourState(
            count=optax.safe_int32_increment(state.count), center=center, velocity=velocity,
            copies_agree=state.copies_agree & agree)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------------------- asynchronous


class DownpourExtra(NamedTuple):
    """The ``extra`` of an asynchronous DOWNPOUR worker: acc_i, its steps since the last push."""

    accumulator: optax.Updates


class AdagradMasterState(NamedTuple):
    """The master of DOWNPOUR with server Adagrad: x~ and G, the sum of squared pushes."""

    center: optax.Params
    adagrad_sum: optax.Params


def async_downpour(
    learning_rate: optax.ScalarOrSchedule,
    period: int = 1,
    *,
    server_adagrad: bool = False,
    adagrad_rate: float = 0.01,
    adagrad_eps: float = 1e-8,
) -> AsyncRule[DownpourExtra, CenterState | AdagradMasterState]:
    """Asynchronous DOWNPOUR(tau) as in the EASGD authors' code.

        d = -eta g(x_i);  acc_i += d
        tau | t_i:  x~ += acc_i;  x_i <- x~;  acc_i <- 0        else:  x_i += d

    The master applies each worker's push when it arrives (:func:`downpour_exchange`).
    tau = 1 is asynchronous SGD, x~ <- x~ - eta g(x_read), with x_read the center the worker
    fetched at its last push. With ``server_adagrad`` the master applies each push through
    DistBelief's Adagrad (:func:`server_adagrad_step`, per coordinate G <- G + acc_i^2;
    x~ <- x~ + gamma acc_i / sqrt(eps + G)), as synchronous ``downpour(...,
    server_adagrad=True)`` does with the sum of the pushes.

    Args:
        learning_rate: eta, a number or an optax schedule of the local clock.
        period: tau >= 1.
        server_adagrad: apply the pushes through the master's Adagrad.
        adagrad_rate: gamma, the master's Adagrad rate.
        adagrad_eps: eps inside the root.
    """
    checks.check_rate("learning_rate", learning_rate)
    checks.check_period("period", period)
    if server_adagrad:
        checks.check_rate("adagrad_rate", adagrad_rate)
        checks.check_interval("adagrad_eps", adagrad_eps, 0.0, float("inf"))
    rate = checks.schedule_value(learning_rate)

    def init_worker(params):
        return base.init_worker(params, DownpourExtra(jax.tree.map(jnp.zeros_like, params)))

    def before(worker, grad, loss):
        del loss
        step = _local_step(grad, worker.params, rate(worker.count))
        return worker._replace(
            extra=DownpourExtra(base.tree_add(worker.extra.accumulator, step)))

    def message(worker, grad, index):
        del grad, index
        return (worker.params, worker.extra.accumulator), ()

    def init_master(params):
        if not server_adagrad:
            return base.init_center_master(params)
        return AdagradMasterState(fresh_copy(params), jax.tree.map(jnp.zeros_like, params))

    def exchange(master, vectors, scalars):
        del scalars
        x, accumulator = vectors
        worker_delta, center_delta = downpour_exchange(x, accumulator, master.center)
        if not server_adagrad:
            return (CenterState(base.tree_add(master.center, center_delta)), center_delta,
                    (worker_delta,))
        center_delta, adagrad_sum = server_adagrad_step(
            center_delta, jax.tree.map(jnp.square, center_delta), master.adagrad_sum,
            adagrad_rate, adagrad_eps)
        center = base.tree_add(master.center, center_delta)
        worker_delta = jax.tree.map(lambda c, x: (c - x).astype(x.dtype), center, x)
        return AdagradMasterState(center, adagrad_sum), center_delta, (worker_delta,)

    def receive(worker, replies):
        return AsyncWorkerState(
            base.tree_add(worker.params, replies[0]), worker.count,
            DownpourExtra(jax.tree.map(jnp.zeros_like, worker.extra.accumulator)))

    def after(worker, grad, communicated):
        local = base.tree_add(worker.params,
                              _local_step(grad, worker.params, rate(worker.count)))
        params = base.tree_select(communicated, worker.params, local)
        return AsyncWorkerState(params, optax.safe_int32_increment(worker.count), worker.extra)

    return AsyncRule(
        name="downpour", init_worker=init_worker, init_master=init_master,
        gradient_point=lambda worker: worker.params, communicates=base.periodic(period),
        before=before, message=message, exchange=exchange, receive=receive, after=after,
        stateless_worker=period == 1)
