"""``train_and_evaluate(config, workdir)``: asynchronous runs on the same data, models
and evaluation as the synchronous loop (:mod:`easgd_jax.training.sync`).

``config.executor`` chooses how the asynchrony happens:

- ``"simulated_async"``: seeded simulated asynchrony in compiled JAX code
  (``parallel/schedules.py``), bit-reproducible for a seed. ``config.asynchrony.schedule``:
  ``round_robin`` (worker t mod p acts at tick t), ``clocks`` (per-worker clocks of different
  speeds and phases) or ``random_delay`` (gradient-based rules only: each gradient at a master
  iterate up to ``max_staleness`` updates old). The run has ``num_steps * p`` ticks, the
  gradient computations of a synchronous run of ``num_steps`` local steps; with ``clocks``
  the fast workers take more of them. With ``config.worker_devices`` (data x fsdp > 1) the
  workers, who take turns anyway, all run in turn on one slot of data x fsdp devices
  (``num_devices`` = data x fsdp): every worker's state and the master's sharded over fsdp
  by the model's plan, each tick's batch split over data (:mod:`easgd_jax.parallel.
  schedules`); in float64 (``train.param_dtype``) it equals the one-device simulation.
- ``"threads"``: a real parameter server on this host (``parallel/server.py``), one thread per
  worker, each running ``num_steps`` local steps; the master in
  ``config.asynchrony.num_shards`` independently locked shards.
  Threads and Ray train in float32, each worker on one device.
- ``"ray"``: the same server and workers on Ray actors (``parallel/ray_server.py``, optional
  extra ``pip install easgd-jax[ray]``), across the hosts of a Ray cluster
  (``config.asynchrony.ray_address``; ``""``: a local one).

``threads`` and ``ray`` are two implementations of one executor protocol
(:class:`easgd_jax.parallel.executor.Executor`: start the workers, poll, hold them at cuts,
stop, collect, snapshot; their declared capabilities) under one driver,
:class:`_ServerDriver`, which never asks which one it runs: the failure policy is checked
against the executor's capabilities in :func:`validate`, and a checkpoint is restored into
the executor's abstract shapes (``jax.eval_shape``; no server is built to learn them).

Evaluation reads the CENTER (the master's x~; APAM's x; LSGD's leader) every
``train.eval_every`` local steps per worker on average (every ``eval_every * p`` ticks of
the simulation; for threads and Ray at a consistent cut with exactly that many local steps
done, the workers held between two steps), one ``MetricsWriter`` line each in
``workdir/metrics.jsonl`` (test loss and accuracy, the staleness mean/max since the previous
line, the training loss for the simulation). The final metrics add the wall time
(compilation excluded, reported as ``compile_time_s``), the staleness mean/max over the run
(master updates between a worker's read of the master and its write; per shard for threads),
the number of exchanges, and for threads the ledger discrepancy of the no-lost-update check
and the number of workers lost; ``final_metrics.json`` also lists the local steps each
worker took (and the lost workers). Same data (``WorkerSampler``: worker w's batches for its
local steps s..s+n-1 are drawn as ``indices(w, s, n)``), models and evaluator as the
synchronous loop.

Checkpoints (``workdir/checkpoints``, Orbax, every ``checkpoint.every`` steps, at the end,
and on SIGTERM/SIGINT, which stop the run and return the metrics with ``stopped_at_step``);
a re-run with the same workdir resumes from the latest one (``train.num_steps`` may grow;
metrics after the checkpoint are dropped and rewritten):

- ``simulated_async`` runs in compiled chunks of gcd(``eval_every``, ``checkpoint.every``)
  steps (so both fall on chunk boundaries; no config is refused for it) and saves at a
  chunk boundary the whole carry (``SimState``/``DelayState``: master, stacked workers with
  their clocks, master and read clocks, key), each worker's local step (the samplers'
  positions) and the staleness totals: resumed, it is bitwise equal to an uninterrupted run.
  On workers that span devices the carry is restored onto the slot's shardings, whatever
  the saved run's fsdp (``worker_devices`` may change between a run and its resumption).
- ``threads`` and ``ray`` save at a consistent cut: every shard's master, clocks, read clocks, sent
  counts, staleness lists and float64 no-lost-update ledger, with each worker's
  ``AsyncWorkerState``, local step, exchanges and last ``eval_every`` losses (its key is
  ``fold_in(key, worker)``, the step's ``fold_in`` of its clock: restored with the state).
  Resumed, no applied update is lost (the end's check covers the whole run) but the
  interleaving of the workers is new. A stop (signal, failure) cuts where the workers
  stand, between two steps, numbered T // p (T: local steps of all workers); a run resumed
  from it still takes the cut of a mark equal to that T.

A NaN or Inf in a loss or in the center raises ``NonFiniteError`` naming the step and the
last good checkpoint, after the chunk (simulation) or at the next cut (threads), before
anything is saved. ``asynchrony.on_worker_failure`` (threads, Ray): ``"stop"`` saves where
the workers stand and raises :class:`WorkerFailedError` naming the worker and its step (a
re-run resumes it from that step); ``"continue"`` logs the loss and the others go on
(threads: without it, the run ends with fewer steps, ``workers_lost`` counts them; Ray:
a worker that raised is restarted from the center at the step it failed at, one whose
process died resumes in a new actor from its last cut (its own state and step count there;
the steps since leave T and are taken again; it says which), ``workers_restarted`` counts
them; a worker failing again at the same step stops the run). Under "stop" a Ray worker
whose process died is saved at its last cut, where the re-run resumes it.
:data:`worker_hook` is a test hook into the workers (``(worker, local step)``, may raise).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.flatten_util import ravel_pytree

from easgd_jax import data, models, parallel
from easgd_jax.algorithms import registry
from easgd_jax.algorithms.base import AsyncRule
from easgd_jax.parallel import cluster, ray_server, schedules, server
from easgd_jax.parallel.executor import (
    Executor,
    Hooks,
    Outcome,
    ServerState,
    ServerView,
    Setup,
    StopHook,
    WorkerFailedError,
    WorkerResult,
    check_failure_policy,
)
from easgd_jax.training import config as config_lib
from easgd_jax.training import simulated_time
from easgd_jax.training.checkpoint import Checkpointer
from easgd_jax.training.common import (
    NonFiniteError,
    already_finished,
    initial_params,
    load_data_and_model,
    make_evaluator,
    make_grad_fn,
    prepare_workdir,
    stop_requests,
)
from easgd_jax.training.lock import workdir_lock
from easgd_jax.training.metrics import MetricsWriter, write_final_metrics
from easgd_jax.training.plan import Plan

# A test hook: ``(worker, local step)`` called before every local step of the threads
# executor's workers (may raise, as a dying worker).
worker_hook: StopHook | None = None


def _chunk_batches(sampler: data.WorkerSampler, chunk: schedules.Schedule,
                   start: np.ndarray, dtype: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The active worker's mini-batch at each tick of ``chunk``; ``start``: each worker's
    local step at the chunk's start. Worker w's batches in the chunk are
    :meth:`WorkerSampler.worker_round` ``(w, start[w], n_w)``, in its order of ticks; the
    inputs in ``dtype`` (the params', ``train.param_dtype``; None: as drawn)."""
    xs, ys = None, None
    for w in range(chunk.num_workers):
        ticks = np.flatnonzero(chunk.workers == w)
        if len(ticks):
            x, y = sampler.worker_round(w, int(start[w]), len(ticks))
            if xs is None:
                xs = np.empty((len(chunk), *x.shape[1:]), dtype or x.dtype)
                ys = np.empty((len(chunk), *y.shape[1:]), y.dtype)
            xs[ticks], ys[ticks] = x, y
    return xs, ys


