"""Leader SGD: single and multi-leader LSGD (Teng et al., NeurIPS 2019, arXiv 1905.10395).

Every worker i keeps the running mean m_i of its last W training mini-batch losses (the mean
of those seen so far while fewer than W). With c the pull strength and tau the communication
period, worker i at its local step t does (both right-hand sides on the OLD values, like
EASGD's eqs 5-6):

    m_i <- mean of the last W losses, including this step's (measured at x_i)
    if tau divides t:   L = argmin_k m_k                   (ties: the lowest worker index)
                        x_i <- x_i - c * (x_i - x_L)       (0 <= c <= 1; x_L: the leader's x)
    x_i <- x_i + local_step(g_i)                           (g_i taken before the pull)

i.e. ``u_i = inner(g_i) - c * (x_i - x_L) * [tau | t]``. The clock is EASGD's: t counts from
0 and the first step communicates; when the workers start from one point (as the training
loop does) that pull moves nothing, so the first effective pull comes after tau local steps,
as in the authors' code.
The pull is the convex mix x <- (1 - c) x + c x_L of the authors' code; it never touches the
inner optimizer's state (momentum). Only the leader's parameters travel: the running means
are gathered (a scalar per worker) and every worker agrees on the leader, then ONE psum of
the parameter vector masked to the leader (``where(i == L, x_i, 0)``) broadcasts x_L.
A worker whose running loss is NaN is treated as +inf, so a diverged worker never leads.

Multi-leader LSGD lays n groups of l workers on two axes (``group_axis_name`` across
groups, ``axis_name`` within a group). With leader_j the local leader of group j (argmin of
m within the group, pull c every tau steps) and G the global leader (argmin over all n * l
workers, pull c_G every tau_G steps, tau_G a multiple of tau), worker i of group j does

    x_ji <- x_ji + local_step(g_ji) - c * (x_ji - x_{leader_j}) * [tau | t]
                                    - c_G * (x_ji - x_G) * [tau_G | t]

all on the old values, as the paper's update rule writes it (reference/ALGORITHMS.md, sec 4).
The authors' code applies the two mixes one after the other, which adds
c * c_G * (x_ji - x_{leader_j}) to a global round (1% of the local pull at c = c_G = 0.1).
The exchange is hierarchical: the local leader is broadcast within each group, and the
global leader, which is the local leader of its own group, is broadcast across groups by a
second masked psum over ``group_axis_name`` only. With tau_G = tau both pulls act every
round (the authors' code then keeps only the global one).

Differences from the authors' PyTorch code (github.com/yunfei-teng/LSGD), which runs tau
local steps and then mixes the post-step parameters: here the pull of step t and the
gradient step of step t both read x_t (the Jacobi form, as EASGD in this package), and the
leader is chosen on running means that include the loss measured at x_t, the very point
that is broadcast. Their code also pulls every local step toward the last received leader
copies (``p1``/``p2``, on by default there, absent from the update rule above): not
implemented. Author defaults: c = c_G = 0.1, W = 10, Nesterov momentum 0.9, weight decay
1e-4, tau = tau_G / 4.

Asynchronous LSGD (:func:`async_lsgd`), kept simple: the master holds the leader (x_L, m_L,
L), the parameters and running loss of the worker that last reported the lowest running
loss. Communication follows the TOTAL-iteration clock of the authors' global server: with T
the number of local steps all workers have taken before this one, a step communicates when
``T mod (p * tau) < p`` (on average once every tau local steps per worker; T = t_i when
p = 1). A communicating worker reports (x_i, m_i); the master makes it the leader when
``i == L`` (the leader refreshes its own entry) or ``m_i < m_L`` (NaN counts as +inf), then
the worker is pulled toward the leader: x_i <- x_i - c (x_i - x_L), and takes its local
(inner optimizer) step with the gradient at its pre-pull point, as synchronous :func:`lsgd`.
The master evaluates x_L. It follows the protocol of
:class:`~easgd_jax.algorithms.base.AsyncRule`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from easgd_jax.algorithms import base, checks, clock
from easgd_jax.algorithms.base import AsyncRule, AsyncWorkerState, AxisName, fresh_copy
from easgd_jax.algorithms.collectives import (
    axis_index,
    axis_size,
    broadcast_from,
    check_on_disagreement,
    gather,
)


class LeaderState(NamedTuple):
    """State of :func:`lsgd` on one worker.

    Attributes:
        count: the shared clock t (int32); the workers communicate when ``count % period == 0``.
        losses: ring buffer of the last ``loss_window`` mini-batch losses (float32); the loss
            of step t sits at ``t % loss_window``.
        loss_mean: the running mean of the losses seen, at most the last ``loss_window``.
        leader: the index of the last leader along the flattened ``axis_name`` (int32);
            -1 before the first communication.
        inner_state: the state of the local optimizer.
    """

    count: jax.Array
    losses: jax.Array
    loss_mean: jax.Array
    leader: jax.Array
    inner_state: optax.OptState


class MultiLeaderState(NamedTuple):
    """State of :func:`lsgd_multi` on one worker.

    Attributes:
        count, losses, loss_mean, inner_state: as in :class:`LeaderState`.
        leader: the last local leader, an index within the group along ``axis_name``.
        global_leader: the last global leader, a flat index g * l + k over
            ``(group_axis_name, axis_name)`` (group major); -1 before the first global round.
    """

    count: jax.Array
    losses: jax.Array
    loss_mean: jax.Array
    leader: jax.Array
    global_leader: jax.Array
    inner_state: optax.OptState


def record_loss(
    losses: jax.Array, count: jax.Array, loss: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Writes the loss of step ``count`` into the ring buffer; returns it and the running mean.

    The mean is over the min(count + 1, W) losses seen so far, recomputed from the buffer
    (no drift).
    """
    window = losses.shape[0]
    losses = losses.at[count % window].set(loss.astype(losses.dtype))
    seen = jnp.minimum(count + 1, window).astype(losses.dtype)
    return losses, jnp.sum(losses) / seen


