"""A real asynchronous parameter server on one host: one Python thread per worker.

Each worker thread runs the shared worker loop (:mod:`easgd_jax.parallel.worker_loop`, also
the Ray executor's) with its own jitted local steps (jax releases the GIL while XLA computes)
and never waits for the others; when its rule says so it exchanges with the master, which the
server holds. The master is split into shards (contiguous ranges of the flattened params),
each with its own lock and its own clock, applied independently as in DistBelief's sharded
parameter server (Dean et al., NIPS 2012): a worker's exchange visits the shards one after
the other, and under a shard's lock the rule's pure exchange function
(:attr:`~easgd_jax.algorithms.base.AsyncRule.exchange`: elastic differences for
EASGD/EAMSGD, pushed sums for DOWNPOUR, gradients for APAM) is applied to that shard's master
on its value at that moment. (Rules whose exchange is not elementwise, LSGD's leader choice,
need one shard.)

Measured and checked:

- staleness of every (worker, shard) exchange: the number of updates the shard received
  between the worker's last read of it (its previous exchange, whose reply it read) and this
  write;
- no lost update: every worker keeps an independent float64 ledger of the center deltas it
  caused; at the end the center must equal its start plus the sum of all ledgers
  (:meth:`ParameterServer.report`);
- the number of exchanges each shard applied equals the number the workers sent;
- clean shutdown: :func:`run_threads` joins every thread with a timeout and fails if one is
  still alive; an exception in one worker stops all of them and reaches the caller as a
  :class:`~easgd_jax.parallel.executor.WorkerFailedError` (the worker's index, its local
  step, the cause), unless ``on_failure`` lets the others go on without it.

:class:`ThreadExecutor` is this module's :class:`~easgd_jax.parallel.executor.Executor`
(the threads executor of ``training/asynchronous.py``); :func:`train_threads` runs it on a
given server.

Consistent cuts (for evaluations at exact steps and checkpoints): :meth:`ParameterServer.hold`
makes every worker that asks for a tick once T reaches a mark hand over its progress and
wait; when every worker is parked, finished or lost, no exchange is in flight, T equals the
steps the workers took, and :meth:`ParameterServer.state` with the workers' progress is a
snapshot a run can resume from (:meth:`ParameterServer.load_state`, ``start``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from easgd_jax.algorithms.base import AsyncRule
from easgd_jax.parallel.executor import (
    CONTINUE,
    STOP,
    Capabilities,
    GradFn,
    Hooks,
    Outcome,
    ServerReport,
    ServerState,
    Setup,
    WorkerFailedError,
    WorkerResult,
)
from easgd_jax.parallel.worker_loop import make_worker_steps, run_worker, warm_up

ThreadRun = Outcome  # what train_threads returns (the executors' common outcome)


def shard_bounds(size: int, num_shards: int) -> list[tuple[int, int]]:
    """``num_shards`` contiguous ranges covering ``range(size)``, sizes differing by <= 1."""
    if num_shards < 1 or num_shards > max(size, 1):
        raise ValueError(f"num_shards must be in [1, {size}] (the parameter count), got "
                         f"{num_shards}.")
    edges = np.linspace(0, size, num_shards + 1).round().astype(int)
    return [(int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


def state_shapes(rule: AsyncRule, params: Any, num_workers: int,
                 num_shards: int = 1) -> dict[str, Any]:
    """The abstract shapes of :meth:`ParameterServer.state`'s arrays (``jax.eval_shape``:
    nothing is built, no ledger allocated), with the default device's sharding: the target a
    checkpoint of the server is restored into."""
    flat = jax.eval_shape(lambda tree: ravel_pytree(tree)[0], params)
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def placed(a: Any) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding)

    masters = [jax.eval_shape(rule.init_master, jax.ShapeDtypeStruct((hi - lo,), flat.dtype))
               for lo, hi in shard_bounds(flat.size, num_shards)]
    words = 2 * flat.size  # a float64 as two uint32
    return {"masters": jax.tree.map(placed, masters),
            "ledger_bits": placed(jax.ShapeDtypeStruct((num_workers, words), np.uint32)),
            "start_bits": placed(jax.ShapeDtypeStruct((words,), np.uint32))}


class ParameterServer:
    """The master of an asynchronous rule, in independently locked flat shards.

    Args:
        rule: the asynchronous algorithm.
        params: the starting point (any pytree of float arrays of one dtype).
        num_workers: p.
        num_shards: how many shards (ranges of the flattened params) to split the master in.
        lock_timeout_s: a lock not acquired within this time raises TimeoutError (no hang).
    """

    def __init__(self, rule: AsyncRule, params: Any, num_workers: int, num_shards: int = 1,
                 lock_timeout_s: float = 60.0):
        if num_shards > 1 and not rule.shardable:
            raise ValueError(f"{rule.name!r} exchanges are not elementwise: use one shard "
                             f"(num_shards=1), got {num_shards}.")
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}.")
        flat, self.unravel = ravel_pytree(params)
        flat = np.asarray(flat)
        self.rule, self.num_workers, self.size = rule, num_workers, flat.size
        self.bounds = shard_bounds(self.size, num_shards)
        self.lock_timeout_s = lock_timeout_s
        self._masters = [rule.init_master(jnp.asarray(flat[lo:hi])) for lo, hi in self.bounds]
        self._exchange = jax.jit(rule.exchange)
        self._locks = [threading.Lock() for _ in self.bounds]
        self.clocks = np.zeros(len(self.bounds), np.int64)
        # Row w is written only by worker w's thread (ledger, read clocks, counts, staleness).
        self._read = np.zeros((num_workers, len(self.bounds)), np.int64)
        self.sent = np.zeros(num_workers, np.int64)
        self.staleness: list[list[int]] = [[] for _ in range(num_workers)]
        self.ledger = np.zeros((num_workers, self.size), np.float64)
        self.start = flat.astype(np.float64)
        self._total_lock = threading.Lock()
        self._cut = threading.Condition(self._total_lock)  # the hold of a consistent cut
        self._hold: int | None = None
        self._parked: dict[int, Any] = {}
        self._total = 0

    @property
    def num_shards(self) -> int:
        return len(self.bounds)

    @property
    def total(self) -> int:
        """T, the number of local steps the workers announced with :meth:`tick`."""
        return self._total

    def tick(self) -> int | None:
        """Announces one local step; returns T before it (the total-iteration clock), or
        None while the workers are held at a cut (:meth:`hold`; nothing is announced)."""
        with self._total_lock:
            if self._hold is not None and self._total >= self._hold:
                return None
            total = self._total
            self._total += 1
        return total

    def rewind(self, steps: int) -> None:
        """Takes ``steps`` announced steps back out of T: steps a worker lost (its process
        died after its last cut) and takes again from there, so that T stays the sum of the
        workers' local steps."""
        with self._total_lock:
            self._total -= steps

    # ---- consistent cuts: the workers held between two local steps

    def hold(self, at: int | None) -> None:
        """Holds every worker that asks for a tick once T reaches ``at`` (None: no hold);
        releases the workers parked at the previous hold."""
        with self._cut:
            self._hold = at
            self._parked.clear()  # released (they leave park() when they get the lock)
            self._cut.notify_all()

    @property
    def hold_at(self) -> int | None:
        return self._hold

    def park(self, worker: int, progress: Any, stopped: Callable[[], bool]) -> None:
        """Worker ``worker``, refused a tick by the hold, leaves ``progress`` (its state
        between two steps) and waits until the hold is moved past T or ``stopped()``."""
        with self._cut:
            try:
                while (self._hold is not None and self._total >= self._hold
                       and not stopped()):
                    # (again after each wake-up: a hold moved while this worker waited for
                    # the lock may have been reached already, and it cleared the entry)
                    self._parked[worker] = progress
                    self._cut.wait(0.05)
            finally:
                self._parked.pop(worker, None)

    def staleness_since(self, seen: Sequence[int]) -> list[list[int]]:
        """Each worker's staleness values after its first ``seen[w]``."""
        return [list(values[seen[w]:]) for w, values in enumerate(self.staleness)]

    def parked(self) -> dict[int, Any]:
        """The progress of each worker parked at the hold now."""
        with self._cut:
            return dict(self._parked)

    # ---- checkpoints

    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The whole server at this moment, for a checkpoint: ``(arrays, meta)``, the
        shards' masters and the float64 start and ledger (as uint32 bit patterns, exact
        without 64-bit jax) in jax arrays, the clocks, read clocks, sent counts, staleness
        lists and T in JSON data. Call at a cut (no exchange in flight)."""
        arrays = {"masters": list(self._masters),
                  "ledger_bits": jnp.asarray(np.ascontiguousarray(self.ledger).view(np.uint32)),
                  "start_bits": jnp.asarray(np.ascontiguousarray(self.start).view(np.uint32))}
        meta = {"clocks": self.clocks.tolist(), "read": self._read.tolist(),
                "sent": self.sent.tolist(), "staleness": [list(s) for s in self.staleness],
                "total": int(self._total)}
        return arrays, meta

    def load_state(self, arrays: dict[str, Any], meta: dict[str, Any]) -> None:
        """Restores what :meth:`state` saved (before any worker starts)."""
        self._masters = list(arrays["masters"])
        self.ledger = np.array(np.asarray(arrays["ledger_bits"]).view(np.float64))
        self.start = np.array(np.asarray(arrays["start_bits"]).view(np.float64))
        self.clocks = np.asarray(meta["clocks"], np.int64)
        self._read = np.asarray(meta["read"], np.int64)
        self.sent = np.asarray(meta["sent"], np.int64)
        self.staleness = [list(s) for s in meta["staleness"]]
        self._total = int(meta["total"])

    def _acquire(self, shard: int) -> None:
        if not self._locks[shard].acquire(timeout=self.lock_timeout_s):
            raise TimeoutError(f"shard {shard}'s lock not acquired in {self.lock_timeout_s} s.")

    def exchange(self, worker: int, vectors: Sequence[np.ndarray],
                 scalars: Sequence[Any] = ()) -> tuple[np.ndarray, ...]:
        """Worker ``worker``'s exchange: flat ``vectors`` (shaped like the flattened params)
        go to every shard, each applied atomically under its lock; returns the flat replies."""
        vectors = [np.asarray(v) for v in vectors]
        scalars = tuple(scalars)
        replies: list[Any] = []
        for shard, (lo, hi) in enumerate(self.bounds):
            message = tuple(v[lo:hi] for v in vectors)
            self._acquire(shard)
            try:
                staleness = int(self.clocks[shard] - self._read[worker, shard])
                master, delta, reply = self._exchange(self._masters[shard], message, scalars)
                self._masters[shard] = master
                self.clocks[shard] += 1
                self._read[worker, shard] = self.clocks[shard]
            finally:
                self._locks[shard].release()
            self.ledger[worker, lo:hi] += np.asarray(delta, np.float64)
            self.staleness[worker].append(staleness)
            replies.append(reply)
        self.sent[worker] += 1
        return tuple(np.concatenate([np.asarray(r[j]) for r in replies])
                     for j in range(len(replies[0])))

    def dry_exchange(self, vectors: Sequence[np.ndarray],
                     scalars: Sequence[Any] = ()) -> tuple[np.ndarray, ...]:
        """The replies an exchange would get now, changing nothing (compiles the exchange of
        every shard size: a warm-up, before the workers start; no lock is taken)."""
        vectors = [np.asarray(v) for v in vectors]
        replies = []
        for master, (lo, hi) in zip(self._masters, self.bounds, strict=True):
            _, _, reply = self._exchange(master, tuple(v[lo:hi] for v in vectors),
                                         tuple(scalars))
            replies.append(reply)
        return tuple(np.concatenate([np.asarray(r[j]) for r in replies])
                     for j in range(len(replies[0])))

    def center_flat(self) -> np.ndarray:
        """The flat center, each shard read under its lock."""
        parts = []
        for shard in range(self.num_shards):
            self._acquire(shard)
            try:
                parts.append(self._masters[shard].center)
            finally:
                self._locks[shard].release()
        return np.concatenate([np.asarray(p) for p in parts])

    def center(self) -> Any:
        """The center as a params pytree (what is evaluated)."""
        return self.unravel(jnp.asarray(self.center_flat()))

    def master_shards(self) -> list[Any]:
        """The shards' master states (read without locks: call when the workers are done)."""
        return list(self._masters)

    def report(self) -> ServerReport:
        center = self.center_flat().astype(np.float64)
        expected = self.start + self.ledger.sum(axis=0)
        flat = [s for per_worker in self.staleness for s in per_worker]
        return ServerReport(
            exchanges_applied=[int(c) for c in self.clocks],
            exchanges_sent=[int(s) for s in self.sent],
            max_discrepancy=float(np.max(np.abs(center - expected), initial=0.0)),
            center_scale=float(np.max(np.abs(center), initial=0.0)),
            staleness_mean=float(np.mean(flat)) if flat else 0.0,
            staleness_max=int(max(flat, default=0)),
            staleness_count=len(flat))

    def verify(self, atol: float = 0.0, rtol_per_exchange: float = 0.0) -> ServerReport:
        """Raises AssertionError if an update was lost or an exchange miscounted.

        The tolerance on |center - (start + sum of deltas)| is ``atol`` plus
        ``rtol_per_exchange * exchanges * max|center|`` (the float32 rounding of the center
        accumulates once per exchange; exact arithmetic, e.g. integer pushes, needs 0).
        """
        report = self.report()
        sent = sum(report.exchanges_sent)
        if any(applied != sent for applied in report.exchanges_applied):
            raise AssertionError(f"exchanges applied per shard {report.exchanges_applied} != "
                                 f"sent by the workers {sent}.")
        tolerance = atol + rtol_per_exchange * sent * report.center_scale
        if not report.max_discrepancy <= tolerance:
            raise AssertionError(
                f"lost update: the center differs from its start plus every applied delta by "
                f"{report.max_discrepancy} (tolerance {tolerance}).")
        return report

    def final_report(self, atol: float, rtol_per_exchange: float) -> ServerReport:
        """:meth:`verify` when the center is finite, else the unverified :meth:`report` (a
        non-finite center is for the caller to report). Call once the workers are done."""
        if np.isfinite(self.center_flat()).all():
            return self.verify(atol=atol, rtol_per_exchange=rtol_per_exchange)
        return self.report()