def staleness_stats(staleness: np.ndarray) -> dict[str, float]:
    """Mean and max staleness of a set of exchanges (0 for none)."""
    staleness = np.asarray(staleness, np.int64).reshape(-1)
    return {"staleness_mean": float(np.mean(staleness)) if len(staleness) else 0.0,
            "staleness_max": int(np.max(staleness, initial=0))}


class _Recorder:
    """Losses and staleness since the last evaluation, and over the whole run (their sum,
    count and max: the mean is exact, integer sums below 2**53)."""

    def __init__(self):
        self.losses: list[np.ndarray] = []
        self.staleness: list[np.ndarray] = []
        self.total_sum = self.total_count = self.total_max = 0

    def add(self, info: schedules.TickInfo) -> None:
        self.losses.append(np.asarray(info.loss))
        stale = np.asarray(info.staleness)[np.asarray(info.communicated)].astype(np.int64)
        self.staleness.append(stale)
        self.total_sum += int(stale.sum())
        self.total_count += len(stale)
        self.total_max = max(self.total_max, int(stale.max(initial=0)))

    def state(self) -> dict[str, Any]:
        """Everything, as JSON data for a checkpoint (the losses as exact floats, with their
        dtype: float32, or float64 for a run in float64)."""
        dtype = str(self.losses[0].dtype) if self.losses else "float32"
        return {"losses": [float(x) for part in self.losses for x in part],
                "loss_dtype": dtype,
                "staleness": [int(x) for part in self.staleness for x in part],
                "sum": self.total_sum, "count": self.total_count, "max": self.total_max}

    def load(self, state: dict[str, Any]) -> None:
        self.losses = [np.asarray(state["losses"], state.get("loss_dtype", "float32"))]
        self.staleness = [np.asarray(state["staleness"], np.int64)]
        self.total_sum, self.total_count = state["sum"], state["count"]
        self.total_max = state["max"]

    def window(self) -> dict[str, float]:
        losses = np.concatenate(self.losses) if self.losses else np.zeros(0)
        stale = np.concatenate(self.staleness) if self.staleness else np.zeros(0)
        self.losses, self.staleness = [], []
        return {"train_loss": float(np.mean(losses)) if len(losses) else float("nan"),
                **staleness_stats(stale)}

    def totals(self) -> dict[str, float]:
        mean = self.total_sum / self.total_count if self.total_count else 0.0
        return {"staleness_mean": mean, "staleness_max": self.total_max,
                "exchanges": self.total_count}


