"""The asynchronous parameter server across hosts, on Ray actors (optional extra:
``pip install easgd-jax[ray]``).

The same server and the same worker as the ``threads`` executor (``parallel/server.py``), with
Ray as the transport instead of threads of one process:

- one server actor wraps a :class:`~easgd_jax.parallel.server.ParameterServer` (the master in
  independently locked shards, the staleness measurements, the float64 no-lost-update
  ledger). It is a threaded actor (``max_concurrency = p + 2``), so exchanges of different
  workers run concurrently and meet only on the shards' locks, and the driver can read the
  center while the workers run. Ray serialises the flat numpy messages and replies.
- one worker actor per worker runs the threads executor's worker loop
  (:func:`~easgd_jax.parallel.worker_loop.run_worker`) over a Ray transport: when its rule
  says so, it calls the server actor's ``exchange`` (elastic differences for EASGD/EAMSGD,
  pushed sums for DOWNPOUR, gradients for APAM), never waiting for the other workers.
- the driver (:class:`RayExecutor`, an :class:`~easgd_jax.parallel.executor.Executor`;
  :func:`train_ray` runs it) starts them, waits with a timeout (calling ``on_poll`` for
  mid-run evaluation), gathers the workers' states, the final center, the ledger and the
  server's report, and kills every actor (and shuts Ray down if it started it). The first
  exception raised in a worker stops the others and reaches the driver as a
  :class:`~easgd_jax.parallel.executor.WorkerFailedError` (the worker's index, its local
  step when known, the cause), unless ``on_failure`` restarts the worker from the center;
  the server actor's own death is reported as such (the cause). The workers
  are held at consistent cuts as in the threads executor (the server actor holds them; a
  held worker ships its progress to it), and a run resumes from a cut (``start``,
  ``server_state``).

Ray is imported lazily, only when this executor is used. The actors run jax on the CPU
(``JAX_PLATFORMS=cpu``) with one intra-op thread, through their ``runtime_env``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.flatten_util import ravel_pytree

from easgd_jax.algorithms.base import AsyncRule
from easgd_jax.parallel.executor import (
    CONTINUE,
    STOP,
    Capabilities,
    GradFn,
    Hooks,
    Outcome,
    ServerState,
    Setup,
    WorkerFailedError,
    WorkerResult,
)
from easgd_jax.parallel.server import CutSchedule, ParameterServer, state_shapes
from easgd_jax.parallel.worker_loop import make_worker_steps, run_worker, warm_up

HELD = -1  # the server actor's tick while the workers are held at a cut
ACTOR_ENV = {
    "JAX_PLATFORMS": "cpu",
    "OMP_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
}


def import_ray() -> Any:
    """The ``ray`` module, or ImportError telling how to install it."""
    try:
        import ray
    except ImportError as error:
        raise ImportError("config.executor 'ray' needs Ray, an optional extra: "
                          "pip install 'easgd-jax[ray]'") from error
    return ray


def _host(tree: Any) -> Any:
    return jax.tree.map(np.asarray, tree)


class ServerActor:
    """The master (a :class:`ParameterServer`) behind a Ray actor; ``stop`` asks the workers to
    end (they read it with every :meth:`tick`)."""

    def __init__(self, rule: AsyncRule, params: Any, num_workers: int, num_shards: int,
                 lock_timeout_s: float, steps: Sequence[int] | None = None):
        self.ps = ParameterServer(rule, params, num_workers, num_shards, lock_timeout_s)
        self.stopped = False
        # Each worker's local steps as announced here (from ``steps``, a resumed cut's).
        self.steps = list(steps) if steps is not None else [0] * num_workers

    def tick(self, worker: int | None = None) -> int | None:
        """T before this local step (of ``worker``, counted in :attr:`steps`), None if the
        run was stopped, :data:`HELD` while the workers are held at a cut (no step announced
        in either case)."""
        if self.stopped:
            return None
        total = self.ps.tick()
        if total is None:
            return HELD
        if worker is not None:
            self.steps[worker] += 1
        return total

    def announced(self, worker: int) -> int:
        """The local steps ``worker`` announced (where its process was when it died)."""
        return self.steps[worker]

    def rewind(self, worker: int, steps: int) -> int:
        """``worker`` goes back to its local step ``steps`` (its last cut: its process died
        after it): the steps it announced since leave T, as it takes them again. Returns
        their number."""
        lost = self.steps[worker] - steps
        self.ps.rewind(lost)
        self.steps[worker] = steps
        return lost

    def park(self, worker: int, progress: WorkerResult) -> None:
        """Leaves worker ``worker``'s progress at the cut; returns when it is released."""
        self.ps.park(worker, progress, lambda: self.stopped)

    def parked(self) -> dict[int, WorkerResult]:
        return self.ps.parked()

    def hold(self, at: int | None) -> None:
        self.ps.hold(at)

    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """:meth:`ParameterServer.state` in host arrays."""
        arrays, meta = self.ps.state()
        return _host(arrays), meta

    def load_state(self, arrays: dict[str, Any], meta: dict[str, Any]) -> None:
        self.ps.load_state(jax.tree.map(jnp.asarray, arrays), meta)

    def stop(self) -> None:
        self.stopped = True

    def total(self) -> int:
        return self.ps.total

    def exchange(self, worker: int, vectors: Sequence[np.ndarray],
                 scalars: Sequence[Any]) -> tuple[np.ndarray, ...]:
        return self.ps.exchange(worker, vectors, scalars)

    def dry_exchange(self, vectors: Sequence[np.ndarray],
                     scalars: Sequence[Any]) -> tuple[np.ndarray, ...]:
        return self.ps.dry_exchange(vectors, scalars)

    def center_flat(self) -> np.ndarray:
        return self.ps.center_flat()

    def staleness_since(self, seen: Sequence[int]) -> list[list[int]]:
        """Each worker's staleness values after its first ``seen[w]``."""
        return [list(values[seen[w]:]) for w, values in enumerate(self.ps.staleness)]

    def final(self, atol: float, rtol_per_exchange: float) -> dict[str, Any]:
        """The verified report (AssertionError if an update was lost; unverified when the
        center is not finite, for the caller to report), the center, the start and the
        per-worker ledgers (call once the workers are done)."""
        report = self.ps.final_report(atol, rtol_per_exchange)
        return {"report": report, "center": self.ps.center_flat(), "start": self.ps.start,
                "ledger": self.ps.ledger, "staleness": self.ps.staleness,
                "state": self.state()}