def run_threads(
    fn: Callable[[int, threading.Event], None],
    num_workers: int,
    timeout_s: float,
    *,
    on_poll: Callable[[], None] | None = None,
    poll_s: float = 0.05,
    join_timeout_s: float = 30.0,
) -> None:
    """Runs ``fn(worker_index, stop)`` in one thread per worker until all return.

    ``fn`` must return soon after ``stop`` is set. The first exception raised in a worker
    sets ``stop`` for all, and is raised here once every thread ended, as a
    :class:`WorkerFailedError` naming the worker (as it is if it is one already, or not an
    Exception: a KeyboardInterrupt). ``on_poll`` runs in the caller's
    thread every ``poll_s`` while the workers run (e.g. evaluation); its exceptions stop the
    run too. Raises TimeoutError after ``timeout_s`` (the workers are stopped first), and
    RuntimeError if a thread is still alive ``join_timeout_s`` after being stopped.
    """
    stop = threading.Event()
    errors: list[tuple[int, BaseException]] = []
    errors_lock = threading.Lock()

    def target(index: int) -> None:
        try:
            fn(index, stop)
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller
            with errors_lock:
                errors.append((index, error))
            stop.set()

    threads = [threading.Thread(target=target, args=(i,), name=f"ps-worker-{i}", daemon=True)
               for i in range(num_workers)]
    deadline = time.monotonic() + timeout_s
    timed_out, poll_error = False, None
    for thread in threads:
        thread.start()
    try:
        while any(t.is_alive() for t in threads) and not stop.is_set():
            if time.monotonic() > deadline:
                timed_out = True
                break
            next(t for t in threads if t.is_alive()).join(poll_s)
            if on_poll is not None:
                on_poll()
    except BaseException as error:  # noqa: BLE001 - on_poll failed or KeyboardInterrupt
        poll_error = error
    finally:
        stop.set()
        end = time.monotonic() + join_timeout_s
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    if errors:
        index, error = errors[0]
        if isinstance(error, WorkerFailedError) or not isinstance(error, Exception):
            raise error
        raise WorkerFailedError(index, None, error) from error
    if poll_error is not None:
        raise poll_error
    if alive:
        raise RuntimeError(f"worker threads {alive} still alive {join_timeout_s} s after stop.")
    if timed_out:
        raise TimeoutError(f"the {num_workers} workers did not finish in {timeout_s} s.")