class _Evaluator:
    """Evaluates the master's center at a cut and at the end (threads, Ray), writing one
    metrics line."""

    def __init__(self, config: ml_collections.ConfigDict, evaluate, dataset: data.Dataset,
                 writer: MetricsWriter):
        self.evaluate, self.dataset, self.writer = evaluate, dataset, writer
        self.metrics: dict[str, Any] = {}
        self.start = time.perf_counter()  # mid-run rates include the warm-up compilation
        self.start_step = 0  # a resumed run's first step
        self.lock = threading.Lock()

    def __call__(self, step: int, center, staleness: np.ndarray,
                 seconds: float | None = None) -> None:
        with self.lock:
            elapsed = time.perf_counter() - self.start if seconds is None else seconds
            metrics = {**staleness_stats(staleness), **_evaluate(self.evaluate, self.dataset,
                                                                 center),
                       "steps_per_second": (step - self.start_step) / elapsed}
            self.writer.write(step, metrics)
            self.metrics = metrics


def _evaluate(evaluate, dataset: data.Dataset, center) -> dict[str, float]:
    test_loss, test_acc = evaluate(center, dataset.test_x, dataset.test_y)
    metrics = {"test_loss": test_loss,
               **data.optimum_metrics(dataset.optimal_test_loss, test_loss),
               "test_accuracy": test_acc}
    if dataset.val_x is not None:  # the validation split held out from the training set
        metrics["val_loss"], metrics["val_accuracy"] = evaluate(center, dataset.val_x,
                                                                dataset.val_y)
        metrics.update(data.optimum_metrics(dataset.optimal_val_loss, metrics["val_loss"],
                                            "val"))
    return metrics


def _final_train_loss(config: ml_collections.ConfigDict, losses) -> float:
    """Mean loss of every worker's last ``eval_every`` local steps."""
    return float(np.mean(np.concatenate([w[-config.train.eval_every:] for w in losses])))


class _Stopped(Exception):  # noqa: N818 - a control-flow signal, not an error
    """SIGTERM/SIGINT seen while the workers run: stop them at a consistent cut."""


