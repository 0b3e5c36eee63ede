"""``train_and_evaluate(config, workdir)``: p workers, one algorithm, one executor.

Data flows one way: config -> (data, model, algorithm, executor) -> metrics and checkpoints.
All workers start from the same point; each samples its own mini-batches from the whole
training set; evaluation reads the algorithm's evaluation point (the CENTER x~ for
EASGD/EAMSGD).

A run is resumable at any checkpoint and resumes exactly: the state, the RNG keys and the
data stream (a function of the step alone) are restored, metrics written after the
checkpoint are dropped and rewritten. SIGTERM/SIGINT save a checkpoint and stop cleanly; a
NaN or Inf in a loss or in the evaluation point stops the run, naming the step, without
overwriting the last good checkpoint. The same loop runs on several processes
(``jax.distributed``): every process builds the global arrays from its own shards, and
process 0 writes metrics.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from easgd_jax import algorithms, data, models, parallel, validation
from easgd_jax.checkpoint import Checkpointer
from easgd_jax.metrics import (
    FINAL_METRICS,
    MetricsWriter,
    finished_run,
    write_final_metrics,
)

EVAL_BATCH_SIZE = 1000
# Fields that may change between a run and its resumption (extending a run).
RESUMABLE_CHANGES = ("train.num_steps",)
# Fields that differ between the processes of one run, or between its launches.
PER_LAUNCH_FIELDS = ("distributed.process_id", "distributed.coordinator_address")


class TrainState(NamedTuple):
    """One worker's carry through a round."""

    params: optax.Params
    opt_state: optax.OptState
    rng: jax.Array


class NonFiniteError(FloatingPointError):
    """A loss or the evaluation point became NaN or Inf."""


def make_local_step(model, tx: optax.GradientTransformation, weight_decay: float):
    """One local step of one worker: gradient at ``params`` (+ l2 * params), then ``tx``.

    ``tx.update`` also receives the worker's mini-batch loss as the extra argument ``loss``
    (used by Leader SGD, ignored by transformations that do not take extra arguments).
    """
    tx = optax.with_extra_args_support(tx)

    def loss_fn(params, x, y, rng):
        logits = model.apply({"params": params}, x, train=True, rngs={"dropout": rng})
        return models.cross_entropy(logits, y)

    def step(state: TrainState, batch):
        x, y = batch
        rng, dropout_rng = jax.random.split(state.rng)
        loss, grads = jax.value_and_grad(loss_fn)(state.params, x, y, dropout_rng)
        if weight_decay:
            grads = jax.tree.map(lambda g, p: g + weight_decay * p, grads, state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params, loss=loss)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, rng), loss

    return step


def make_evaluator(model):
    """Returns ``evaluate(params, x, y) -> (mean loss, accuracy)`` over batches of a split."""

    @jax.jit
    def batch_sums(params, x, y, mask):
        logits = model.apply({"params": params}, x, train=False)
        log_probs = jax.nn.log_softmax(logits)
        nll = -jnp.take_along_axis(log_probs, y[:, None], axis=-1)[:, 0]
        correct = jnp.argmax(logits, -1) == y
        return jnp.sum(nll * mask), jnp.sum(correct * mask)

    def evaluate(params, x, y) -> tuple[float, float]:
        n = len(y)
        total_loss, total_correct = 0.0, 0.0
        for start in range(0, n, EVAL_BATCH_SIZE):
            idx = np.arange(start, start + EVAL_BATCH_SIZE)
            mask = (idx < n).astype(np.float32)
            idx = np.minimum(idx, n - 1)  # pad the last batch; the mask drops the padding
            loss, correct = batch_sums(params, np.asarray(x[idx]), y[idx], mask)
            total_loss += float(loss)
            total_correct += float(correct)
        return total_loss / n, total_correct / n

    return evaluate


def _evaluation_point(spec: algorithms.Spec, opt_state, params):
    """The center (or average z) held by worker 0, else the leader's (or worker 0's) params."""
    stacked = spec.evaluation_params(opt_state, params)
    index = spec.evaluation_worker(opt_state)
    return jax.tree.map(lambda a: a[index], stacked)


def _reported_state(spec: algorithms.Spec, opt_state):
    return spec.reported_state(opt_state)


