"""A simulated cluster clock: what a run's steps would cost on p machines joined by a network.

The EASGD paper's claims are about wall-clock time on one GPU per worker (Zhang, Choromanska
& LeCun, NIPS 2015, arXiv 1412.6651, Section 5): a few shared CPU cores cannot show them,
since there the workers share the cores. The cost model here charges every local step and
every exchange of a run by documented parameters:

- ``compute_s``: one worker's local step (gradient and update), the same on every worker
  (the synchronous executor) or drawn around it per worker (the asynchronous simulator);
- ``bandwidth_bytes_per_s`` and ``latency_s`` of every link; a message of b bytes takes
  ``latency + b / bandwidth``;
- the topology:

  * ``"ring"``: a synchronous exchange is a ring all-reduce of b bytes per worker,
    2 (p - 1) messages of b / p in sequence (reduce-scatter, then all-gather):
    ``T_ring(b, p) = 2 (p - 1) (latency + b / (p bandwidth))``, 0 for p = 1. Synchronous
    EASGD/EAMSGD, data-parallel SGD, LSGD, DiLoCo.
  * ``"parameter_server"``: every exchange of a worker is a push of its b bytes to the
    master and a pull of b bytes back, through the master's ONE link, which serialises
    them: ``T_ps(b) = 2 (latency + b / bandwidth)`` per worker. A synchronous exchange waits
    for all p: ``p T_ps(b)``; asynchronously the workers queue for the link
    (:func:`cluster_schedule`). DOWNPOUR and its variants, and every asynchronous executor.

Synchronous time after ``t`` local steps (:func:`sync_time_s`), every worker in lockstep:

    T(t) = t compute_s + n_x(t) T_x(b_x) + n_l(t) T_l(b_l)

with ``n_x(t)`` the exchange steps among the first t (:func:`exchange_steps`: ceil(t / s)
for an exchange that opens each period, floor(t / s) for one that closes it, with the
exchange clock s = period / num_fragments), ``b_x`` the bytes one worker contributes to the
collectives of an exchange step, and ``b_l`` those of a local step (0 for the periodic
algorithms). The bytes come from the program itself: :func:`collective_bytes` reads the
collectives of ONE lowered step of one worker, traced under shard_map over an abstract mesh
of p devices (:func:`lowered_step_bytes`; no device is needed, so a run whose workers share
one device gets the bytes of the one-worker-per-device program). Evaluation and
checkpoints are not charged, nor is computation overlapped with communication.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AbstractMesh, PartitionSpec

from easgd_jax.parallel.schedules import Schedule, clock_speeds

TOPOLOGIES = ("ring", "parameter_server")

# Bytes per element of the MLIR element types.
_ELEMENT_BYTES = {
    "i1": 1, "i8": 1, "ui8": 1, "i16": 2, "ui16": 2, "i32": 4, "ui32": 4, "i64": 8,
    "ui64": 8, "bf16": 2, "f16": 2, "f32": 4, "f64": 8, "complex<f32>": 8,
    "complex<f64>": 16,
}
_COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all",
                "collective_permute", "collective_broadcast")
_OP = re.compile(r'"?stablehlo\.(' + "|".join(_COLLECTIVES) + r')"?[\s(]')
_SIGNATURE = re.compile(r" : \(([^)]*)\) ->")
_TENSOR = re.compile(r"tensor<((?:\d+x)*)([a-z0-9<>]+)>")


@dataclasses.dataclass(frozen=True)
class Cluster:
    """p identical machines and their network (module docstring).

    Attributes:
        compute_s: seconds of one worker's local step.
        bandwidth_bytes_per_s: bytes per second of every link.
        latency_s: seconds every message takes on top of its bytes.
        topology: ``"ring"`` or ``"parameter_server"``.
    """

    compute_s: float
    bandwidth_bytes_per_s: float
    latency_s: float
    topology: str = "ring"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.compute_s) and self.compute_s >= 0):
            raise ValueError(f"compute_s must be finite and >= 0, got {self.compute_s!r}.")
        if not self.bandwidth_bytes_per_s > 0:
            raise ValueError(
                f"bandwidth_bytes_per_s must be > 0, got {self.bandwidth_bytes_per_s!r}.")
        if not (math.isfinite(self.latency_s) and self.latency_s >= 0):
            raise ValueError(f"latency_s must be finite and >= 0, got {self.latency_s!r}.")
        if self.topology not in TOPOLOGIES:
            raise ValueError(f"topology must be one of {', '.join(TOPOLOGIES)}, got "
                             f"{self.topology!r}.")

    def message_s(self, nbytes: float) -> float:
        """One message of ``nbytes``: latency + bytes / bandwidth."""
        return self.latency_s + nbytes / self.bandwidth_bytes_per_s

    def ring_allreduce_s(self, nbytes: float, num_workers: int) -> float:
        """T_ring(b, p) = 2 (p - 1) (latency + b / (p bandwidth)); 0 for p = 1 or b = 0."""
        if num_workers <= 1 or nbytes <= 0:
            return 0.0
        return 2 * (num_workers - 1) * self.message_s(nbytes / num_workers)

    def server_exchange_s(self, nbytes: float) -> float:
        """T_ps(b) = 2 (latency + b / bandwidth): one worker's push and pull; 0 for b = 0."""
        return 2 * self.message_s(nbytes) if nbytes > 0 else 0.0

    def exchange_s(self, nbytes: float, num_workers: int) -> float:
        """One synchronous exchange of ``nbytes`` per worker: T_ring(b, p), or p T_ps(b)
        through the parameter server's one link (0 for p = 1: nothing to exchange)."""
        if self.topology == "ring":
            return self.ring_allreduce_s(nbytes, num_workers)
        return num_workers * self.server_exchange_s(nbytes) if num_workers > 1 else 0.0


