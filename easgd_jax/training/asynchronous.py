"""``train_and_evaluate(config, workdir)``: asynchronous runs on the same data, models
and evaluation as the synchronous loop (:mod:`easgd_jax.training.sync`).

``config.executor`` chooses how the asynchrony happens:

- ``"simulated_async"``: seeded simulated asynchrony in compiled JAX code
  (``parallel/schedules.py``), bit-reproducible for a seed. ``config.asynchrony.schedule``:
  ``round_robin`` (worker t mod p acts at tick t), ``clocks`` (per-worker clocks of different
  speeds and phases) or ``random_delay`` (gradient-based rules only: each gradient at a master
  iterate up to ``max_staleness`` updates old). The run has ``num_steps * p`` ticks, the
  gradient computations of a synchronous run of ``num_steps`` local steps; with ``clocks``
  the fast workers take more of them.
- ``"threads"``: a real parameter server on this host (``parallel/server.py``), one thread per
  worker, each running ``num_steps`` local steps; the master in
  ``config.asynchrony.num_shards`` independently locked shards.
- ``"ray"``: the same server and workers on Ray actors (``parallel/ray_server.py``, optional
  extra ``pip install easgd-jax[ray]``), across the hosts of a Ray cluster
  (``config.asynchrony.ray_address``; ``""``: a local one).

Evaluation reads the CENTER (the master's x~; APAM's x; LSGD's leader) every
``train.eval_every`` local steps per worker on average (every ``eval_every * p`` ticks, or
for threads each time the total step count passes a multiple of it, while the workers run),
one ``MetricsWriter`` line each in ``workdir/metrics.jsonl`` (test loss and accuracy, the
staleness mean/max since the previous line, the training loss for the simulation). The
final metrics add the wall time (compilation excluded, reported as ``compile_time_s``), the
staleness mean/max over the run (master updates between a worker's read of the master and
its write; per shard for threads), the number of exchanges, and for threads the ledger
discrepancy of the no-lost-update check; ``final_metrics.json`` also lists the local steps
each worker took. Same data (``WorkerSampler``: worker w's batches for its local steps
s..s+n-1 are drawn as ``indices(w, s, n)``), models and evaluator as the synchronous loop.
Runs are not checkpointed or resumed.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from easgd_jax import data
from easgd_jax.algorithms import registry
from easgd_jax.algorithms.base import AsyncRule
from easgd_jax.parallel import schedules, server
from easgd_jax.training import config as config_lib
from easgd_jax.training.common import (
    already_finished,
    load_data_and_model,
    make_evaluator,
    make_grad_fn,
    prepare_workdir,
)
from easgd_jax.training.metrics import MetricsWriter, write_final_metrics


def _chunk_batches(sampler: data.WorkerSampler, chunk: schedules.Schedule,
                   start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The active worker's mini-batch at each tick of ``chunk``; ``start``: each worker's
    local step at the chunk's start. Worker w's batches in the chunk are
    :meth:`WorkerSampler.worker_round` ``(w, start[w], n_w)``, in its order of ticks."""
    xs, ys = None, None
    for w in range(chunk.num_workers):
        ticks = np.flatnonzero(chunk.workers == w)
        if len(ticks):
            x, y = sampler.worker_round(w, int(start[w]), len(ticks))
            if xs is None:
                xs = np.empty((len(chunk), *x.shape[1:]), x.dtype)
                ys = np.empty((len(chunk), *y.shape[1:]), y.dtype)
            xs[ticks], ys[ticks] = x, y
    return xs, ys


def staleness_stats(staleness: np.ndarray) -> dict[str, float]:
    """Mean and max staleness of a set of exchanges (0 for none)."""
    staleness = np.asarray(staleness, np.int64).reshape(-1)
    return {"staleness_mean": float(np.mean(staleness)) if len(staleness) else 0.0,
            "staleness_max": int(np.max(staleness, initial=0))}


class _Recorder:
    """Losses and staleness since the last evaluation, and over the whole run."""

    def __init__(self):
        self.losses: list[np.ndarray] = []
        self.staleness: list[np.ndarray] = []
        self.all_staleness: list[np.ndarray] = []

    def add(self, info: schedules.TickInfo) -> None:
        self.losses.append(np.asarray(info.loss))
        stale = np.asarray(info.staleness)[np.asarray(info.communicated)]
        self.staleness.append(stale)
        self.all_staleness.append(stale)

    def window(self) -> dict[str, float]:
        losses = np.concatenate(self.losses) if self.losses else np.zeros(0)
        stale = np.concatenate(self.staleness) if self.staleness else np.zeros(0)
        self.losses, self.staleness = [], []
        return {"train_loss": float(np.mean(losses)) if len(losses) else float("nan"),
                **staleness_stats(stale)}

    def totals(self) -> dict[str, float]:
        stale = np.concatenate(self.all_staleness) if self.all_staleness else np.zeros(0)
        return {**staleness_stats(stale), "exchanges": int(len(stale))}