def _host_progress(result: WorkerResult) -> WorkerResult:
    """A worker's progress in host arrays (its losses as float32 scalars), to ship."""
    losses = [np.float32(x) for x in np.asarray(jnp.stack(result.losses))] if result.losses \
        else []
    return WorkerResult(_host(result.worker), losses, result.steps, result.exchanges)


class RayTransport:
    """Worker ``index``'s way to the server actor (one round trip per call)."""

    def __init__(self, ray: Any, server: Any, index: int):
        self._ray, self.server, self.index = ray, server, index

    def tick(self, progress: Callable[[], WorkerResult]) -> int | None:
        while True:
            total = self._ray.get(self.server.tick.remote(self.index))
            if total != HELD:
                return total
            self._ray.get(self.server.park.remote(self.index, _host_progress(progress())))

    def exchange(self, worker: int, vectors: Sequence[Any],
                 scalars: Sequence[Any]) -> tuple[np.ndarray, ...]:
        return self._ray.get(self.server.exchange.remote(worker, _host(vectors), _host(scalars)))


class WorkerActor:
    """Worker ``index``: the shared worker loop (:mod:`easgd_jax.parallel.worker_loop`),
    exchanging with the server actor."""

    def __init__(self, index: int, rule: AsyncRule, grad_fn: GradFn, params: Any,
                 batch_fn: Callable[[int, int, int], Any], key: Any, chunk_steps: int,
                 stop_when: Callable[[int, int], None] | None):
        self.index, self.rule, self.params = index, rule, params
        self.batch_fn, self.chunk_steps, self.stop_when = batch_fn, chunk_steps, stop_when
        self.base_key = jnp.asarray(key)
        self.steps = make_worker_steps(rule, grad_fn, params)

    def warm_up(self, server: Any) -> float:
        """Compiles the worker's steps (and the server's exchange); returns the seconds."""
        ray = import_ray()

        def dry_exchange(vectors, scalars):
            return ray.get(server.dry_exchange.remote(_host(vectors), _host(scalars)))

        return warm_up(self.steps, self.rule, self.params, self.batch_fn, self.index,
                       self.base_key, dry_exchange)

    def run(self, server: Any, num_steps: int,
            start: WorkerResult | None = None) -> WorkerResult:
        """Up to ``num_steps`` local steps in all (fewer if the server was stopped), from
        ``start`` if given; the result in host arrays. A failure raises
        :class:`WorkerFailedError` with the worker before the step that failed in host
        arrays."""
        try:
            result = run_worker(self.steps, self.rule, self.params,
                                RayTransport(import_ray(), server, self.index), self.index,
                                num_steps, self.batch_fn, self.base_key, self.chunk_steps,
                                self.stop_when, start=start)
        except WorkerFailedError as error:
            progress = None if error.progress is None else _host_progress(error.progress)
            raise WorkerFailedError(error.worker, error.step, error.cause,
                                    progress) from error.cause
        return _host_progress(result)