def intra_worker_step_s(param_bytes: float, data: int, fsdp: int, bandwidth_bytes_per_s: float,
                        latency_s: float) -> float:
    """Seconds of one local step's collectives INSIDE a worker that spans data x fsdp
    devices, on the fast tier (one link per device, ``bandwidth_bytes_per_s`` and
    ``latency_s``), as ring collectives of b = ``param_bytes``:

        fsdp > 1:  all-gather of the params for the forward pass and again for the backward
                   pass, reduce-scatter of the gradient: 3 (f - 1) (latency + b / (f bw))
        data > 1:  all-reduce of the gradient's shard over the data devices:
                   2 (d - 1) (latency + b / (f d bw))

    0 for a worker on one device. The exchange across workers is separate (the slow tier,
    :func:`sync_time_s`), each device sending its own shard, b / f."""
    seconds = 0.0
    if fsdp > 1:
        seconds += 3 * (fsdp - 1) * (latency_s + param_bytes / fsdp / bandwidth_bytes_per_s)
    if data > 1:
        seconds += 2 * (data - 1) * (latency_s
                                     + param_bytes / fsdp / data / bandwidth_bytes_per_s)
    return seconds


def exchange_steps(steps: int | np.ndarray, period: int | None, exchange_step: str = "first",
                   num_fragments: int = 1) -> int | np.ndarray:
    """How many of the first ``steps`` local steps are exchange steps.

    The exchange clock is s = period / num_fragments (streaming fragments exchange one
    fragment every s steps); with ``exchange_step = "first"`` the steps t = 0, s, 2s, ...
    exchange (ceil(steps / s)), with ``"last"`` the steps t = s - 1, 2s - 1, ...
    (floor(steps / s)). ``period`` None: every step.
    """
    if period is None:
        return steps
    if exchange_step not in ("first", "last"):
        raise ValueError(f"exchange_step must be 'first' or 'last', got {exchange_step!r}.")
    if period % num_fragments:
        raise ValueError(f"num_fragments {num_fragments} does not divide period {period}.")
    s = period // num_fragments
    if exchange_step == "first":
        return -(-np.asarray(steps) // s) if isinstance(steps, np.ndarray) else -(-steps // s)
    return steps // s


def sync_time_s(cluster: Cluster, steps: int | np.ndarray, num_workers: int,
                period: int | None, exchange_bytes: float, local_bytes: float = 0.0,
                exchange_step: str = "first", num_fragments: int = 1) -> float | np.ndarray:
    """Simulated seconds of ``steps`` synchronous local steps (module docstring):
    t compute + n_x(t) T(b_x) + (t - n_x(t)) T(b_l)."""
    n_x = exchange_steps(steps, period, exchange_step, num_fragments)
    return (steps * cluster.compute_s + n_x * cluster.exchange_s(exchange_bytes, num_workers)
            + (steps - n_x) * cluster.exchange_s(local_bytes, num_workers))


def cluster_schedule(cluster: Cluster, num_workers: int, num_ticks: int, period: int,
                     exchange_bytes: float, seed: int, spread: float = 0.0,
                     jitter: float = 0.0, exchange_step: str = "first") -> Schedule:
    """The asynchronous simulator's schedule on the cluster: p workers and a parameter
    server whose one link serialises every push and pull.

    Worker i's local steps take ``compute_s * d_i / mean(d)`` seconds (``d_i`` the speeds of
    :func:`~easgd_jax.parallel.schedules.clock_speeds`: ``spread`` = 0 makes them equal;
    times (1 + jitter e), e ~ U[-1, 1), per step; all start at time 0). Its k-th local step
    is an exchange when k mod period == 0 (``exchange_step = "first"``; k + 1 for
    ``"last"``): after its compute
    the worker waits for the link, holds it for T_ps(b) (push, then pull) and goes on; the
    others' exchanges queue behind it in the order their computes finished. A tick is one
    worker's step; ticks are ordered by the time the step ends (the exchange's end for an
    exchange step) and ``times`` are those ends, in seconds.
    """
    if num_workers < 1 or num_ticks < 0 or period < 1:
        raise ValueError(f"need num_workers >= 1, num_ticks >= 0, period >= 1; got "
                         f"{num_workers}, {num_ticks}, {period}.")
    speeds, _ = clock_speeds(num_workers, seed, spread)
    durations = cluster.compute_s * speeds / np.mean(speeds)
    noise = [np.random.default_rng([seed, 1, w]) for w in range(num_workers)]
    hold = cluster.server_exchange_s(exchange_bytes)
    offset = 1 if exchange_step == "last" else 0

    def compute(w: int) -> float:
        if not jitter:
            return float(durations[w])
        return float(durations[w] * (1.0 + jitter * (2.0 * noise[w].random() - 1.0)))

    local = np.zeros(num_workers, np.int64)
    link_free = 0.0
    # (time, kind, worker): kind 0 = a step ends (a tick), 1 = the compute of an exchange
    # step ends (the worker queues for the link). Every worker starts at time 0.
    events: list[tuple[float, int, int]] = []

    def schedule_step(w: int, at: float) -> None:
        exchange = (local[w] + offset) % period == 0
        heapq.heappush(events, (at + compute(w), 1 if exchange else 0, w))

    for w in range(num_workers):
        schedule_step(w, 0.0)
    workers = np.empty(num_ticks, np.int32)
    times = np.empty(num_ticks, np.float64)
    tick = 0
    while tick < num_ticks:
        at, kind, w = heapq.heappop(events)
        if kind == 1:  # compute done: take the link in arrival order
            begin = max(at, link_free)
            link_free = begin + hold
            heapq.heappush(events, (link_free, 0, w))
            continue
        workers[tick], times[tick] = w, at
        tick += 1
        local[w] += 1
        schedule_step(w, at)
    return Schedule(workers, times, num_workers)


def collective_bytes(text: str) -> dict[str, int]:
    """Bytes one participant contributes to each kind of collective in a lowered program's
    StableHLO ``text`` (``jitted.trace(...).lower(...).as_text()``), summed over the
    instructions: the operands' sizes. Collectives in loops are counted once, and those in
    the branches of a conditional all count (a caller that knows how many branches run
    divides)."""
    totals: dict[str, int] = {}
    for match in _OP.finditer(text):
        signature = _SIGNATURE.search(text, match.end())
        if signature is None:
            raise ValueError(f"no type signature after {match.group(0)!r}.")
        nbytes = 0
        for dims, element in _TENSOR.findall(signature.group(1)):
            if element not in _ELEMENT_BYTES:
                raise ValueError(f"unknown element type {element!r} in a collective.")
            size = math.prod(int(d) for d in dims.split("x") if d)
            nbytes += size * _ELEMENT_BYTES[element]
        totals[match.group(1)] = totals.get(match.group(1), 0) + nbytes
    return totals


def lowered_step_bytes(step: Callable[[Any, Any], Any], carry: Any, batch: Any,
                       mesh_shape: Sequence[int], axis_names: Sequence[str],
                       communicate: bool | None, platform: str = "cpu") -> int:
    """Bytes one worker contributes to the collectives of ONE local ``step(carry, batch)``,
    lowered (not compiled: no device needed) under ``shard_map`` over an abstract mesh
    ``mesh_shape`` x ``axis_names`` with one worker per device, called as
    ``step(carry, batch, communicate=communicate)`` (the phase it passes on to its
    ``tx.update``, :mod:`easgd_jax.algorithms.clock`); ``communicate`` None: called as
    ``step(carry, batch)``, the clock decides at run time, and both branches count.
    ``carry`` and ``batch`` describe ONE worker
    (arrays or ``jax.ShapeDtypeStruct``)."""
    mesh = AbstractMesh(tuple(mesh_shape), tuple(axis_names))
    p = math.prod(mesh_shape)
    spec = PartitionSpec(tuple(axis_names))

    def body(carry, batch):
        one = jax.tree.map(lambda a: a[0], (carry, batch))
        if communicate is None:
            out = step(*one)
        else:
            out = step(*one, communicate=communicate)
        return jax.tree.map(lambda a: a[None], out)

    mapped = jax.shard_map(body, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)
    stacked = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct((p, *np.shape(a)), a.dtype), (carry, batch))
    text = jax.jit(mapped).trace(*stacked).lower(lowering_platforms=(platform,)).as_text()
    return sum(collective_bytes(text).values())