def leader_pull(
    worker: optax.Params, leader: optax.Params, pull: float
) -> optax.Updates:
    """The pull of one worker toward its leader on the old values: ``-c * (x - x_L)``."""
    return jax.tree.map(lambda x, x_l: (-pull * (x - x_l)).astype(x.dtype), worker, leader)


def select_leader(running_losses: jax.Array) -> jax.Array:
    """The index (int32) of the lowest running loss; NaN counts as +inf, ties go lowest."""
    safe = jnp.where(jnp.isnan(running_losses), jnp.inf, running_losses)
    return jnp.argmin(safe).astype(jnp.int32)


def _names(axis_name: AxisName) -> tuple[str, ...]:
    return axis_name if isinstance(axis_name, tuple) else (axis_name,)


def _scalar_loss(loss, name: str) -> jax.Array:
    if loss is None:
        raise ValueError(
            f"{name} needs this worker's mini-batch loss at this step: call "
            "update(grads, state, params, loss=loss).")
    loss = jnp.asarray(loss)
    if loss.shape != ():
        raise ValueError(f"{name}: loss must be a scalar, got shape {loss.shape}.")
    return loss


def _like(index: jax.Array, previous: jax.Array) -> jax.Array:
    """``index`` with the type of the state field it replaces.

    A leader index computed from collectives is the same on every worker (invariant), the
    state field it replaces is per worker (varying): under ``shard_map(check_vma=True)`` the
    two ``lax.cond`` branches must agree, and adding ``0 * previous`` makes the index varying
    in every context (under ``vmap`` it is a no-op).
    """
    return index + jnp.zeros_like(previous)


def _init_common(loss_window: int):
    if not checks.is_concrete(loss_window):
        raise ValueError(
            "loss_window is the length of the loss buffer, a shape: it cannot be traced. "
            "Under optax.inject_hyperparams pass static_args=('loss_window',) (and "
            "'period' too to keep the clock static).")
    return (jnp.zeros([], jnp.int32), jnp.zeros([int(loss_window)], jnp.float32),
            jnp.zeros([], jnp.float32), jnp.full([], -1, jnp.int32))


