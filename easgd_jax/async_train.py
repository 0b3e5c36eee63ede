"""``train_and_evaluate_async(config, workdir)``: asynchronous runs on the same data, models
and evaluation as the synchronous loop (``train.py``).

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

import numbers
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from easgd_jax import data, models
from easgd_jax.algorithms import registry
from easgd_jax.algorithms.base import AsyncRule
from easgd_jax.metrics import MetricsWriter, write_final_metrics
from easgd_jax.parallel import schedules, server

ASYNC_EXECUTORS = ("simulated_async", "threads", "ray")


def default_asynchrony() -> ml_collections.ConfigDict:
    """The ``config.asynchrony`` defaults (used where a config has none)."""
    config = ml_collections.ConfigDict()
    config.schedule = "clocks"  # simulated_async: round_robin | clocks | random_delay
    config.clock_spread = 1.0  # clocks: slowest step <= (1 + spread) x fastest
    config.clock_jitter = 0.0  # clocks: per-step relative noise of the durations, in [0, 1)
    config.max_staleness = 4  # random_delay: D, gradients at most D master updates old
    config.num_shards = 1  # threads: the master in this many independently locked shards
    config.timeout_s = 3600.0  # threads, ray: the whole run's limit
    config.ray_address = ""  # ray: "" starts a local Ray instance, else a cluster to connect to
    return config


def _asynchrony(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``config.asynchrony`` over the defaults; unknown fields raise ValueError."""
    merged = default_asynchrony()
    given = config.get("asynchrony")
    if given is not None:
        unknown = sorted(set(given.keys()) - set(merged.keys()))
        if unknown:
            raise ValueError(f"config.asynchrony has unknown field(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(merged.keys()))}.")
        merged.update(given)
    return merged


def _hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
    hparams = config.algorithm.to_dict()
    hparams.pop("name")
    return hparams


def _integer(field: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"config.{field} must be an integer >= {minimum}, got {value!r}.")


