"""Shared pieces of the benchmarks: the workload, the methods, interleaved timing, tables.

Importing this module starts nothing; the scripts call
``easgd_jax.parallel.use_simulated_cpu_devices`` first, before jax's backend starts.

A *method* is a spec string:

- ``floor``: the inner optimizer alone (``easgd_jax.nesterov``), no communication at all;
- ``eamsgd:TAU`` / ``easgd:TAU``: elastic averaging with period TAU (moving rate 0.9 / p);
- ``dp``: synchronous data-parallel SGD, one all-reduce (mean) of the gradients every step,
  then the same Nesterov step (``data_parallel_sgd`` from ``algorithms/baselines.py``);
- ``lsgd:TAU``: Leader SGD over Nesterov (``lsgd_nesterov`` from ``algorithms/leader.py``,
  torch's Nesterov convention), pull 0.1;
- ``eamsgd-nocomm:TAU``: a diagnostic, NOT an algorithm: EAMSGD traced with its all-reduce
  replaced by the identity (each worker's center then follows only that worker). The same
  program as ``eamsgd:TAU`` (elastic arithmetic, state) minus the collective, so that
  eamsgd / eamsgd-nocomm is the cost of the collective and eamsgd-nocomm / floor the cost
  of the rest.

The periodic methods run as ``training/sync.py`` runs them: when the round is a whole number of
periods, in rounds of whole periods (``parallel.make_round(period=TAU)``: one communication
step, then TAU - 1 local steps, no conditional). ``NAME-cond:TAU`` (e.g. ``eamsgd-cond:10``)
runs the same algorithm with the per-step ``lax.cond`` on the clock instead (the executor
before rounds knew their period; still what runs when a round is not whole periods).

Every worker of every method runs the same model on the same mini-batches (one fixed
device-resident round of batches, reused: the benchmarks time the step, not the input
pipeline).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import easgd_jax
from benchmarks import hlo
from easgd_jax import data, models, parallel
from easgd_jax.algorithms import baselines, exchange, leader
from easgd_jax.training.sync import TrainState, make_local_step

LEARNING_RATE = 0.01
MOMENTUM = 0.9
PULL = 0.1


# ---------------------------------------------------------------------------------------------
# Machine and load


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or platform.processor())."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages."""
    return os.getloadavg()


def wait_for_quiet(max_load: float, timeout_s: float, poll_s: float = 60.0) -> str:
    """Waits (up to ``timeout_s``) until the 1-minute load is at most ``max_load``.

    Returns a line describing the load when measurement starts (and whether it waited).
    """
    start = time.monotonic()
    waited = False
    while load_average()[0] > max_load and time.monotonic() - start < timeout_s:
        waited = True
        print(f"load {load_average()[0]:.2f} > {max_load}: waiting {poll_s:.0f} s", flush=True)
        time.sleep(poll_s)
    one, five, fifteen = load_average()
    note = f" after waiting {time.monotonic() - start:.0f} s" if waited else ""
    over = " (still above the threshold)" if one > max_load else ""
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} at start{note}{over}"


def machine_line() -> str:
    """CPU model, cores, jax version, backend, devices and the date: one Markdown line."""
    devices = jax.devices()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{cpu_model()}, {os.cpu_count()} cores; jax {jax.__version__}, "
            f"{devices[0].platform} backend, {len(devices)} devices "
            f"(simulated: XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, "
            f"PJRT_NPROC={os.environ.get('PJRT_NPROC', '')}); {now}")


# ---------------------------------------------------------------------------------------------
# Workload


@dataclasses.dataclass(frozen=True)
class Workload:
    """A model, its initial parameters and the data it trains on."""

    name: str
    model: Any
    params: Any
    dataset: data.Dataset

    @property
    def num_params(self) -> int:
        return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(self.params))

    @property
    def param_bytes(self) -> int:
        return sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in jax.tree.leaves(self.params))


def make_workload(model_name: str, hidden: Sequence[int] = (256, 256), seed: int = 0) -> Workload:
    """``cnn1d`` or ``mlp`` (hidden widths ``hidden``) on MNIST-1D; ``cifar_cnn`` (the EASGD
    paper's 7-layer CIFAR-10 net) on random inputs of the paper's 28x28x3 crops: CIFAR-10
    itself cannot be downloaded here, and the step's cost does not depend on the pixels."""
    if model_name == "cifar_cnn":
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(2048, 28, 28, 3)).astype(np.float32)
        y = rng.integers(0, 10, size=2048).astype(np.int32)
        dataset = data.Dataset("random 28x28x3", x, y, x[:256], y[:256], 10)
    else:
        dataset = data.load_dataset("mnist1d")
    kwargs = {"hidden": tuple(hidden)} if model_name == "mlp" else {}
    model = models.get_model(model_name, dataset.num_classes, **kwargs)
    sample = jnp.zeros((1, *dataset.example_shape), jnp.float32)
    params = jax.device_get(model.init(jax.random.PRNGKey(seed), sample, train=False)["params"])
    label = model_name if model_name != "mlp" else f"mlp{'x'.join(map(str, hidden))}"
    return Workload(label, model, params, dataset)


