"""The config schema: every field a run reads, its default, and ONE ``validate`` for every
executor.

``defaults()`` declares every field (``configs/default.py`` starts from it, so that
``lock_config`` rejects a misspelled override); nothing in the training code reads a config
with ``.get(field, default)``: a config from an older file is completed with
:func:`complete` and checked with :func:`validate`, which names the first bad field, its value
and what is allowed, before any data is loaded or anything is compiled.

This module imports no jax at import time (config files import it); ``validate`` looks the
names of algorithms, models and data sets up in the layers below.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import warnings
from typing import Any

import ml_collections
from ml_collections import config_dict

from easgd_jax.algorithms.rates import moving_rate

EXECUTORS = ("sync", "simulated_async", "threads", "ray")
ASYNC_EXECUTORS = EXECUTORS[1:]
ON_WORKER_FAILURE = ("stop", "continue")
PARAM_DTYPES = ("float32", "float64")
# Fields that may change between a run and its resumption: extending a run, and the layout of
# the same workers over devices (the synchronous state is restored re-sharded onto the new one).
RESUMABLE_CHANGES = ("train.num_steps", "num_devices", "worker_devices.data",
                     "worker_devices.fsdp")
# Fields that differ between the processes of one run, or between its launches (a workdir
# resumes whatever they are; "launch" also covers a saved config from before that section).
PER_LAUNCH_FIELDS = ("distributed.process_id", "distributed.coordinator_address",
                     "distributed.heartbeat_timeout_s", "launch",
                     "launch.config_file", "launch.overrides", "launch.git_commit")
# Sections whose fields are free (an algorithm's hyperparameters, a model's kwargs): checked
# against the algorithm's or the model's signature instead of the schema.
FREE_SECTIONS = ("algorithm", "model.kwargs", "data.kwargs")
# The longest default round (train.steps_per_round = 0): its batches are built on the host.
MAX_DEFAULT_ROUND = 50
# The sampling block of an algorithm without a period (local steps the data stream is drawn in).
NO_PERIOD_BLOCK = 10


def defaults() -> ml_collections.ConfigDict:
    """Every field, with its default: EAMSGD, p = 4 workers, tau = 10, MNIST-1D."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.num_workers = 4  # p
    # Devices to spread the workers over (0 = all available). On CPU, launch.py creates this
    # many simulated devices before jax starts. num_workers must be a multiple.
    config.num_devices = 4
    # Groups of workers on a 2-D (groups x workers) layout, for multi-leader LSGD.
    config.num_groups = 1
    # A worker spanning devices: each worker on data x fsdp devices, its batch
    # (train.batch_size, per worker) split over data and its whole state (params, optimizer
    # and algorithm state) sharded over fsdp. Executor sync: the exchange runs across
    # workers only; num_devices must be num_workers x data x fsdp (or 0 on GPUs: that many).
    # Executor simulated_async: the workers take turns anyway, so all of them run in turn on
    # ONE slot of data x fsdp devices (the master's arrays sharded there too); num_devices
    # must be data x fsdp (or 0). Threads and Ray refuse it (a worker there is one thread or
    # actor process on one device).
    config.worker_devices = ml_collections.ConfigDict()
    config.worker_devices.data = 1
    config.worker_devices.fsdp = 1

    config.data = ml_collections.ConfigDict()
    # mnist1d, digits (embedded); mnist, cifar10, imagenet2012 (tfds); language models:
    # synthetic_lm (generated, its optimum known), tiny_shakespeare, lm1b (tfds, bytes)
    config.data.name = "mnist1d"
    config.data.data_dir = config_dict.placeholder(str)  # tfds: a prepared data_dir
    config.data.image_size = 221  # imagenet2012: the squares the crops are taken from
    config.data.crop = 0  # random crops of this size for training, the centre one for testing
    # The LM data sets' arguments (e.g. context, train_tokens): data.load_dataset's kwargs.
    config.data.kwargs = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict()
    config.model.name = "cnn1d"
    config.model.kwargs = ml_collections.ConfigDict()

    config.algorithm = ml_collections.ConfigDict()
    config.algorithm.name = "eamsgd"
    config.algorithm.learning_rate = 0.1  # eta
    config.algorithm.momentum = 0.9  # delta
    # alpha = beta / p with the paper's beta = 0.9: set it anew when changing num_workers.
    config.algorithm.moving_rate = moving_rate(0.9, config.num_workers)
    config.algorithm.period = 10  # tau

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 128  # per worker
    config.train.num_steps = 2000  # local steps per worker
    # Local steps per compiled round (lax.scan); 0: as many whole periods as fit in
    # eval_every, checkpoint.every and num_steps (see steps_per_round).
    config.train.steps_per_round = 0
    config.train.eval_every = 250
    config.train.weight_decay = 1e-4  # l2, added to the gradient where it is taken
    # The params' dtype, and with them the optimizer state's and the batches'. "float64"
    # turns on jax_enable_x64 in launch.py (exact comparisons across layouts); executors sync
    # and simulated_async (threads and Ray train in float32).
    config.train.param_dtype = "float32"

    # How the workers run: "sync" (SPMD rounds) or an asynchronous executor:
    # "simulated_async" (seeded simulated asynchrony), "threads" (a parameter server, one
    # thread per worker), "ray" (the same on Ray actors).
    config.executor = "sync"
    config.asynchrony = ml_collections.ConfigDict()
    # simulated_async: round_robin | clocks | random_delay | cluster (config.cluster's clocks)
    config.asynchrony.schedule = "clocks"
    config.asynchrony.clock_spread = 1.0  # clocks, cluster: slowest step <= (1 + spread) x fastest
    config.asynchrony.clock_jitter = 0.0  # clocks, cluster: per-step relative noise, in [0, 1)
    config.asynchrony.max_staleness = 4  # random_delay: gradients at most D updates old
    config.asynchrony.num_shards = 1  # threads, ray: independently locked master shards
    config.asynchrony.timeout_s = 3600.0  # threads, ray: the whole run's limit
    config.asynchrony.ray_address = ""  # ray: "" starts a local Ray instance
    # threads, ray: a worker that raises. "stop": checkpoint, then fail naming the worker;
    # "continue": log it and go on with the others (EASGD's center needs no given worker).
    config.asynchrony.on_worker_failure = "stop"

    # The simulated cluster clock (parallel/cluster.py): every evaluation line records
    # simulated_time_s, what the run's steps and exchanges would take on p machines, one
    # worker each, joined by links of this bandwidth and latency; simulated_async with
    # asynchrony.schedule "cluster" takes its event times from the same model.
    config.cluster = ml_collections.ConfigDict()
    # One worker's local step, seconds; 0: measured at the start of the run (one worker,
    # this model and batch, on this machine's first device).
    config.cluster.compute_s_per_step = 0.0
    config.cluster.bandwidth_gbit_s = 10.0  # every link, 10^9 bits per second
    config.cluster.latency_us = 50.0  # every message, on top of its bytes
    # The fast tier inside a worker that spans devices (worker_devices): every device's link
    # to the others of its worker (NVLink-class by default) and its per-message latency.
    config.cluster.intra_bandwidth_gbit_s = 400.0
    config.cluster.intra_latency_us = 5.0
    # "auto": the algorithm's (registry Spec.topology: a ring all-reduce, or DOWNPOUR's
    # parameter server); asynchronous executors always use a parameter server.
    config.cluster.topology = "auto"
    # Parameter bytes the exchanges scale to (e.g. the paper's CIFAR net on this run's
    # steps); 0: this model's own. The bytes per exchange come from the lowered program.
    config.cluster.model_bytes = 0

    config.checkpoint = ml_collections.ConfigDict()
    # Steps between checkpoints (0: only at the end). simulated_async runs in chunks of
    # gcd(train.eval_every, checkpoint.every) steps, so that both fall on chunk boundaries.
    config.checkpoint.every = 1000
    config.checkpoint.max_to_keep = 3
    config.tensorboard = True  # event files in workdir/tensorboard besides metrics.jsonl

    # Several processes (hosts): set a coordinator here, or run under SLURM / Open MPI /
    # JAX_COORDINATOR_ADDRESS and JAX finds it. num_devices then counts all processes'
    # devices (on CPU each process simulates num_devices / num_processes).
    config.distributed = ml_collections.ConfigDict()
    config.distributed.coordinator_address = ""  # "host:port" of process 0
    config.distributed.num_processes = 1
    config.distributed.process_id = 0
    # A process that stops answering (kill -9, a lost host) is declared dead after this
    # many seconds; the others then abort instead of waiting in a collective.
    config.distributed.heartbeat_timeout_s = 30

    # Where the run came from, recorded in workdir/config.json by launch.py (a workdir
    # resumes whatever they say: a re-run from another folder or commit goes on).
    config.launch = ml_collections.ConfigDict()
    config.launch.config_file = ""  # the config file (absolute path, ":ARG" if given)
    config.launch.overrides = ""  # the --config.* overrides, as typed (shell-quoted)
    config.launch.git_commit = ""  # HEAD of the easgd-jax checkout ("+dirty": local changes)
    return config