@dataclasses.dataclass
class _Run:
    """What every runner gets: the config, the algorithm and the run's tools."""

    config: ml_collections.ConfigDict
    workdir: str
    rule: AsyncRule
    grad_fn: Any
    params: Any
    key: jax.Array
    sampler: data.WorkerSampler
    evaluate: Any
    dataset: data.Dataset
    checkpoints: Checkpointer
    stop: list[int]  # signals received (common.stop_requests)
    dtype: Any = np.float32  # the params' and the batches' (config.train.param_dtype)
    model: Any = None
    final_state: Any = None  # simulated_async: the carry at the end (see simulate)

    def writer(self, resume_step: int) -> MetricsWriter:
        return MetricsWriter(self.workdir, self.config.train.num_steps, resume_step=resume_step,
                             tensorboard=self.config.tensorboard)

    def last_good(self) -> str:
        steps = self.checkpoints.steps()
        return (f"The last good checkpoint is step {steps[-1] if steps else 'none'} in "
                f"{self.workdir}.")

    def stopped(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        logging.warning("signal %d received: saved a checkpoint at step %d and stopped; run "
                        "again with the same workdir to resume.", self.stop[0], step)
        return {**metrics, "stopped_at_step": step}


def chunk_steps(config: ml_collections.ConfigDict) -> int:
    """The local steps per worker of one compiled chunk of ``simulated_async``: the gcd of
    ``train.eval_every`` and ``checkpoint.every`` (when set), so that both fall on chunk
    boundaries (``num_steps`` is a multiple of ``eval_every``)."""
    every = config.checkpoint.every
    return math.gcd(config.train.eval_every, every) if every else config.train.eval_every


def _finite(tree) -> bool:
    return all(bool(np.isfinite(np.asarray(a)).all()) for a in jax.tree.leaves(tree))


def _schedule(run: _Run, num_ticks: int,
              compute_s: float | None = None) -> tuple[schedules.Schedule, float | None]:
    """The simulation's schedule, and the cluster's step time it used (None for the others).

    ``"cluster"``: the clocks of the simulated cluster
    (:func:`easgd_jax.parallel.cluster.cluster_schedule`, ``config.cluster``), each worker's
    exchange every ``algorithm.period`` local steps (every step without one), with
    ``compute_s`` (a resumed run's, from its checkpoint: the same schedule) or the config's
    or measured step time. A measured one makes the worker order depend on the machine: set
    ``cluster.compute_s_per_step`` for runs that must repeat elsewhere."""
    config, asyn = run.config, run.config.asynchrony
    if asyn.schedule != "cluster":
        return schedules.make_schedule(asyn.schedule, config.num_workers, num_ticks,
                                       config.seed, asyn.clock_spread, asyn.clock_jitter), None
    spec = registry.get_spec(config.algorithm.name)
    shape = run.dataset.example_shape
    if compute_s is None:
        compute_s = simulated_time.compute_seconds(config, run.model, run.params, shape)
    nbytes = simulated_time.async_exchange_bytes(config, spec, run.model, run.params, shape)
    return cluster.cluster_schedule(
        simulated_time.make_cluster(config, compute_s, "parameter_server"),
        config.num_workers, num_ticks, spec.period(config_lib.algorithm_hparams(config)) or 1,
        nbytes,
        config.seed, asyn.clock_spread, asyn.clock_jitter, spec.exchange_step), compute_s


def _check_chunk(run: _Run, chunk: schedules.Schedule, first: int, local: np.ndarray,
                 info: schedules.TickInfo, center: Any) -> None:
    """Raises NonFiniteError for a NaN or Inf in a loss of the chunk that starts at tick
    ``first`` (``local``: each worker's local step at its start) or in the center after it."""
    p, num_steps = run.config.num_workers, run.config.train.num_steps
    losses = np.asarray(info.loss)
    if not np.isfinite(losses).all():
        tick = int(np.argmin(np.isfinite(losses)))
        worker = int(chunk.workers[tick])
        raise NonFiniteError(
            f"non-finite value (NaN or Inf) in a loss of worker {worker} at its local "
            f"step {int(chunk.local_steps(local)[tick])} (tick {first + tick}, "
            f"at step {(first + tick) // p} of {num_steps}); stopping. " + run.last_good())
    if not _finite(center):
        raise NonFiniteError(
            f"non-finite value (NaN or Inf) in the center after step "
            f"{(first + len(chunk)) // p}; stopping. " + run.last_good())


def _simulation_layout(run: _Run) -> parallel.WorkerLayout | None:
    """The slot of ``worker_devices.data`` x ``.fsdp`` devices the simulated workers take
    turns on (None: one device), with the model's FSDP plan (its logical axis names, as the
    synchronous executor's; a misfit is a LayoutError, one line)."""
    data, fsdp = run.config.worker_devices.data, run.config.worker_devices.fsdp
    layout = schedules.simulation_layout(data, fsdp)
    if layout is not None:
        layout = layout.with_params(
            run.params, models.logical_axes(run.model, run.dataset.example_shape))
        logging.info("%d workers in turn on one slot of %d data x %d fsdp %s devices: their "
                     "state sharded over fsdp, each tick's batch over data; %s",
                     run.config.num_workers, data, fsdp, jax.devices()[0].platform,
                     layout.plan.describe())
    return layout


def _run_simulated(run: _Run):
    config, rule, grad_fn, params, key = run.config, run.rule, run.grad_fn, run.params, run.key
    asyn, p = config.asynchrony, config.num_workers
    num_ticks, chunk_ticks = config.train.num_steps * p, chunk_steps(config) * p
    every, eval_every = config.checkpoint.every, config.train.eval_every
    delayed = asyn.schedule == "random_delay"
    layout = _simulation_layout(run)
    if delayed:
        sim = schedules.make_delay_simulator(rule, grad_fn, layout)
        state = schedules.init_delay_state(rule, params, asyn.max_staleness, key)
        delays = schedules.random_delays(num_ticks, asyn.max_staleness, config.seed)
        sched = schedules.round_robin(p, num_ticks)  # whose data (and clock) each tick uses
    else:
        sim = schedules.make_simulator(rule, grad_fn, layout)
        state = schedules.init_sim_state(rule, params, p, key)
    shardings = None if layout is None else schedules.state_shardings(state, layout)
    if shardings is not None:  # (a checkpoint is restored onto them, whatever its own)
        state = jax.device_put(state, shardings)
    recorder, metrics, compute_s = _Recorder(), {}, None
    local = np.zeros(p, np.int64)  # each worker's local steps so far
    step = 0
    restored = run.checkpoints.restore_latest(state)
    if restored is not None:
        step, state, meta = restored
        local = np.asarray(meta["local"], np.int64)
        recorder.load(meta["recorder"])
        metrics = meta["metrics"]
        compute_s = meta.get("cluster_compute_s")
        logging.info("resumed from the checkpoint at step %d", step)
    if not delayed:  # after the restore: a resumed run keeps its cluster's step time
        sched, compute_s = _schedule(run, num_ticks, compute_s)
    writer = run.writer(step)

    def save(at_step: int) -> None:
        run.checkpoints.save(at_step, state, {
            "step": at_step, "local": local.tolist(), "recorder": recorder.state(),
            "metrics": metrics, "cluster_compute_s": compute_s})

    compiled, compile_s = None, 0.0
    start, start_step = time.perf_counter(), step
    try:
        for first in range(step * p, num_ticks, chunk_ticks):
            if shardings is not None:  # the compiled chunk's input shardings, exactly (XLA
                state = jax.device_put(state, shardings)  # may name its output's otherwise)
            span = slice(first, first + chunk_ticks)
            chunk = schedules.Schedule(sched.workers[span], sched.times[span], p)
            batches = _chunk_batches(run.sampler, chunk, local, run.dtype)
            if layout is not None:
                batches = jax.device_put(batches, schedules.batch_shardings(batches, layout))
            if delayed:
                args = (state, delays[span], chunk.workers, chunk.local_steps(local), batches)
            else:
                args = (state, chunk.workers, batches)
            if compiled is None:  # every chunk has the same shapes: compile once, timed apart
                begin = time.perf_counter()
                compiled = sim.lower(*args).compile()
                compile_s = time.perf_counter() - begin
                start += compile_s
            new_state, info = compiled(*args)
            step = (first + len(chunk)) // p
            _check_chunk(run, chunk, first, local, info, new_state.master.center)
            state = new_state
            local += chunk.counts()
            recorder.add(info)
            if step % eval_every == 0:
                metrics = {**recorder.window(),
                           **_evaluate(run.evaluate, run.dataset, state.master.center)}
                metrics["steps_per_second"] = (step - start_step) / (time.perf_counter() - start)
                if asyn.schedule == "cluster":  # the cluster's clock at the chunk's last tick
                    metrics["simulated_time_s"] = float(sched.times[first + len(chunk) - 1])
                writer.write(step, metrics)
            if (every and step % every == 0) or step == config.train.num_steps or run.stop:
                save(step)
            if run.stop:
                return run.stopped(step, metrics), {}, {}, time.perf_counter() - start
    finally:
        writer.close()
    run.final_state = state
    totals = {**recorder.totals(), "compile_time_s": compile_s}
    return (metrics, totals, {"worker_steps": [int(s) for s in local]},
            time.perf_counter() - start)


def _losses_tail(result: WorkerResult, n: int) -> list[float]:
    return [float(x) for x in np.asarray(jnp.stack(result.losses[-n:]))] if result.losses else []


def _executor_class(name: str) -> type:
    """The :class:`~easgd_jax.parallel.executor.Executor` of ``config.executor`` ``name``
    (threads or Ray; the class, for its declared capabilities)."""
    return {"threads": server.ThreadExecutor, "ray": ray_server.RayExecutor}[name]


def _make_executor(run: _Run) -> Executor:
    """The executor of ``run.config.executor``, on the run's rule, data and workers."""
    config, asyn = run.config, run.config.asynchrony
    setup = Setup(run.rule, run.grad_fn, run.params, config.num_workers,
                  config.train.num_steps, run.sampler.worker_round, run.key,
                  num_shards=asyn.num_shards, timeout_s=asyn.timeout_s, stop_when=worker_hook)
    if config.executor == "ray":
        return ray_server.RayExecutor(setup, address=asyn.ray_address)
    return server.ThreadExecutor(setup)


def _run_server(run: _Run):
    """The threads or Ray executor: one driver (:class:`_ServerDriver`) over either."""
    return _ServerDriver(run, _make_executor(run))()


class _ServerDriver:
    """The one driver of the threads and Ray executors: a parameter server, workers held at
    consistent cuts for evaluations and checkpoints (see the module docstring). Knows the
    executor through its protocol (:mod:`easgd_jax.parallel.executor`) only."""

    def __init__(self, run: _Run, executor: Executor):
        config, p = run.config, run.config.num_workers
        self.run, self.executor, self.p = run, executor, p
        self.eval_ticks = config.train.eval_every * p
        self.every_ticks = config.checkpoint.every * p
        self.unravel = ravel_pytree(run.params)[1]
        self.fresh = WorkerResult(run.rule.init_worker(run.params), [], 0, 0)
        self.start: list[WorkerResult] | None = None
        self.server_state: ServerState | None = None
        self.seen = [0] * p  # per worker, the staleness values already reported
        self.checked = [0] * p  # per worker, the losses already checked for NaN
        self.lost: dict[int, str] = {}
        self.restarted: dict[int, int] = {}
        self.failures: set[tuple[int, int]] = set()
        # label: the restored checkpoint's step; total: its T; taken: its T's cut was taken.
        self.label, self.total, self.metrics, self.taken = 0, 0, {}, True
        self.cut_total: int | None = None  # T of the last cut taken (its evaluation done)
        self.evaluator: _Evaluator | None = None

    def __call__(self):
        run, config = self.run, self.run.config
        self.restore()
        writer = run.writer(self.label)
        self.evaluator = _Evaluator(config, run.evaluate, run.dataset, writer)
        self.evaluator.start_step = self.label
        hooks = Hooks(self.on_poll, self.on_cut, self.on_failure)
        try:
            try:
                outcome = self.executor.run(hooks, self.start, self.server_state, self.cuts())
            except _Stopped:
                state = self.executor.snapshot()
                step = self.save(self.complete(self.executor.progress()), state,
                                 cut=self.at_cut(state))
                return run.stopped(step, self.evaluator.metrics or self.metrics), {}, {}, 0.0
            except WorkerFailedError as error:
                raise self.failed(error) from error.cause
            return self.finish(outcome)
        finally:
            writer.close()

    def restore(self) -> None:
        """Restores the latest checkpoint, if any, into the executor's abstract shapes."""
        restored = self.run.checkpoints.restore_latest(
            {"server": self.executor.state_shapes(), "workers": [self.fresh.worker] * self.p})
        if restored is None:
            return
        self.label, state, meta = restored
        self.server_state = (state["server"], meta["server"])
        self.start = [WorkerResult(w, [np.float32(x) for x in tail], s, e) for w, tail, s, e
                      in zip(state["workers"], meta["losses"], meta["steps"],
                             meta["exchanges"], strict=True)]
        self.seen, self.metrics = meta["seen"], meta["metrics"]
        self.lost = {int(k): v for k, v in meta["lost"].items()}
        self.taken, self.total = meta["cut"], meta["server"]["total"]
        self.cut_total = self.total if self.taken else None
        self.checked = [len(r.losses) for r in self.start]
        logging.info("resumed from the checkpoint at step %d (T = %d local steps of all "
                     "workers, %s)", self.label, self.total, meta["steps"])

    def cuts(self) -> list[int]:
        """The marks of T still ahead: every evaluation and checkpoint before the end."""
        end, every = self.run.config.train.num_steps * self.p, self.every_ticks
        marks = {*range(self.eval_ticks, end, self.eval_ticks),
                 *(range(every, end, every) if every else ())}
        return sorted(c for c in marks
                      if c > self.total or (c == self.total and not self.taken))

    def new_staleness(self, view: ServerView) -> np.ndarray:
        """Staleness of the exchanges since the last evaluation."""
        new = view.staleness_since(self.seen)
        for w, values in enumerate(new):
            self.seen[w] += len(values)
        return np.asarray([s for values in new for s in values], np.int64)

    def check_finite(self, results: list[WorkerResult], step: int, center: np.ndarray) -> None:
        for w, r in enumerate(results):
            if len(r.losses) > self.checked[w]:
                new = np.asarray(jnp.stack(r.losses[self.checked[w]:]))
                if not np.isfinite(new).all():
                    at = r.steps - len(new) + int(np.argmin(np.isfinite(new)))
                    raise NonFiniteError(
                        f"non-finite value (NaN or Inf) in a loss of worker {w} at its local "
                        f"step {at} (checked at step {step}); stopping. "
                        + self.run.last_good())
                self.checked[w] = len(r.losses)
        if not np.isfinite(center).all():
            raise NonFiniteError(f"non-finite value (NaN or Inf) in the center at step {step}; "
                                 "stopping. " + self.run.last_good())

    def save(self, results: list[WorkerResult], state: ServerState, at: int | None = None,
             cut: bool = True) -> int:
        """A checkpoint of the server's ``state`` and every worker; returns its step.
        ``cut``: taken at a cut whose evaluation is done (else at a stop: a mark equal to
        its T is still to take)."""
        run, config = self.run, self.run.config
        arrays, server_meta = jax.tree.map(jnp.asarray, state[0]), state[1]
        step = server_meta["total"] // self.p if at is None else at
        if step in run.checkpoints.steps():  # a stop right after a cut: that cut is kept
            logging.warning("a checkpoint at step %d exists; kept it", step)
            return step
        assert self.evaluator is not None
        run.checkpoints.save(step, {"server": arrays, "workers": [
            jax.tree.map(jnp.asarray, r.worker) for r in results]}, {
            "step": step, "server": server_meta, "steps": [r.steps for r in results],
            "exchanges": [r.exchanges for r in results],
            "losses": [_losses_tail(r, config.train.eval_every) for r in results],
            "seen": list(self.seen), "metrics": self.evaluator.metrics or self.metrics,
            "lost": {str(k): v for k, v in self.lost.items()}, "cut": cut})
        return step

    def complete(self, results: list[WorkerResult | None]) -> list[WorkerResult]:
        """A worker with no progress (failed before its loop) keeps its starting point."""
        return [r if r is not None else (self.start[w] if self.start else self.fresh)
                for w, r in enumerate(results)]

    def on_cut(self, view: ServerView, total: int, results: list[WorkerResult]) -> None:
        assert self.evaluator is not None
        step, center = total // self.p, view.center_flat()
        self.check_finite(results, step, center)
        if total % self.eval_ticks == 0:
            self.evaluator(step, self.unravel(jnp.asarray(center)), self.new_staleness(view))
        if self.every_ticks and total % self.every_ticks == 0:
            self.save(results, view.state())
        self.cut_total = total

    def at_cut(self, state: ServerState | None) -> bool:
        """Whether the workers stopped exactly at the last cut taken (its evaluation done: a
        run resumed from there must not take it again), as when a worker fails while the
        others are held there."""
        return state is not None and state[1]["total"] == self.cut_total

    def on_poll(self) -> None:
        if self.run.stop:
            raise _Stopped()

    def on_failure(self, error: WorkerFailedError) -> bool:
        """``on_worker_failure='continue'``: logs the failure and goes on (the executor
        restarts the worker or leaves it behind), unless it failed the same way before."""
        if self.run.config.asynchrony.on_worker_failure != "continue":
            return False
        worker, at = error.worker, error.step
        if at is not None and (worker, at) in self.failures:  # a restart failed the same way
            return False
        self.failures.add((worker, at if at is not None else -1))
        restarts = type(self.executor).capabilities.restarts_failed_workers
        logging.warning("worker %d of %d failed at its local step %s (%s: %s); "
                        "on_worker_failure='continue': %s", worker, self.p,
                        at if at is not None else "?", type(error.cause).__name__, error.cause,
                        "restarting it" if restarts else "going on without it")
        if not restarts:
            self.lost[worker] = f"{type(error.cause).__name__}: {error.cause}"
        self.restarted[worker] = self.restarted.get(worker, 0) + 1
        return True

    def failed(self, error: WorkerFailedError) -> WorkerFailedError:
        """``on_worker_failure='stop'``: saves where the workers stand; the error to raise."""
        results = self.complete(self.executor.progress())
        state = self.executor.snapshot()
        step = (self.save(results, state, cut=self.at_cut(state)) if state is not None
                else "none")
        index, cause = error.worker, error.cause
        resumes = results[index].steps  # (a Ray worker whose process died: its last cut's)
        at = error.step if error.step is not None else resumes
        where = (f", where it resumes from its last cut, at its local step {resumes}"
                 if resumes != at else "")
        return WorkerFailedError(index, at, cause, results[index], message=(
            f"worker {index} of {self.p} failed at its local step {at} "
            f"({type(cause).__name__}: {cause}); on_worker_failure='stop': saved a checkpoint "
            f"at step {step} in {self.run.workdir}{where}; run again with the same workdir to "
            "resume."))

    def finish(self, outcome: Outcome):
        """The end: the last check, evaluation and checkpoint; the run's metrics."""
        config, num_steps = self.run.config, self.run.config.train.num_steps
        assert self.evaluator is not None
        if self.label == num_steps and self.taken:  # resumed from the final checkpoint
            logging.warning("the run had trained to step %d and its final metrics are "
                            "missing: rebuilt from its evaluation at step %d, saved with its "
                            "last checkpoint.", num_steps, num_steps)
            self.evaluator.metrics = self.metrics  # (taking it again wrote its line twice)
        else:
            self.check_finite(outcome.results, num_steps, outcome.center_flat)
            last = [s for w, values in enumerate(outcome.staleness)
                    for s in values[self.seen[w]:]]
            self.evaluator(num_steps, self.unravel(jnp.asarray(outcome.center_flat)),
                           np.asarray(last, np.int64), outcome.wall_time_s)
            self.save(outcome.results, outcome.server_state, at=num_steps)
        self.lost.update(outcome.lost)
        metrics = {**self.evaluator.metrics,
                   "train_loss": _final_train_loss(config, outcome.losses)}
        totals = {**outcome.report.as_metrics(), "compile_time_s": outcome.compile_time_s,
                  "workers_lost": len(self.lost),
                  "workers_restarted": sum(self.restarted.values())}
        record = {"worker_steps": [int(s) for s in outcome.steps], "lost_workers": self.lost}
        return metrics, totals, record, outcome.wall_time_s


def validate(config: ml_collections.ConfigDict, plan: Plan | None = None) -> AsyncRule:
    """:func:`easgd_jax.training.config.validate` for an asynchronous executor (skipped when
    the caller made the config's ``plan``, which validated it); returns the algorithm's
    asynchronous rule."""
    if plan is None:
        config_lib.validate(config)
    if config.executor not in config_lib.ASYNC_EXECUTORS:
        raise ValueError(f"training.asynchronous runs config.executor in "
                         f"{', '.join(config_lib.ASYNC_EXECUTORS)}; got {config.executor!r}.")
    if config.executor != "simulated_async":  # (the simulation has no worker to fail)
        check_failure_policy(config.executor, _executor_class(config.executor).capabilities,
                             config.asynchrony.on_worker_failure)
    return registry.get_async_rule(config.algorithm.name, config.num_workers,
                                   **config_lib.algorithm_hparams(config))


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, overwrite: bool = False,
    plan: Plan | None = None,
) -> dict[str, Any]:
    """Runs ``config.algorithm``'s asynchronous rule with ``config.executor``; returns the
    final metrics, all numbers (``workdir/final_metrics.json`` also lists the local steps
    each worker took, and the workers lost). A workdir of the same config (``train.num_steps``
    may grow) resumes from its latest checkpoint, or if finished changes nothing; one of
    another config is refused unless ``overwrite``. Stopped by SIGTERM/SIGINT: the metrics
    so far with ``stopped_at_step`` (no ``final_metrics.json``). The workdir is locked for
    the whole run (:mod:`.lock`): a second run into it is refused. ``plan``: the config's
    :func:`~easgd_jax.training.plan.make_plan` when the caller validated it already."""
    rule = validate(config, plan)
    with workdir_lock(workdir):
        return _train_and_evaluate(config, workdir, overwrite, rule)[0]