@functools.partial(jax.jit, static_argnums=0)
def _round_summary(spec: algorithms.Spec, losses, state: TrainState):
    """Mean loss of a round, the first non-finite (step, worker) or -1, and whether the
    evaluation point is finite: one small transfer per round."""
    bad = ~jnp.isfinite(losses)  # [p, steps]
    first_step = jnp.where(bad.any(), jnp.argmax(bad.any(axis=0)), -1)
    first_worker = jnp.where(bad.any(), jnp.argmax(bad.any(axis=1)), -1)
    point = _evaluation_point(spec, state.opt_state, state.params)
    finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(point)]))
    return jnp.mean(losses), first_step, first_worker, finite


@functools.partial(jax.jit, static_argnums=0)
def _worker_spread(spec: algorithms.Spec, state: TrainState):
    """Mean distance of the workers to the evaluation point, and to their own mean."""
    point = _evaluation_point(spec, state.opt_state, state.params)

    def mean_norm(diffs):
        sq = sum(jnp.sum(d.reshape(d.shape[0], -1) ** 2, axis=1) for d in jax.tree.leaves(diffs))
        return jnp.mean(jnp.sqrt(sq))

    to_point = jax.tree.map(lambda x, c: x - c[None], state.params, point)
    to_mean = jax.tree.map(lambda x: x - jnp.mean(x, axis=0, keepdims=True), state.params)
    return mean_norm(to_point), mean_norm(to_mean)


def _to_global(make: Callable[[range], Any], layout: parallel.WorkerLayout, like: Any) -> Any:
    """Builds arrays with a leading worker axis from ``make(workers) -> tree``, shaped like
    ``like``; each process computes only the workers its devices hold."""
    sharding = layout.worker_sharding()
    cache: dict[tuple[int, int], Any] = {}

    def shard(path_index, index):
        rows = index[0]
        key = (rows.start or 0, rows.stop or layout.num_workers)
        if key not in cache:
            cache[key] = [np.asarray(a) for a in jax.tree.leaves(make(range(*key)))]
        return cache[key][path_index][(slice(None), *index[1:])]

    leaves, treedef = jax.tree.flatten(like)
    arrays = [jax.make_array_from_callback(
        leaf.shape, sharding, lambda index, i=i: shard(i, index)) for i, leaf in enumerate(leaves)]
    return jax.tree.unflatten(treedef, arrays)


@contextlib.contextmanager
def _stop_requests() -> Iterator[list[int]]:
    """Collects SIGTERM/SIGINT into a list instead of dying; restores the handlers after."""
    received: list[int] = []
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, lambda s, _frame: received.append(s))
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _config_differences(saved: dict, current: dict, allowed: tuple[str, ...],
                        prefix: str = "") -> list[str]:
    keys = sorted(set(saved) | set(current))
    out = []
    for key in keys:
        name = f"{prefix}{key}"
        a, b = saved.get(key, "<missing>"), current.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_differences(a, b, allowed, name + ".")
        elif a != b and name not in allowed and name not in PER_LAUNCH_FIELDS:
            out.append(f"{name}: {a!r} in the workdir, {b!r} now")
    return out


def prepare_workdir(config: ml_collections.ConfigDict, workdir: str, overwrite: bool,
                    resumable_changes: tuple[str, ...] = RESUMABLE_CHANGES) -> None:
    """Refuses a workdir that holds a run of a different config (fields outside
    ``resumable_changes`` differ), unless asked to overwrite it; then saves the config."""
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path) and not overwrite:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        current = json.loads(config.to_json_best_effort())
        differences = _config_differences(saved, current, resumable_changes)
        if differences:
            raise ValueError(
                f"workdir {workdir} holds a run with a different config ("
                + "; ".join(differences) + "). Use another workdir, or overwrite it "
                "(--overwrite, or train_and_evaluate(..., overwrite=True)).")
    if overwrite and jax.process_index() == 0:
        for name in ("checkpoints", "tensorboard"):
            shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
        for name in ("metrics.jsonl", "final_metrics.json", "config.json"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(workdir, name))
    os.makedirs(workdir, exist_ok=True)
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    if jax.process_index() == 0 and not _has_text(path, text):  # a re-run changes no file
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".tmp", path)


def _has_text(path: str, text: str) -> bool:
    if not os.path.exists(path):
        return False
    with open(path, encoding="utf-8") as f:
        return f.read() == text


def already_finished(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any] | None:
    """The saved final metrics when ``workdir`` holds this run finished (logged), else None."""
    final = finished_run(workdir, config.train.num_steps)
    if final is not None:
        logging.info("already finished at step %d (%s); nothing to do. Final metrics: %s",
                     final["step"], os.path.join(workdir, FINAL_METRICS), final)
    return final