def without_collective(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """``tx`` traced with the elastic exchange's all-reduce (``tree_psum_checking``, which
    also checks the centers agree) replaced by the identity (a diagnostic)."""

    def update(updates, state, params=None):
        original = exchange.tree_psum_checking  # the exchange of elastic averaging
        exchange.tree_psum_checking = lambda tree, replicated, *args, **kwargs: (
            tree, replicated, jnp.ones([], bool))  # (sum, copy, whether the copies agree)
        try:
            return tx.update(updates, state, params)
        finally:
            exchange.tree_psum_checking = original

    return optax.GradientTransformation(tx.init, update)


def make_tx(method: str, layout: parallel.WorkerLayout) -> optax.GradientTransformation:
    """The optimizer of a method spec (module docstring) over ``layout``'s worker axis."""
    name, _, arg = method.partition(":")
    name = name.removesuffix("-cond")
    p, axis = layout.num_workers, layout.axis_name
    if name == "floor":
        return easgd_jax.nesterov(LEARNING_RATE, MOMENTUM)
    if name == "eamsgd":
        return easgd_jax.eamsgd(LEARNING_RATE, MOMENTUM, 0.9 / p, int(arg), axis_name=axis)
    if name == "eamsgd-nocomm":
        return without_collective(make_tx(f"eamsgd:{arg}", layout))
    if name == "easgd":
        return easgd_jax.easgd(LEARNING_RATE, 0.9 / p, int(arg), axis_name=axis)
    if name == "dp":
        return baselines.data_parallel_sgd(LEARNING_RATE, MOMENTUM, axis_name=axis)
    if name == "lsgd":
        return leader.lsgd_nesterov(LEARNING_RATE, MOMENTUM, PULL, int(arg), axis_name=axis)
    raise ValueError(f"unknown method {method!r}: floor, eamsgd:TAU, easgd:TAU, dp, lsgd:TAU, "
                     "eamsgd-nocomm:TAU.")


def method_period(method: str) -> int:
    """The communication period of a method spec (1 for dp, 0 for the floor)."""
    name, _, arg = method.partition(":")
    if name in ("floor", "dp"):
        return 0 if name == "floor" else 1
    return int(arg)


def round_period(method: str, steps: int) -> int | None:
    """The ``period`` of the method's ``parallel.make_round`` (as
    ``training.config.round_period`` chooses it for a config): its period when ``steps`` is
    whole periods, else None; None for the floor, dp and the ``-cond`` specs."""
    name = method.partition(":")[0]
    if name in ("floor", "dp") or name.endswith("-cond"):
        return None
    period = method_period(method)
    return period if steps % period == 0 else None


class Runner:
    """One method on one layout: a compiled round and its (donated, re-fed) state."""

    def __init__(self, method: str, workload: Workload, layout: parallel.WorkerLayout,
                 steps: int, batch_size: int, seed: int = 0, *,
                 tx: optax.GradientTransformation | None = None,
                 round_fn: Callable[..., Any] | None = None):
        """``tx`` / ``round_fn`` replace the method's optimizer / the executor's round
        (``parallel.make_round`` over ``make_local_step``) for prototypes."""
        self.method, self.layout, self.steps, self.batch_size = method, layout, steps, batch_size
        p = layout.num_workers
        tx = make_tx(method, layout) if tx is None else tx
        stacked = jax.tree.map(lambda a: np.broadcast_to(a, (p, *a.shape)), workload.params)
        state = TrainState(stacked, jax.vmap(tx.init)(stacked),
                           jax.random.split(jax.random.PRNGKey(seed + 1), p))
        sharding = layout.worker_sharding()
        self.state = jax.device_put(state, sharding)
        sampler = data.WorkerSampler(workload.dataset.train_x, workload.dataset.train_y, p,
                                     batch_size, seed)
        self.batches = jax.device_put(sampler.round(0, steps), sharding)
        self.period = None if round_fn else round_period(method, steps)
        self.round = round_fn or parallel.make_round(
            make_local_step(workload.model, tx, 0.0), layout, period=self.period)

    def hlo_text(self) -> str:
        """The compiled program of one round."""
        return self.round.lower(self.state, self.batches).compile().as_text()

    def ops_per_step(self) -> float:
        """Top-level HLO instructions run per local step (``hlo.ops_per_iteration``), the
        branches of ``lax.cond`` weighted by how often they run (branch 1, the exchange,
        every ``period`` steps); for a round of whole periods, the loop over periods (the
        communication step) plus ``period - 1`` times the loop body of the local steps."""
        text = self.hlo_text()
        if self.period is not None and self.period > 1:
            periods = self.steps // self.period
            if periods == 1 or periods == self.period - 1:  # inlined, or which loop is which?
                return float("nan")
            outer = sum(hlo.ops_per_iteration(text, periods).values())
            if self.period == 2:  # XLA inlines the loop of one local step into the outer one
                return outer / self.period
            inner = hlo.ops_per_iteration(text, self.period - 1).get("body", 0)
            return (outer + inner * (self.period - 1)) / self.period
        counts = hlo.ops_per_iteration(text, self.steps)
        period = method_period(self.method)
        rate = 1.0 / period if period else 1.0
        return (counts.get("body", 0) + counts.get("branch1", 0) * rate
                + counts.get("branch0", 0) * (1.0 - rate))

    def __call__(self) -> float:
        """Runs one round; returns its wall time in seconds (``last_cpu``: the CPU time of
        this process over the round, all its threads)."""
        start, cpu = time.perf_counter(), time.process_time()
        self.state, (losses, _) = self.round(self.state, self.batches)
        jax.block_until_ready((self.state, losses))
        elapsed = time.perf_counter() - start
        self.last_cpu = time.process_time() - cpu
        self.losses = losses
        return elapsed

    def final_loss(self) -> float:
        """Mean loss of the last round (to check that nothing diverged while timing)."""
        return float(jnp.mean(self.losses))


def allreduce_seconds(layout: parallel.WorkerLayout, size: int, repeats: int = 200,
                      trials: int = 7) -> float:
    """Median time of one all-reduce (psum) of a ``size``-float32 vector over the workers.

    ``repeats`` dependent psums run inside one compiled ``lax.scan`` (dispatch amortized);
    the median over ``trials`` of total / repeats is returned. With several workers per
    device the psum over the vmapped axis is a local reduction plus (d > 1) a cross-device
    all-reduce, as in the algorithms.
    """
    axis, n = layout.axis_name, layout.num_workers

    def chain(v):
        def body(c, _):
            out = lax.psum(c, axis) * (1.0 / n)
            if layout.workers_per_device == 1:  # shard_map checks that the carry stays varying
                out = lax.pcast(out, axis, to="varying")
            return out, None
        return lax.scan(body, v, None, length=repeats)[0]

    fn = parallel.per_worker(chain, layout)
    vector = jax.device_put(np.ones((n, size), np.float32), layout.worker_sharding())
    jax.block_until_ready(fn(vector))
    times = []
    for _ in range(trials):
        start = time.perf_counter()
        jax.block_until_ready(fn(vector))
        times.append((time.perf_counter() - start) / repeats)
    return float(np.median(times))


# ---------------------------------------------------------------------------------------------
# Timing and statistics


@dataclasses.dataclass(frozen=True)
class Timings:
    """Per-repetition seconds of each method: wall clock and process CPU time."""

    wall: dict[str, np.ndarray]
    cpu: dict[str, np.ndarray]


def interleaved(runners: dict[str, Runner], repetitions: int, warmup: int = 2,
                seed: int = 0) -> Timings:
    """Times every runner ``repetitions`` times, interleaved: each repetition runs every
    method once, in an order shuffled per repetition (so drift and the position in the
    sequence hit all methods alike). ``warmup`` untimed interleaved passes come first
    (compilation, caches).

    Besides wall time the process CPU time of each round is kept: other processes on the
    machine inflate wall time but hardly this process's CPU time, while waiting at a
    collective shows up in wall time only (and in CPU time where the wait spins)."""
    names = list(runners)
    rng = np.random.default_rng(seed)
    for _ in range(warmup):
        for name in names:
            runners[name]()
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repetitions):
        for i in rng.permutation(len(names)):
            wall[names[i]].append(runners[names[i]]())
            cpu[names[i]].append(runners[names[i]].last_cpu)
    return Timings({n: np.asarray(t) for n, t in wall.items()},
                   {n: np.asarray(t) for n, t in cpu.items()})


@dataclasses.dataclass(frozen=True)
class Summary:
    """Median, quartiles and extremes of a sample."""

    median: float
    q25: float
    q75: float
    low: float
    high: float

    @classmethod
    def of(cls, values: np.ndarray) -> Summary:
        q25, median, q75 = np.percentile(values, [25, 50, 75])
        return cls(float(median), float(q25), float(q75), float(np.min(values)),
                   float(np.max(values)))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def compile_all(runners: dict[str, Runner]) -> None:
    """Compiles (and runs once) every round, so timing never includes compilation."""
    for runner in runners.values():
        runner()
