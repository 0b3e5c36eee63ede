"""Seeded simulated asynchrony: who talks to the master when, inside compiled JAX code.

An asynchronous run is a sequence of ticks; at each tick ONE worker takes one local step (and
exchanges with the master when its rule says so), so the master applies the exchanges one
worker at a time, in arrival order. The schedule (the active worker at every tick) is
computed on the host with numpy from a seed, then a compiled ``lax.scan`` over the ticks
applies it: the active worker's state is read from the stacked worker states with a
dynamic index and written back with ``.at[i].set``. A given seed gives the same bits.

Schedules:

- :func:`round_robin`, the scheme of the EASGD paper's stability analysis (Zhang,
  Choromanska & LeCun, NIPS 2015, arXiv 1412.6651, Section 4): at global time t only worker
  i = t mod p is active.
- :func:`worker_clocks`: per-worker clocks with different speeds and phases. Worker i's
  step duration is d_i = 1 + spread * u_i, u_i ~ U[0, 1) drawn once from the seed, its phase
  phi_i ~ U[0, d_i); its k-th step ends at phi_i + d_i (k + 1) (times (1 + jitter * e),
  e ~ U[-1, 1) drawn per step, when ``jitter`` > 0). Events are processed in time order (ties:
  lowest worker first), so fast workers take more steps and workers reach tau at different
  times.
- :func:`random_delays`, bounded random staleness for gradient-based methods, the delay
  simulator of APAM (Xu et al., arXiv 2002.09095): a ring buffer keeps the last D + 1 master
  iterates and each gradient is taken at one of them, s_t ~ U{0, ..., min(D, t)} updates old,
  then applied to the newest: staleness at most D. (The authors' ``max_delay`` is D + 1.)

The executor knows nothing of the algorithm: it runs any
:class:`~easgd_jax.algorithms.base.AsyncRule` with a ``grad_fn(params, batch, key)
-> (grad, loss)``. Staleness of an exchange = master updates between the worker's last read
of the master (its previous exchange) and this exchange.

Workers that span devices (``config.worker_devices``: data x fsdp devices per worker): the
workers take turns anyway, so the simulation runs on ONE slot of data x fsdp devices, a
:class:`~easgd_jax.parallel.mesh.WorkerLayout` of one worker spanning them, all p workers in
turn on it. Every array of the carry is laid out by that layout's public sharding API
(:func:`state_shardings`): each worker's params and rule state and the master's arrays over
``fsdp`` (:meth:`WorkerLayout.state_shardings` / :meth:`~WorkerLayout.inner_specs`, with the
model's plan: the synchronous executor's rule), counters, clocks and the key whole on every
device; each tick's batch is split over ``data``
(:meth:`WorkerLayout.batch_sharding`), so its gradient, the mean of the per-example
gradients, is the mean over the data devices (XLA all-reduces the partial sums): the numbers
are those of the one-device simulation, to the order of the sums.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec

from easgd_jax.algorithms.base import AsyncRule, AsyncWorkerState
from easgd_jax.parallel.mesh import WorkerLayout, make_worker_layout

# "cluster": per-worker clocks on a simulated cluster whose parameter server's link
# serialises the exchanges, in seconds (built by parallel.cluster.cluster_schedule).
SCHEDULES = ("round_robin", "clocks", "random_delay", "cluster")
GradFn = Callable[[Any, Any, jax.Array], tuple[Any, jax.Array]]


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Which worker acts at each tick.

    Attributes:
        workers: int32 [T], the active worker of each tick.
        times: float64 [T], the event time of each tick (round robin: the tick index).
        num_workers: p.
    """

    workers: np.ndarray
    times: np.ndarray
    num_workers: int

    def __len__(self) -> int:
        return len(self.workers)

    def local_steps(self, start: np.ndarray | None = None) -> np.ndarray:
        """int [T]: the active worker's local step at each tick (its t_i before the step),
        counting from ``start`` (per worker; default zeros)."""
        steps = np.zeros(len(self.workers), np.int64)
        counts = np.zeros(self.num_workers, np.int64) if start is None else start.copy()
        for w in range(self.num_workers):
            mask = self.workers == w
            steps[mask] = counts[w] + np.arange(mask.sum())
        return steps

    def counts(self) -> np.ndarray:
        """int [p]: the number of ticks of each worker."""
        return np.bincount(self.workers, minlength=self.num_workers)

    def chunks(self, size: int) -> list[Schedule]:
        """Consecutive pieces of ``size`` ticks (the last may be shorter)."""
        return [Schedule(self.workers[i:i + size], self.times[i:i + size], self.num_workers)
                for i in range(0, len(self), size)]


def _check_counts(num_workers: int, num_ticks: int) -> None:
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}.")
    if num_ticks < 0:
        raise ValueError(f"num_ticks must be >= 0, got {num_ticks}.")