class RemoteServer:
    """The driver's view of the server actor while the workers run (for ``on_poll``)."""

    def __init__(self, ray: Any, actor: Any, num_workers: int, unravel: Callable):
        self._ray, self.actor, self._unravel = ray, actor, unravel
        self._seen = [0] * num_workers

    @property
    def total(self) -> int:
        return int(self._ray.get(self.actor.total.remote()))

    def center(self) -> Any:
        return self._unravel(jnp.asarray(self.center_flat()))

    def center_flat(self) -> np.ndarray:
        return np.asarray(self._ray.get(self.actor.center_flat.remote()))

    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The server's :meth:`ParameterServer.state` (jax arrays, for a checkpoint)."""
        arrays, meta = self._ray.get(self.actor.state.remote())
        return jax.tree.map(jnp.asarray, arrays), meta

    def staleness_since(self, seen: Sequence[int]) -> list[list[int]]:
        return self._ray.get(self.actor.staleness_since.remote(list(seen)))

    @property
    def seen(self) -> list[int]:
        """How many staleness values of each worker :meth:`new_staleness` returned so far."""
        return list(self._seen)

    def new_staleness(self) -> np.ndarray:
        """The staleness of the exchanges since the previous call."""
        new = self._ray.get(self.actor.staleness_since.remote(self._seen))
        for w, values in enumerate(new):
            self._seen[w] += len(values)
        return np.asarray([s for values in new for s in values], np.int64)


@dataclasses.dataclass
class RayRun(Outcome):
    """The outcome of :class:`RayExecutor` (:func:`train_ray`): the executors' common
    :class:`~easgd_jax.parallel.executor.Outcome` and the server's whole account."""

    worker_exchanges: list[int]  # exchanges each worker sent (counted by the worker)
    start_flat: np.ndarray  # float64
    ledger: np.ndarray  # (p, size) float64: the center deltas each worker caused
    center: Any  # the center as a params pytree


def _worker_error(ray: Any, error: BaseException, index: int, num_workers: int,
                  server: Any = None) -> WorkerFailedError:
    """Worker ``index``'s failure as a :class:`WorkerFailedError`: the one it raised
    (unwrapped from Ray's), or one whose cause names the dead worker actor, or the server
    actor when that is what died (``server`` given)."""
    if server is not None:
        try:
            ray.get(server.__ray_ready__.remote(), timeout=10)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as dead:
            return WorkerFailedError(index, None, RuntimeError(
                f"the Ray parameter-server actor died ({type(dead).__name__}: "
                f"{str(dead)[:300]}); worker actor {index} of {num_workers} lost it"))
    if isinstance(error, ray.exceptions.RayTaskError):
        cause = getattr(error, "cause", None)
        if isinstance(cause, WorkerFailedError):
            return cause
        error = cause if isinstance(cause, BaseException) else error
    elif isinstance(error, ray.exceptions.RayActorError):
        first = (str(error).strip().splitlines() or [""])[0][:300]  # (Ray's own: 10 lines)
        error = RuntimeError(f"Ray worker actor {index} died: {first}")
    return WorkerFailedError(index, None, error)


def _kill_all(ray: Any, actors: list[Any], timeout_s: float) -> None:
    """Kills ``actors`` and waits (bounded) until each answers as dead."""
    for actor in actors:
        ray.kill(actor, no_restart=True)
    end = time.monotonic() + timeout_s
    for actor in actors:
        while True:
            try:
                ray.get(actor.__ray_ready__.remote(), timeout=max(0.1, end - time.monotonic()))
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                break
            if time.monotonic() > end:
                raise RuntimeError(f"a Ray actor is still alive {timeout_s} s after ray.kill.")
            time.sleep(0.05)


