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

import dataclasses
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

from easgd_jax import data, models, parallel
from easgd_jax.algorithms.base import Spec, check_chain_order
from easgd_jax.algorithms.collectives import AGREEMENT_FIELD, disagreement_message
from easgd_jax.training import config as config_lib
from easgd_jax.training import simulated_time
from easgd_jax.training.checkpoint import Checkpointer

# TrainState, make_local_step and make_evaluator are re-exported.
from easgd_jax.training.common import (
    Evaluator,
    NonFiniteError,
    TrainState,
    already_finished,
    initial_params,
    initial_state,
    load_data_and_model,
    make_evaluator,  # noqa: F401
    make_local_step,
    prepare_workdir,
    stop_requests,
)
from easgd_jax.training.lock import workdir_lock
from easgd_jax.training.metrics import (
    FINAL_METRICS,
    MetricsWriter,
    read_metrics,
    write_final_metrics,
)
from easgd_jax.training.plan import Plan, make_plan


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
    # The state's record of the center-agreement check (True where it keeps none).
    agree = jnp.all(jnp.array([jnp.all(flag) for _, flag in optax.tree_utils.
                               tree_get_all_with_path(state.opt_state, AGREEMENT_FIELD)]
                              + [True]))
    per_period = jax.tree.map(lambda a: a[report_every - 1::report_every], reported)
    return jnp.mean(losses), first_bad, finite, agree, per_period


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
    sharding = layout.batch_sharding()
    x_bytes = np.dtype(dtype).itemsize * dataset.train_x.size + dataset.train_y.nbytes
    if (dataset.augment is None and x_bytes <= DEVICE_DATA_MAX_BYTES
            and jax.process_count() == 1):
        replicated = layout.replicated_sharding()
        train_x = jax.device_put(np.asarray(dataset.train_x, dtype), replicated)
        train_y = jax.device_put(np.asarray(dataset.train_y, np.int32), replicated)
        gather = jax.jit(lambda x, y, idx: (x[idx], y[idx]), out_shardings=(sharding, sharding))

        def on_device(at_step: int) -> tuple[jax.Array, jax.Array]:
            idx = _to_global(lambda workers: sampler.round_indices(at_step, rounds, workers)
                             .astype(np.int32), layout, index_shape, lambda *_: sharding)
            return gather(train_x, train_y, idx)

        return on_device
    batch_shapes = (
        jax.ShapeDtypeStruct((p, rounds, batch_size, *dataset.example_shape), dtype),
        jax.ShapeDtypeStruct((p, rounds, batch_size), np.int32))

    def on_host(at_step: int) -> tuple[jax.Array, jax.Array]:
        def make(workers: range) -> tuple[np.ndarray, np.ndarray]:
            x, y = sampler.round(at_step, rounds, workers)
            return x.astype(dtype, copy=False), y.astype(np.int32, copy=False)

        return _to_global(make, layout, batch_shapes, lambda *_: sharding)

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


def _to_global(make: Callable[[range], Any], layout: parallel.WorkerLayout, like: Any,
               sharding_of: Callable[[tuple[int, ...], Any], Any] | None = None) -> Any:
    """Builds arrays with a leading worker axis from ``make(workers) -> tree``, shaped like
    ``like``, each with ``sharding_of(shape, dtype)`` (default: the layout's state
    shardings, ``layout.state_shardings(like)``: over the workers, and over FSDP inside a
    worker that spans devices); each process computes only the workers its devices hold."""
    shardings = jax.tree.leaves(
        layout.state_shardings(like) if sharding_of is None
        else jax.tree.map(lambda leaf: sharding_of(leaf.shape, leaf.dtype), like))
    cache: dict[tuple[int, int], Any] = {}

    def shard(path_index, index):
        rows = index[0]
        key = (rows.start or 0, rows.stop or layout.num_workers)
        if key not in cache:
            cache[key] = [np.asarray(a) for a in jax.tree.leaves(make(range(*key)))]
        return cache[key][path_index][(slice(None), *index[1:])]

    leaves, treedef = jax.tree.flatten(like)
    arrays = [jax.make_array_from_callback(
        leaf.shape, shardings[i], lambda index, i=i: shard(i, index))
        for i, leaf in enumerate(leaves)]
    return jax.tree.unflatten(treedef, arrays)


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, overwrite: bool = False,
    plan: Plan | None = None,
) -> dict[str, Any]:
    """Trains ``config.num_workers`` workers in SPMD rounds and evaluates the evaluation
    point; returns the final metrics.

    An existing workdir with the same config is resumed from its latest checkpoint; one
    with a different config is refused unless ``overwrite``. ``plan``: the config's
    :func:`~easgd_jax.training.plan.make_plan`, when the caller validated it already.
    """
    return train(config, workdir, overwrite, plan)[1]