def _exchanges_per_step(config: ml_collections.ConfigDict) -> float:
    period = config.algorithm.get("period", 1)
    return 1.0 / period if period else 1.0


def _allreduce_seconds(layout: parallel.WorkerLayout, params: Any, repeats: int = 20) -> float:
    """Median time of one all-reduce of a parameter-sized vector over the workers: the
    exchange of EASGD and the gradient all-reduce of data-parallel SGD."""
    size = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    reduce = parallel.per_worker(lambda v: jax.lax.psum(v, layout.axis_name), layout)
    vector = _to_global(lambda w: np.zeros((len(w), size), np.float32), layout,
                        jax.ShapeDtypeStruct((layout.num_workers, size), jnp.float32))
    jax.block_until_ready(reduce(vector))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(reduce(vector))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, overwrite: bool = False
) -> dict[str, Any]:
    """Trains ``config.num_workers`` workers and evaluates the center; returns final metrics.

    An existing workdir with the same config is resumed from its latest checkpoint; one
    with a different config is refused unless ``overwrite``. ``config.executor`` other than
    "sync" runs the asynchronous executors of :mod:`easgd_jax.async_train`.
    """
    if config.get("executor", "sync") != "sync":
        from easgd_jax import async_train  # imports this module: import here, not on top

        return async_train.train_and_evaluate_async(config, workdir, overwrite)
    return train(config, workdir, overwrite)[1]


