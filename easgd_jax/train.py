"""``train_and_evaluate(config, workdir)``: p workers, one algorithm, one executor.

Data flows one way: config -> (data, model, algorithm, executor) -> metrics. All workers
start from the same point; each samples its own mini-batches from the whole training set;
evaluation reads the algorithm's evaluation point (the CENTER x~ for EASGD/EAMSGD).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from easgd_jax import algorithms, data, models, parallel, validation
from easgd_jax.metrics import MetricsWriter

EVAL_BATCH_SIZE = 1000


class TrainState(NamedTuple):
    """One worker's carry through a round."""

    params: optax.Params
    opt_state: optax.OptState
    rng: jax.Array


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


@jax.jit
def _worker_spread(params, center):
    """Mean distance of the workers to the center, and mean distance to their own mean."""
    def norms(diffs):
        sq = sum(jnp.sum(d.reshape(d.shape[0], -1) ** 2, axis=1) for d in jax.tree.leaves(diffs))
        return jnp.mean(jnp.sqrt(sq))

    to_center = jax.tree.map(lambda x, c: x - c[None], params, center)
    to_mean = jax.tree.map(lambda x: x - jnp.mean(x, axis=0, keepdims=True), params)
    return norms(to_center), norms(to_mean)


def _save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    path = os.path.join(workdir, "config.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    os.replace(path + ".tmp", path)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains ``config.num_workers`` workers and evaluates the center; returns final metrics."""
    validation.validate_config(config)
    layout = parallel.make_worker_layout(
        config.num_workers, config.num_devices or None, config.get("num_groups", 1))
    grouped = algorithms.registry.is_grouped(config.algorithm.name)
    tx = algorithms.get_algorithm(
        config.algorithm.name,
        axis_name=layout.member_axis_name if grouped else layout.axis_name,
        group_axis_name=layout.group_axis_name, **validation.algorithm_hparams(config))
    dataset = data.load_dataset(config.data.name, config.data.data_dir,
                                image_size=config.data.get("image_size", 221))
    model = models.get_model(config.model.name, dataset.num_classes, **config.model.kwargs)

    os.makedirs(workdir, exist_ok=True)
    _save_config(config, workdir)
    logging.info("%d workers on %d %s device(s) (%d per device); algorithm %s; data %s %s",
                 layout.num_workers, layout.num_devices, jax.devices()[0].platform,
                 layout.workers_per_device, config.algorithm.name, dataset.name,
                 dataset.example_shape)

    p = layout.num_workers
    rng = jax.random.PRNGKey(config.seed)
    init_rng, worker_rng = jax.random.split(rng)
    sample = jnp.zeros((1, *dataset.example_shape), jnp.float32)
    params = model.init(init_rng, sample, train=False)["params"]  # same start for all
    stacked = jax.tree.map(lambda a: jnp.broadcast_to(a, (p, *a.shape)), params)
    state = TrainState(stacked, jax.vmap(tx.init)(stacked), jax.random.split(worker_rng, p))
    state = jax.device_put(state, layout.worker_sharding())

    round_fn = parallel.make_round(
        make_local_step(model, tx, config.train.weight_decay), layout)
    evaluate = make_evaluator(model)
    sampler = data.WorkerSampler(dataset.train_x, dataset.train_y, p,
                                 config.train.batch_size, config.seed)
    writer = MetricsWriter(workdir, config.train.num_steps)
    rounds = validation.steps_per_round(config)

    step, losses, history, metrics = 0, [], [], {}
    start = time.perf_counter()
    while step < config.train.num_steps:
        batches = jax.device_put(sampler.round(step, rounds), layout.worker_sharding())
        state, round_losses = round_fn(state, batches)
        losses.append(round_losses)
        history.append(algorithms.reported_state(state.opt_state))
        step += rounds
        if step % config.train.eval_every == 0 or step == config.train.num_steps:
            metrics = _evaluate(state, evaluate, dataset, losses)
            metrics.update(_per_round(history, layout))
            metrics["steps_per_second"] = step / (time.perf_counter() - start)
            writer.write(step, metrics)
            losses, history = [], []
    metrics["wall_time_s"] = time.perf_counter() - start
    with open(os.path.join(workdir, "final_metrics.json"), "w", encoding="utf-8") as f:
        json.dump({"step": step, **metrics}, f, indent=2)
    return metrics


def _per_round(history: list[dict], layout: parallel.WorkerLayout) -> dict[str, list]:
    """State fields reported per round (e.g. LSGD's leader): one entry per round since the
    last evaluation; per group when the value differs between groups."""
    out: dict[str, list] = {}
    group_size = layout.num_workers // layout.num_groups
    for record in jax.device_get(history):
        for name, value in record.items():
            per_group = np.asarray(value)[::group_size].tolist()
            out.setdefault(f"{name}_per_round", []).append(
                per_group[0] if len(set(per_group)) == 1 else per_group)
    return out


def _evaluate(state: TrainState, evaluate, dataset: data.Dataset, losses) -> dict[str, float]:
    """Test loss/accuracy of the evaluation point (read from worker 0), plus worker spread."""
    stacked_eval = algorithms.evaluation_params(state.opt_state, state.params)
    eval_params = jax.tree.map(lambda a: a[0], stacked_eval)
    test_loss, test_acc = evaluate(eval_params, dataset.test_x, dataset.test_y)
    to_center, spread = _worker_spread(state.params, eval_params)
    return {
        "train_loss": float(np.mean([np.asarray(x) for x in losses])),
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "worker_center_distance": float(to_center),
        "worker_spread": float(spread),
    }