def train(
    config: ml_collections.ConfigDict, workdir: str, overwrite: bool = False,
    plan: Plan | None = None,
) -> tuple[TrainState, dict[str, Any]]:
    """:func:`train_and_evaluate`, also returning the final state of all workers. The
    workdir is locked for the whole run (:mod:`.lock`): a second run into it is refused."""
    plan = make_plan(config) if plan is None else plan
    if config.executor != "sync":
        raise ValueError(f"training.sync runs config.executor 'sync', got {config.executor!r} "
                         "(easgd_jax.training.train_and_evaluate picks the executor).")
    with workdir_lock(workdir):
        run = _build(config, plan, workdir, overwrite)
        try:
            state, record, final = _start(run, config, workdir)
        except BaseException:  # a refused checkpoint, a signal: the manager's files closed
            run.checkpoints.close()
            raise
        if record is None:  # finished already: nothing changes
            run.checkpoints.close()
            return state, final
        try:
            state, metrics = _loop(run, state, record)
        finally:
            run.checkpoints.close()
            record.writer.close()
        if not record.rebuilt:  # (a rebuilt record has no training time of its own)
            metrics["wall_time_s"] = time.perf_counter() - record.start_s
        metrics["cluster"] = run.cluster_clock.describe()
        if jax.process_index() == 0 and "stopped_at_step" not in metrics:
            write_final_metrics(workdir, {"step": record.step, **metrics})
        return state, metrics


@dataclasses.dataclass
class _Run:
    """What a synchronous run builds once, before its first round."""

    plan: Plan
    workdir: str
    layout: parallel.WorkerLayout
    tx: optax.GradientTransformation  # the algorithm, built once on the layout
    initial: TrainState  # every worker's starting state (global arrays)
    round_fn: Callable  # (state, batches) -> (state, summary): one compiled round
    round_batches: Callable[[int], Any]  # step -> the round's batches, on the devices
    evaluation: Callable[[TrainState], tuple]  # state -> a dispatched evaluation
    checkpoints: Checkpointer
    cluster_clock: Any  # simulated_time.SyncClock, built by _start (it may reuse a step time)
    model: Any
    params: Any  # the starting params of one worker (host arrays)
    dataset: data.Dataset


