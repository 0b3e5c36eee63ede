"""Config checks that run before any data is loaded or anything is compiled.

Each message names the field, the bad value and what is allowed.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import ml_collections
import numpy as np

from easgd_jax import models
from easgd_jax.algorithms import registry
from easgd_jax.data import DATASET_NAMES
from easgd_jax.models import MODEL_NAMES

REQUIRED = {
    "": ("seed", "num_workers", "num_devices", "data", "model", "algorithm", "train",
         "checkpoint", "distributed"),
    "data": ("name", "data_dir"),
    "model": ("name", "kwargs"),
    "algorithm": ("name",),
    "train": ("batch_size", "num_steps", "steps_per_round", "eval_every", "weight_decay"),
    "checkpoint": ("every", "max_to_keep"),
    "distributed": ("coordinator_address", "num_processes", "process_id"),
}


def _integer(field: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"config.{field} must be an integer >= {minimum}, got {value!r}.")


def _choice(field: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"config.{field} must be one of {', '.join(allowed)}; got {value!r}.")


PARAM_DTYPES = ("float32", "float64")


def param_dtype(config: ml_collections.ConfigDict) -> np.dtype:
    """The training dtype, ``config.train.param_dtype`` (float32 when the field is absent)."""
    return np.dtype(config.train.get("param_dtype", "float32"))


def _validate_param_dtype(config: ml_collections.ConfigDict) -> None:
    name = config.train.get("param_dtype", "float32")
    _choice("train.param_dtype", name, PARAM_DTYPES)
    if name == "float64" and jax.dtypes.canonicalize_dtype(np.float64) != np.float64:
        raise ValueError(
            "config.train.param_dtype 'float64' needs 64-bit floats in jax, which are off: "
            "launch.py turns them on for this field; in Python run "
            "jax.config.update('jax_enable_x64', True) before creating any array, or train "
            "under `with jax.enable_x64(True):`.")


def steps_per_round(config: ml_collections.ConfigDict) -> int:
    """Local steps per compiled round: ``train.steps_per_round``, or the period if 0."""
    if config.train.steps_per_round:
        return int(config.train.steps_per_round)
    return int(config.algorithm.get("period", 10))


def validate_for_executor(config: ml_collections.ConfigDict) -> None:
    """Checks ``config`` for its executor: :func:`validate_config` for "sync", the
    asynchronous executors' checks (``async_train.validate_async_config``) otherwise. Starts
    no jax backend."""
    if config.get("executor", "sync") == "sync":
        validate_config(config)
    else:
        from easgd_jax import async_train  # imports jax; kept out of the sync path

        async_train.validate_async_config(config)
        if param_dtype(config) != np.float32:
            raise ValueError(
                f"config.train.param_dtype {config.train.param_dtype!r} applies to executor "
                f"'sync'; executor {config.executor!r} trains in float32.")


def round_period(config: ml_collections.ConfigDict) -> int | None:
    """The period the compiled rounds are traced in (``parallel.make_round(period=...)``):
    ``config.algorithm.period`` when a round is a whole number of periods, so that every
    round starts at a multiple of it; None otherwise (the steps decide at run time)."""
    period = config.algorithm.get("period")
    if isinstance(period, int) and period >= 1 and steps_per_round(config) % period == 0:
        return period
    return None


def algorithm_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``config.algorithm`` without its name: the constructor's keyword arguments."""
    hparams = config.algorithm.to_dict()
    hparams.pop("name")
    return hparams


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first invalid field of ``config``."""
    for section, fields in REQUIRED.items():
        node = config if not section else config[section]
        for name in fields:
            if name not in node:
                where = f"{section}.{name}" if section else name
                raise ValueError(f"config.{where} is missing.")
    _integer("seed", config.seed, 0)
    _integer("num_workers", config.num_workers, 1)
    _integer("num_devices", config.num_devices, 0)
    num_groups = config.get("num_groups", 1)
    _integer("num_groups", num_groups, 1)
    if config.num_workers % num_groups or (config.num_devices and config.num_devices % num_groups):
        raise ValueError(
            f"config.num_groups ({num_groups}) must divide config.num_workers "
            f"({config.num_workers}) and config.num_devices ({config.num_devices}).")
    if config.num_devices and config.num_workers % config.num_devices:
        raise ValueError(
            f"config.num_workers ({config.num_workers}) must be a multiple of "
            f"config.num_devices ({config.num_devices}).")
    _choice("data.name", config.data.name, DATASET_NAMES)
    _choice("model.name", config.model.name, MODEL_NAMES)
    try:
        models.get_model(config.model.name, 10, **config.model.kwargs)  # builds nothing heavy
    except ValueError as e:
        raise ValueError(f"config.model.kwargs: {e}") from None
    if config.data.data_dir is not None and not isinstance(config.data.data_dir, str):
        raise ValueError(
            f"config.data.data_dir must be a path (string) or None, got {config.data.data_dir!r}.")
    _choice("algorithm.name", config.algorithm.name, tuple(registry.algorithm_names()))
    try:
        # Building the transformation checks every hyperparameter's value; nothing is traced.
        registry.get_algorithm(config.algorithm.name, **algorithm_hparams(config))
    except ValueError as e:
        raise ValueError(f"config.algorithm: {e}") from None
    if registry.is_grouped(config.algorithm.name) and num_groups < 2:
        raise ValueError(
            f"config.algorithm.name {config.algorithm.name!r} runs on groups of workers: set "
            f"config.num_groups >= 2 (got {num_groups}); with one group use its single-group "
            "form.")
    train = config.train
    _integer("train.batch_size", train.batch_size, 1)
    _integer("train.num_steps", train.num_steps, 1)
    _integer("train.eval_every", train.eval_every, 1)
    _integer("train.steps_per_round", train.steps_per_round, 0)
    _validate_param_dtype(config)
    if not isinstance(config.get("tensorboard", True), bool):
        raise ValueError(f"config.tensorboard must be True or False, got {config.tensorboard!r}.")
    if not isinstance(train.weight_decay, numbers.Real) or not train.weight_decay >= 0:
        raise ValueError(
            f"config.train.weight_decay must be a number >= 0, got {train.weight_decay!r}.")
    dist = config.distributed
    _integer("distributed.num_processes", dist.num_processes, 1)
    _integer("distributed.process_id", dist.process_id, 0)
    if dist.process_id >= dist.num_processes:
        raise ValueError(
            f"config.distributed.process_id ({dist.process_id}) must be < "
            f"config.distributed.num_processes ({dist.num_processes}).")
    if config.num_devices % dist.num_processes:
        raise ValueError(
            f"config.num_devices ({config.num_devices}) counts the devices of all "
            f"{dist.num_processes} processes: it must be a multiple of "
            "config.distributed.num_processes.")
    _integer("checkpoint.every", config.checkpoint.every, 0)
    _integer("checkpoint.max_to_keep", config.checkpoint.max_to_keep, 1)
    rounds = steps_per_round(config)
    for field, value in (("train.num_steps", train.num_steps),
                         ("train.eval_every", train.eval_every),
                         ("checkpoint.every", config.checkpoint.every)):
        if value % rounds:
            raise ValueError(
                f"config.{field} ({value}) must be a multiple of the round length "
                f"({rounds} local steps: train.steps_per_round, or the period when it is 0).")