def simulate(
    config: ml_collections.ConfigDict, workdir: str, overwrite: bool = False,
    plan: Plan | None = None,
) -> tuple[Any, dict[str, Any]]:
    """:func:`train_and_evaluate` of executor ``simulated_async``, also returning the
    simulation's final carry (:class:`~easgd_jax.parallel.schedules.SimState`, or
    ``DelayState`` for ``random_delay``) as it lies on the devices: on workers that span
    devices, sharded over their slot (:func:`easgd_jax.parallel.schedules.state_shardings`).
    The carry is None when the workdir had finished already or the run was stopped."""
    if config.executor != "simulated_async":
        raise ValueError(f"simulate runs config.executor 'simulated_async', got "
                         f"{config.executor!r}.")
    rule = validate(config, plan)
    with workdir_lock(workdir):
        final, run = _train_and_evaluate(config, workdir, overwrite, rule)
    return (None if run is None or "stopped_at_step" in final else run.final_state), final


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, overwrite: bool,
                        rule: AsyncRule) -> tuple[dict[str, Any], _Run | None]:
    dataset, model = load_data_and_model(config)
    prepare_workdir(config, workdir, overwrite)
    final = already_finished(config, workdir)
    if final is not None:
        return final, None

    p = config.num_workers
    worker_rng = jax.random.split(jax.random.PRNGKey(config.seed))[1]
    # Every worker's start, in config.train.param_dtype (from the first half of the split).
    params = initial_params(config, model, dataset.example_shape)
    sampler = data.WorkerSampler(dataset.train_x, dataset.train_y, p, config.train.batch_size,
                                 config.seed, augment=dataset.augment)
    runner = {"simulated_async": _run_simulated, "threads": _run_server,
              "ray": _run_server}[config.executor]
    checkpoints = Checkpointer(workdir, config.checkpoint.max_to_keep, config)
    try:
        with stop_requests() as stop:
            run = _Run(config, workdir, rule, make_grad_fn(model, config.train.weight_decay),
                       params, worker_rng, sampler, make_evaluator(model), dataset,
                       checkpoints, stop, np.dtype(config.train.param_dtype), model)
            metrics, totals, record, wall = runner(run)
    finally:
        checkpoints.close()
    if "stopped_at_step" in metrics:
        return metrics, run
    final = {**metrics, **totals, "wall_time_s": wall}
    write_final_metrics(workdir, {"step": config.train.num_steps, "executor": config.executor,
                                  **final, **record})
    return final, run