def _build(config: ml_collections.ConfigDict, plan: Plan, workdir: str,
           overwrite: bool) -> _Run:
    """The layout, the transformation (built ONCE, here), the data, the starting state, the
    compiled round, the batches, the evaluation and the checkpointer of a run."""
    spec = plan.spec
    layout = parallel.make_worker_layout(
        config.num_workers, config.num_devices or None, config.num_groups,
        config.worker_devices.data, config.worker_devices.fsdp)
    tx = spec.build(plan.hparams, layout, on_disagreement="nan")
    dataset, model = load_data_and_model(config)
    prepare_workdir(config, workdir, overwrite)
    logging.info("%d workers on %d %s device(s) (%s, %d process(es)); algorithm %s; "
                 "data %s %s", layout.num_workers, layout.num_devices,
                 jax.devices()[0].platform,
                 f"each on {layout.data} data x {layout.fsdp} fsdp devices"
                 if layout.spans_devices else f"{layout.workers_per_device} per device",
                 jax.process_count(),
                 config.algorithm.name, dataset.name, dataset.example_shape)
    params = jax.device_get(initial_params(config, model, dataset.example_shape))
    if layout.spans_devices:  # FSDP by the model's logical axis names (LayoutError: misfit)
        layout = layout.with_params(params, models.logical_axes(model, dataset.example_shape))
        logging.info("%s", layout.plan.describe())
    abstract_state = jax.eval_shape(lambda: initial_state(config, tx, params))
    check_chain_order(abstract_state.opt_state)  # a registered algorithm passes; a wrapper may not
    sampler = data.WorkerSampler(dataset.train_x, dataset.train_y, plan.num_workers,
                                 config.train.batch_size, config.seed, augment=dataset.augment,
                                 block=plan.sampling_block)
    dtype = np.dtype(config.train.param_dtype)
    return _Run(
        plan=plan, workdir=workdir, layout=layout, tx=tx,
        initial=_to_global(lambda workers: initial_state(config, tx, params, workers),
                           layout, abstract_state),
        round_fn=make_train_round(config, model, tx, spec, layout),
        round_batches=_batch_maker(dataset, sampler, layout, plan.round_steps,
                                   config.train.batch_size, dtype),
        evaluation=make_evaluation(spec, model, layout, dataset),
        checkpoints=Checkpointer(workdir, config.checkpoint.max_to_keep, config),
        cluster_clock=None, model=model, params=params, dataset=dataset)


@dataclasses.dataclass
class _Record:
    """The loop's running record: where it is, what it has not written yet, and its
    metrics writer. ``start_s`` / ``start_step``: when and where this process began."""

    step: int
    pending_losses: list[float]
    history: list[dict]
    writer: MetricsWriter
    start_step: int
    start_s: float = dataclasses.field(default_factory=time.perf_counter)
    saved_step: int = -1
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    rebuilt: bool = False  # the final metrics were rebuilt from the last evaluation


def _start(run: _Run, config: ml_collections.ConfigDict, workdir: str
           ) -> tuple[TrainState, _Record | None, dict[str, Any] | None]:
    """``(state, record, None)`` to train from: the latest verified checkpoint's, or the
    initial state at step 0; ``(state, None, final metrics)`` when the workdir holds this
    run finished (its final_metrics.json), which is never trained again, checkpoints or
    not. A run whose training ended but whose final metrics are missing (a crash after the
    last checkpoint) gets them back from its last evaluation (:func:`_rebuilt_metrics`).
    Builds the run's cluster clock (a resumed run keeps the step time its checkpoint saved).
    """
    final = already_finished(config, workdir)
    restored = run.checkpoints.restore_latest(run.initial)
    if final is not None:
        if restored is None or restored[0] != final["step"]:
            logging.warning(
                "%s holds this run finished at step %d (%s) and %s: nothing is trained again "
                "and its results stay as they are (--overwrite trains it afresh).", workdir,
                final["step"], FINAL_METRICS, "no checkpoint" if restored is None else
                f"its latest checkpoint is at step {restored[0]}")
        return (run.initial if restored is None else restored[1]), None, final
    step, state, pending_losses, history, compute_s = 0, run.initial, [], [], None
    if restored is not None:
        step, state, meta = restored
        pending_losses, history = meta["pending_losses"], meta["history"]
        compute_s = meta.get("cluster_compute_s")
        logging.info("resumed from the checkpoint at step %d", step)
    run.cluster_clock = simulated_time.sync_clock(
        config, run.plan.spec, run.model, run.params, run.dataset.example_shape, compute_s,
        tx=run.tx, layout=run.layout)
    writer = MetricsWriter(workdir, run.plan.num_steps, resume_step=step,
                           enabled=jax.process_index() == 0, tensorboard=config.tensorboard)
    record = _Record(step, pending_losses, history, writer, start_step=step, saved_step=step)
    if step >= run.plan.num_steps:
        record.metrics, record.rebuilt = _rebuilt_metrics(run, state, record, workdir), True
    return state, record, None