class RayExecutor:
    """The Ray executor: a server actor and one worker actor per worker (an
    :class:`~easgd_jax.parallel.executor.Executor`).

    Args:
        setup: the workers (``grad_fn``, ``batch_fn``, ``rule`` and ``stop_when`` are
            shipped to the actors: they must pickle).
        address: ``""``: use the running Ray instance, or start a local one
            (``ray.init(num_cpus=num_cpus)``) and shut it down at the end; else the address
            of an existing cluster to connect to (``"auto"``, ``"ray://host:10001"``...).
        poll_s: the driver's poll period while the workers run.
        lock_timeout_s: the server's shard locks (:class:`ParameterServer`).

    Under "continue" a worker that raised is restarted from the center at the step it failed
    at; one whose process died (its actor lost, its steps since its last cut with it)
    resumes in a new actor from its last cut, its own state there: the executor keeps every
    worker's progress at each cut, and the server actor takes the lost steps back out of T
    (:meth:`ServerActor.rewind`), so that T stays the sum of the workers' steps. Under "stop"
    such a worker is reported at its last cut, where a re-run resumes it. Each restart is
    logged, saying which. The driver never builds a :class:`ParameterServer`: the server
    actor does.
    """

    capabilities = Capabilities(frozenset({STOP, CONTINUE}), restarts_failed_workers=True)

    def __init__(self, setup: Setup, *, address: str = "", num_cpus: int | None = None,
                 poll_s: float = 0.05, lock_timeout_s: float = 60.0):
        self.setup, self.address, self.num_cpus = setup, address, num_cpus
        self.poll_s, self.lock_timeout_s = poll_s, lock_timeout_s
        self.view: RemoteServer | None = None  # the server actor, once it runs
        self._results: list[WorkerResult | None] = [None] * setup.num_workers
        self._snapshot: ServerState | None = None
        self._actors: list[Any] = []
        self._unravel = ravel_pytree(setup.params)[1]

    def state_shapes(self) -> dict[str, Any]:
        s = self.setup
        return state_shapes(s.rule, s.params, s.num_workers, s.num_shards)

    def progress(self) -> list[WorkerResult | None]:
        return list(self._results)

    def snapshot(self) -> ServerState | None:
        return self._snapshot

    def run(self, hooks: Hooks, start: Sequence[WorkerResult] | None = None,
            server_state: ServerState | None = None, cuts: Sequence[int] = ()) -> RayRun:
        """See :class:`~easgd_jax.parallel.executor.Executor`. Raises a
        :class:`WorkerFailedError` that ``hooks.on_failure`` does not absorb (its cause a
        RuntimeError naming the server actor if that died), TimeoutError after
        ``setup.timeout_s``, RuntimeError if a worker ignores the stop
        ``setup.join_timeout_s`` long, and the AssertionError of a lost update."""
        ray = import_ray()
        started = False
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, runtime_env={"env_vars": ACTOR_ENV})
            else:
                ray.init(num_cpus=self.num_cpus or max(2, self.setup.num_workers),
                         include_dashboard=False, runtime_env={"env_vars": ACTOR_ENV})
            started = True
        self._actors = []
        try:
            return self._run(ray, hooks, start, server_state, cuts)
        except ray.exceptions.RayTaskError as error:  # the server's verify (AssertionError)
            cause = getattr(error, "cause", None)
            raise (cause if isinstance(cause, BaseException) else error) from None
        finally:
            try:
                _kill_all(ray, self._actors, self.setup.join_timeout_s)
            finally:
                if started:
                    ray.shutdown()

    def _new_actor(self, ray: Any, cls: type, *args: Any, **options: Any) -> Any:
        actor = ray.remote(cls).options(num_cpus=0, runtime_env={"env_vars": ACTOR_ENV},
                                        **options).remote(*args)
        self._actors.append(actor)
        return actor

    def _new_worker(self, ray: Any, index: int) -> Any:
        s = self.setup
        return self._new_actor(ray, WorkerActor, index, s.rule, s.grad_fn, _host(s.params),
                               s.batch_fn, np.asarray(s.key), s.chunk_steps, s.stop_when,
                               scheduling_strategy="SPREAD")

    def _run(self, ray: Any, hooks: Hooks, start: Sequence[WorkerResult] | None,
             server_state: ServerState | None, cuts: Sequence[int]) -> RayRun:
        s, p = self.setup, self.setup.num_workers
        server = self._new_actor(ray, ServerActor, s.rule, _host(s.params), p, s.num_shards,
                                 self.lock_timeout_s,
                                 None if start is None else [r.steps for r in start],
                                 max_concurrency=p + 2)
        if server_state is not None:
            ray.get(server.load_state.remote(_host(server_state[0]), server_state[1]))
        workers = [self._new_worker(ray, i) for i in range(p)]
        begin = time.perf_counter()
        _gather(ray, [w.warm_up.remote(server) for w in workers], p, s.timeout_s)
        compile_time = time.perf_counter() - begin
        self.view = RemoteServer(ray, server, p, self._unravel)
        self._results = [_host_progress(r) for r in start] if start is not None else [None] * p
        schedule = CutSchedule(cuts, ray.get(server.total.remote()),
                               lambda at: ray.get(server.hold.remote(at)))
        begin = time.perf_counter()
        refs = {w.run.remote(server, s.num_steps, self._results[i]): i
                for i, w in enumerate(workers)}
        try:
            self._wait(ray, hooks, server, workers, refs, schedule)
        except BaseException:
            self._stop(ray, server, refs)
            raise
        ray.get(server.stop.remote(), timeout=s.join_timeout_s)
        wall = time.perf_counter() - begin
        final = ray.get(server.final.remote(s.verify_atol, s.verify_rtol_per_exchange),
                        timeout=s.join_timeout_s)
        results = list(self._results)
        return RayRun(
            results=results, center_flat=final["center"], staleness=final["staleness"],
            report=final["report"], server_state=final["state"], wall_time_s=wall,
            compile_time_s=compile_time, lost={},
            worker_exchanges=[int(r.exchanges) for r in results], start_flat=final["start"],
            ledger=final["ledger"], center=self._unravel(jnp.asarray(final["center"])))

    def _wait(self, ray: Any, hooks: Hooks, server: Any, workers: list[Any],
              refs: dict[Any, int], schedule: CutSchedule) -> None:
        """Polls the workers until all are done, restarting those ``on_failure`` absorbs."""
        s, p, results = self.setup, self.setup.num_workers, self._results
        status = ["running"] * p
        view, on_cut = self.view, hooks.on_cut

        def at_cut(total: int, progress: list[WorkerResult]) -> None:
            for i, r in enumerate(progress):  # where a worker whose process dies resumes
                if status[i] == "running":
                    results[i] = r
            if on_cut is not None:
                on_cut(view, total, progress)
        deadline = time.monotonic() + s.timeout_s
        while refs:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {p} Ray workers did not finish in {s.timeout_s} s.")
            done, _ = ray.wait(list(refs), num_returns=1, timeout=self.poll_s)
            for ref in done:
                i = refs.pop(ref)
                try:
                    results[i], status[i] = ray.get(ref), "done"
                    continue
                except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as e:
                    error = _worker_error(ray, e, i, p, server)
                    died = isinstance(e, ray.exceptions.RayActorError)
                progress = error.progress or results[i]
                if died and error.step is None:  # its process died: back to its last cut
                    progress = progress or self._start_point()
                    at = int(ray.get(server.announced.remote(i), timeout=s.join_timeout_s))
                    lost = int(ray.get(server.rewind.remote(i, progress.steps),
                                       timeout=s.join_timeout_s))
                    error = WorkerFailedError(i, at, error.cause, progress)
                    logging.warning(
                        "worker %d: its Ray actor died at its local step %d; it resumes from "
                        "its last cut, at local step %d (its state there; the %d step(s) "
                        "since are taken again)", i, at, progress.steps, lost)
                if hooks.on_failure is None or not hooks.on_failure(error):
                    results[i], status[i] = progress, "failed"
                    raise error from error.cause
                if not died:
                    results[i] = self._restart(progress)
                    logging.warning("worker %d: restarted from the center at its local step "
                                    "%d", i, results[i].steps)
                if died:  # a new actor in its place
                    workers[i] = self._new_worker(ray, i)
                    ray.get(workers[i].warm_up.remote(server), timeout=s.timeout_s)
                refs[workers[i].run.remote(server, s.num_steps, results[i])] = i
            if hooks.on_poll is not None:
                hooks.on_poll()
            schedule.poll(
                lambda: ray.get(server.parked.remote()), lambda: (list(status), list(results)),
                lambda: ray.get(server.total.remote()), at_cut)

    def _start_point(self) -> WorkerResult:
        """A worker at the run's start (no cut taken yet)."""
        return WorkerResult(_host(self.setup.rule.init_worker(self.setup.params)), [], 0, 0)

    def _restart(self, progress: WorkerResult | None) -> WorkerResult:
        """A failed worker restarted from the center, at the step it failed at."""
        assert self.view is not None
        at = progress.steps if progress is not None else 0
        fresh = self.setup.rule.init_worker(self._unravel(jnp.asarray(self.view.center_flat())))
        return WorkerResult(_host(fresh._replace(count=jnp.asarray(at, jnp.int32))), [], at,
                            progress.exchanges if progress is not None else 0)

    def _stop(self, ray: Any, server: Any, refs: dict[Any, int]) -> None:
        """Stops the workers after an exception: each one's progress, the server's state."""
        join = self.setup.join_timeout_s
        ray.get(server.stop.remote(), timeout=join)
        for ref, i in refs.items():  # the others return at their next tick
            try:
                self._results[i] = ray.get(ref, timeout=join)
            except Exception:  # noqa: BLE001 - dead too: keep its last known progress
                pass
        try:
            self._snapshot = ray.get(server.state.remote(), timeout=join)
        except Exception:  # noqa: BLE001 - the server itself died
            self._snapshot = None