class CutSchedule:
    """The driver's side of consistent cuts: the marks of T still ahead, one held at a time.

    ``cuts`` below T are dropped (T itself is kept: a run resumed from a stop at a mark
    still takes that cut). ``hold(at)`` moves the server's hold
    (:meth:`ParameterServer.hold`). :meth:`poll` checks
    whether every worker is parked at the current mark, finished or lost; then calls
    ``on_cut(T, per-worker progress)`` (skipped when the mark was not reached: the workers
    left finished or were lost first) and holds the next mark.
    """

    def __init__(self, cuts: Sequence[int], total: int, hold: Callable[[int | None], None]):
        self.pending = sorted(c for c in cuts if c >= total)
        self._hold = hold
        hold(self.pending[0] if self.pending else None)

    def poll(self, parked: Callable[[], dict[int, Any]],
             workers: Callable[[], tuple[list[str], list[Any]]], total: Callable[[], int],
             on_cut: Callable[[int, list[Any]], None] | None) -> None:
        """``parked()``: the progress of the parked workers; ``workers()``: every worker's
        status ("running" or not) and last known progress; ``total()``: T."""
        while self.pending:
            here = parked()
            status, results = workers()
            if not all(i in here or s != "running" for i, s in enumerate(status)):
                return
            mark = self.pending.pop(0)
            if total() == mark and on_cut is not None:
                on_cut(mark, [here.get(i, r) for i, r in enumerate(results)])
            self._hold(self.pending[0] if self.pending else None)