def _rebuilt_metrics(run: _Run, state: TrainState, record: _Record,
                     workdir: str) -> dict[str, Any]:
    """The final metrics of a run trained to its last checkpoint whose final_metrics.json is
    missing: its evaluation line at that step in metrics.jsonl (written before the
    checkpoint), or, without one, the restored state evaluated now."""
    lines = [r for r in read_metrics(workdir) if r.get("step") == record.step]
    if lines:
        logging.warning("the run had trained to step %d and its %s is missing: rebuilt from "
                        "its evaluation at step %d in metrics.jsonl.", record.step,
                        FINAL_METRICS, record.step)
        return {k: v for k, v in lines[-1].items() if k != "step"}
    logging.warning("the run had trained to step %d and its %s is missing, with no "
                    "evaluation at that step in metrics.jsonl: the restored state is "
                    "evaluated now.", record.step, FINAL_METRICS)
    return read_evaluation(*run.evaluation(state), record.pending_losses or [float("nan")],
                           optimal_loss=run.dataset.optimal_test_loss,
                           optimal_val_loss=run.dataset.optimal_val_loss)


def _loop(run: _Run, state: TrainState, record: _Record) -> tuple[TrainState, dict[str, Any]]:
    """The rounds from ``record.step`` to the end (or a stop signal): round k is dispatched,
    then round k - 1's summary read and round k + 1's batches built while k runs; an
    evaluation between checkpoints is enqueued before the next round and written after it
    is dispatched; checkpoints and the end wait for the state."""
    plan = run.plan
    pending = None  # (first step, summary) of the round dispatched last, not yet read
    deferred = None  # (step, evaluation dispatched after it), written after the next dispatch
    batches = run.round_batches(record.step) if record.step < plan.num_steps else None
    with stop_requests() as stop:
        while record.step < plan.num_steps:
            state, summary = run.round_fn(state, batches)  # dispatched; the summary inside
            if pending is not None:
                _absorb(run, record, *pending)  # the previous round: done by now
            if deferred is not None:
                _write_evaluation(run, record, *deferred, time.perf_counter())
                deferred = None
            pending = (record.step, summary)
            record.step += plan.round_steps
            step = record.step
            if step < plan.num_steps:
                batches = run.round_batches(step)  # host work while the device runs
            stopping = _agreed_stop(stop)
            evaluating, saving = plan.evaluates(step), plan.saves(step) or stopping
            if evaluating and not saving:  # enqueued before the next round donates the state
                deferred = (step, run.evaluation(state))
                continue
            if not (evaluating or saving):
                continue
            _absorb(run, record, *pending)
            pending = None
            if evaluating:
                _write_evaluation(run, record, step, run.evaluation(state), time.perf_counter())
            if saving and step != record.saved_step:
                _save(run, record, state)
            if stopping and step < plan.num_steps:
                logging.warning("%s: saved a checkpoint at step %d and stopped; run again "
                                "with the same workdir to resume.",
                                f"signal {stop[0]} received" if stop else
                                "another process received a stop signal", step)
                return state, {**record.metrics, "stopped_at_step": step}
    return state, record.metrics


