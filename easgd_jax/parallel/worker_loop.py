"""The one worker loop of the real parameter servers, over a small transport.

A worker of an asynchronous rule (:class:`~easgd_jax.algorithms.base.AsyncRule`) runs its
local steps in chunks of batches and never waits for the other workers:

    for each local step t_i:
        hook(i, t_i)                                   (a test hook; may raise)
        T = transport.tick(progress)                   (None: the run was stopped; held at a
                                                        cut, it hands over progress() first)
        if rule.communicates(t_i, T):
            worker, grad, vectors, scalars = prepare(worker, batch)
            replies = transport.exchange(i, vectors, scalars)      (the master, atomically)
            worker = finish(worker, grad, replies)
        else:
            worker = local(worker, batch)

The thread executor (``parallel/server.py``: the master in this process, a stop event) and
the Ray executor (``parallel/ray_server.py``: the master behind an actor) each supply a
:class:`Transport`; the loop, the jitted worker steps and their warm-up are shared.

Consistent cuts (checkpoints, evaluations at exact steps): the master may hold the workers
at a value of T; a worker that asks for a tick then hands over its progress (its
:class:`WorkerResult` between two local steps) and waits until the cut is released, so that
the master and every worker are snapshotted between steps. A loop may start from such a
snapshot (``start``) instead of ``params``. An exception raised in the loop reaches the
caller as a :class:`~easgd_jax.parallel.executor.WorkerFailedError` with the worker's index,
its local step and the cause, and its progress before the failed step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from easgd_jax.algorithms.base import AsyncRule
from easgd_jax.parallel.executor import (
    BatchFn,
    GradFn,
    StopHook,
    WorkerFailedError,
    WorkerResult,
)

__all__ = ["BatchFn", "GradFn", "StopHook", "Transport", "WorkerFailedError", "WorkerResult",
           "WorkerSteps", "make_worker_steps", "run_worker", "warm_up"]


class Transport(Protocol):
    """How a worker reaches the master."""

    def tick(self, progress: Callable[[], WorkerResult]) -> int | None:
        """Announces one local step: T, the number of steps all workers announced before it
        (the total-iteration clock), or None if the run was stopped (the step is not taken).
        While the master holds the workers at a cut, hands ``progress()`` (the worker
        between two steps) to the master and blocks until the cut is released."""

    def exchange(self, worker: int, vectors: Sequence[Any],
                 scalars: Sequence[Any]) -> tuple[np.ndarray, ...]:
        """Worker ``worker``'s exchange: flat ``vectors`` in, flat replies out (atomic on the
        master's side)."""


class WorkerSteps(NamedTuple):
    """The worker side of a rule as three jitted functions over flat messages.

    ``local(worker, batch, key) -> (worker, loss)``, a step without exchange;
    ``prepare(worker, batch, key, index) -> (worker, grad, vectors, scalars, loss)``;
    ``finish(worker, grad, replies) -> worker``, after the master's replies. ``key`` is the
    worker's key; the step's key is ``fold_in(key, t_i)``.
    """

    local: Callable
    prepare: Callable
    finish: Callable


def make_worker_steps(rule: AsyncRule, grad_fn: GradFn, params: Any) -> WorkerSteps:
    """:class:`WorkerSteps` of ``rule``, with messages flattened like ``params``."""
    _, unravel = ravel_pytree(params)

    def gradient(worker, batch, key):
        key = jax.random.fold_in(key, worker.count)
        grad, loss = grad_fn(rule.gradient_point(worker), batch, key)
        return grad, loss, rule.before(worker, grad, loss)

    @jax.jit
    def local(worker, batch, key):
        grad, loss, worker = gradient(worker, batch, key)
        return rule.after(worker, grad, jnp.asarray(False)), loss

    @jax.jit
    def prepare(worker, batch, key, index):
        grad, loss, worker = gradient(worker, batch, key)
        vectors, scalars = rule.message(worker, grad, index)
        return worker, grad, tuple(ravel_pytree(v)[0] for v in vectors), scalars, loss

    @jax.jit
    def finish(worker, grad, replies):
        worker = rule.receive(worker, tuple(unravel(r) for r in replies))
        return rule.after(worker, grad, jnp.asarray(True))

    return WorkerSteps(local, prepare, finish)


def warm_up(steps: WorkerSteps, rule: AsyncRule, params: Any, batch_fn: BatchFn, index: int,
            key: jax.Array, dry_exchange: Callable[[Any, Any], Sequence[Any]]) -> float:
    """Compiles the worker's steps (and, through ``dry_exchange(vectors, scalars) ->
    replies``, the master's exchange) on worker ``index``'s first batch; returns the seconds.
    Changes nothing."""
    begin = time.perf_counter()
    warm = rule.init_worker(params)
    batch = jax.tree.map(lambda a: a[0], batch_fn(index, 0, 1))
    jax.block_until_ready(steps.local(warm, batch, key))
    warm, grad, vectors, scalars, _ = steps.prepare(warm, batch, key, index)
    jax.block_until_ready(steps.finish(warm, grad, dry_exchange(vectors, scalars)))
    return time.perf_counter() - begin


def run_worker(
    steps: WorkerSteps,
    rule: AsyncRule,
    params: Any,
    transport: Transport,
    index: int,
    num_steps: int,
    batch_fn: BatchFn,
    key: jax.Array,
    chunk_steps: int,
    stop_when: StopHook | None = None,
    start: WorkerResult | None = None,
) -> WorkerResult:
    """Worker ``index`` from ``params`` (or from ``start``, a snapshot of a previous run):
    up to ``num_steps`` local steps in all (fewer if the transport says the run was stopped).

    Args:
        steps: :func:`make_worker_steps` of ``rule``.
        transport: the master.
        batch_fn: ``(worker, start_step, steps) -> batches`` with a leading axis ``steps``,
            fetched ``chunk_steps`` at a time.
        key: the base PRNG key; step t uses ``fold_in(fold_in(key, index), t)``.
        stop_when: test hook, ``(worker, step)`` called before every step (may raise).
        start: where to continue from (its worker state, losses, steps and exchanges).

    Raises :class:`WorkerFailedError` (index, local step, cause, and the worker before the
    step that failed) for an Exception in the loop; anything else (a KeyboardInterrupt)
    passes as it is.
    """
    if start is None:
        worker, losses, taken, exchanges = rule.init_worker(params), [], 0, 0
    else:
        worker, losses, taken, exchanges = (start.worker, list(start.losses), start.steps,
                                            start.exchanges)
    worker_key = jax.random.fold_in(key, index)

    def progress() -> WorkerResult:
        return WorkerResult(worker, list(losses), taken, exchanges)

    try:
        for first in range(taken, num_steps, chunk_steps):
            count = min(chunk_steps, num_steps - first)
            batches = batch_fn(index, first, count)
            for j in range(count):
                step = first + j
                if stop_when is not None:
                    stop_when(index, step)
                total = transport.tick(progress)
                if total is None:
                    return progress()
                batch = jax.tree.map(lambda a, j=j: a[j], batches)
                if rule.communicates(step, total):
                    new, grad, vectors, scalars, loss = steps.prepare(
                        worker, batch, worker_key, index)
                    replies = transport.exchange(index, vectors, scalars)
                    exchanges += 1
                    worker = steps.finish(new, grad, replies)
                else:
                    worker, loss = steps.local(worker, batch, worker_key)
                losses.append(loss)
                taken = step + 1
    except Exception as error:
        raise WorkerFailedError(index, taken, error, progress()) from error
    return WorkerResult(jax.block_until_ready(worker), losses, taken, exchanges)