def train_ray(
    rule: AsyncRule,
    grad_fn: GradFn,
    params: Any,
    num_workers: int,
    num_steps: int,
    batch_fn: Callable[[int, int, int], Any],
    key: jax.Array,
    *,
    num_shards: int = 1,
    timeout_s: float = 3600.0,
    chunk_steps: int = 50,
    on_poll: Callable[[RemoteServer], None] | None = None,
    poll_s: float = 0.05,
    address: str = "",
    num_cpus: int | None = None,
    stop_when: Callable[[int, int], None] | None = None,
    verify_atol: float = 0.0,
    verify_rtol_per_exchange: float = 1e-6,
    lock_timeout_s: float = 60.0,
    join_timeout_s: float = 30.0,
    start: Sequence[WorkerResult] | None = None,
    server_state: ServerState | None = None,
    cuts: Sequence[int] = (),
    on_cut: Callable[[RemoteServer, int, list[WorkerResult]], None] | None = None,
    on_failure: Callable[[WorkerFailedError], bool] | None = None,
) -> RayRun:
    """Every worker runs ``num_steps`` local steps of ``rule`` in its own Ray actor
    (:class:`RayExecutor`).

    Arguments as :func:`~easgd_jax.parallel.server.train_threads` and :class:`RayExecutor`,
    plus ``on_poll(remote)``, called in the driver every ``poll_s`` while the workers run
    with a :class:`RemoteServer` (mid-run evaluation of the center); ``start``,
    ``server_state``: a resumed run (each worker's progress and the server's
    :meth:`ParameterServer.state`, host or jax arrays, at the same cut);
    ``on_cut(remote, T, progress)``; ``on_failure(error) -> continue?``, True restarting the
    worker from the center.
    """
    setup = Setup(rule, grad_fn, params, num_workers, num_steps, batch_fn, key, num_shards,
                  timeout_s, chunk_steps, stop_when, verify_atol, verify_rtol_per_exchange,
                  join_timeout_s)
    executor = RayExecutor(setup, address=address, num_cpus=num_cpus, poll_s=poll_s,
                           lock_timeout_s=lock_timeout_s)
    hooks = Hooks(None if on_poll is None else lambda: on_poll(executor.view), on_cut,
                  on_failure)
    return executor.run(hooks, start, server_state, cuts)


def _gather(ray: Any, refs: list[Any], num_workers: int, timeout_s: float, *,
            on_poll: Callable[[], None] | None = None, poll_s: float = 0.05) -> list[Any]:
    """The results of ``refs`` (one per worker), in order; re-raises a worker's exception
    with its index; TimeoutError after ``timeout_s``."""
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[Any] = [None] * len(refs)
    pending = list(refs)
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the {num_workers} Ray workers did not finish in {timeout_s} s.")
        done, pending = ray.wait(pending, num_returns=1, timeout=poll_s)
        for ref in done:
            try:
                results[index[ref]] = ray.get(ref)
            except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as error:
                raise _worker_error(ray, error, index[ref], num_workers) from None
        if on_poll is not None:
            on_poll()
    return results