def _number(field: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value < high:
        raise ValueError(f"config.{field} must be a number in [{low}, {high}), got {value!r}.")


def build_rule(config: ml_collections.ConfigDict) -> AsyncRule:
    """The asynchronous rule of ``config.algorithm`` (ValueError if it has none)."""
    name = config.algorithm.name
    if name not in registry.async_algorithm_names():
        raise ValueError(
            f"config.executor {config.executor!r} runs asynchronous rules, and "
            f"config.algorithm.name {name!r} has none; use one of "
            f"{', '.join(registry.async_algorithm_names())}, or executor 'sync'.")
    try:
        return registry.get_async_rule(name, config.num_workers, **_hparams(config))
    except ValueError as e:
        raise ValueError(f"config.algorithm: {e}") from None


def validate_async_config(config: ml_collections.ConfigDict) -> AsyncRule:
    """Raises ValueError naming the first invalid field; returns the rule."""
    executor = config.get("executor", "sync")
    if executor not in ASYNC_EXECUTORS:
        raise ValueError(
            f"config.executor must be 'sync' or one of {', '.join(ASYNC_EXECUTORS)} for "
            f"asynchronous runs; got {executor!r}.")
    for field in ("seed", "num_workers", "data", "model", "algorithm", "train"):
        if field not in config:
            raise ValueError(f"config.{field} is missing.")
    _integer("seed", config.seed, 0)
    _integer("num_workers", config.num_workers, 1)
    if config.data.name not in data.DATASET_NAMES:
        raise ValueError(f"config.data.name must be one of {', '.join(data.DATASET_NAMES)}; "
                         f"got {config.data.name!r}.")
    if config.model.name not in models.MODEL_NAMES:
        raise ValueError(f"config.model.name must be one of {', '.join(models.MODEL_NAMES)}; "
                         f"got {config.model.name!r}.")
    train = config.train
    for field in ("batch_size", "num_steps", "eval_every"):
        _integer(f"train.{field}", train[field], 1)
    if train.num_steps % train.eval_every:
        raise ValueError(f"config.train.num_steps ({train.num_steps}) must be a multiple of "
                         f"config.train.eval_every ({train.eval_every}).")
    _number("train.weight_decay", train.weight_decay, 0.0, float("inf"))
    rule = build_rule(config)
    asyn = _asynchrony(config)
    if executor == "simulated_async":
        if asyn.schedule not in schedules.SCHEDULES:
            raise ValueError(f"config.asynchrony.schedule must be one of "
                             f"{', '.join(schedules.SCHEDULES)}; got {asyn.schedule!r}.")
        if asyn.schedule == "random_delay" and not rule.stateless_worker:
            raise ValueError(
                f"config.asynchrony.schedule 'random_delay' takes each gradient at a stale "
                f"master iterate: it runs gradient-based rules (apam, downpour with period 1), "
                f"not {config.algorithm.name!r} with these hyperparameters.")
        if asyn.num_shards != 1:
            raise ValueError("config.asynchrony.num_shards applies to executor 'threads' (the "
                             f"simulated master is applied atomically); got {asyn.num_shards}.")
    elif asyn.schedule == "random_delay":
        raise ValueError("config.asynchrony.schedule 'random_delay' is simulated; executor "
                         f"{executor!r} has real delays (the schedule field is ignored there).")
    _integer("asynchrony.num_shards", asyn.num_shards, 1)
    if asyn.num_shards > 1 and not rule.shardable:
        raise ValueError(f"config.asynchrony.num_shards must be 1 for {config.algorithm.name!r} "
                         f"(its exchange is not elementwise); got {asyn.num_shards}.")
    _integer("asynchrony.max_staleness", asyn.max_staleness, 0)
    _number("asynchrony.clock_spread", asyn.clock_spread, 0.0, float("inf"))
    _number("asynchrony.clock_jitter", asyn.clock_jitter, 0.0, 1.0)
    _number("asynchrony.timeout_s", asyn.timeout_s, 1e-3, float("inf"))
    if not isinstance(asyn.ray_address, str):
        raise ValueError(f"config.asynchrony.ray_address must be a string, got "
                         f"{asyn.ray_address!r}.")
    return rule


def make_grad_fn(model, weight_decay: float):
    """``grad_fn(params, (x, y), key) -> (grad, loss)``: the mini-batch cross-entropy's
    gradient at ``params`` plus ``weight_decay * params`` (as the synchronous loop)."""

    def loss_fn(params, x, y, key):
        logits = model.apply({"params": params}, x, train=True, rngs={"dropout": key})
        return models.cross_entropy(logits, y)

    def grad_fn(params, batch, key):
        x, y = batch
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y, key)
        if weight_decay:
            grads = jax.tree.map(lambda g, p: g + weight_decay * p, grads, params)
        return grads, loss

    return grad_fn


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


class _Recorder:
    """Losses and staleness since the last evaluation, and over the whole run."""

    def __init__(self):
        self.losses: list[np.ndarray] = []
        self.staleness: list[np.ndarray] = []
        self.all_staleness: list[np.ndarray] = []

    def add(self, info: schedules.TickInfo) -> None:
        self.losses.append(np.asarray(info.loss))
        stale = np.asarray(info.staleness)
        stale = stale[np.asarray(info.communicated)]
        self.staleness.append(stale)
        self.all_staleness.append(stale)

    def window(self) -> dict[str, float]:
        losses = np.concatenate(self.losses) if self.losses else np.zeros(0)
        stale = np.concatenate(self.staleness) if self.staleness else np.zeros(0)
        self.losses, self.staleness = [], []
        return {"train_loss": float(np.mean(losses)) if len(losses) else float("nan"),
                "staleness_mean": float(np.mean(stale)) if len(stale) else 0.0,
                "staleness_max": int(np.max(stale, initial=0))}

    def totals(self) -> dict[str, float]:
        stale = np.concatenate(self.all_staleness) if self.all_staleness else np.zeros(0)
        return {"staleness_mean": float(np.mean(stale)) if len(stale) else 0.0,
                "staleness_max": int(np.max(stale, initial=0)), "exchanges": int(len(stale))}


