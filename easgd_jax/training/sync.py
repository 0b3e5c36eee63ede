"""The synchronous executor: p workers in SPMD rounds, one algorithm, checkpoints, metrics.

Data flows one way: config -> (data, model, algorithm, layout) -> rounds -> metrics and
checkpoints. All workers start from the same point; each samples its own mini-batches from
the whole training set; evaluation reads the algorithm's evaluation point (its registry
``Spec``: the CENTER x~ for EASGD/EAMSGD, the average z, the leader).

A round is ``steps_per_round`` local steps compiled under ``lax.scan`` (by default several
whole periods). The loop keeps the device busy: it dispatches round k, then reads round
k - 1's summary (mean loss, first non-finite loss, whether the evaluation point is finite,
the reported state of every period) and builds round k + 1's batches while round k runs.
An evaluation between checkpoints is enqueued on the state before the next round and read
after that round is dispatched; the loop waits for the device only where it needs the
state (checkpoints, the end).
A training set that fits (``DEVICE_DATA_MAX_BYTES``, no augmentation) is kept on the
devices: the host draws a round's example indices and the devices gather the batches.

Every evaluation line also records ``simulated_time_s``, the time the steps so far would
take on a simulated cluster of p machines (``config.cluster``,
:mod:`easgd_jax.training.simulated_time`), and ``exchange_bytes_per_step``, the bytes one
worker sends per step, read from the lowered program.

A run is resumable at any checkpoint and resumes exactly: the state, the RNG keys and the
data stream (a function of the step alone) are restored, metrics written after the
checkpoint are dropped and rewritten. SIGTERM/SIGINT save a checkpoint and stop cleanly (on
several processes, a signal to any one stops all after the same round: they agree every
round); checkpoints are verified against their checksums before a run resumes from them; a
NaN or Inf in a loss or in the evaluation point stops the run, naming the step, without
overwriting the last good checkpoint. The same loop runs on several processes
(``jax.distributed``): every process builds the global arrays from its own shards, and
process 0 writes metrics.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils

from easgd_jax import data, parallel
from easgd_jax.algorithms import registry
from easgd_jax.algorithms.base import Spec, check_chain_order
from easgd_jax.training import config as config_lib
from easgd_jax.training import simulated_time
from easgd_jax.training.checkpoint import Checkpointer

# TrainState, make_local_step and make_evaluator are re-exported.
from easgd_jax.training.common import (
    Evaluator,
    NonFiniteError,
    TrainState,
    already_finished,
    init_params,
    load_data_and_model,
    make_evaluator,  # noqa: F401
    make_local_step,
    prepare_workdir,
    stop_requests,
)
from easgd_jax.training.lock import workdir_lock
from easgd_jax.training.metrics import MetricsWriter, write_final_metrics


def evaluation_point(spec: Spec, state: TrainState):
    """The evaluated parameters, one copy: the center (or average z) held by worker 0, the
    (global) leader's parameters, or worker 0's."""
    stacked = spec.evaluation_params(state.opt_state, state.params)
    index = spec.evaluation_worker(state.opt_state)
    return jax.tree.map(lambda a: a[index], stacked)


def _round_summary(spec: Spec, report_every: int, losses, reported, state: TrainState):
    """ONE worker's summary of a round, computed where the worker lives (no communication):
    its mean loss, its first non-finite step or -1, whether its copy of the evaluation point
    (the center or average it holds, else its parameters) is finite, and the reported state
    after each ``report_every`` steps. One small transfer per round."""
    bad = ~jnp.isfinite(losses)  # [steps]
    first_bad = jnp.where(bad.any(), jnp.argmax(bad), -1)
    point = spec.evaluation_params(state.opt_state, state.params)
    finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(point)]))
    per_period = jax.tree.map(lambda a: a[report_every - 1::report_every], reported)
    return jnp.mean(losses), first_bad, finite, per_period


def make_train_round(config: ml_collections.ConfigDict, model, tx: optax.GradientTransformation,
                     spec: Spec, layout: parallel.WorkerLayout,
                     unroll_workers: bool | None = None) -> Callable:
    """The compiled round of the loop: ``round(state, batches) -> (state, summary)``,
    ``steps_per_round`` local steps in whole periods when they are, each worker's
    :func:`_round_summary` computed inside the same program.

    ``tx`` is built with ``on_disagreement="nan"`` (as :func:`_train` does): the loop starts
    every worker from the same params, and a center whose copies differed would turn NaN
    and stop the run at the round's non-finite check; the round then holds no host callback
    and JAX's persistent compilation cache keeps it. ``unroll_workers``: as in
    :func:`make_local_step`."""
    period = config_lib.round_period(config)
    report_every = period or config_lib.steps_per_round(config)
    local_step = make_local_step(model, tx, config.train.weight_decay, spec,
                                 unroll_workers=unroll_workers)

    def summarize(state: TrainState, aux):
        losses, reported = aux
        return _round_summary(spec, report_every, losses, reported, state)

    return parallel.make_round(local_step, layout, period=period, summarize=summarize,
                               exchange_step=spec.exchange_step)


# Training sets up to this size (per device) are kept on every device: a round's batches are
# then gathered there from the indices the host draws, instead of being built and copied by
# the host, which on a CPU backend shares the cores with the devices.
DEVICE_DATA_MAX_BYTES = 256 * 2**20


def _batch_maker(dataset: data.Dataset, sampler: data.WorkerSampler,
                 layout: parallel.WorkerLayout, rounds: int, batch_size: int,
                 dtype: np.dtype) -> Callable[[int], tuple[jax.Array, jax.Array]]:
    """``round_batches(step) -> (x, y)``, ``[p, rounds, batch, ...]`` sharded over the workers:
    the sampler's batches for global steps ``step ..``. Without augmentation and with a
    training set of at most ``DEVICE_DATA_MAX_BYTES`` (one process), the set lives on the
    devices and the host sends only the indices; the batches are the same either way."""
    p = layout.num_workers
    index_shape = jax.ShapeDtypeStruct((p, rounds, batch_size), np.int32)
    x_bytes = np.dtype(dtype).itemsize * dataset.train_x.size + dataset.train_y.nbytes
    if (dataset.augment is None and x_bytes <= DEVICE_DATA_MAX_BYTES
            and jax.process_count() == 1):
        replicated = layout.replicated_sharding()
        train_x = jax.device_put(np.asarray(dataset.train_x, dtype), replicated)
        train_y = jax.device_put(np.asarray(dataset.train_y, np.int32), replicated)
        sharding = layout.worker_sharding()
        gather = jax.jit(lambda x, y, idx: (x[idx], y[idx]), out_shardings=(sharding, sharding))

        def on_device(at_step: int) -> tuple[jax.Array, jax.Array]:
            idx = _to_global(lambda workers: sampler.round_indices(at_step, rounds, workers)
                             .astype(np.int32), layout, index_shape)
            return gather(train_x, train_y, idx)

        return on_device
    batch_shapes = (
        jax.ShapeDtypeStruct((p, rounds, batch_size, *dataset.example_shape), dtype),
        jax.ShapeDtypeStruct((p, rounds, batch_size), np.int32))

    def on_host(at_step: int) -> tuple[jax.Array, jax.Array]:
        def make(workers: range) -> tuple[np.ndarray, np.ndarray]:
            x, y = sampler.round(at_step, rounds, workers)
            return x.astype(dtype, copy=False), y.astype(np.int32, copy=False)

        return _to_global(make, layout, batch_shapes)

    return on_host


def _worker_spread(spec: Spec, state: TrainState):
    """Mean distance of the workers to the evaluation point, and to their own mean."""
    point = evaluation_point(spec, state)

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


def _exchanges_per_step(config: ml_collections.ConfigDict) -> float:
    period = config.algorithm.get("period", 1)  # algorithms without a period exchange always
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
    """Trains ``config.num_workers`` workers in SPMD rounds and evaluates the evaluation
    point; returns the final metrics.

    An existing workdir with the same config is resumed from its latest checkpoint; one
    with a different config is refused unless ``overwrite``.
    """
    return train(config, workdir, overwrite)[1]


def train(
    config: ml_collections.ConfigDict, workdir: str, overwrite: bool = False
) -> tuple[TrainState, dict[str, Any]]:
    """:func:`train_and_evaluate`, also returning the final state of all workers. The
    workdir is locked for the whole run (:mod:`.lock`): a second run into it is refused."""
    config_lib.validate(config)
    if config.executor != "sync":
        raise ValueError(f"training.sync runs config.executor 'sync', got {config.executor!r} "
                         "(easgd_jax.training.train_and_evaluate picks the executor).")
    with workdir_lock(workdir):
        return _train(config, workdir, overwrite)


def _train(
    config: ml_collections.ConfigDict, workdir: str, overwrite: bool
) -> tuple[TrainState, dict[str, Any]]:
    spec = registry.get_spec(config.algorithm.name)
    layout = parallel.make_worker_layout(
        config.num_workers, config.num_devices or None, config.num_groups)
    tx = registry.get_algorithm(
        config.algorithm.name,
        axis_name=layout.member_axis_name if spec.grouped else layout.axis_name,
        group_axis_name=layout.group_axis_name, on_disagreement="nan",
        **config_lib.algorithm_hparams(config))
    dataset, model = load_data_and_model(config)
    prepare_workdir(config, workdir, overwrite)
    logging.info("%d workers on %d %s device(s) (%d per device, %d process(es)); algorithm %s; "
                 "data %s %s", layout.num_workers, layout.num_devices,
                 jax.devices()[0].platform, layout.workers_per_device, jax.process_count(),
                 config.algorithm.name, dataset.name, dataset.example_shape)

    p = layout.num_workers
    init_rng, worker_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    params = jax.device_get(init_params(model, dataset.example_shape, init_rng))
    # Training dtype: the params, and with them the optimizer state and (below) the batches.
    dtype = np.dtype(config.train.param_dtype)
    params = jax.tree.map(lambda a: np.asarray(a, dtype), params)

    def initial_state(workers: range) -> TrainState:
        # The same starting point for every worker; per-worker RNG keys.
        stacked = jax.tree.map(lambda a: jnp.broadcast_to(a, (len(workers), *a.shape)), params)
        keys = jax.random.split(worker_rng, p)[workers.start:workers.stop]
        return TrainState(stacked, jax.vmap(tx.init)(stacked), keys)

    abstract_state = jax.eval_shape(lambda: initial_state(range(p)))
    check_chain_order(abstract_state.opt_state)  # a registered algorithm passes; a wrapper may not
    state = _to_global(initial_state, layout, abstract_state)
    period = config_lib.round_period(config)
    rounds = config_lib.steps_per_round(config)
    round_fn = make_train_round(config, model, tx, spec, layout)
    evaluation = make_evaluation(spec, model, layout, dataset)
    sampler = data.WorkerSampler(dataset.train_x, dataset.train_y, p,
                                 config.train.batch_size, config.seed, augment=dataset.augment,
                                 block=config_lib.sampling_block(config))
    round_batches = _batch_maker(dataset, sampler, layout, rounds, config.train.batch_size,
                                 dtype)

    checkpoints = Checkpointer(workdir, config.checkpoint.max_to_keep)
    step, pending_losses, history, compute_s = 0, [], [], None
    restored = checkpoints.restore_latest(state)
    if restored is not None:
        step, state, meta = restored
        final = already_finished(config, workdir)
        if final is not None and step == final["step"]:
            checkpoints.close()
            return state, final
        pending_losses, history = meta["pending_losses"], meta["history"]
        compute_s = meta.get("cluster_compute_s")  # a resumed run keeps its measured step
        logging.info("resumed from the checkpoint at step %d", step)
    saved_step = step
    writer = MetricsWriter(workdir, config.train.num_steps, resume_step=step,
                           enabled=jax.process_index() == 0, tensorboard=config.tensorboard)
    exchange_seconds = _allreduce_seconds(layout, params)
    cluster_clock = simulated_time.sync_clock(config, spec, model, params, dataset.example_shape,
                                              compute_s)

    def save(at_step: int) -> None:
        meta = {"step": at_step, "pending_losses": [float(x) for x in pending_losses],
                "history": jax.tree.map(lambda a: np.asarray(a).tolist(), history),
                "cluster_compute_s": cluster_clock.cluster.compute_s}
        checkpoints.save(at_step, state, meta)

    def absorb(first_step: int, summary) -> None:
        """Reads a round's summary (blocking until that round is done); raises on NaN."""
        if jax.process_count() > 1:  # every process reads every worker's row (a collective)
            summary = multihost_utils.process_allgather(summary, tiled=True)
        mean_losses, first_bad, finite, per_period = jax.device_get(summary)  # [p] each
        if (first_bad >= 0).any() or not finite.all():
            bad = np.where(first_bad >= 0, first_bad, rounds)
            bad_worker = int(np.argmin(bad))
            where = (f"a loss of worker {bad_worker} at step {first_step + bad[bad_worker]}"
                     if (first_bad >= 0).any() else
                     f"the evaluation point after step {first_step + rounds}")
            last = checkpoints.steps()
            raise NonFiniteError(
                f"non-finite value (NaN or Inf) in {where}; stopping. The last good "
                f"checkpoint is step {last[-1] if last else 'none'} in {workdir}.")
        pending_losses.append(float(np.mean(mean_losses)))
        for j in range(rounds // (period or rounds)):
            history.append({name: value[:, j] for name, value in per_period.items()})

    metrics: dict[str, Any] = {}
    start, start_step = time.perf_counter(), step
    every = config.checkpoint.every

    def write_evaluation(at_step: int, dispatched, done_s: float) -> None:
        """The evaluation line of step ``at_step``, every round up to it absorbed;
        ``dispatched`` (:func:`make_evaluation`) was enqueued on the state after it."""
        nonlocal metrics, pending_losses, history
        metrics = read_evaluation(*dispatched, pending_losses)
        metrics.update(_per_round(history, layout))
        metrics["steps_per_second"] = (at_step - start_step) / (done_s - start)
        metrics["communication_time_estimate_s"] = (
            exchange_seconds * _exchanges_per_step(config) * (at_step - start_step))
        metrics["simulated_time_s"] = cluster_clock.time_s(at_step)
        metrics["exchange_bytes_per_step"] = cluster_clock.bytes_per_step
        writer.write(at_step, metrics)
        pending_losses, history = [], []

    pending = None  # (first step, summary) of the round dispatched last, not yet read
    # (step, an evaluation dispatched on the state after it, before the next round), written
    # once the next round is dispatched: the host never holds the device back to evaluate.
    deferred = None
    batches = round_batches(step) if step < config.train.num_steps else None
    with stop_requests() as stop:
        while step < config.train.num_steps:
            state, summary = round_fn(state, batches)  # dispatched; the summary inside
            if pending is not None:
                absorb(*pending)  # the previous round: done by the time this one runs
            if deferred is not None:
                write_evaluation(*deferred, time.perf_counter())
                deferred = None
            pending = (step, summary)
            step += rounds
            if step < config.train.num_steps:
                batches = round_batches(step)  # host work while the device runs the round
            stopping = _agreed_stop(stop)
            evaluating = step % config.train.eval_every == 0 or step == config.train.num_steps
            saving = (every and step % every == 0) or step == config.train.num_steps or stopping
            if evaluating and not saving:  # enqueued before the next round donates the state
                deferred = (step, evaluation(state))
                continue
            if not (evaluating or saving):
                continue
            absorb(*pending)
            pending = None
            if evaluating:
                done_s = time.perf_counter()
                write_evaluation(step, evaluation(state), done_s)
            if saving and step != saved_step:
                save(step)
                saved_step = step
            if stopping and step < config.train.num_steps:
                logging.warning("%s: saved a checkpoint at step %d and stopped; run again "
                                "with the same workdir to resume.",
                                f"signal {stop[0]} received" if stop else
                                "another process received a stop signal", step)
                metrics = {**metrics, "stopped_at_step": step}
                break
    checkpoints.close()
    writer.close()
    metrics["wall_time_s"] = time.perf_counter() - start
    metrics["cluster"] = cluster_clock.describe()
    if jax.process_index() == 0 and "stopped_at_step" not in metrics:
        write_final_metrics(workdir, {"step": step, **metrics})
    return state, metrics


def _agreed_stop(stop: list[int]) -> bool:
    """Whether any process received a stop signal; on several processes a tiny all-gather
    every round, so that all stop after the same round and save the same step (a process
    that stopped alone would wait forever for the others in the next collective)."""
    if jax.process_count() == 1:
        return bool(stop)
    return bool(np.any(multihost_utils.process_allgather(np.int32(bool(stop)))))


def _per_round(history: list[dict], layout: parallel.WorkerLayout) -> dict[str, list]:
    """State fields reported per communication round (e.g. LSGD's leader): one entry per
    period since the last evaluation; per group when the value differs between groups."""
    out: dict[str, list] = {}
    group_size = layout.num_workers // layout.num_groups
    for record in history:
        for name, value in record.items():
            per_group = np.asarray(value)[::group_size].tolist()
            out.setdefault(f"{name}_per_round", []).append(
                per_group[0] if len(set(per_group)) == 1 else per_group)
    return out


def make_evaluation(spec: Spec, model, layout: parallel.WorkerLayout,
                    dataset: data.Dataset) -> Callable[[TrainState], tuple]:
    """The loop's evaluation: ``dispatch(state)`` enqueues, without waiting, the test split
    on the evaluation point (its copy on this process's first device) and the worker
    spread; :func:`read_evaluation` reads what it returns."""
    replicated = layout.replicated_sharding()
    point_fn = jax.jit(functools.partial(evaluation_point, spec), out_shardings=replicated)
    spread_fn = jax.jit(functools.partial(_worker_spread, spec), out_shardings=replicated)
    evaluate = Evaluator(model)

    def dispatch(state: TrainState) -> tuple:
        point = jax.tree.map(lambda a: a.addressable_shards[0].data, point_fn(state))
        return evaluate.dispatch(point, dataset.test_x, dataset.test_y), spread_fn(state)

    return dispatch


def read_evaluation(test, spread, losses) -> dict[str, float]:
    """Test loss/accuracy of the evaluation point, plus the worker spread (distances to the
    point and to the workers' mean), of a :func:`make_evaluation` dispatch, and the mean of
    ``losses``; blocks until the dispatch is done."""
    test_loss, test_acc = Evaluator.read(test)
    to_point, spread = jax.device_get(spread)
    return {
        "train_loss": float(np.mean(losses)),
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "worker_center_distance": float(to_point),
        "worker_spread": float(spread),
    }