def _fields(node: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    """``{dotted field name: value}`` of the leaves, free sections as one leaf each."""
    out = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict) and name not in FREE_SECTIONS:
            out.update(_fields(value, name + "."))
        else:
            out[name] = value
    return out


def complete(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of ``config`` with every schema field it lacks set to its default (for
    configs written before a field existed); unknown fields are left for :func:`validate`."""
    out = defaults()
    out.algorithm = ml_collections.ConfigDict()
    out.model.kwargs = ml_collections.ConfigDict()
    out.data.kwargs = ml_collections.ConfigDict()
    given = _fields(config)
    unknown = set(given) - set(_fields(out))
    for name, value in given.items():
        if name in unknown:
            continue
        *path, leaf = name.split(".")
        node = out
        for part in path:
            node = node[part]
        with node.ignore_type():
            node[leaf] = value
    return out


def _integer(field: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"config.{field} must be an integer >= {minimum}, got {value!r}.")


def _number(field: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value < high:
        raise ValueError(f"config.{field} must be a number in [{low}, {high}), got {value!r}.")


def _choice(field: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"config.{field} must be one of {', '.join(allowed)}; got {value!r}.")


def algorithm_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The constructor's keyword arguments of ``config.algorithm`` (all its fields but the
    name) on ``config.num_workers`` workers, as the algorithm's registry Spec derives them
    (a stated ``beta`` becomes ``moving_rate = beta / p``: ``Spec.hyperparameters``)."""
    return _spec(config).hyperparameters(_given_hparams(config), config.num_workers)


def _given_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
    hparams = config.algorithm.to_dict()
    hparams.pop("name")
    return hparams


def _spec(config: ml_collections.ConfigDict):
    from easgd_jax.algorithms import registry

    return registry.get_spec(config.algorithm.name)


def sampling_block(config: ml_collections.ConfigDict) -> int:
    """The block of local steps the data stream is drawn in (``data.WorkerSampler``):
    ``train.steps_per_round`` when set, else the period (10 for algorithms without one), so
    that a config's data stream does not depend on how its steps are grouped into rounds."""
    if config.train.steps_per_round:
        return int(config.train.steps_per_round)
    return _spec(config).period(algorithm_hparams(config)) or NO_PERIOD_BLOCK


def steps_per_round(config: ml_collections.ConfigDict) -> int:
    """Local steps per compiled round: ``train.steps_per_round``, or when it is 0 the largest
    multiple of the sampling block (the period) of at most ``MAX_DEFAULT_ROUND`` steps that
    divides ``train.eval_every``, ``checkpoint.every`` (when set) and ``train.num_steps``:
    several periods between two reads of the host, with no conditional inside; one block
    when no such multiple exists."""
    block = sampling_block(config)
    if config.train.steps_per_round:
        return block
    span = math.gcd(config.train.eval_every, config.train.num_steps)
    if config.checkpoint.every:
        span = math.gcd(span, config.checkpoint.every)
    fitting = [k * block for k in range(MAX_DEFAULT_ROUND // block, 0, -1)
               if span % (k * block) == 0]
    return fitting[0] if fitting else block


def round_period(config: ml_collections.ConfigDict) -> int | None:
    """The period the compiled rounds are traced in (``parallel.make_round(period=...)``):
    the algorithm's exchange interval (``Spec.exchange_interval``: tau, or tau / F with
    streaming fragments, one fragment exchanged every tau / F steps, which one decided at
    run time), when a round is a whole number of those intervals, so that every round starts
    at a multiple of it; None otherwise, and for an algorithm without a period (the steps
    decide at run time)."""
    spec, hparams = _spec(config), algorithm_hparams(config)
    if spec.period(hparams) is None:
        return None
    interval = spec.exchange_interval(hparams)
    return interval if steps_per_round(config) % interval == 0 else None


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first invalid field of ``config``, for its executor.

    Starts no jax backend: safe before ``launch.py`` creates the simulated devices.
    """
    _check_fields(config)
    _choice("executor", config.executor, EXECUTORS)
    _check_common(config)
    _check_asynchrony(config)
    _check_finite_hyperparameters(config)
    if config.executor == "sync":
        _check_sync(config)
    else:
        _check_async(config)


def _check_fields(config: ml_collections.ConfigDict) -> None:
    schema, given = _fields(defaults()), _fields(config)
    missing = sorted(set(schema) - set(given))
    if missing:
        raise ValueError(f"config.{missing[0]} is missing (configs start from "
                         "easgd_jax.training.config.defaults(); older ones: complete(config)).")
    unknown = sorted(set(given) - set(schema))
    if unknown:
        raise ValueError(f"config.{unknown[0]} is an unknown field (the schema, with every "
                         "field: easgd_jax.training.config.defaults()).")
    if "name" not in config.algorithm:
        raise ValueError("config.algorithm.name is missing.")


def _check_common(config: ml_collections.ConfigDict) -> None:
    from easgd_jax import models
    from easgd_jax.data import DATASET_NAMES
    from easgd_jax.data import check_kwargs as check_data_kwargs

    _integer("seed", config.seed, 0)
    _integer("num_workers", config.num_workers, 1)
    _choice("data.name", config.data.name, DATASET_NAMES)
    if config.data.data_dir is not None and not isinstance(config.data.data_dir, str):
        raise ValueError(
            f"config.data.data_dir must be a path (string) or None, got {config.data.data_dir!r}.")
    _integer("data.image_size", config.data.image_size, 1)
    _integer("data.crop", config.data.crop, 0)
    try:
        check_data_kwargs(config.data.name, config.data.kwargs.to_dict())
    except ValueError as e:
        raise ValueError(f"config.data.kwargs: {e}") from None
    _choice("model.name", config.model.name, models.MODEL_NAMES)
    _check_data_fits_model(config.data.name, config.model.name)
    try:
        models.get_model(config.model.name, 10, **config.model.kwargs)  # builds nothing heavy
    except ValueError as e:
        raise ValueError(f"config.model.kwargs: {e}") from None
    train = config.train
    for field in ("batch_size", "num_steps", "eval_every"):
        _integer(f"train.{field}", train[field], 1)
    _integer("train.steps_per_round", train.steps_per_round, 0)
    if (isinstance(train.weight_decay, bool) or not isinstance(train.weight_decay, numbers.Real)
            or not train.weight_decay >= 0):
        raise ValueError(
            f"config.train.weight_decay must be a number >= 0, got {train.weight_decay!r}.")
    _choice("train.param_dtype", train.param_dtype, PARAM_DTYPES)
    if not isinstance(config.tensorboard, bool):
        raise ValueError(f"config.tensorboard must be True or False, got {config.tensorboard!r}.")
    _integer("checkpoint.every", config.checkpoint.every, 0)
    _integer("checkpoint.max_to_keep", config.checkpoint.max_to_keep, 1)
    for field in ("config_file", "overrides", "git_commit"):
        if not isinstance(config.launch[field], str):
            raise ValueError(f"config.launch.{field} must be a string, got "
                             f"{config.launch[field]!r}.")
    _check_cluster(config.cluster)
    dist = config.distributed
    if not isinstance(dist.coordinator_address, str):
        raise ValueError("config.distributed.coordinator_address must be a string "
                         f"('host:port' or ''), got {dist.coordinator_address!r}.")
    _integer("distributed.num_processes", dist.num_processes, 1)
    _integer("distributed.process_id", dist.process_id, 0)
    _integer("distributed.heartbeat_timeout_s", dist.heartbeat_timeout_s, 1)
    if dist.process_id >= dist.num_processes:
        raise ValueError(
            f"config.distributed.process_id ({dist.process_id}) must be < "
            f"config.distributed.num_processes ({dist.num_processes}).")


TOPOLOGIES = ("auto", "ring", "parameter_server")


def _check_cluster(cluster: ml_collections.ConfigDict) -> None:
    """The simulated cluster's parameters (``config.cluster``)."""
    inf = float("inf")
    _number("cluster.compute_s_per_step", cluster.compute_s_per_step, 0.0, inf)
    _number("cluster.latency_us", cluster.latency_us, 0.0, inf)
    _number("cluster.intra_latency_us", cluster.intra_latency_us, 0.0, inf)
    for name in ("bandwidth_gbit_s", "intra_bandwidth_gbit_s"):
        _number(f"cluster.{name}", cluster[name], 0.0, inf)
        if cluster[name] <= 0:
            raise ValueError(f"config.cluster.{name} must be > 0, got {cluster[name]!r}.")
    _choice("cluster.topology", cluster.topology, TOPOLOGIES)
    _integer("cluster.model_bytes", cluster.model_bytes, 0)


def _check_data_fits_model(data_name: str, model_name: str) -> None:
    """Refuses a model that cannot read the data set's examples, naming the models that can."""
    from easgd_jax import models
    from easgd_jax.data import INPUT_KINDS

    kind = INPUT_KINDS.get(data_name)
    if kind is None or kind in models.INPUT_KINDS.get(model_name, (kind,)):
        return
    shapes = {"signal": "1-D signals [length]", "image": "images [height, width, channels]",
              "token": "token sequences [length]"}
    fitting = sorted((name for name in models.MODEL_NAMES
                      if kind in models.INPUT_KINDS.get(name, ())),
                     key=lambda name: (-len(models.INPUT_KINDS[name]), name))  # mlp first
    raise ValueError(
        f"config.model.name {model_name!r} takes "
        f"{' or '.join(shapes[k] for k in models.INPUT_KINDS[model_name])}, and "
        f"config.data.name {data_name!r} has {shapes[kind]}: set config.model.name to "
        f"{fitting[0]!r} (--config.model.name={fitting[0]}); models for {kind}s: "
        f"{', '.join(fitting)}.")


def _check_worker_devices(config: ml_collections.ConfigDict) -> bool:
    """Checks ``worker_devices`` (data, fsdp >= 1; num_devices = num_workers x data x fsdp;
    the per-worker batch divisible by data); returns whether a worker spans devices."""
    data, fsdp = config.worker_devices.data, config.worker_devices.fsdp
    _integer("worker_devices.data", data, 1)
    _integer("worker_devices.fsdp", fsdp, 1)
    if data * fsdp == 1:
        return False
    needed = config.num_workers * data * fsdp
    if config.num_devices not in (0, needed):
        raise ValueError(
            f"config.num_devices ({config.num_devices}) must be num_workers x "
            f"worker_devices.data x worker_devices.fsdp = {config.num_workers} x {data} x "
            f"{fsdp} = {needed} (or 0: that many): each worker spans its own devices.")
    if config.train.batch_size % data:
        raise ValueError(
            f"config.train.batch_size ({config.train.batch_size}, per worker) must be "
            f"divisible by config.worker_devices.data ({data}): each worker's batch is split "
            "over its data devices.")
    return True


def _check_x64(config: ml_collections.ConfigDict) -> None:
    """``train.param_dtype`` 'float64' needs jax's 64-bit mode on."""
    if config.train.param_dtype == "float64":
        import jax
        import numpy as np

        if jax.dtypes.canonicalize_dtype(np.float64) != np.float64:
            raise ValueError(
                "config.train.param_dtype 'float64' needs 64-bit floats in jax, which are "
                "off: launch.py turns them on for this field; in Python run "
                "jax.config.update('jax_enable_x64', True) before creating any array, or "
                "train under `with jax.enable_x64(True):`.")


def _check_sync(config: ml_collections.ConfigDict) -> None:
    from easgd_jax.algorithms import registry

    _integer("num_devices", config.num_devices, 0)
    num_groups = config.num_groups
    _integer("num_groups", num_groups, 1)
    if config.num_workers % num_groups or (config.num_devices and config.num_devices % num_groups):
        raise ValueError(
            f"config.num_groups ({num_groups}) must divide config.num_workers "
            f"({config.num_workers}) and config.num_devices ({config.num_devices}).")
    spanning = _check_worker_devices(config)
    if config.num_devices and config.num_workers % config.num_devices and not spanning:
        raise ValueError(
            f"config.num_workers ({config.num_workers}) must be a multiple of "
            f"config.num_devices ({config.num_devices}).")
    if config.num_devices % config.distributed.num_processes:
        raise ValueError(
            f"config.num_devices ({config.num_devices}) counts the devices of all "
            f"{config.distributed.num_processes} processes: it must be a multiple of "
            "config.distributed.num_processes.")
    _choice("algorithm.name", config.algorithm.name, tuple(registry.algorithm_names()))
    try:
        # Building the transformation checks every hyperparameter's value; nothing is traced.
        hparams = algorithm_hparams(config)
        registry.get_algorithm(config.algorithm.name, **hparams)
    except ValueError as e:
        raise ValueError(f"config.algorithm: {e}") from None
    registry.get_spec(config.algorithm.name).check_config(hparams, config.num_workers)
    if registry.is_grouped(config.algorithm.name) and num_groups < 2:
        raise ValueError(
            f"config.algorithm.name {config.algorithm.name!r} runs on groups of workers: set "
            f"config.num_groups >= 2 (got {num_groups}); with one group use its single-group "
            "form.")
    _check_x64(config)
    rounds = steps_per_round(config)
    for field, value in (("train.num_steps", config.train.num_steps),
                         ("train.eval_every", config.train.eval_every),
                         ("checkpoint.every", config.checkpoint.every)):
        if value % rounds:
            raise ValueError(
                f"config.{field} ({value}) must be a multiple of the round length "
                f"({rounds} local steps: train.steps_per_round, or a multiple of the period "
                "when it is 0).")


def _check_async(config: ml_collections.ConfigDict) -> None:
    from easgd_jax.algorithms import registry

    train = config.train
    if train.num_steps % train.eval_every:
        raise ValueError(f"config.train.num_steps ({train.num_steps}) must be a multiple of "
                         f"config.train.eval_every ({train.eval_every}).")
    _check_async_worker_devices(config)
    name = config.algorithm.name
    if name not in registry.async_algorithm_names():
        raise ValueError(
            f"config.executor {config.executor!r} runs asynchronous rules, and "
            f"config.algorithm.name {name!r} has none; use one of "
            f"{', '.join(registry.async_algorithm_names())}, or executor 'sync'.")
    try:
        rule = registry.get_async_rule(name, config.num_workers, **algorithm_hparams(config))
    except ValueError as e:
        raise ValueError(f"config.algorithm: {e}") from None
    if config.train.param_dtype != "float32" and config.executor != "simulated_async":
        raise ValueError(
            f"config.train.param_dtype {config.train.param_dtype!r} applies to executors "
            f"'sync' and 'simulated_async'; executor {config.executor!r} trains in float32.")
    _check_x64(config)
    asyn = config.asynchrony
    if config.executor == "simulated_async":
        if asyn.schedule == "random_delay" and not rule.stateless_worker:
            raise ValueError(
                f"config.asynchrony.schedule 'random_delay' takes each gradient at a stale "
                f"master iterate: it runs gradient-based rules (apam, downpour with period 1), "
                f"not {name!r} with these hyperparameters.")
        if asyn.num_shards != 1:
            raise ValueError("config.asynchrony.num_shards applies to executor 'threads' (the "
                             f"simulated master is applied atomically); got {asyn.num_shards}.")
    elif asyn.schedule == "random_delay":
        raise ValueError("config.asynchrony.schedule 'random_delay' is simulated; executor "
                         f"{config.executor!r} has real delays (the schedule field is ignored "
                         "there).")
    if asyn.num_shards > 1 and not rule.shardable:
        raise ValueError(f"config.asynchrony.num_shards must be 1 for {name!r} "
                         f"(its exchange is not elementwise); got {asyn.num_shards}.")


def _check_async_worker_devices(config: ml_collections.ConfigDict) -> None:
    """``worker_devices`` of an asynchronous executor. ``simulated_async`` runs its workers
    in turn on ONE slot of data x fsdp devices (they take turns anyway): num_devices must be
    data x fsdp (or 0: that many), in one process. ``threads`` and ``ray`` refuse a worker
    that spans devices: there a worker is one thread or one actor process with its own
    compiled step on one device, exchanging with the host's parameter server."""
    data, fsdp = config.worker_devices.data, config.worker_devices.fsdp
    _integer("worker_devices.data", data, 1)
    _integer("worker_devices.fsdp", fsdp, 1)
    if data * fsdp == 1:
        return
    if config.executor != "simulated_async":
        raise ValueError(
            f"config.worker_devices ({data} data x {fsdp} fsdp): executor "
            f"{config.executor!r} runs each worker as one thread or actor process on one "
            "device; workers that span devices run on executors 'sync' and 'simulated_async'.")
    if config.num_devices not in (0, data * fsdp):
        raise ValueError(
            f"config.num_devices ({config.num_devices}) must be worker_devices.data x "
            f"worker_devices.fsdp = {data} x {fsdp} = {data * fsdp} (or 0: that many): "
            "executor 'simulated_async' runs its workers in turn on one slot of a worker's "
            "devices.")
    if config.distributed.num_processes != 1:
        raise ValueError(
            f"config.distributed.num_processes ({config.distributed.num_processes}) must be "
            "1 for executor 'simulated_async' on workers that span devices: the simulation "
            "runs in one process.")
    if config.train.batch_size % data:
        raise ValueError(
            f"config.train.batch_size ({config.train.batch_size}, per worker) must be "
            f"divisible by config.worker_devices.data ({data}): each worker's batch is split "
            "over its data devices.")


def _check_asynchrony(config: ml_collections.ConfigDict) -> None:
    """Every ``asynchrony.*`` value, whatever the executor (a typo in a field the executor
    ignores today would be used by the next run that switches executor); a warning naming
    the fields set away from their defaults when the executor ignores them all (sync)."""
    from easgd_jax.parallel.schedules import SCHEDULES

    asyn = config.asynchrony
    _choice("asynchrony.schedule", asyn.schedule, tuple(SCHEDULES))
    _integer("asynchrony.num_shards", asyn.num_shards, 1)
    _integer("asynchrony.max_staleness", asyn.max_staleness, 0)
    _number("asynchrony.clock_spread", asyn.clock_spread, 0.0, float("inf"))
    _number("asynchrony.clock_jitter", asyn.clock_jitter, 0.0, 1.0)
    _number("asynchrony.timeout_s", asyn.timeout_s, 1e-3, float("inf"))
    if not isinstance(asyn.ray_address, str):
        raise ValueError(f"config.asynchrony.ray_address must be a string, got "
                         f"{asyn.ray_address!r}.")
    _choice("asynchrony.on_worker_failure", asyn.on_worker_failure, ON_WORKER_FAILURE)
    if config.executor == "sync":
        default = defaults().asynchrony
        changed = sorted(f"asynchrony.{k}" for k in asyn.keys() if asyn[k] != default[k])
        if changed:
            warnings.warn(f"config.{', config.'.join(changed)} set, and executor 'sync' ignores "
                          "every asynchrony field (they apply to simulated_async, threads and "
                          "ray).", UserWarning, stacklevel=3)


def _check_finite_hyperparameters(config: ml_collections.ConfigDict) -> None:
    """A hyperparameter that is a non-finite number (``learning_rate=inf`` or ``nan``) would
    train to NaN and end in a NonFiniteError: refused here, in one line."""
    for name, value in _given_hparams(config).items():
        if (isinstance(value, numbers.Real) and not isinstance(value, bool)
                and not math.isfinite(value)):
            raise ValueError(f"config.algorithm.{name} must be a finite number, got {value!r}.")


def config_differences(saved: dict, current: dict, allowed: tuple[str, ...],
                       prefix: str = "") -> list[str]:
    """``"field: a in the workdir, b now"`` for every field that differs, except ``allowed``
    and the per-launch fields. A field the saved config lacks (added to the schema since
    that run was written) counts as equal when this run leaves it at its schema default:
    a run resumes after an update that adds fields."""
    keys = sorted(set(saved) | set(current))
    out = []
    for key in keys:
        name = f"{prefix}{key}"
        a, b = saved.get(key, "<missing>"), current.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, allowed, name + ".")
        elif (a != b and name not in allowed and name not in PER_LAUNCH_FIELDS
              and not (a == "<missing>" and (b == {} or b == _schema_default(name)))):
            out.append(f"{name}: {a!r} in the workdir, {b!r} now")
    return out


@functools.cache
def _schema_defaults() -> dict:
    return json.loads(defaults().to_json_best_effort())


def _schema_default(name: str) -> Any:
    """The schema's default of the dotted field ``name`` (a sentinel when it has none)."""
    node: Any = _schema_defaults()
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return "<no default>"
        node = node[part]
    return node