def round_robin(num_workers: int, num_ticks: int) -> Schedule:
    """At tick t worker t mod p is active (paper's i - 1 = t mod p)."""
    _check_counts(num_workers, num_ticks)
    ticks = np.arange(num_ticks)
    return Schedule((ticks % num_workers).astype(np.int32), ticks.astype(np.float64),
                    num_workers)


def clock_speeds(num_workers: int, seed: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """The step durations d_i = 1 + spread * u_i and phases phi_i ~ U[0, d_i) of the workers."""
    if not spread >= 0:
        raise ValueError(f"spread must be >= 0, got {spread!r}.")
    rng = np.random.default_rng([seed, 0x5EED])
    durations = 1.0 + spread * rng.random(num_workers)
    phases = durations * rng.random(num_workers)
    return durations, phases


def worker_clocks(
    num_workers: int, num_ticks: int, seed: int, spread: float = 1.0, jitter: float = 0.0
) -> Schedule:
    """Events of p workers with their own clocks (module docstring), in time order.

    Args:
        num_workers: p.
        num_ticks: T, the number of events (local steps of all workers together).
        seed: the schedule's seed.
        spread: the slowest step is at most 1 + spread times the fastest.
        jitter: in [0, 1): per-step relative noise of the durations (0: none).
    """
    _check_counts(num_workers, num_ticks)
    if not 0 <= jitter < 1:
        raise ValueError(f"jitter must be in [0, 1), got {jitter!r}.")
    durations, phases = clock_speeds(num_workers, seed, spread)
    noise = [np.random.default_rng([seed, 1, w]) for w in range(num_workers)]

    def duration(w: int) -> float:
        if not jitter:
            return float(durations[w])
        return float(durations[w] * (1.0 + jitter * (2.0 * noise[w].random() - 1.0)))

    heap = [(float(phases[w]) + duration(w), w) for w in range(num_workers)]
    heapq.heapify(heap)
    workers = np.empty(num_ticks, np.int32)
    times = np.empty(num_ticks, np.float64)
    for t in range(num_ticks):
        time, w = heapq.heappop(heap)
        workers[t], times[t] = w, time
        heapq.heappush(heap, (time + duration(w), w))
    return Schedule(workers, times, num_workers)


def make_schedule(
    kind: str, num_workers: int, num_ticks: int, seed: int, spread: float = 1.0,
    jitter: float = 0.0,
) -> Schedule:
    """``round_robin`` or ``clocks`` by name (``random_delay`` uses :func:`random_delays`)."""
    if kind == "round_robin":
        return round_robin(num_workers, num_ticks)
    if kind == "clocks":
        return worker_clocks(num_workers, num_ticks, seed, spread, jitter)
    if kind == "cluster":
        raise ValueError("schedule 'cluster' needs the cluster's parameters: build it with "
                         "easgd_jax.parallel.cluster.cluster_schedule.")
    raise ValueError(f"unknown schedule {kind!r}; known: round_robin, clocks.")


def random_delays(num_ticks: int, max_staleness: int, seed: int, start: int = 0) -> np.ndarray:
    """int32 [T]: s_t ~ U{0, ..., min(D, start + t)}, the staleness of tick t's gradient."""
    if max_staleness < 0:
        raise ValueError(f"max_staleness must be >= 0, got {max_staleness}.")
    rng = np.random.default_rng([seed, 0xDE1A, start])
    bound = np.minimum(max_staleness, start + np.arange(num_ticks))
    return rng.integers(0, bound + 1).astype(np.int32)


# --------------------------------------------------------------------------- executor


class SimState(NamedTuple):
    """The carry of a simulated asynchronous run.

    Attributes:
        workers: the stacked worker states (leading axis p).
        master: the master state.
        master_clock: the number of exchanges the master applied (int32).
        read_clock: int32 [p], the master clock right after each worker's last exchange.
        total: T, the number of local steps all workers took so far (int32).
        key: the base PRNG key; step t of worker i uses ``fold_in(fold_in(key, i), t)``
            (as the thread executor).
    """

    workers: AsyncWorkerState
    master: Any
    master_clock: jax.Array
    read_clock: jax.Array
    total: jax.Array
    key: jax.Array


class TickInfo(NamedTuple):
    """What happened at each tick (arrays with a leading tick axis)."""

    worker: jax.Array
    communicated: jax.Array
    staleness: jax.Array  # -1 where the worker did not exchange
    loss: jax.Array


def init_sim_state(rule: AsyncRule, params: Any, num_workers: int, key: jax.Array) -> SimState:
    """Every worker and the master start from ``params``."""
    worker = rule.init_worker(params)
    stacked = jax.tree.map(lambda a: jnp.broadcast_to(a, (num_workers, *a.shape)), worker)
    zero = jnp.zeros([], jnp.int32)
    return SimState(stacked, rule.init_master(params), zero,
                    jnp.zeros([num_workers], jnp.int32), zero, key)


def simulation_layout(data: int, fsdp: int) -> WorkerLayout | None:
    """The one slot of ``data`` x ``fsdp`` devices (the first that many) the simulation runs
    its workers on in turn, as a :class:`WorkerLayout` of one worker spanning them; None
    when a worker is one device (the simulation then runs where jax puts it)."""
    if data * fsdp == 1:
        return None
    return make_worker_layout(1, data * fsdp, data=data, fsdp=fsdp)


def _inner(tree: Any, layout: WorkerLayout) -> Any:
    """The shardings of one worker's tree (or the master's) over the slot: each leaf as
    :meth:`WorkerLayout.inner_specs` says (a leaf that mirrors a parameter split as that
    parameter, by the model's plan when the layout has one; counters, keys whole)."""
    return jax.tree.map(lambda spec: NamedSharding(layout.mesh, spec),
                        layout.inner_specs(tree),
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def state_shardings(state: SimState | DelayState, layout: WorkerLayout) -> Any:
    """The shardings of a simulation's carry (``state``: arrays or shapes) on ``layout``'s
    slot (:func:`simulation_layout`, with the model's plan: ``layout.with_params``): the
    stacked workers (params, rule state) and the random-delay ring by the layout's
    :meth:`WorkerLayout.state_shardings` (its worker axis has size 1: every row on every
    device of the slot, split over fsdp as one worker's), the master's arrays as one
    worker's, the clocks and the key whole on every device."""
    whole = layout.replicated_sharding()
    if isinstance(state, SimState):
        return SimState(layout.state_shardings(state.workers), _inner(state.master, layout),
                        whole, whole, whole, whole)
    return DelayState(_inner(state.master, layout), layout.state_shardings(state.ring),
                      whole, whole, whole)


def batch_shardings(batches: Any, layout: WorkerLayout) -> Any:
    """The shardings of a chunk's batches (leading axes: ticks, examples): each tick's
    examples split over the slot's ``data`` devices (the layout's
    :meth:`WorkerLayout.batch_sharding` for ``[workers, steps, batch, ...]``, less its
    worker axis)."""
    spec = PartitionSpec(*tuple(layout.batch_sharding().spec)[1:])
    return jax.tree.map(lambda _: NamedSharding(layout.mesh, spec), batches)


def _constrain(tree: Any, shardings: Any) -> Any:
    return jax.tree.map(lax.with_sharding_constraint, tree, shardings)


def _tick_batch(batch: Any, layout: WorkerLayout | None) -> Any:
    """One tick's batch (inside the scan) held split over the data devices."""
    if layout is None:
        return batch
    spec = PartitionSpec(*tuple(layout.batch_sharding().spec)[2:])
    return jax.tree.map(lambda a: lax.with_sharding_constraint(
        a, NamedSharding(layout.mesh, spec)), batch)


def _one_worker(tree: Any, layout: WorkerLayout | None) -> Any:
    """One worker's arrays (inside the scan) held to their FSDP layout over the slot."""
    if layout is None:
        return tree
    return _constrain(tree, _inner(tree, layout))


def worker_tick(
    rule: AsyncRule,
    grad_fn: GradFn,
    worker: AsyncWorkerState,
    master: Any,
    index: jax.Array,
    total: jax.Array,
    batch: Any,
    key: jax.Array,
    force: bool = False,
) -> tuple[AsyncWorkerState, Any, jax.Array, jax.Array]:
    """One local step of one worker, with its exchange applied to ``master`` at once.

    Returns ``(worker, master, communicated, loss)``. ``force``: always exchange.
    """
    grad, loss = grad_fn(rule.gradient_point(worker), batch, key)
    worker = rule.before(worker, grad, loss)
    communicated = (jnp.asarray(True) if force
                    else jnp.asarray(rule.communicates(worker.count, total)))

    def talk(operand):
        worker, master = operand
        vectors, scalars = rule.message(worker, grad, index)
        master, _, replies = rule.exchange(master, vectors, scalars)
        return rule.receive(worker, replies), master

    worker, master = lax.cond(communicated, talk, lambda operand: operand, (worker, master))
    return rule.after(worker, grad, communicated), master, communicated, loss


def make_simulator(rule: AsyncRule, grad_fn: GradFn,
                   layout: WorkerLayout | None = None) -> Callable:
    """Returns jitted ``run(state, workers, batches) -> (state, TickInfo)``.

    ``workers`` is int32 [C] (a :class:`Schedule` chunk) and ``batches`` a pytree with a
    leading axis C: the batch of the active worker at each tick. ``layout``: the slot of
    devices a worker spans (:func:`simulation_layout`; module docstring), or None: the
    carry stays on :func:`state_shardings` and each tick's batch on the data devices.
    """

    def tick(state: SimState, inputs):
        index, batch = inputs
        batch = _tick_batch(batch, layout)
        worker = _one_worker(jax.tree.map(lambda a: a[index], state.workers), layout)
        key = jax.random.fold_in(jax.random.fold_in(state.key, index), worker.count)
        worker, master, communicated, loss = worker_tick(
            rule, grad_fn, worker, state.master, index, state.total, batch, key)
        staleness = jnp.where(communicated, state.master_clock - state.read_clock[index], -1)
        master_clock = state.master_clock + communicated.astype(jnp.int32)
        read_clock = state.read_clock.at[index].set(
            jnp.where(communicated, master_clock, state.read_clock[index]))
        workers = jax.tree.map(lambda a, w: a.at[index].set(w), state.workers, worker)
        new = SimState(workers, master, master_clock, read_clock, state.total + 1, state.key)
        return _held(new, layout), TickInfo(index, communicated, staleness, loss)

    @jax.jit
    def run(state: SimState, workers: jax.Array, batches: Any):
        state = _held(state, layout)
        return lax.scan(tick, state, (jnp.asarray(workers, jnp.int32), batches))

    return run


def _held(state: SimState | DelayState, layout: WorkerLayout | None) -> Any:
    """The carry held to :func:`state_shardings` (as it is without a layout)."""
    return state if layout is None else _constrain(state, state_shardings(state, layout))


class DelayState(NamedTuple):
    """The carry of the random-delay simulator.

    Attributes:
        master: the master state.
        ring: the last D + 1 master centers (leading axis D + 1); version k sits at
            k mod (D + 1).
        ring_clock: int32 [D + 1], the master clock of each slot (-1: empty).
        master_clock: k, the number of master updates (int32).
        key: the base PRNG key.
    """

    master: Any
    ring: Any
    ring_clock: jax.Array
    master_clock: jax.Array
    key: jax.Array


def init_delay_state(rule: AsyncRule, params: Any, max_staleness: int,
                     key: jax.Array) -> DelayState:
    master = rule.init_master(params)
    slots = max_staleness + 1
    ring = jax.tree.map(lambda a: jnp.broadcast_to(a, (slots, *a.shape)), master.center)
    ring_clock = jnp.full([slots], -1, jnp.int32).at[0].set(0)
    return DelayState(master, ring, ring_clock, jnp.zeros([], jnp.int32), key)


def make_delay_simulator(rule: AsyncRule, grad_fn: GradFn,
                         layout: WorkerLayout | None = None) -> Callable:
    """Returns jitted ``run(state, delays, workers, local_steps, batches) -> (state, TickInfo)``.

    At each tick a worker reads the master iterate ``delays[t]`` updates old from the ring,
    takes its gradient there and the master applies it (the rule must have
    ``stateless_worker``: APAM, DOWNPOUR with tau = 1). ``workers`` / ``local_steps`` only
    label the tick's data and the worker's clock (for learning-rate schedules). ``layout``:
    as :func:`make_simulator`'s.
    """
    if not rule.stateless_worker:
        raise ValueError(
            f"the random-delay schedule needs a gradient-based rule whose worker is its last "
            f"read of the master (apam, downpour with period 1); {rule.name!r} is not one.")

    def tick(state: DelayState, inputs):
        delay, index, local_step, batch = inputs
        batch = _tick_batch(batch, layout)
        slots = state.ring_clock.shape[0]
        slot = (state.master_clock - delay) % slots
        stale = _one_worker(jax.tree.map(lambda a: a[slot], state.ring), layout)
        worker = rule.init_worker(stale)._replace(count=local_step)
        key = jax.random.fold_in(jax.random.fold_in(state.key, index), local_step)
        _, master, _, loss = worker_tick(
            rule, grad_fn, worker, state.master, index, state.master_clock, batch, key,
            force=True)
        staleness = state.master_clock - state.ring_clock[slot]
        clock = state.master_clock + 1
        new_slot = clock % slots
        ring = jax.tree.map(lambda r, c: r.at[new_slot].set(c), state.ring, master.center)
        ring_clock = state.ring_clock.at[new_slot].set(clock)
        new = DelayState(master, ring, ring_clock, clock, state.key)
        return _held(new, layout), TickInfo(index, jnp.asarray(True), staleness, loss)

    @jax.jit
    def run(state: DelayState, delays, workers, local_steps, batches):
        inputs = (jnp.asarray(delays, jnp.int32), jnp.asarray(workers, jnp.int32),
                  jnp.asarray(local_steps, jnp.int32), batches)
        return lax.scan(tick, _held(state, layout), inputs)

    return run
