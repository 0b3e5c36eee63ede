"""What the synchronous and asynchronous executors share: the workdir, the data and model of a
config, the loss and its gradient, one worker's local step, the evaluator, and the stop
signals."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from collections.abc import Iterator
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from easgd_jax import data, models
from easgd_jax.algorithms.base import Spec
from easgd_jax.parallel.spmd import unrolled_over_workers
from easgd_jax.parallel.worker_loop import GradFn
from easgd_jax.training.config import RESUMABLE_CHANGES, config_differences
from easgd_jax.training.metrics import FINAL_METRICS, finished_run

EVAL_BATCH_SIZE = 1000


class NonFiniteError(FloatingPointError):
    """A loss or the evaluation point became NaN or Inf."""


class WorkdirConfigError(ValueError):
    """The workdir holds a run of another config."""


def init_params(model, example_shape: tuple[int, ...], rng: jax.Array) -> Any:
    """``model``'s initial parameters for examples of ``example_shape``, in one compiled init
    (op by op, every layer's initializer compiles apart); the same bits either way."""
    sample = jnp.zeros((1, *example_shape), jnp.float32)
    params = jax.jit(lambda key: model.init(key, sample, train=False))(rng)["params"]
    return nn.meta.unbox(params)  # a model's logical axis names (the transformer's) dropped


def load_data_and_model(config: ml_collections.ConfigDict) -> tuple[data.Dataset, Any]:
    """The config's data set (embedded or a prepared tfds data_dir) and Flax model."""
    dataset = data.load_dataset(config.data.name, config.data.data_dir,
                                image_size=config.data.image_size, crop=config.data.crop,
                                **config.data.kwargs)
    model = models.get_model(config.model.name, dataset.num_classes, **config.model.kwargs)
    return dataset, model


def make_grad_fn(model, weight_decay: float) -> GradFn:
    """``grad_fn(params, (x, y), key) -> (grad, loss)``: the mini-batch cross-entropy's
    gradient at ``params`` (dropout drawn from ``key``) plus ``weight_decay * params``."""

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


class TrainState(NamedTuple):
    """One worker's carry through a round."""

    params: optax.Params
    opt_state: optax.OptState
    rng: jax.Array


def _run_keys(config: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
    """``(init key, workers' key)`` of a run: the params' initializer and the parent of
    every worker's RNG key, split from ``config.seed``."""
    init_rng, worker_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    return init_rng, worker_rng


def initial_params(config: ml_collections.ConfigDict, model,
                   example_shape: tuple[int, ...]) -> Any:
    """Every worker's starting params: ``model`` initialised from ``config.seed``, in
    ``config.train.param_dtype``. The synchronous executor and
    :func:`~easgd_jax.training.export.load_center` (through ``jax.eval_shape``) both start
    here."""
    params = init_params(model, example_shape, _run_keys(config)[0])
    dtype = np.dtype(config.train.param_dtype)
    return jax.tree.map(lambda a: jnp.asarray(a).astype(dtype), params)


def initial_state(config: ml_collections.ConfigDict, tx: optax.GradientTransformation,
                  params: Any, workers: range | None = None) -> TrainState:
    """The synchronous executor's starting state of ``workers`` (default: all p), stacked
    along a leading worker axis: every worker at the same ``params``, its optimizer state
    from its own ``tx.init`` (the per-worker init), and its own RNG key (split p ways from
    ``config.seed``, so a worker's key does not depend on which process builds it)."""
    workers = range(config.num_workers) if workers is None else workers
    stacked = jax.tree.map(lambda a: jnp.broadcast_to(a, (len(workers), *jnp.shape(a))),
                           params)
    keys = jax.random.split(_run_keys(config)[1], config.num_workers)
    return TrainState(stacked, jax.vmap(tx.init)(stacked), keys[workers.start:workers.stop])


def make_local_step(model, tx: optax.GradientTransformation, weight_decay: float,
                    spec: Spec | None = None, unroll_workers: bool | None = None):
    """One local step of one worker: gradient at ``params`` (+ l2 * params), then ``tx``.

    ``tx.update`` also receives the worker's mini-batch loss as the extra argument ``loss``
    (used by Leader SGD, ignored by transformations that do not take extra arguments), and
    ``communicate``, the phase of the clock when the caller knows it
    (``parallel.make_round`` with a period; :mod:`easgd_jax.algorithms.clock`). The
    step's output is ``(loss, reported state)``: the fields ``spec.reported`` names (e.g.
    LSGD's leader) after the step.

    ``unroll_workers``: with several workers per device (vmapped), compute their gradients
    one worker at a time, unrolled (``parallel.unrolled_over_workers``), so that a CPU runs
    them concurrently; ``tx.update`` stays vmapped. None: on CPU backends only (on an
    accelerator one batched product is the better use of the device). The unrolled step
    cannot itself be differentiated (``jax.grad`` through the step): pass False for that.
    """
    tx = optax.with_extra_args_support(tx)
    grad_fn = make_grad_fn(model, weight_decay)
    if unroll_workers is None:
        unroll_workers = jax.default_backend() == "cpu"
    if unroll_workers:
        grad_fn = unrolled_over_workers(grad_fn)

    def step(state: TrainState, batch, communicate: bool | None = None):
        rng, dropout_rng = jax.random.split(state.rng)
        grads, loss = grad_fn(state.params, batch, dropout_rng)
        phase = {} if communicate is None else {"communicate": communicate}
        updates, opt_state = tx.update(grads, state.opt_state, state.params, loss=loss, **phase)
        params = optax.apply_updates(state.params, updates)
        reported = spec.reported_state(opt_state) if spec is not None else {}
        return TrainState(params, opt_state, rng), (loss, reported)

    return step


class Evaluator:
    """``evaluator(params, x, y) -> (mean loss, accuracy)`` over batches of a split: per
    example, or per token when each example has a label per position (a language model's
    ``y [n, context]``: the mean next-token cross-entropy, nats per token).

    In two halves for a loop that keeps its device busy: :meth:`dispatch` enqueues every
    batch's sums on the device that holds ``params`` and returns them unread;
    :meth:`read` waits for them and sums them on the host in float64.
    """

    def __init__(self, model):
        @jax.jit
        def batch_sums(params, x, y, mask):
            logits = model.apply({"params": params}, x, train=False)
            log_probs = jax.nn.log_softmax(logits)
            nll = -jnp.take_along_axis(log_probs, y[..., None], axis=-1)[..., 0]
            correct = jnp.argmax(logits, -1) == y
            mask = mask.reshape(mask.shape + (1,) * (y.ndim - 1))  # per token of an example
            return jnp.sum(nll * mask), jnp.sum(correct * mask)

        self._batch_sums = batch_sums

    def dispatch(self, params, x: np.ndarray, y: np.ndarray) -> tuple[int, list]:
        """``(labels, per-batch (loss sum, correct) device scalars)``, not waited for."""
        n = len(y)
        parts = []
        batch = min(n, EVAL_BATCH_SIZE)
        for start in range(0, n, batch):
            idx = np.arange(start, start + batch)
            mask = (idx < n).astype(np.float32)
            idx = np.minimum(idx, n - 1)  # pad the last batch; the mask drops the padding
            parts.append(self._batch_sums(params, np.asarray(x[idx]), y[idx], mask))
        return int(np.size(y)), parts

    @staticmethod
    def read(dispatched: tuple[int, list]) -> tuple[float, float]:
        """(mean loss, accuracy) of a :meth:`dispatch`; blocks until its batches are done."""
        n, parts = dispatched
        total_loss, total_correct = 0.0, 0.0
        for loss, correct in parts:
            total_loss += float(loss)
            total_correct += float(correct)
        return total_loss / n, total_correct / n

    def __call__(self, params, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        return self.read(self.dispatch(params, x, y))


def make_evaluator(model) -> Evaluator:
    """Returns ``evaluate(params, x, y) -> (mean loss, accuracy)`` over batches of a split
    (an :class:`Evaluator`)."""
    return Evaluator(model)


# Every SIGTERM/SIGINT that :func:`stop_requests` collected in this process.
signals_received: list[int] = []


@contextlib.contextmanager
def stop_requests() -> Iterator[list[int]]:
    """Collects SIGTERM/SIGINT into a list instead of dying; restores the handlers after.
    Each one is also added to :data:`signals_received` (the process's record: launch.py
    exits 75 for a signal the loop saw only after its last look, in the final evaluation)."""
    received: list[int] = []
    previous = {}

    def collect(signum: int, _frame: Any) -> None:
        received.append(signum)
        signals_received.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, collect)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def prepare_workdir(config: ml_collections.ConfigDict, workdir: str, overwrite: bool,
                    resumable_changes: tuple[str, ...] = RESUMABLE_CHANGES) -> None:
    """Refuses a workdir that holds a run of a different config (fields outside
    ``resumable_changes`` differ), unless asked to overwrite it: the config in its
    ``config.json`` and the one its newest checkpoint recorded; then saves the
    config (not over that of a run finished at more steps than this launch asks for)."""
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path) and not overwrite:
        with open(path, encoding="utf-8") as f:
            try:
                saved = json.load(f)
            except json.JSONDecodeError as e:
                raise WorkdirConfigError(
                    f"{path} does not parse (JSONDecodeError: {e}): the workdir's record of "
                    "its run's config is damaged. Restore it, use another workdir, or start "
                    "afresh (--overwrite, or train_and_evaluate(..., overwrite=True))."
                ) from None
        current = json.loads(config.to_json_best_effort())
        differences = config_differences(saved, current, resumable_changes)
        if differences:
            raise WorkdirConfigError(
                f"workdir {workdir} holds a run with a different config ("
                + "; ".join(differences) + "). Use another workdir, or overwrite it "
                "(--overwrite, or train_and_evaluate(..., overwrite=True)).")
    if not overwrite:
        _check_checkpointed_config(config, workdir)
    if overwrite and jax.process_index() == 0:
        for name in ("checkpoints", "tensorboard"):
            shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
        for name in ("metrics.jsonl", FINAL_METRICS, "config.json"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(workdir, name))
    os.makedirs(workdir, exist_ok=True)
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    if os.path.exists(path) and finished_run(workdir, config.train.num_steps) is not None:
        return  # finished already (at these steps or more): its record stays as it is
    if jax.process_index() == 0 and not _has_text(path, text):  # a re-run changes no file
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".tmp", path)


def _check_checkpointed_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Refuses a workdir whose newest checkpoint recorded another config
    (:mod:`.checkpoint`), config.json or not."""
    from easgd_jax.training.checkpoint import Checkpointer, config_differences_from

    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        return
    checkpoints = Checkpointer(workdir, config.checkpoint.max_to_keep)
    try:
        recorded = checkpoints.latest_recorded_config()
    finally:
        checkpoints.close()
    differences = [] if recorded is None else config_differences_from(recorded[1], config)
    if differences:
        raise WorkdirConfigError(
            f"workdir {workdir} holds a run whose checkpoint at step {recorded[0]} was written "
            "under a different config (" + "; ".join(differences) + "). Use "
            "another workdir, or overwrite it (--overwrite, or train_and_evaluate(..., "
            "overwrite=True)).")


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