class ThreadTransport:
    """Worker ``index``'s way to the :class:`ParameterServer` of this process; ``stop`` ends
    the run."""

    def __init__(self, server: ParameterServer, stop: threading.Event, index: int):
        self.server, self.stop, self.index = server, stop, index

    def tick(self, progress: Callable[[], WorkerResult]) -> int | None:
        while not self.stop.is_set():
            total = self.server.tick()
            if total is not None:
                return total
            self.server.park(self.index, progress(), self.stop.is_set)
        return None

    def exchange(self, worker: int, vectors: Sequence[Any],
                 scalars: Sequence[Any]) -> tuple[np.ndarray, ...]:
        return self.server.exchange(worker, vectors, scalars)


class ThreadExecutor:
    """The threads executor: a :class:`ParameterServer` in this process and one thread per
    worker, each running the shared worker loop (an
    :class:`~easgd_jax.parallel.executor.Executor`).

    ``server``: the master to run against (built from ``setup`` when :meth:`run` starts if
    None). Under "continue" a failed worker is left behind (a lost worker)."""

    capabilities = Capabilities(frozenset({STOP, CONTINUE}), restarts_failed_workers=False)

    def __init__(self, setup: Setup, server: ParameterServer | None = None):
        self.setup, self.server = setup, server
        self._results: list[WorkerResult | None] = [None] * setup.num_workers

    def state_shapes(self) -> dict[str, Any]:
        s = self.setup
        return state_shapes(s.rule, s.params, s.num_workers, s.num_shards)

    def progress(self) -> list[WorkerResult | None]:
        return list(self._results)

    def snapshot(self) -> ServerState | None:
        return None if self.server is None else self.server.state()

    def run(self, hooks: Hooks, start: Sequence[WorkerResult] | None = None,
            server_state: ServerState | None = None, cuts: Sequence[int] = ()) -> Outcome:
        """Every worker runs ``setup.num_steps`` local steps in its own thread (see
        :class:`~easgd_jax.parallel.executor.Executor`). A cut no live worker can reach (the
        others finished or were lost) is skipped."""
        s = self.setup
        if self.server is None:
            self.server = ParameterServer(s.rule, s.params, s.num_workers, s.num_shards)
        server = self.server
        if server_state is not None:
            server.load_state(*server_state)
        steps = make_worker_steps(s.rule, s.grad_fn, s.params)
        # Compile everything once here, not in p threads at once (and not inside the timing).
        compile_time = warm_up(steps, s.rule, s.params, s.batch_fn, 0, s.key,
                               server.dry_exchange)
        results = self._results = (list(start) if start is not None
                                   else [None] * s.num_workers)
        status, lost, lock = ["running"] * s.num_workers, {}, threading.Lock()
        schedule = CutSchedule(cuts, server.total, server.hold)

        def work(index: int, stop: threading.Event) -> None:
            outcome = "done"
            try:
                result = run_worker(steps, s.rule, s.params, ThreadTransport(server, stop, index),
                                    index, s.num_steps, s.batch_fn, s.key, s.chunk_steps,
                                    s.stop_when, start=results[index])
            except WorkerFailedError as error:
                result = error.progress
                if hooks.on_failure is None or not hooks.on_failure(error):
                    with lock:
                        results[index], status[index] = result, "failed"
                    raise
                outcome = "lost"
                lost[index] = f"{type(error.cause).__name__}: {error.cause}"
            with lock:
                results[index], status[index] = result, outcome

        def workers() -> tuple[list[str], list[Any]]:
            with lock:
                return list(status), list(results)

        def poll() -> None:
            if hooks.on_poll is not None:
                hooks.on_poll()
            schedule.poll(server.parked, workers, lambda: server.total,
                          None if hooks.on_cut is None
                          else lambda total, here: hooks.on_cut(server, total, here))

        begin = time.perf_counter()
        try:
            run_threads(work, s.num_workers, s.timeout_s, on_poll=poll,
                        join_timeout_s=s.join_timeout_s)
        finally:
            server.hold(None)
        wall = time.perf_counter() - begin
        done = [r if r is not None else WorkerResult(s.rule.init_worker(s.params), [], 0, 0)
                for r in results]
        report = server.final_report(s.verify_atol, s.verify_rtol_per_exchange)
        return Outcome(done, server.center_flat(), [list(v) for v in server.staleness], report,
                       server.state(), wall, compile_time, lost)


