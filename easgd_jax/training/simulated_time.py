"""A run's simulated cluster clock (:mod:`easgd_jax.parallel.cluster`) from its config.

``config.cluster`` gives the link (bandwidth, latency), the topology and one worker's
compute time per local step, or 0 to measure it here: the run's model, batch and dtype, one
worker's gradient and SGD update, 20 steps in one compiled scan on the first device, the
median of 5 calls after a warm-up. The bytes of an exchange are read from the run's own
algorithm lowered for p workers on p devices
(:func:`easgd_jax.parallel.cluster.lowered_step_bytes`), scaled to
``config.cluster.model_bytes`` when set (the bytes a larger model would move with the same
algorithm: the ratio of lowered bytes to parameter bytes is kept). Both are cached per
process, keyed by what they depend on.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from easgd_jax import parallel
from easgd_jax.algorithms.base import NamedAxes, Spec
from easgd_jax.parallel import cluster as cluster_lib
from easgd_jax.training import config as config_lib
from easgd_jax.training.common import TrainState, make_grad_fn, make_local_step

_CACHE: dict[tuple, float] = {}


@dataclasses.dataclass(frozen=True)
class SyncClock:
    """Simulated seconds of a synchronous run's first t steps (``time_s``), and the bytes one
    worker sends per step on average (``bytes_per_step``)."""

    cluster: cluster_lib.Cluster
    num_workers: int
    period: int | None
    exchange_step: str
    num_fragments: int
    exchange_bytes: float  # one device, one exchange step (mean over the fragments)
    local_bytes: float  # one device, one step between exchanges (0 for periodic ones)
    # A worker spanning devices: its step's compute split over them, plus the collectives
    # inside it on the fast tier (cluster.intra_worker_step_s), every step.
    devices_per_worker: int = 1
    intra_s_per_step: float = 0.0

    def time_s(self, steps: int) -> float:
        step_s = self.cluster.compute_s / self.devices_per_worker + self.intra_s_per_step
        return float(cluster_lib.sync_time_s(
            dataclasses.replace(self.cluster, compute_s=step_s), steps, self.num_workers,
            self.period, self.exchange_bytes, self.local_bytes, self.exchange_step,
            self.num_fragments))

    @property
    def bytes_per_step(self) -> float:
        if self.num_workers == 1:
            return 0.0
        if self.period is None:
            return self.exchange_bytes
        s = self.period // self.num_fragments
        return (self.exchange_bytes + (s - 1) * self.local_bytes) / s

    def describe(self) -> dict[str, Any]:
        """The parameters, for the run's final metrics."""
        return {"compute_s_per_step": self.cluster.compute_s,
                "bandwidth_bytes_per_s": self.cluster.bandwidth_bytes_per_s,
                "latency_s": self.cluster.latency_s, "topology": self.cluster.topology,
                "exchange_bytes": self.exchange_bytes, "local_bytes": self.local_bytes,
                **({"devices_per_worker": self.devices_per_worker,
                    "intra_s_per_step": self.intra_s_per_step}
                   if self.devices_per_worker > 1 else {})}


def make_cluster(config: ml_collections.ConfigDict, compute_s: float,
                 topology: str) -> cluster_lib.Cluster:
    """The :class:`~easgd_jax.parallel.cluster.Cluster` of ``config.cluster``."""
    c = config.cluster
    return cluster_lib.Cluster(
        compute_s=compute_s, bandwidth_bytes_per_s=c.bandwidth_gbit_s * 1e9 / 8,
        latency_s=c.latency_us * 1e-6,
        topology=topology if c.topology == "auto" else c.topology)


def _key(config: ml_collections.ConfigDict, *fields: str) -> str:
    return json.dumps({f: config[f].to_dict() if hasattr(config[f], "to_dict") else config[f]
                       for f in fields}, sort_keys=True, default=str)


def compute_seconds(config: ml_collections.ConfigDict, model, params, example_shape) -> float:
    """``config.cluster.compute_s_per_step``, or when 0 one worker's local step measured
    here (module docstring)."""
    if config.cluster.compute_s_per_step:
        return float(config.cluster.compute_s_per_step)
    # What the measured step depends on, not the run's length or schedule: runs that differ
    # only in those (tests, sweeps, a resumed run) measure once per process.
    key = ("compute", _key(config, "model", "data"), config.train.batch_size,
           config.train.weight_decay, config.train.param_dtype)
    if key not in _CACHE:
        _CACHE[key] = _measure_step(model, params, example_shape, config.train.batch_size,
                                    config.train.weight_decay)
    return _CACHE[key]