def lsgd(
    inner: optax.GradientTransformation,
    pull: float,
    period: int,
    loss_window: int = 10,
    axis_name: AxisName = "workers",
) -> optax.GradientTransformationExtraArgs:
    """Single-leader LSGD over the local optimizer ``inner``.

    Update of worker i at step t (module docstring; on the old values):

        u_i = inner(g_i) - c * (x_i - x_L) * [tau | t],   L = argmin_k m_k

    Args:
        inner: the local optimizer, e.g. ``optax.sgd(eta, 0.9, nesterov=True)``; it sees only
            the gradient, never the pull.
        pull: c in [0, 1]. 0 gives independent copies of ``inner``; 1 moves every worker to
            the leader (plus its own local step).
        period: tau >= 1, the communication period; step 0 communicates.
        loss_window: W >= 1, how many recent mini-batch losses the running mean covers.
        axis_name: the worker axis (a ``vmap`` axis, a ``shard_map`` mesh axis or a tuple of
            them); the leader index is the flat index along it.

    Returns:
        An optax ``GradientTransformationExtraArgs`` with state :class:`LeaderState`;
        ``update(grads, state, params, *, loss)`` requires ``params`` and ``loss``, this
        worker's scalar mini-batch loss at ``params``.
    """
    checks.check_interval("pull", pull, 0.0, 1.0)
    checks.check_period("period", period)
    checks.check_period("loss_window", loss_window)
    checks.check_axis_name(axis_name)
    c = checks.scalar(pull)
    inner = optax.with_extra_args_support(inner)

    def init_fn(params: optax.Params) -> LeaderState:
        count, losses, mean, leader = _init_common(loss_window)
        return LeaderState(count, losses, mean, leader, inner.init(params))

    def update_fn(updates, state, params=None, *, loss=None, **extra_args):
        if params is None:
            raise ValueError("lsgd needs params: call update(grads, state, params, loss=loss).")
        phase, extra_args = clock.phase_argument(extra_args)
        loss = _scalar_loss(loss, "lsgd")
        losses, mean = record_loss(state.losses, state.count, loss)
        local_updates, inner_state = inner.update(updates, state.inner_state, params,
                                                  **extra_args)

        def communicate(previous_leader):
            leader = select_leader(gather(mean, axis_name))
            x_leader = broadcast_from(params, axis_index(axis_name) == leader, axis_name)
            return leader_pull(params, x_leader, c), _like(leader, previous_leader)

        def stay(previous_leader):
            return jax.tree.map(jnp.zeros_like, params), previous_leader

        delta, leader = clock.on_clock(state.count, period, communicate, stay, state.leader,
                                       phase)
        new_updates = jax.tree.map(lambda u, d: (u + d).astype(u.dtype), local_updates, delta)
        return new_updates, LeaderState(
            count=optax.safe_int32_increment(state.count), losses=losses, loss_mean=mean,
            leader=leader, inner_state=inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def lsgd_nesterov(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float,
    pull: float,
    period: int,
    loss_window: int = 10,
    axis_name: AxisName = "workers",
    on_disagreement: str = "nan",
) -> optax.GradientTransformationExtraArgs:
    """LSGD over Nesterov momentum in torch's convention, the authors' local optimizer.

        b_i <- mu * b_i + g_i;   u_i = -eta * (g_i + mu * b_i) - c * (x_i - x_L) * [tau | t]

    (``optax.sgd(eta, mu, nesterov=True)``). Author defaults: mu = 0.9, c = 0.1, W = 10.

    Args:
        learning_rate: eta, a number or an optax schedule.
        momentum: mu in [0, 1).
        pull: c in [0, 1].
        period: tau.
        loss_window: W.
        axis_name: the worker axis of the collectives.
        on_disagreement: accepted for uniformity with the algorithms that keep a
            replicated center (checked, unused: the leader is broadcast, not replicated).
    """
    checks.check_rate("learning_rate", learning_rate)
    checks.check_momentum(momentum)
    check_on_disagreement(on_disagreement)
    return lsgd(optax.sgd(learning_rate, momentum, nesterov=True), pull, period, loss_window,
                axis_name)


def lsgd_multi(
    inner: optax.GradientTransformation,
    pull: float,
    global_pull: float,
    period: int,
    global_period: int,
    loss_window: int = 10,
    axis_name: AxisName = "workers",
    group_axis_name: AxisName = "groups",
) -> optax.GradientTransformationExtraArgs:
    """Multi-leader LSGD: n groups of l workers, a local leader per group and a global one.

        u_ji = inner(g_ji) - c * (x_ji - x_{leader_j}) * [tau | t]
                           - c_G * (x_ji - x_G) * [tau_G | t]

    on the old values (module docstring). With one group (n = 1) leader_j = G, so this is
    :func:`lsgd` with pull c when c_G = 0, or with pull c_G when c = 0 and tau_G = tau.

    Args:
        inner: the local optimizer; it sees only the gradient.
        pull: c in [0, 1], the pull toward the local leader.
        global_pull: c_G in [0, 1], the pull toward the global leader; c + c_G <= 1 keeps the
            mix convex.
        period: tau >= 1, the local communication period; step 0 communicates.
        global_period: tau_G, a multiple of ``period``; step 0 communicates globally too.
        loss_window: W >= 1, how many recent mini-batch losses the running mean covers.
        axis_name: the axis of the workers WITHIN a group (size l).
        group_axis_name: the axis ACROSS groups (size n), disjoint from ``axis_name``.

    Returns:
        An optax ``GradientTransformationExtraArgs`` with state :class:`MultiLeaderState`;
        ``update(grads, state, params, *, loss)`` requires ``params`` and ``loss``.
    """
    checks.check_interval("pull", pull, 0.0, 1.0)
    checks.check_interval("global_pull", global_pull, 0.0, 1.0)
    checks.check_period("period", period)
    checks.check_period("global_period", global_period)
    if checks.is_concrete(period, global_period) and int(global_period) % int(period):
        raise ValueError(
            f"global_period ({global_period}) must be a multiple of period ({period}).")
    checks.check_period("loss_window", loss_window)
    checks.check_axis_name(axis_name)
    try:
        checks.check_axis_name(group_axis_name)
    except ValueError:
        raise ValueError(
            "group_axis_name must be a non-empty string or a tuple of them, got "
            f"{group_axis_name!r}.") from None
    shared = set(_names(axis_name)) & set(_names(group_axis_name))
    if shared:
        raise ValueError(
            f"axis_name {axis_name!r} and group_axis_name {group_axis_name!r} must be "
            f"disjoint; both hold {', '.join(sorted(shared))}.")
    c, c_global = checks.scalar(pull), checks.scalar(global_pull)
    inner = optax.with_extra_args_support(inner)

    def init_fn(params: optax.Params) -> MultiLeaderState:
        count, losses, mean, leader = _init_common(loss_window)
        return MultiLeaderState(count, losses, mean, leader, jnp.copy(leader), inner.init(params))

    def update_fn(updates, state, params=None, *, loss=None, **extra_args):
        if params is None:
            raise ValueError(
                "lsgd_multi needs params: call update(grads, state, params, loss=loss).")
        phase, extra_args = clock.phase_argument(extra_args)
        loss = _scalar_loss(loss, "lsgd_multi")
        losses, mean = record_loss(state.losses, state.count, loss)
        local_updates, inner_state = inner.update(updates, state.inner_state, params,
                                                  **extra_args)

        def global_round(local):
            best_mean, leader, x_leader, _ = local
            # Every worker of group j knows (min m in j, leader_j); the global leader is the
            # local leader of the group with the lowest minimum (ties: lowest group, then
            # lowest index in it = lowest flat index).
            table = gather(jnp.stack([best_mean, leader.astype(jnp.float32)]), group_axis_name)
            best_group = select_leader(table[:, 0])
            group_size = axis_size(axis_name)
            global_leader = best_group * group_size + table[best_group, 1].astype(jnp.int32)
            x_global = broadcast_from(
                x_leader, axis_index(group_axis_name) == best_group, group_axis_name)
            return leader_pull(params, x_global, c_global), _like(global_leader, local[3])

        def no_global_round(local):
            return jax.tree.map(jnp.zeros_like, params), local[3]

        def communicate(previous):
            means = gather(mean, axis_name)
            leader = select_leader(means)
            safe = jnp.where(jnp.isnan(means), jnp.inf, means)
            x_leader = broadcast_from(params, axis_index(axis_name) == leader, axis_name)
            local_delta = leader_pull(params, x_leader, c)
            global_delta, global_leader = lax.cond(
                state.count % global_period == 0, global_round, no_global_round,
                (safe[leader], leader, x_leader, previous[1]))
            delta = jax.tree.map(lambda a, b: a + b, local_delta, global_delta)
            return delta, (_like(leader, previous[0]), global_leader)

        def stay(previous):
            return jax.tree.map(jnp.zeros_like, params), previous

        # Both predicates are the shared clock. The global one stays a run-time conditional
        # inside the communication step: a caller's known phase is that of tau only.
        delta, (leader, global_leader) = clock.on_clock(
            state.count, period, communicate, stay, (state.leader, state.global_leader),
            phase)
        new_updates = jax.tree.map(lambda u, d: (u + d).astype(u.dtype), local_updates, delta)
        return new_updates, MultiLeaderState(
            count=optax.safe_int32_increment(state.count), losses=losses, loss_mean=mean,
            leader=leader, global_leader=global_leader, inner_state=inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def lsgd_multi_nesterov(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float,
    pull: float,
    global_pull: float,
    period: int,
    global_period: int,
    loss_window: int = 10,
    axis_name: AxisName = "workers",
    group_axis_name: AxisName = "groups",
    on_disagreement: str = "nan",
) -> optax.GradientTransformationExtraArgs:
    """Multi-leader LSGD over torch-convention Nesterov momentum (``optax.sgd(..., True)``).

    Author defaults: mu = 0.9, c = c_G = 0.1, tau = tau_G / 4, W = 10.

    Args:
        learning_rate: eta, a number or an optax schedule.
        momentum: mu in [0, 1).
        pull: c, toward the local leader.
        global_pull: c_G, toward the global leader.
        period: tau.
        global_period: tau_G, a multiple of tau.
        loss_window: W.
        axis_name: the axis within a group.
        group_axis_name: the axis across groups.
        on_disagreement: accepted for uniformity (checked, unused), as in
            :func:`lsgd_nesterov`.
    """
    checks.check_rate("learning_rate", learning_rate)
    checks.check_momentum(momentum)
    check_on_disagreement(on_disagreement)
    return lsgd_multi(optax.sgd(learning_rate, momentum, nesterov=True), pull, global_pull,
                      period, global_period, loss_window, axis_name, group_axis_name)


def leader_index(opt_state: optax.OptState) -> jax.Array:
    """The ``leader`` field of an LSGD state (searched by name, at any depth)."""
    found = optax.tree_utils.tree_get(opt_state, "leader")
    if found is None:
        raise ValueError("this optimizer state holds no leader.")
    return found


# --------------------------------------------------------------------------- asynchronous


class LeaderExtra(NamedTuple):
    """The ``extra`` of an asynchronous LSGD worker.

    Attributes:
        inner_state: the state of the local optimizer.
        losses: ring buffer of the last ``loss_window`` mini-batch losses (float32).
        loss_mean: m_i, the running mean of those losses.
    """

    inner_state: optax.OptState
    losses: jax.Array
    loss_mean: jax.Array


class LeaderMasterState(NamedTuple):
    """The master of asynchronous LSGD.

    Attributes:
        center: x_L, the leader's parameters as last reported (what is evaluated).
        score: m_L, the leader's running loss as last reported (+inf before any report).
        leader: L, the leader's worker index (int32; -1 before any report).
    """

    center: optax.Params
    score: jax.Array
    leader: jax.Array


def async_lsgd(
    inner: optax.GradientTransformation,
    pull: float,
    period: int,
    num_workers: int,
    loss_window: int = 10,
) -> AsyncRule[LeaderExtra, LeaderMasterState]:
    """Asynchronous single-leader LSGD on the total-iteration clock (module docstring)::

        T mod (p tau) < p:  report (x_i, m_i); the master takes it as leader if i == L or
                            m_i < m_L;  x_i <- x_i - c (x_i - x_L)
        x_i <- x_i + inner(g(x))                       (x: the point before the pull)

    Args:
        inner: the local optimizer (sees only the gradient, never the pull).
        pull: c in [0, 1].
        period: tau >= 1; on average each worker communicates once per tau local steps.
        num_workers: p, needed by the total-iteration clock.
        loss_window: W >= 1, the running-mean window of the mini-batch losses.
    """
    checks.check_interval("pull", pull, 0.0, 1.0)
    checks.check_period("period", period)
    checks.check_period("num_workers", num_workers)
    checks.check_period("loss_window", loss_window)
    c, p = float(pull), int(num_workers)

    def init_worker(params):
        _, losses, mean, _ = _init_common(loss_window)
        return base.init_worker(params, LeaderExtra(inner.init(params), losses, mean))

    def init_master(params):
        return LeaderMasterState(fresh_copy(params),
                                 jnp.full([], jnp.inf, jnp.float32), jnp.full([], -1, jnp.int32))

    def communicates(count, total):
        del count
        return total % (p * period) < p

    def before(worker, grad, loss):
        del grad
        losses, mean = record_loss(worker.extra.losses, worker.count, jnp.asarray(loss))
        return worker._replace(extra=worker.extra._replace(losses=losses, loss_mean=mean))

    def message(worker, grad, index):
        del grad
        return (worker.params,), (worker.extra.loss_mean, jnp.asarray(index, jnp.int32))

    def exchange(master, vectors, scalars):
        (x,) = vectors
        score, index = scalars
        score = jnp.where(jnp.isnan(score), jnp.inf, score).astype(jnp.float32)
        take = (index == master.leader) | (score < master.score)
        center = base.tree_select(take, x, master.center)
        center_delta = jax.tree.map(lambda new, old: new - old, center, master.center)
        new = LeaderMasterState(center, jnp.where(take, score, master.score),
                                jnp.where(take, index, master.leader).astype(jnp.int32))
        return new, center_delta, (leader_pull(x, center, c),)

    def after(worker, grad, communicated):
        del communicated
        updates, inner_state = inner.update(grad, worker.extra.inner_state, worker.params)
        return AsyncWorkerState(optax.apply_updates(worker.params, updates),
                                optax.safe_int32_increment(worker.count),
                                worker.extra._replace(inner_state=inner_state))

    return AsyncRule(
        name="lsgd", init_worker=init_worker, init_master=init_master,
        gradient_point=lambda worker: worker.params, communicates=communicates,
        before=before, message=message, exchange=exchange, receive=base.receive_delta,
        after=after, shardable=False)


def async_lsgd_nesterov(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float,
    pull: float,
    period: int,
    num_workers: int,
    loss_window: int = 10,
) -> AsyncRule[LeaderExtra, LeaderMasterState]:
    """:func:`async_lsgd` over torch-convention Nesterov momentum, the authors' optimizer
    (``optax.sgd(eta, mu, nesterov=True)``), as synchronous :func:`lsgd_nesterov`."""
    checks.check_rate("learning_rate", learning_rate)
    checks.check_momentum(momentum)
    return async_lsgd(optax.sgd(learning_rate, momentum, nesterov=True), pull, period,
                      num_workers, loss_window)