def train_threads(
    rule: AsyncRule,
    grad_fn: GradFn,
    params: Any,
    server: ParameterServer,
    num_steps: int,
    batch_fn: Callable[[int, int, int], Any],
    key: jax.Array,
    *,
    timeout_s: float = 3600.0,
    chunk_steps: int = 50,
    on_poll: Callable[[], None] | None = None,
    stop_when: Callable[[int, int], None] | None = None,
    start: Sequence[WorkerResult] | None = None,
    cuts: Sequence[int] = (),
    on_cut: Callable[[int, list[WorkerResult]], None] | None = None,
    on_failure: Callable[[WorkerFailedError], bool] | None = None,
    verify_atol: float = 0.0,
    verify_rtol_per_exchange: float = 1e-6,
) -> ThreadRun:
    """Every worker runs ``num_steps`` local steps of ``rule`` in its own thread, against
    ``server`` (:class:`ThreadExecutor`).

    Args:
        rule, grad_fn: the algorithm and ``grad_fn(params, batch, key) -> (grad, loss)``.
        params: the common starting point of the workers (the server holds the master).
        server: the master (restored to the cut of ``start`` for a resumed run).
        num_steps, batch_fn, key, chunk_steps, stop_when: as
            :class:`~easgd_jax.parallel.executor.Setup`.
        timeout_s: the whole run's limit.
        on_poll: called in the caller's thread while the workers run.
        start: per worker, where to continue from (a resumed run).
        cuts, on_cut: values of T (local steps of all workers together) at which the
            workers are held between two steps; ``on_cut(T, per-worker progress)`` is then
            called in the caller's thread, with the server quiet, before they go on.
        on_failure: ``(error) -> continue?``; True leaves the worker behind and the others
            go on; False or None stops the run.
        verify_atol, verify_rtol_per_exchange: the no-lost-update check at the end
            (:meth:`ParameterServer.verify`; skipped for a non-finite center).

    Raises :class:`~easgd_jax.parallel.executor.WorkerFailedError` for a worker's failure.
    """
    setup = Setup(rule, grad_fn, params, server.num_workers, num_steps, batch_fn, key,
                  server.num_shards, timeout_s, chunk_steps, stop_when, verify_atol,
                  verify_rtol_per_exchange)
    hooks = Hooks(on_poll, None if on_cut is None else lambda _, t, r: on_cut(t, r),
                  on_failure)
    return ThreadExecutor(setup, server).run(hooks, start, cuts=cuts)