def _batch_shapes(model, params, example_shape: tuple[int, ...], batch_size: int
                  ) -> tuple[jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]:
    """The shapes of one worker's batch ``(x, labels)``: inputs in the params' dtype, one
    int32 label per example or per position (a language model's: the logits' leading axes)."""
    dtype = jax.tree.leaves(params)[0].dtype
    x = jax.ShapeDtypeStruct((batch_size, *example_shape), dtype)
    logits = jax.eval_shape(lambda p, x: model.apply({"params": p}, x, train=False), params, x)
    return x, jax.ShapeDtypeStruct(logits.shape[:-1], jnp.int32)


def _measure_step(model, params, example_shape, batch_size: int, weight_decay: float,
                  repeats: int = 5, steps: int = 20) -> float:
    """Seconds of one local step (gradient and SGD update) of one worker: ``steps`` steps in
    one compiled ``lax.scan``, as the executors run them (no dispatch per step), the median
    of ``repeats`` calls after a warm-up, divided by ``steps``."""
    grad_fn = make_grad_fn(model, weight_decay)
    tx = optax.sgd(1e-3)
    dtype = jax.tree.leaves(params)[0].dtype

    @jax.jit
    def run(params, opt_state, batch, key):
        def step(carry, _):
            params, opt_state = carry
            grads, _ = grad_fn(params, batch, key)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        return jax.lax.scan(step, (params, opt_state), None, length=steps)[0]

    rng = np.random.default_rng(0)
    x_shape, y_shape = _batch_shapes(model, params, example_shape, batch_size)
    batch = (jnp.asarray(rng.standard_normal(x_shape.shape), dtype),
             jnp.zeros(y_shape.shape, jnp.int32))
    key = jax.random.PRNGKey(0)
    params = jax.tree.map(jnp.asarray, params)
    opt_state = tx.init(params)
    jax.block_until_ready(run(params, opt_state, batch, key))
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        jax.block_until_ready(run(params, opt_state, batch, key))
        times.append(time.perf_counter() - begin)
    return float(np.median(times)) / steps


def exchange_bytes(config: ml_collections.ConfigDict, spec: Spec, model, params,
                   example_shape, tx: optax.GradientTransformation | None = None,
                   layout: parallel.WorkerLayout | None = None) -> tuple[float, float]:
    """(bytes of an exchange step, bytes of a local step) one worker contributes, read from
    the algorithm's one-worker step lowered for ``num_workers`` devices; scaled to
    ``config.cluster.model_bytes`` when set. An algorithm without a synchronous form (APAM)
    moves its parameters: their bytes.

    ``tx`` and ``layout``: the synchronous run's own transformation and the layout it was
    built on (its axis names name the lowered mesh's axes); without them (an asynchronous
    run's messages) the synchronous form is built here, one worker per axis entry."""
    param_bytes = sum(int(np.asarray(a).nbytes) for a in jax.tree.leaves(params))
    scale = config.cluster.model_bytes / param_bytes if config.cluster.model_bytes else 1.0
    if spec.sync is None:
        return param_bytes * scale, 0.0
    key = ("bytes", _key(config, "algorithm", "model", "data", "num_workers", "num_groups"),
           str(jax.tree.map(lambda a: (np.shape(a), str(np.asarray(a).dtype)), params)))
    if key not in _CACHE:
        _CACHE[key] = _lowered_bytes(config, spec, model, params, example_shape, tx, layout)
    b_x, b_l = _CACHE[key]
    fragments = spec.num_fragments(config_lib.algorithm_hparams(config))
    # A fragmented exchange step holds F alternative branches, one of which runs.
    return b_x / fragments * scale, b_l * scale