def _evaluate(evaluate, dataset: data.Dataset, center) -> dict[str, float]:
    test_loss, test_acc = evaluate(center, dataset.test_x, dataset.test_y)
    return {"test_loss": test_loss, "test_accuracy": test_acc}


def _run_simulated(config, rule, grad_fn, params, key, sampler, evaluate, dataset, writer):
    asyn, p = _asynchrony(config), config.num_workers
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
    return state, metrics, totals, local, time.perf_counter() - start


def _run_threads(config, rule, grad_fn, params, key, sampler, evaluate, dataset, writer):
    asyn, p = _asynchrony(config), config.num_workers
    ps = server.ParameterServer(rule, params, p, asyn.num_shards)
    eval_ticks = config.train.eval_every * p
    state = {"next": eval_ticks, "metrics": {}, "seen": [0] * p}
    start = time.perf_counter()  # mid-run rates include the warm-up compilation
    lock = threading.Lock()

    def staleness_window() -> dict[str, float]:
        """Staleness of the exchanges since the last evaluation (the per-worker lists only
        grow, each in its own thread)."""
        new_parts = []
        for w, values in enumerate(ps.staleness):
            end = len(values)
            new_parts.append(np.asarray(values[state["seen"][w]:end], np.int64))
            state["seen"][w] = end
        new = np.concatenate(new_parts)
        return {"staleness_mean": float(np.mean(new)) if len(new) else 0.0,
                "staleness_max": int(np.max(new, initial=0))}

    def evaluate_now(step: int, seconds: float | None = None) -> None:
        with lock:
            metrics = {**staleness_window(), **_evaluate(evaluate, dataset, ps.center())}
            elapsed = time.perf_counter() - start if seconds is None else seconds
            metrics["steps_per_second"] = step / elapsed
            writer.write(step, metrics)
            state["metrics"] = metrics

    def on_poll() -> None:
        # Evaluate while the workers run, each time the total clock passes eval_every * p.
        if ps.total >= state["next"] and state["next"] < config.train.num_steps * p:
            step = state["next"] // p
            state["next"] += eval_ticks
            evaluate_now(step)

    def batch_fn(worker: int, first: int, steps: int):
        return sampler.worker_round(worker, first, steps)

    result = server.train_threads(rule, grad_fn, params, ps, config.train.num_steps, batch_fn,
                                  key, timeout_s=asyn.timeout_s, on_poll=on_poll)
    wall = result.wall_time_s
    report = ps.verify(rtol_per_exchange=1e-6)
    losses = np.concatenate([w[-config.train.eval_every:] for w in result.losses])
    evaluate_now(config.train.num_steps, seconds=wall)
    metrics = {**state["metrics"], "train_loss": float(np.mean(losses))}
    totals = {"staleness_mean": report.staleness_mean, "staleness_max": report.staleness_max,
              "exchanges": int(sum(report.exchanges_sent)),
              "ledger_discrepancy": report.max_discrepancy,
              "compile_time_s": result.compile_time_s}
    return ps, metrics, totals, np.asarray(result.steps), wall