def train(
    config: ml_collections.ConfigDict, workdir: str, overwrite: bool = False
) -> tuple[TrainState, dict[str, Any]]:
    """:func:`train_and_evaluate`, also returning the final state of all workers."""
    validation.validate_config(config)
    layout = parallel.make_worker_layout(
        config.num_workers, config.num_devices or None, config.get("num_groups", 1))
    spec = algorithms.get_spec(config.algorithm.name)
    grouped = spec.grouped
    tx = algorithms.get_algorithm(
        config.algorithm.name,
        axis_name=layout.member_axis_name if grouped else layout.axis_name,
        group_axis_name=layout.group_axis_name, **validation.algorithm_hparams(config))
    dataset = data.load_dataset(config.data.name, config.data.data_dir,
                                image_size=config.data.get("image_size", 221),
                                crop=config.data.get("crop", 0))
    model = models.get_model(config.model.name, dataset.num_classes, **config.model.kwargs)
    prepare_workdir(config, workdir, overwrite)
    logging.info("%d workers on %d %s device(s) (%d per device, %d process(es)); algorithm %s; "
                 "data %s %s", layout.num_workers, layout.num_devices,
                 jax.devices()[0].platform, layout.workers_per_device, jax.process_count(),
                 config.algorithm.name, dataset.name, dataset.example_shape)

    p = layout.num_workers
    init_rng, worker_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    sample = jnp.zeros((1, *dataset.example_shape), jnp.float32)
    params = jax.device_get(model.init(init_rng, sample, train=False)["params"])
    # Training dtype: the params, and with them the optimizer state and (below) the batches.
    dtype = validation.param_dtype(config)
    params = jax.tree.map(lambda a: np.asarray(a, dtype), params)

    def initial_state(workers: range) -> TrainState:
        # The same starting point for every worker; per-worker RNG keys.
        stacked = jax.tree.map(lambda a: jnp.broadcast_to(a, (len(workers), *a.shape)), params)
        keys = jax.random.split(worker_rng, p)[workers.start:workers.stop]
        return TrainState(stacked, jax.vmap(tx.init)(stacked), keys)

    state = _to_global(initial_state, layout, jax.eval_shape(lambda: initial_state(range(p))))
    round_fn = parallel.make_round(
        make_local_step(model, tx, config.train.weight_decay), layout,
        period=validation.round_period(config))
    evaluate = make_evaluator(model)
    sampler = data.WorkerSampler(dataset.train_x, dataset.train_y, p,
                                 config.train.batch_size, config.seed, augment=dataset.augment)
    rounds = validation.steps_per_round(config)
    batch_shapes = (
        jax.ShapeDtypeStruct((p, rounds, config.train.batch_size, *dataset.example_shape),
                             dtype),
        jax.ShapeDtypeStruct((p, rounds, config.train.batch_size), np.int32))

    def round_batches(at_step: int, workers: range) -> tuple[np.ndarray, np.ndarray]:
        x, y = sampler.round(at_step, rounds, workers)
        return x.astype(dtype, copy=False), y

    checkpoints = Checkpointer(workdir, config.checkpoint.max_to_keep)
    step, pending_losses, history = 0, [], []
    restored = checkpoints.restore_latest(state)
    if restored is not None:
        step, state, meta = restored
        final = already_finished(config, workdir)
        if final is not None and step == final["step"]:
            checkpoints.close()
            return state, final
        pending_losses, history = meta["pending_losses"], meta["history"]
        logging.info("resumed from the checkpoint at step %d", step)
    saved_step = step
    writer = MetricsWriter(workdir, config.train.num_steps, resume_step=step,
                           enabled=jax.process_index() == 0,
                           tensorboard=config.get("tensorboard", True))
    exchange_seconds = _allreduce_seconds(layout, params)

    def save(at_step: int) -> None:
        meta = {"step": at_step, "pending_losses": [float(x) for x in pending_losses],
                "history": jax.tree.map(lambda a: np.asarray(a).tolist(), history)}
        checkpoints.save(at_step, state, meta)

    metrics: dict[str, Any] = {}
    start, start_step = time.perf_counter(), step
    with _stop_requests() as stop:
        while step < config.train.num_steps:
            batches = _to_global(lambda w, s=step: round_batches(s, w), layout, batch_shapes)
            state, round_losses = round_fn(state, batches)
            mean_loss, bad_step, bad_worker, point_finite = jax.device_get(
                _round_summary(spec, round_losses, state))
            if bad_step >= 0 or not point_finite:
                where = (f"a loss of worker {bad_worker} at step {step + bad_step}"
                         if bad_step >= 0 else f"the evaluation point after step {step + rounds}")
                last = checkpoints.steps()
                raise NonFiniteError(
                    f"non-finite value (NaN or Inf) in {where}; stopping. The last good "
                    f"checkpoint is step {last[-1] if last else 'none'} in {workdir}.")
            pending_losses.append(float(mean_loss))
            history.append(jax.device_get(jax.jit(
                _reported_state, static_argnums=0, out_shardings=layout.replicated_sharding())(
                    spec, state.opt_state)))
            step += rounds
            if step % config.train.eval_every == 0 or step == config.train.num_steps:
                metrics = _evaluate(spec, state, evaluate, dataset, pending_losses, layout)
                metrics.update(_per_round(history, layout))
                elapsed = time.perf_counter() - start
                metrics["steps_per_second"] = (step - start_step) / elapsed
                metrics["communication_time_estimate_s"] = (
                    exchange_seconds * _exchanges_per_step(config) * (step - start_step))
                writer.write(step, metrics)
                pending_losses, history = [], []
            every = config.checkpoint.every
            if ((every and step % every == 0) or step == config.train.num_steps or stop) \
                    and step != saved_step:
                save(step)
                saved_step = step
            if stop:
                logging.warning("signal %d received: saved a checkpoint at step %d and "
                                "stopped; run again with the same workdir to resume.",
                                stop[0], step)
                metrics = {**metrics, "stopped_at_step": step}
                break
    checkpoints.close()
    writer.close()
    metrics["wall_time_s"] = time.perf_counter() - start
    if jax.process_index() == 0 and not stop:
        write_final_metrics(workdir, {"step": step, **metrics})
    return state, metrics


def _per_round(history: list[dict], layout: parallel.WorkerLayout) -> dict[str, list]:
    """State fields reported per round (e.g. LSGD's leader): one entry per round since the
    last evaluation; per group when the value differs between groups."""
    out: dict[str, list] = {}
    group_size = layout.num_workers // layout.num_groups
    for record in history:
        for name, value in record.items():
            per_group = np.asarray(value)[::group_size].tolist()
            out.setdefault(f"{name}_per_round", []).append(
                per_group[0] if len(set(per_group)) == 1 else per_group)
    return out


def _evaluate(spec: algorithms.Spec, state: TrainState, evaluate, dataset: data.Dataset, losses,
              layout: parallel.WorkerLayout) -> dict[str, float]:
    """Test loss/accuracy of the evaluation point (worker 0's copy), plus worker spread."""
    point = jax.jit(_evaluation_point, static_argnums=0,
                    out_shardings=layout.replicated_sharding())(spec, state.opt_state, state.params)
    test_loss, test_acc = evaluate(jax.device_get(point), dataset.test_x, dataset.test_y)
    to_point, spread = jax.device_get(_worker_spread(spec, state))
    return {
        "train_loss": float(np.mean(losses)),
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "worker_center_distance": float(to_point),
        "worker_spread": float(spread),
    }