def _absorb(run: _Run, record: _Record, first_step: int, summary) -> None:
    """Reads a round's summary (blocking until that round is done) into ``record``; raises
    NonFiniteError naming the worker and step of a NaN or Inf."""
    if jax.process_count() > 1:  # every process reads every worker's row (a collective)
        summary = multihost_utils.process_allgather(summary, tiled=True)
    mean_losses, first_bad, finite, agree, per_period = jax.device_get(summary)  # [p] each
    if not agree.all():  # the copies of the center differed at an exchange: say why
        raise NonFiniteError(
            f"the evaluation point turned NaN in the round from step {first_step}: "
            + disagreement_message("center", f" (recorded by workers "
                                   f"{np.flatnonzero(~agree).tolist()})"))
    rounds = run.plan.round_steps
    if (first_bad >= 0).any() or not finite.all():
        bad = np.where(first_bad >= 0, first_bad, rounds)
        bad_worker = int(np.argmin(bad))
        where = (f"a loss of worker {bad_worker} at step {first_step + bad[bad_worker]}"
                 if (first_bad >= 0).any() else
                 f"the evaluation point after step {first_step + rounds}")
        last = run.checkpoints.steps()
        raise NonFiniteError(
            f"non-finite value (NaN or Inf) in {where}; stopping. The last good "
            f"checkpoint is step {last[-1] if last else 'none'} in "
            f"{run.workdir}.")
    record.pending_losses.append(float(np.mean(mean_losses)))
    for j in range(rounds // (run.plan.round_period or rounds)):
        record.history.append({name: value[:, j] for name, value in per_period.items()})


def _write_evaluation(run: _Run, record: _Record, at_step: int, dispatched,
                      done_s: float) -> None:
    """The evaluation line of step ``at_step``, every round up to it absorbed;
    ``dispatched`` (:func:`make_evaluation`) was enqueued on the state after it."""
    metrics = read_evaluation(*dispatched, record.pending_losses,
                              optimal_loss=run.dataset.optimal_test_loss,
                              optimal_val_loss=run.dataset.optimal_val_loss)
    metrics.update(_per_round(record.history, run.layout))
    metrics["steps_per_second"] = (at_step - record.start_step) / (done_s - record.start_s)
    metrics["simulated_time_s"] = run.cluster_clock.time_s(at_step)
    metrics["exchange_bytes_per_step"] = run.cluster_clock.bytes_per_step
    record.writer.write(at_step, metrics)
    record.metrics = metrics
    record.pending_losses, record.history = [], []


def _save(run: _Run, record: _Record, state: TrainState) -> None:
    """A checkpoint of ``state`` at ``record.step`` with what the record has not written."""
    meta = {"step": record.step, "pending_losses": [float(x) for x in record.pending_losses],
            "history": jax.tree.map(lambda a: np.asarray(a).tolist(), record.history),
            "cluster_compute_s": run.cluster_clock.cluster.compute_s}
    run.checkpoints.save(record.step, state, meta)
    record.saved_step = record.step


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
        test = evaluate.dispatch(point, dataset.test_x, dataset.test_y)
        val = (None if dataset.val_x is None
               else evaluate.dispatch(point, dataset.val_x, dataset.val_y))
        return (test, val), spread_fn(state)

    return dispatch


def read_evaluation(splits, spread, losses, optimal_loss: float | None = None,
                    optimal_val_loss: float | None = None) -> dict[str, float]:
    """Test loss/accuracy of the evaluation point (and, when the data hold a validation
    split, its ``val_loss``/``val_accuracy``), plus the worker spread (distances to the
    point and to the workers' mean), of a :func:`make_evaluation` dispatch, and the mean of
    ``losses``; with the data's ``optimal_loss``, also it and the gap to it
    (:func:`~easgd_jax.data.optimum_metrics`), and the validation split's with
    ``optimal_val_loss`` (``val_loss_gap``); blocks until the dispatch is done."""
    test, val = splits
    test_loss, test_acc = Evaluator.read(test)
    to_point, spread = jax.device_get(spread)
    metrics = {
        "train_loss": float(np.mean(losses)),
        "test_loss": test_loss,
        **data.optimum_metrics(optimal_loss, test_loss),
        "test_accuracy": test_acc,
        "worker_center_distance": float(to_point),
        "worker_spread": float(spread),
    }
    if val is not None:
        metrics["val_loss"], metrics["val_accuracy"] = Evaluator.read(val)
        metrics.update(data.optimum_metrics(optimal_val_loss, metrics["val_loss"], "val"))
    return metrics