def _lowering_mesh(spec: Spec, config: ml_collections.ConfigDict,
                   layout: parallel.WorkerLayout | None
                   ) -> tuple[tuple[int, ...], tuple[str, ...], parallel.WorkerLayout | Any]:
    """``(shape, axis names, axes)`` of the abstract mesh a step is lowered on: the run's
    layout's worker axes (devices, then vmapped workers), or one named axis per worker
    (groups x members for a grouped algorithm) when there is no run."""
    if layout is not None:
        names = layout.device_axes + (() if layout.workers_per_device == 1
                                      else (parallel.LOCAL_AXIS,))
        shape = tuple(layout.mesh.shape[a] for a in layout.device_axes)
        shape += () if layout.workers_per_device == 1 else (layout.workers_per_device,)
        return shape, names, layout
    p, groups = config.num_workers, config.num_groups
    if spec.grouped:
        return ((groups, p // groups), ("cluster_groups", "cluster_members"),
                NamedAxes("cluster_members", "cluster_members", "cluster_groups"))
    return (p,), ("cluster_workers",), NamedAxes("cluster_workers", "cluster_workers", None)


def _lowered_bytes(config, spec: Spec, model, params, example_shape,
                   tx: optax.GradientTransformation | None,
                   layout: parallel.WorkerLayout | None) -> tuple[float, float]:
    shape, names, axes = _lowering_mesh(spec, config, layout)
    hparams = config_lib.algorithm_hparams(config)
    if tx is None:
        tx = spec.build(hparams, axes)
    step = make_local_step(model, tx, config.train.weight_decay, spec)
    carry = jax.eval_shape(lambda: TrainState(params, tx.init(params), jax.random.PRNGKey(0)))
    batch = _batch_shapes(model, params, example_shape, config.train.batch_size)
    periodic = spec.period(hparams) is not None
    b_x = cluster_lib.lowered_step_bytes(step, carry, batch, shape, names,
                                         True if periodic else None)
    b_l = cluster_lib.lowered_step_bytes(step, carry, batch, shape, names, False) if periodic \
        else b_x
    return float(b_x), float(b_l)


def sync_clock(config: ml_collections.ConfigDict, spec: Spec, model, params,
               example_shape, compute_s: float | None = None,
               tx: optax.GradientTransformation | None = None,
               layout: parallel.WorkerLayout | None = None) -> SyncClock:
    """The synchronous run's clock (module docstring); ``compute_s``: a step time measured
    before (a resumed run keeps the one its checkpoint saved), else :func:`compute_seconds`;
    ``tx`` / ``layout``: the run's transformation and layout (:func:`exchange_bytes`).

    Workers that span data x fsdp devices (``layout.spans_devices``): the two tiers. Across
    workers (``cluster.bandwidth_gbit_s``, ``latency_us``) each device all-reduces its own
    shard, the exchange's bytes / fsdp; inside a worker (``cluster.intra_bandwidth_gbit_s``,
    ``intra_latency_us``) every step adds its FSDP gathers and data all-reduce
    (:func:`~easgd_jax.parallel.cluster.intra_worker_step_s`), and the worker's compute is
    split over its devices (one device's step time / (data x fsdp), the ideal split)."""
    compute = (compute_s if compute_s is not None
               else compute_seconds(config, model, params, example_shape))
    b_x, b_l = exchange_bytes(config, spec, model, params, example_shape, tx, layout)
    hparams = config_lib.algorithm_hparams(config)
    devices, intra_s = 1, 0.0
    if layout is not None and layout.spans_devices:
        devices = layout.devices_per_worker
        b_x, b_l = b_x / layout.fsdp, b_l / layout.fsdp
        param_bytes = sum(int(np.asarray(a).nbytes) for a in jax.tree.leaves(params))
        scale = config.cluster.model_bytes / param_bytes if config.cluster.model_bytes else 1.0
        intra_s = cluster_lib.intra_worker_step_s(
            param_bytes * scale, layout.data, layout.fsdp,
            config.cluster.intra_bandwidth_gbit_s * 1e9 / 8,
            config.cluster.intra_latency_us * 1e-6)
    return SyncClock(make_cluster(config, compute, spec.topology), config.num_workers,
                     spec.period(hparams), spec.exchange_step, spec.num_fragments(hparams),
                     b_x, b_l, devices, intra_s)


def async_exchange_bytes(config: ml_collections.ConfigDict, spec: Spec, model, params,
                         example_shape) -> float:
    """Bytes of one asynchronous push (and of its pull): those of the synchronous form's
    exchange (the same message), or the parameters' for an asynchronous-only rule."""
    return exchange_bytes(config, spec, model, params, example_shape)[0]

