"""Asynchronous rules: EASGD (Algorithm 1), EAMSGD (Algorithm 2), DOWNPOUR and LSGD.

Zhang, Choromanska & LeCun, "Deep learning with Elastic Averaging SGD" (NIPS 2015,
arXiv 1412.6651). Each worker i runs on its own local clock t_i (starting at 0, so the first
step communicates) and talks to the master alone, one worker at a time, in arrival order.

Asynchronous EASGD (Algorithm 1), worker i, forever:

    x <- x_i                                   (snapshot)
    if tau divides t_i:  x_i <- x_i - alpha (x - x~);   master: x~ <- x~ + alpha (x - x~)
    x_i <- x_i - eta g(x);   t_i <- t_i + 1

EAMSGD (Algorithm 2): the local step is Nesterov momentum at the snapshot,
v_i <- delta v_i - eta g(x + delta v_i); x_i <- x_i + v_i (the elastic term never enters v).

DOWNPOUR (the EASGD authors' code): d = -eta g(x_i); acc_i += d;
if tau divides t_i: master x~ += acc_i; x_i <- x~; acc_i <- 0, else x_i += d (optionally
the master applies the push through DistBelief's Adagrad).

LSGD, asynchronous (Teng et al., NeurIPS 2019, arXiv 1905.10395), kept simple: the master
holds the leader (x_L, m_L, L), the parameters and running loss of the worker that last
reported the lowest running loss. Communication follows the TOTAL-iteration clock of the
authors' global server: with T the number of local steps all workers have taken before this
one, a step communicates when ``T mod (p * tau) < p`` (on average once every tau local steps
per worker; T = t_i when p = 1). A communicating worker reports (x_i, m_i); the master makes it
the leader when ``i == L`` (the leader refreshes its own entry) or ``m_i < m_L`` (NaN counts
as +inf), then the worker is pulled toward the leader: x_i <- x_i - c (x_i - x_L), and takes
its local (inner optimizer) step with the gradient at its pre-pull point, as synchronous
:func:`~easgd_jax.algorithms.leader.lsgd`. The master evaluates x_L.

Every rule is split the same way, so that the seeded-asynchrony executor
(``parallel/schedules.py``) and the real parameter server (``parallel/server.py``) run it
unchanged; the master's part is a pure function applied atomically, one worker at a time:

    g, loss = grad(gradient_point(w))          worker, at the snapshot
    w = before(w, g, loss)                     worker (DOWNPOUR's accumulation)
    if communicates(t_i, T):
        vectors, scalars = message(w, g, i)    worker -> master
        master, center_delta, replies = exchange(master, vectors, scalars)    ATOMIC
        w = receive(w, replies)                master -> worker
    w = after(w, g, communicated)              worker (the local step, t_i += 1)

``exchange`` calls the synchronous modules' pure exchange functions
(:func:`~easgd_jax.algorithms.elastic.elastic_exchange`,
:func:`~easgd_jax.algorithms.downpour.downpour_exchange`) on the master's value at that
moment. ``vectors`` and the master's arrays are shaped like the params and the exchange is
elementwise on them (except LSGD's leader choice), so a parameter server may split them into
flat shards and apply each shard independently.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from easgd_jax.algorithms import _validate
from easgd_jax.algorithms.downpour import downpour_exchange, server_adagrad_step
from easgd_jax.algorithms.elastic import elastic_exchange
from easgd_jax.algorithms.leader import record_loss
from easgd_jax.algorithms.trees import fresh_copy

Params = Any
Vectors = tuple[Any, ...]
Scalars = tuple[Any, ...]


class AsyncWorkerState(NamedTuple):
    """One worker's state in an asynchronous run.

    Attributes:
        params: x_i, the worker variable (APAM: the worker's last read of the master).
        count: t_i, the local clock (int32).
        extra: rule-specific buffers: EAMSGD's velocity v_i, DOWNPOUR's accumulator acc_i,
            LSGD's (inner optimizer state, loss ring buffer, running mean); () otherwise.
    """

    params: Params
    count: jax.Array
    extra: Any


class CenterState(NamedTuple):
    """The master of EASGD, EAMSGD and DOWNPOUR: the center x~ alone."""

    center: Params


class AdagradMasterState(NamedTuple):
    """The master of DOWNPOUR with server Adagrad: x~ and G, the sum of squared pushes."""

    center: Params
    adagrad_sum: Params


class LeaderMasterState(NamedTuple):
    """The master of asynchronous LSGD.

    Attributes:
        center: x_L, the leader's parameters as last reported (what is evaluated).
        score: m_L, the leader's running loss as last reported (+inf before any report).
        leader: L, the leader's worker index (int32; -1 before any report).
    """

    center: Params
    score: jax.Array
    leader: jax.Array


@dataclasses.dataclass(frozen=True)
class AsyncRule:
    """An asynchronous algorithm split into worker-side parts and one atomic master part.

    Every master state is a NamedTuple whose ``center`` field is the evaluated point.

    Attributes:
        name: the algorithm's name.
        init_worker: ``params -> AsyncWorkerState``.
        init_master: ``params -> master state``; elementwise in the params (a flat slice
            of them gives the master of that slice).
        gradient_point: ``worker -> params`` where the gradient is taken.
        communicates: ``(t_i, T) -> bool``, on Python ints or jax arrays; T is the number of
            local steps all workers took before this one (the total-iteration clock).
        before: ``(worker, grad, loss) -> worker``, local work before the exchange.
        message: ``(worker, grad, worker_index) -> (vectors, scalars)``: what is sent; the
            vectors are shaped like the params.
        exchange: ``(master, vectors, scalars) -> (master, center_delta, replies)``, pure;
            the new master's center is ``center + center_delta``; the replies are shaped
            like the params.
        receive: ``(worker, replies) -> worker``.
        after: ``(worker, grad, communicated) -> worker``, the local step; t_i += 1.
        stateless_worker: every step communicates and the reply alone makes the worker
            (APAM, DOWNPOUR with tau = 1): such rules also run under the random-delay
            schedule, with each gradient taken at a stale master iterate.
        shardable: the exchange is elementwise over the vectors and the master's arrays,
            so the master may be split into independently locked shards.
    """

    name: str
    init_worker: Callable[[Params], AsyncWorkerState]
    init_master: Callable[[Params], Any]
    gradient_point: Callable[[AsyncWorkerState], Params]
    communicates: Callable[[Any, Any], Any]
    before: Callable[[AsyncWorkerState, Params, Any], AsyncWorkerState]
    message: Callable[[AsyncWorkerState, Params, Any], tuple[Vectors, Scalars]]
    exchange: Callable[[Any, Vectors, Scalars], tuple[Any, Params, Vectors]]
    receive: Callable[[AsyncWorkerState, Vectors], AsyncWorkerState]
    after: Callable[[AsyncWorkerState, Params, Any], AsyncWorkerState]
    stateless_worker: bool = False
    shardable: bool = True


def _add(tree: Params, delta: Params) -> Params:
    return jax.tree.map(lambda x, d: (x + d).astype(x.dtype), tree, delta)


def _select(pred: Any, on_true: Params, on_false: Params) -> Params:
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def _worker(params: Params, extra: Any = ()) -> AsyncWorkerState:
    return AsyncWorkerState(fresh_copy(params), jnp.zeros([], jnp.int32), extra)


def _periodic(period: int) -> Callable[[Any, Any], Any]:
    def communicates(count, total):
        del total
        return count % period == 0

    return communicates


def _identity_before(worker, grad, loss):
    del grad, loss
    return worker


def _center_master(params: Params) -> CenterState:
    return CenterState(fresh_copy(params))


def _elastic_master_exchange(alpha: float):
    def exchange(master: CenterState, vectors: Vectors, scalars: Scalars):
        del scalars
        (x,) = vectors
        worker_delta, center_delta = elastic_exchange(x, master.center, alpha)
        return CenterState(_add(master.center, center_delta)), center_delta, (worker_delta,)

    return exchange


def _receive_delta(worker: AsyncWorkerState, replies: Vectors) -> AsyncWorkerState:
    return worker._replace(params=_add(worker.params, replies[0]))


def async_easgd(
    learning_rate: optax.ScalarOrSchedule, moving_rate: float, period: int = 1
) -> AsyncRule:
    """Asynchronous EASGD (Algorithm 1): elastic exchange every tau local steps, then SGD.

        tau | t_i:  x_i <- x_i - alpha (x - x~);  x~ <- x~ + alpha (x - x~)
        x_i <- x_i - eta g(x)                              (x: the snapshot before the exchange)

    Args:
        learning_rate: eta, a number or an optax schedule of the local clock t_i.
        moving_rate: alpha in [0, 1] (paper: 0.9 / p).
        period: tau >= 1.
    """
    _validate.check_rate("learning_rate", learning_rate)
    _validate.check_interval("moving_rate", moving_rate, 0.0, 1.0)
    _validate.check_period("period", period)
    rate = _validate.schedule_value(learning_rate)
    alpha = float(moving_rate)

    def message(worker, grad, index):
        del grad, index
        return (worker.params,), ()

    def after(worker, grad, communicated):
        del communicated
        eta = rate(worker.count)
        params = jax.tree.map(lambda x, g: (x - eta * g).astype(x.dtype), worker.params, grad)
        return AsyncWorkerState(params, optax.safe_int32_increment(worker.count), ())

    return AsyncRule(
        name="easgd", init_worker=_worker, init_master=_center_master,
        gradient_point=lambda worker: worker.params, communicates=_periodic(period),
        before=_identity_before, message=message, exchange=_elastic_master_exchange(alpha),
        receive=_receive_delta, after=after)


def async_eamsgd(
    learning_rate: optax.ScalarOrSchedule, momentum: float, moving_rate: float, period: int = 1
) -> AsyncRule:
    """Asynchronous EAMSGD (Algorithm 2): Algorithm 1 with a Nesterov local step.

        tau | t_i:  x_i <- x_i - alpha (x - x~);  x~ <- x~ + alpha (x - x~)
        v_i <- delta v_i - eta g(x + delta v_i);  x_i <- x_i + v_i

    ``params`` of the worker state hold x_i and ``extra`` holds v_i; the gradient is taken at
    the look-ahead point x + delta v_i of the snapshot. delta = 0 is :func:`async_easgd`.

    Args:
        learning_rate: eta, a number or an optax schedule of the local clock.
        momentum: delta in [0, 1) (paper: 0.99).
        moving_rate: alpha in [0, 1].
        period: tau >= 1.
    """
    _validate.check_rate("learning_rate", learning_rate)
    _validate.check_momentum(momentum)
    _validate.check_interval("moving_rate", moving_rate, 0.0, 1.0)
    _validate.check_period("period", period)
    rate = _validate.schedule_value(learning_rate)
    alpha, delta = float(moving_rate), float(momentum)

    def init_worker(params):
        return _worker(params, jax.tree.map(jnp.zeros_like, params))

    def gradient_point(worker):
        return jax.tree.map(
            lambda x, v: (x + delta * v).astype(x.dtype), worker.params, worker.extra)

    def message(worker, grad, index):
        del grad, index
        return (worker.params,), ()

    def after(worker, grad, communicated):
        del communicated
        eta = rate(worker.count)
        velocity = jax.tree.map(
            lambda v, g: (delta * v - eta * g).astype(v.dtype), worker.extra, grad)
        return AsyncWorkerState(_add(worker.params, velocity),
                                optax.safe_int32_increment(worker.count), velocity)

    return AsyncRule(
        name="eamsgd", init_worker=init_worker, init_master=_center_master,
        gradient_point=gradient_point, communicates=_periodic(period),
        before=_identity_before, message=message, exchange=_elastic_master_exchange(alpha),
        receive=_receive_delta, after=after)


def async_downpour(
    learning_rate: optax.ScalarOrSchedule,
    period: int = 1,
    *,
    server_adagrad: bool = False,
    adagrad_rate: float = 0.01,
    adagrad_eps: float = 1e-8,
) -> AsyncRule:
    """Asynchronous DOWNPOUR(tau) as in the EASGD authors' code.

        d = -eta g(x_i);  acc_i += d
        tau | t_i:  x~ += acc_i;  x_i <- x~;  acc_i <- 0        else:  x_i += d

    The master applies each worker's push when it arrives. tau = 1 is asynchronous SGD,
    x~ <- x~ - eta g(x_read), with x_read the center the worker fetched at its last push.
    With ``server_adagrad`` the master applies each push through DistBelief's Adagrad
    (:func:`~easgd_jax.algorithms.downpour.server_adagrad_step`, per coordinate
    G <- G + acc_i^2; x~ <- x~ + gamma acc_i / sqrt(eps + G)), as synchronous
    ``downpour(..., server_adagrad=True)`` does with the sum of the pushes.

    Args:
        learning_rate: eta, a number or an optax schedule of the local clock.
        period: tau >= 1.
        server_adagrad: apply the pushes through the master's Adagrad.
        adagrad_rate: gamma, the master's Adagrad rate.
        adagrad_eps: eps inside the root.
    """
    _validate.check_rate("learning_rate", learning_rate)
    _validate.check_period("period", period)
    if server_adagrad:
        _validate.check_rate("adagrad_rate", adagrad_rate)
        _validate.check_interval("adagrad_eps", adagrad_eps, 0.0, float("inf"))
    rate = _validate.schedule_value(learning_rate)

    def init_worker(params):
        return _worker(params, jax.tree.map(jnp.zeros_like, params))

    def step(worker, grad):
        eta = rate(worker.count)
        return jax.tree.map(lambda g, x: (-eta * g).astype(x.dtype), grad, worker.params)

    def before(worker, grad, loss):
        del loss
        return worker._replace(extra=_add(worker.extra, step(worker, grad)))

    def message(worker, grad, index):
        del grad, index
        return (worker.params, worker.extra), ()

    def init_master(params):
        if not server_adagrad:
            return _center_master(params)
        return AdagradMasterState(fresh_copy(params), jax.tree.map(jnp.zeros_like, params))

    def exchange(master, vectors, scalars):
        del scalars
        x, accumulator = vectors
        worker_delta, center_delta = downpour_exchange(x, accumulator, master.center)
        if not server_adagrad:
            return CenterState(_add(master.center, center_delta)), center_delta, (worker_delta,)
        center_delta, adagrad_sum = server_adagrad_step(
            center_delta, jax.tree.map(jnp.square, center_delta), master.adagrad_sum,
            adagrad_rate, adagrad_eps)
        center = _add(master.center, center_delta)
        worker_delta = jax.tree.map(lambda c, x: (c - x).astype(x.dtype), center, x)
        return AdagradMasterState(center, adagrad_sum), center_delta, (worker_delta,)

    def receive(worker, replies):
        return AsyncWorkerState(_add(worker.params, replies[0]), worker.count,
                                jax.tree.map(jnp.zeros_like, worker.extra))

    def after(worker, grad, communicated):
        local = _add(worker.params, step(worker, grad))
        params = _select(communicated, worker.params, local)
        return AsyncWorkerState(params, optax.safe_int32_increment(worker.count), worker.extra)

    return AsyncRule(
        name="downpour", init_worker=init_worker, init_master=init_master,
        gradient_point=lambda worker: worker.params, communicates=_periodic(period),
        before=before, message=message, exchange=exchange, receive=receive, after=after,
        stateless_worker=period == 1)


def async_lsgd(
    inner: optax.GradientTransformation,
    pull: float,
    period: int,
    num_workers: int,
    loss_window: int = 10,
) -> AsyncRule:
    """Asynchronous single-leader LSGD on the total-iteration clock (module docstring).

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
    _validate.check_interval("pull", pull, 0.0, 1.0)
    _validate.check_period("period", period)
    _validate.check_period("num_workers", num_workers)
    _validate.check_period("loss_window", loss_window)
    c, p = float(pull), int(num_workers)

    def init_worker(params):
        return _worker(params, (inner.init(params), jnp.zeros([loss_window], jnp.float32),
                                jnp.zeros([], jnp.float32)))

    def init_master(params):
        return LeaderMasterState(fresh_copy(params),
                                 jnp.full([], jnp.inf, jnp.float32), jnp.full([], -1, jnp.int32))

    def communicates(count, total):
        del count
        return total % (p * period) < p

    def before(worker, grad, loss):
        del grad
        inner_state, losses, _ = worker.extra
        losses, mean = record_loss(losses, worker.count, jnp.asarray(loss))
        return worker._replace(extra=(inner_state, losses, mean))

    def message(worker, grad, index):
        del grad
        return (worker.params,), (worker.extra[2], jnp.asarray(index, jnp.int32))

    def exchange(master, vectors, scalars):
        (x,) = vectors
        score, index = scalars
        score = jnp.where(jnp.isnan(score), jnp.inf, score).astype(jnp.float32)
        take = (index == master.leader) | (score < master.score)
        center = _select(take, x, master.center)
        center_delta = jax.tree.map(lambda new, old: new - old, center, master.center)
        pull_delta = jax.tree.map(lambda xi, xl: (-c * (xi - xl)).astype(xi.dtype), x, center)
        new = LeaderMasterState(center, jnp.where(take, score, master.score),
                                jnp.where(take, index, master.leader).astype(jnp.int32))
        return new, center_delta, (pull_delta,)

    def after(worker, grad, communicated):
        del communicated
        inner_state, losses, mean = worker.extra
        updates, inner_state = inner.update(grad, inner_state, worker.params)
        return AsyncWorkerState(optax.apply_updates(worker.params, updates),
                                optax.safe_int32_increment(worker.count),
                                (inner_state, losses, mean))

    return AsyncRule(
        name="lsgd", init_worker=init_worker, init_master=init_master,
        gradient_point=lambda worker: worker.params, communicates=communicates,
        before=before, message=message, exchange=exchange, receive=_receive_delta,
        after=after, shardable=False)


def async_lsgd_nesterov(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float,
    pull: float,
    period: int,
    num_workers: int,
    loss_window: int = 10,
) -> AsyncRule:
    """:func:`async_lsgd` over torch-convention Nesterov momentum, the authors' optimizer
    (``optax.sgd(eta, mu, nesterov=True)``), as synchronous ``lsgd_nesterov``."""
    _validate.check_rate("learning_rate", learning_rate)
    _validate.check_momentum(momentum)
    return async_lsgd(optax.sgd(learning_rate, momentum, nesterov=True), pull, period,
                      num_workers, loss_window)


def _apam(**hparams: Any) -> AsyncRule:
    module = importlib.import_module("easgd_jax.algorithms.amsgrad_async")
    return module.apam(**hparams)


# name -> (constructor, whether it takes num_workers)
_ASYNC_RULES: dict[str, tuple[Callable[..., AsyncRule], bool]] = {
    "easgd": (async_easgd, False),
    "eamsgd": (async_eamsgd, False),
    "downpour": (async_downpour, False),
    "lsgd_nesterov": (async_lsgd_nesterov, True),
    "apam": (_apam, False),
}


def async_algorithm_names() -> list[str]:
    """The algorithms that have an asynchronous rule, sorted."""
    return sorted(_ASYNC_RULES)


def get_async_rule(name: str, num_workers: int, **hparams: Any) -> AsyncRule:
    """Builds the asynchronous rule ``name`` with the same hyperparameters as its synchronous
    form (``config.algorithm``); raises ValueError for unknown names or hyperparameters."""
    try:
        constructor, takes_workers = _ASYNC_RULES[name]
    except KeyError:
        raise ValueError(
            f"algorithm {name!r} has no asynchronous rule; asynchronous algorithms: "
            f"{', '.join(async_algorithm_names())}.") from None
    if takes_workers:
        hparams = {**hparams, "num_workers": num_workers}
    try:
        return constructor(**hparams)
    except TypeError as e:  # unknown or missing keyword
        raise ValueError(f"asynchronous {name!r}: {e}") from None
