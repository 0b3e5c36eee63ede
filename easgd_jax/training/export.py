"""The trained model out of a workdir: :func:`load_center`, for notebooks and evaluation jobs.

A checkpoint of the synchronous executor holds every worker's state, sharded over the
devices of the run (4 simulated CPU devices, 8 GPUs, several hosts). Restoring it with the
run's own shardings needs that topology ("Topology mismatch" on a laptop); here the target
is rebuilt from the workdir's ``config.json`` (model, algorithm, number of workers, dtype)
with ``jax.eval_shape`` as the executor builds it, on ONE device of the calling process, so
any process with any number of devices reads any run. What comes back is the algorithm's
evaluation point (its registry ``Spec``: the center x~ of EASGD/EAMSGD/DOWNPOUR, the average
z of ASGD/ADOWNPOUR, the leader's params for LSGD, worker 0's otherwise), one copy without
the worker axis: the exact parameters whose test accuracy the run reported, ready for
``models.get_model(config.model.name, num_classes, **config.model.kwargs).apply``.

    params = easgd_jax.load_center("/tmp/easgd_run")          # the latest checkpoint
    config = easgd_jax.training.export.load_config("/tmp/easgd_run")
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import optax
from absl import logging

from easgd_jax.algorithms import registry
from easgd_jax.algorithms.base import NamedAxes
from easgd_jax.training import config as config_lib
from easgd_jax.training.checkpoint import Checkpointer
from easgd_jax.training.common import initial_params, initial_state, load_data_and_model
from easgd_jax.training.sync import TrainState, evaluation_point


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a run saved in ``workdir/config.json``; FileNotFoundError naming
    the file when there is none."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} does not exist: {workdir!r} is not the workdir of a launch.py / "
            "train_and_evaluate run (it writes config.json first).")
    with open(path, encoding="utf-8") as f:
        return ml_collections.ConfigDict(json.load(f))


def abstract_train_state(config: ml_collections.ConfigDict,
                         device: jax.Device | None = None) -> TrainState:
    """The shapes, dtypes and a one-device sharding of the synchronous executor's stacked
    state for ``config`` (every worker's params, optimizer state and RNG key), built by the
    executor's own :func:`~easgd_jax.training.common.initial_state` (``jax.eval_shape``:
    nothing is allocated) on a one-device layout."""
    spec = registry.get_spec(config.algorithm.name)
    # Only initialised (no collective runs): the axis names do not reach the state.
    axes = NamedAxes("workers", "members", "groups" if spec.grouped else None)
    tx = spec.build(config_lib.algorithm_hparams(config), axes)
    dataset, model = load_data_and_model(config)
    state = jax.eval_shape(lambda: initial_state(
        config, tx, initial_params(config, model, dataset.example_shape)))
    sharding = jax.sharding.SingleDeviceSharding(device or jax.local_devices()[0])
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                        state)


def load_state(workdir: str, step: int | None = None) -> tuple[int, TrainState]:
    """``(step, state)``: the stacked state of every worker in the checkpoint at ``step``
    (None: the newest that reads back), on one device of this process. Reads only: a
    checkpoint that does not restore is skipped (with a warning), never moved. A run
    trained in float64 comes back in float64 whether or not this process turned on JAX's
    64-bit mode (it is turned on while the state is restored)."""
    config = load_config(workdir)
    with _precision_of(config):
        return _load_state(config, workdir, step)


def _precision_of(config: ml_collections.ConfigDict):
    """JAX's 64-bit mode on while a run trained in float64 is read (as it is, otherwise)."""
    return jax.enable_x64(config.train.param_dtype == "float64" or jax.config.jax_enable_x64)


def _load_state(config: ml_collections.ConfigDict, workdir: str, step: int | None
                ) -> tuple[int, TrainState]:
    if config.executor != "sync":
        raise ValueError(
            f"{workdir} holds a run of executor {config.executor!r}; only the synchronous "
            "executor writes checkpoints (asynchronous runs report their center's metrics "
            "in final_metrics.json).")
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise FileNotFoundError(f"{workdir} has no checkpoints/ directory: the run saved none.")
    target = abstract_train_state(config)
    checkpoints = Checkpointer(workdir, config.checkpoint.max_to_keep)
    try:
        steps = checkpoints.steps()
        if step is not None:
            if step not in steps:
                raise ValueError(f"{workdir} has no checkpoint at step {step}; it has steps "
                                 f"{steps or 'none'}.")
            return step, checkpoints.restore(step, target)[0]
        errors = []
        for candidate in reversed(steps):
            try:
                return candidate, checkpoints.restore(candidate, target)[0]
            except Exception as e:  # a corrupted or partial checkpoint: try the previous one
                logging.warning("checkpoint at step %d of %s does not restore (%s: %s); "
                                "trying the previous one", candidate, workdir,
                                type(e).__name__, str(e)[:300])
                errors.append(f"step {candidate}: {type(e).__name__}: {str(e)[:200]}")
        raise FileNotFoundError(f"{workdir} has no checkpoint that restores"
                                + (f" ({'; '.join(errors)})." if errors else "."))
    finally:
        checkpoints.close()


def load_center(workdir: str, step: int | None = None) -> optax.Params:
    """The evaluation point of the run in ``workdir`` as ONE params pytree (numpy arrays,
    no worker axis): the center x~ for EASGD/EAMSGD/DOWNPOUR, the average z for
    ASGD/MVASGD/ADOWNPOUR/MVADOWNPOUR, the (global) leader's params for LSGD, worker 0's
    for the rest -- what the run evaluated and reported.

    Args:
        workdir: a workdir of the synchronous executor (``launch.py``), on any number of
            devices or processes.
        step: the checkpoint's step; None: the newest that reads back (the end of a finished
            run).

    Works in any process with any number of devices: the state is restored onto one local
    device. Raises FileNotFoundError (no config.json, no checkpoint) or ValueError (an
    asynchronous run, a step that was not saved).
    """
    config = load_config(workdir)
    _, state = load_state(workdir, step)
    with _precision_of(config):
        point = evaluation_point(registry.get_spec(config.algorithm.name), state)
        return jax.device_get(point)