def _run_ray(config, rule, grad_fn, params, key, sampler, evaluate, dataset, writer):
    from easgd_jax.parallel import ray_server  # imports Ray: only for this executor

    asyn, p = _asynchrony(config), config.num_workers
    eval_ticks = config.train.eval_every * p
    state = {"next": eval_ticks, "metrics": {}}
    start = time.perf_counter()  # mid-run rates include the warm-up compilation

    def evaluate_at(step: int, center, staleness: np.ndarray, seconds: float) -> None:
        metrics = {"staleness_mean": float(np.mean(staleness)) if len(staleness) else 0.0,
                   "staleness_max": int(np.max(staleness, initial=0)),
                   **_evaluate(evaluate, dataset, center), "steps_per_second": step / seconds}
        writer.write(step, metrics)
        state["metrics"] = metrics

    def on_poll(remote: ray_server.RemoteServer) -> None:
        if state["next"] < config.train.num_steps * p and remote.total >= state["next"]:
            step = state["next"] // p
            state["next"] += eval_ticks
            evaluate_at(step, remote.center(), remote.new_staleness(),
                        time.perf_counter() - start)
        state["remote"] = remote

    def batch_fn(worker: int, first: int, steps: int):
        return sampler.worker_round(worker, first, steps)

    result = ray_server.train_ray(
        rule, grad_fn, params, p, config.train.num_steps, batch_fn, key,
        num_shards=asyn.num_shards, timeout_s=asyn.timeout_s, on_poll=on_poll, poll_s=0.2,
        address=asyn.ray_address, verify_rtol_per_exchange=1e-6)
    report = result.report
    seen = state["remote"].seen if "remote" in state else [0] * p
    last = [s for w, values in enumerate(result.staleness) for s in values[seen[w]:]]
    evaluate_at(config.train.num_steps, result.center, np.asarray(last, np.int64),
                result.wall_time_s)
    losses = np.concatenate([w[-config.train.eval_every:] for w in result.losses])
    metrics = {**state["metrics"], "train_loss": float(np.mean(losses))}
    totals = {**report.as_metrics(), "compile_time_s": result.compile_time_s}
    return None, metrics, totals, np.asarray(result.steps), result.wall_time_s


def train_and_evaluate_async(
    config: ml_collections.ConfigDict, workdir: str, overwrite: bool = False
) -> dict[str, Any]:
    """Runs ``config.algorithm`` asynchronously with ``config.executor``; returns the final
    metrics, all numbers (``workdir/final_metrics.json`` also lists the local steps each
    worker took). Not resumable: a workdir of the same
    config is run afresh; one of another config is refused unless ``overwrite``."""
    from easgd_jax import train as sync_train  # train.py dispatches here: import lazily

    rule = validate_async_config(config)
    dataset = data.load_dataset(config.data.name, config.data.data_dir,
                                image_size=config.data.get("image_size", 221),
                                crop=config.data.get("crop", 0))
    model = models.get_model(config.model.name, dataset.num_classes, **config.model.kwargs)
    # Not resumed: any difference, num_steps included, needs another workdir or overwrite.
    sync_train.prepare_workdir(config, workdir, overwrite, resumable_changes=())
    final = sync_train.already_finished(config, workdir)
    if final is not None:
        return final

    p = config.num_workers
    init_rng, worker_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    sample = jnp.zeros((1, *dataset.example_shape), jnp.float32)
    # The same start for all workers (one compiled init: op-by-op it compiles every layer).
    params = jax.jit(lambda rng: model.init(rng, sample, train=False))(init_rng)["params"]
    grad_fn = make_grad_fn(model, config.train.weight_decay)
    evaluate = sync_train.make_evaluator(model)
    sampler = data.WorkerSampler(dataset.train_x, dataset.train_y, p, config.train.batch_size,
                                 config.seed, augment=dataset.augment)
    writer = MetricsWriter(workdir, config.train.num_steps,
                           tensorboard=config.get("tensorboard", False))
    runner = {"simulated_async": _run_simulated, "threads": _run_threads,
              "ray": _run_ray}[config.executor]
    try:
        _, metrics, totals, worker_steps, wall = runner(
            config, rule, grad_fn, params, worker_rng, sampler, evaluate, dataset, writer)
    finally:
        writer.close()
    final = {**metrics, **totals, "wall_time_s": wall}
    write_final_metrics(workdir, {"step": config.train.num_steps, "executor": config.executor,
                                  **final, "worker_steps": [int(s) for s in worker_steps]})
    return final