class _Evaluator:
    """Evaluates the master's center while the workers run: each time the total clock
    passes another ``eval_every * p`` local steps (threads, Ray), and at the end."""

    def __init__(self, config: ml_collections.ConfigDict, evaluate, dataset: data.Dataset,
                 writer: MetricsWriter):
        self.evaluate, self.dataset, self.writer = evaluate, dataset, writer
        self.p = config.num_workers
        self.every = config.train.eval_every * self.p
        self.last_tick = config.train.num_steps * self.p
        self.next = self.every
        self.metrics: dict[str, Any] = {}
        self.start = time.perf_counter()  # mid-run rates include the warm-up compilation
        self.lock = threading.Lock()

    def due(self, total: int) -> int | None:
        """The step to evaluate at when ``total`` local steps passed the next mark."""
        if total >= self.next and self.next < self.last_tick:
            step, self.next = self.next // self.p, self.next + self.every
            return step
        return None

    def __call__(self, step: int, center, staleness: np.ndarray,
                 seconds: float | None = None) -> None:
        with self.lock:
            elapsed = time.perf_counter() - self.start if seconds is None else seconds
            metrics = {**staleness_stats(staleness), **_evaluate(self.evaluate, self.dataset,
                                                                 center),
                       "steps_per_second": step / elapsed}
            self.writer.write(step, metrics)
            self.metrics = metrics


def _evaluate(evaluate, dataset: data.Dataset, center) -> dict[str, float]:
    test_loss, test_acc = evaluate(center, dataset.test_x, dataset.test_y)
    return {"test_loss": test_loss, "test_accuracy": test_acc}


def _final_train_loss(config: ml_collections.ConfigDict, losses) -> float:
    """Mean loss of every worker's last ``eval_every`` local steps."""
    return float(np.mean(np.concatenate([w[-config.train.eval_every:] for w in losses])))


def _run_simulated(config, rule, grad_fn, params, key, sampler, evaluate, dataset, writer):
    asyn, p = config.asynchrony, config.num_workers
    num_ticks, eval_ticks = config.train.num_steps * p, config.train.eval_every * p
    delayed = asyn.schedule == "random_delay"
    if delayed:
        run = schedules.make_delay_simulator(rule, grad_fn)
        state = schedules.init_delay_state(rule, params, asyn.max_staleness, key)
        delays = schedules.random_delays(num_ticks, asyn.max_staleness, config.seed)
        sched = schedules.round_robin(p, num_ticks)  # whose data (and clock) each tick uses
    else:
        run = schedules.make_simulator(rule, grad_fn)
        state = schedules.init_sim_state(rule, params, p, key)
        sched = schedules.make_schedule(asyn.schedule, p, num_ticks, config.seed,
                                        asyn.clock_spread, asyn.clock_jitter)
    recorder, metrics = _Recorder(), {}
    local = np.zeros(p, np.int64)  # each worker's local steps so far
    compiled, compile_s = None, 0.0
    start = time.perf_counter()
    for first, chunk in zip(range(0, num_ticks, eval_ticks), sched.chunks(eval_ticks),
                            strict=True):
        batches = _chunk_batches(sampler, chunk, local)
        if delayed:
            span = slice(first, first + len(chunk))
            args = (state, delays[span], chunk.workers, chunk.local_steps(local), batches)
        else:
            args = (state, chunk.workers, batches)
        if compiled is None:  # every chunk has the same shapes: compile once, timed apart
            begin = time.perf_counter()
            compiled = run.lower(*args).compile()
            compile_s = time.perf_counter() - begin
            start += compile_s
        state, info = compiled(*args)
        local += chunk.counts()
        recorder.add(info)
        step = (first + len(chunk)) // p
        metrics = {**recorder.window(), **_evaluate(evaluate, dataset, state.master.center)}
        metrics["steps_per_second"] = step / (time.perf_counter() - start)
        writer.write(step, metrics)
    totals = {**recorder.totals(), "compile_time_s": compile_s}
    return metrics, totals, local, time.perf_counter() - start


def _run_threads(config, rule, grad_fn, params, key, sampler, evaluate, dataset, writer):
    asyn, p = config.asynchrony, config.num_workers
    ps = server.ParameterServer(rule, params, p, asyn.num_shards)
    evaluator = _Evaluator(config, evaluate, dataset, writer)
    seen = [0] * p  # per worker, the staleness values already reported

    def new_staleness() -> np.ndarray:
        """Staleness of the exchanges since the last evaluation (the per-worker lists only
        grow, each in its own thread)."""
        parts = []
        for w, values in enumerate(ps.staleness):
            end = len(values)
            parts.append(np.asarray(values[seen[w]:end], np.int64))
            seen[w] = end
        return np.concatenate(parts)

    def on_poll() -> None:
        step = evaluator.due(ps.total)
        if step is not None:
            evaluator(step, ps.center(), new_staleness())

    result = server.train_threads(rule, grad_fn, params, ps, config.train.num_steps,
                                  sampler.worker_round, key, timeout_s=asyn.timeout_s,
                                  on_poll=on_poll)
    report = ps.verify(rtol_per_exchange=1e-6)
    evaluator(config.train.num_steps, ps.center(), new_staleness(), result.wall_time_s)
    metrics = {**evaluator.metrics, "train_loss": _final_train_loss(config, result.losses)}
    totals = {**report.as_metrics(), "compile_time_s": result.compile_time_s}
    return metrics, totals, np.asarray(result.steps), result.wall_time_s


def _run_ray(config, rule, grad_fn, params, key, sampler, evaluate, dataset, writer):
    from easgd_jax.parallel import ray_server  # imports Ray: only for this executor

    asyn, p = config.asynchrony, config.num_workers
    evaluator = _Evaluator(config, evaluate, dataset, writer)
    remotes = []

    def on_poll(remote: ray_server.RemoteServer) -> None:
        step = evaluator.due(remote.total)
        if step is not None:
            evaluator(step, remote.center(), remote.new_staleness())
        remotes[:] = [remote]

    result = ray_server.train_ray(
        rule, grad_fn, params, p, config.train.num_steps, sampler.worker_round, key,
        num_shards=asyn.num_shards, timeout_s=asyn.timeout_s, on_poll=on_poll, poll_s=0.2,
        address=asyn.ray_address, verify_rtol_per_exchange=1e-6)
    seen = remotes[0].seen if remotes else [0] * p
    last = [s for w, values in enumerate(result.staleness) for s in values[seen[w]:]]
    evaluator(config.train.num_steps, result.center, np.asarray(last, np.int64),
              result.wall_time_s)
    metrics = {**evaluator.metrics, "train_loss": _final_train_loss(config, result.losses)}
    totals = {**result.report.as_metrics(), "compile_time_s": result.compile_time_s}
    return metrics, totals, np.asarray(result.steps), result.wall_time_s


def validate(config: ml_collections.ConfigDict) -> AsyncRule:
    """:func:`easgd_jax.training.config.validate` for an asynchronous executor; returns the
    algorithm's asynchronous rule."""
    config_lib.validate(config)
    if config.executor not in config_lib.ASYNC_EXECUTORS:
        raise ValueError(f"training.asynchronous runs config.executor in "
                         f"{', '.join(config_lib.ASYNC_EXECUTORS)}; got {config.executor!r}.")
    return registry.get_async_rule(config.algorithm.name, config.num_workers,
                                   **config_lib.algorithm_hparams(config))


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, overwrite: bool = False
) -> dict[str, Any]:
    """Runs ``config.algorithm``'s asynchronous rule with ``config.executor``; returns the
    final metrics, all numbers (``workdir/final_metrics.json`` also lists the local steps
    each worker took). Not resumable: a workdir of the same config is run afresh unless it
    finished (then nothing changes); one of another config is refused unless
    ``overwrite``."""
    rule = validate(config)
    dataset, model = load_data_and_model(config)
    # Not resumed: any difference, num_steps included, needs another workdir or overwrite.
    prepare_workdir(config, workdir, overwrite, resumable_changes=())
    final = already_finished(config, workdir)
    if final is not None:
        return final

    p = config.num_workers
    init_rng, worker_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    sample = jnp.zeros((1, *dataset.example_shape), jnp.float32)
    # The same start for all workers (one compiled init: op-by-op it compiles every layer).
    params = jax.jit(lambda rng: model.init(rng, sample, train=False))(init_rng)["params"]
    grad_fn = make_grad_fn(model, config.train.weight_decay)
    evaluate = make_evaluator(model)
    sampler = data.WorkerSampler(dataset.train_x, dataset.train_y, p, config.train.batch_size,
                                 config.seed, augment=dataset.augment)
    writer = MetricsWriter(workdir, config.train.num_steps, tensorboard=config.tensorboard)
    runner = {"simulated_async": _run_simulated, "threads": _run_threads,
              "ray": _run_ray}[config.executor]
    try:
        metrics, totals, worker_steps, wall = runner(
            config, rule, grad_fn, params, worker_rng, sampler, evaluate, dataset, writer)
    finally:
        writer.close()
    final = {**metrics, **totals, "wall_time_s": wall}
    write_final_metrics(workdir, {"step": config.train.num_steps, "executor": config.executor,
                                  **final, "worker_steps": [int(s) for s in worker_steps]})
    return final
