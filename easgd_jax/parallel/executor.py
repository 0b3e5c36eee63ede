"""The protocol of the real asynchronous executors: what one driver needs from the threads
executor (:class:`~easgd_jax.parallel.server.ThreadExecutor`, a parameter server in this
process) and the Ray executor (:class:`~easgd_jax.parallel.ray_server.RayExecutor`, the same
server and workers on Ray actors), so that ``training/asynchronous.py`` runs both with one
body.

An :class:`Executor` is built from a :class:`Setup` (the rule, the data, the workers) and:

- declares its :class:`Capabilities` (the ``on_worker_failure`` policies it supports, and
  whether "continue" restarts a failed worker or leaves it behind), checked by
  :func:`check_failure_policy` before anything starts;
- gives the abstract shapes of its master's checkpointed state (:meth:`Executor.state_shapes`,
  ``jax.eval_shape``: nothing is built), the target a checkpoint is restored into;
- :meth:`Executor.run` starts the workers (from a resumed cut if given), waits for them while
  calling :class:`Hooks` in the caller's thread (``on_poll``; ``on_cut`` at each consistent
  cut, with a :class:`ServerView` that snapshots the quiet master; ``on_failure`` when a
  worker fails), stops them, and collects an :class:`Outcome`;
- after :meth:`Executor.run` raised (a hook raised to stop, a worker failed under "stop"),
  :meth:`Executor.progress` is every worker where it stopped (between two steps) and
  :meth:`Executor.snapshot` the master's state then (None if it was lost with its process).

A worker's failure reaches the caller as a :class:`WorkerFailedError`, its worker index,
local step and cause fields of the exception.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from easgd_jax.algorithms.base import AsyncRule, AsyncWorkerState

GradFn = Callable[[Any, Any, jax.Array], tuple[Any, jax.Array]]
BatchFn = Callable[[int, int, int], Any]
StopHook = Callable[[int, int], None]
ServerState = tuple[dict[str, Any], dict[str, Any]]  # ParameterServer.state(): arrays, meta

# The values of ``config.asynchrony.on_worker_failure`` an executor may support.
STOP, CONTINUE = "stop", "continue"


@dataclasses.dataclass
class WorkerResult:
    """What one worker's loop leaves."""

    worker: AsyncWorkerState  # its final state
    losses: list[Any]  # one per local step taken
    steps: int  # local steps taken
    exchanges: int  # exchanges sent

    def loss_array(self) -> np.ndarray:
        return np.asarray(jnp.stack(self.losses)) if self.losses else np.zeros(0)


class WorkerFailedError(RuntimeError):
    """Worker ``worker`` failed before its local step ``step`` (None: not known, e.g. its
    process died) with ``cause``; ``progress`` is the worker before that step when known.

    Raised by the workers' loop (:func:`~easgd_jax.parallel.worker_loop.run_worker`), by the
    executors (the first failure that ``on_failure`` does not absorb) and, with the run's own
    ``message`` (what was saved, how to resume), by the driver."""

    worker: int
    step: int | None
    cause: BaseException
    progress: WorkerResult | None

    def __init__(self, worker: int, step: int | None, cause: BaseException,
                 progress: WorkerResult | None = None, message: str | None = None):
        self.worker, self.step, self.cause, self.progress = worker, step, cause, progress
        at = "?" if step is None else step
        super().__init__(message or f"worker {worker} failed at its local step {at} "
                                    f"({type(cause).__name__}: {cause})")

    def __reduce__(self) -> tuple[Any, ...]:  # (pickled across processes by Ray)
        return type(self), (self.worker, self.step, self.cause, self.progress, str(self))


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What an executor can do, declared before it runs.

    ``failure_policies``: the ``on_worker_failure`` values it supports; with
    ``restarts_failed_workers`` a failed worker under "continue" is restarted from the
    center at the step it failed at, else the others go on without it (a lost worker)."""

    failure_policies: frozenset[str]
    restarts_failed_workers: bool


def check_failure_policy(executor: str, capabilities: Capabilities, policy: str) -> None:
    """Raises a one-line ValueError if ``executor`` does not support ``policy``."""
    if policy not in capabilities.failure_policies:
        raise ValueError(
            f"config.asynchrony.on_worker_failure={policy!r} is not supported by executor "
            f"{executor!r} (it supports: {', '.join(sorted(capabilities.failure_policies))}).")


@dataclasses.dataclass(frozen=True)
class ServerReport:
    """What the master measured (see :mod:`easgd_jax.parallel.server`)."""

    exchanges_applied: list[int]  # per shard
    exchanges_sent: list[int]  # per worker (each exchange visits every shard)
    max_discrepancy: float  # max |center - (start + sum of the ledgers)|
    center_scale: float  # max |center|, for relative tolerances
    staleness_mean: float
    staleness_max: int
    staleness_count: int

    def as_metrics(self) -> dict[str, float]:
        return {"staleness_mean": self.staleness_mean, "staleness_max": self.staleness_max,
                "exchanges": int(sum(self.exchanges_sent)),
                "ledger_discrepancy": self.max_discrepancy}


@dataclasses.dataclass
class Setup:
    """What every worker of an executor runs.

    ``batch_fn(worker, start_step, steps)``: batches with a leading axis ``steps`` (host
    arrays), fetched ``chunk_steps`` at a time; step t of worker i uses the PRNG key
    ``fold_in(fold_in(key, i), t)``; ``stop_when(worker, step)``: a test hook called before
    every local step (may raise, as a dying worker). The no-lost-update check at the end
    allows ``verify_atol + verify_rtol_per_exchange * exchanges * max|center|``."""

    rule: AsyncRule
    grad_fn: GradFn
    params: Any  # every worker's starting point (and the master's)
    num_workers: int
    num_steps: int  # local steps per worker
    batch_fn: BatchFn
    key: jax.Array
    num_shards: int = 1
    timeout_s: float = 3600.0
    chunk_steps: int = 50
    stop_when: StopHook | None = None
    verify_atol: float = 0.0
    verify_rtol_per_exchange: float = 1e-6
    join_timeout_s: float = 30.0


class ServerView(Protocol):
    """The master as the driver sees it at a consistent cut (no exchange in flight)."""

    def center_flat(self) -> np.ndarray:
        """The flat center."""

    def staleness_since(self, seen: Sequence[int]) -> list[list[int]]:
        """Each worker's staleness values after its first ``seen[w]``."""

    def state(self) -> ServerState:
        """The whole master now, for a checkpoint (:meth:`ParameterServer.state`)."""


@dataclasses.dataclass
class Hooks:
    """The driver's side of a run, called in the caller's thread (``on_failure``: in the
    failed worker's thread for the threads executor).

    ``on_poll()``: every poll while the workers run; raising stops them. ``on_cut(view, T,
    progress)``: at each mark of ``cuts`` the workers reached, every worker held between two
    steps. ``on_failure(error) -> continue?``: True lets the others go on (the failed worker
    restarted or left behind, as the executor's capabilities say); False stops the run with
    ``error``."""

    on_poll: Callable[[], None] | None = None
    on_cut: Callable[[ServerView, int, list[WorkerResult]], None] | None = None
    on_failure: Callable[[WorkerFailedError], bool] | None = None


@dataclasses.dataclass
class Outcome:
    """What a finished run collected."""

    results: list[WorkerResult]  # per worker, its final progress
    center_flat: np.ndarray
    staleness: list[list[int]]  # per worker, one per (exchange, shard), in order
    report: ServerReport  # verified (unverified when the center is not finite)
    server_state: ServerState  # the master at the end, for the last checkpoint
    wall_time_s: float  # the workers' run, after compilation
    compile_time_s: float  # the warm-up that compiles the worker steps and the exchange
    lost: dict[int, str]  # workers left behind after a failure: their error

    @property
    def workers(self) -> list[AsyncWorkerState]:
        return [r.worker for r in self.results]

    @property
    def losses(self) -> list[np.ndarray]:
        return [r.loss_array() for r in self.results]

    @property
    def steps(self) -> list[int]:
        return [int(r.steps) for r in self.results]


class Executor(Protocol):
    """A way to run the workers of an asynchronous rule against one master."""

    capabilities: ClassVar[Capabilities]

    def state_shapes(self) -> dict[str, Any]:
        """The abstract shapes (``jax.ShapeDtypeStruct``) of the master's checkpointed
        arrays: the restore target of a checkpoint."""

    def run(self, hooks: Hooks, start: Sequence[WorkerResult] | None = None,
            server_state: ServerState | None = None, cuts: Sequence[int] = ()) -> Outcome:
        """Starts every worker (from ``start``, the master from ``server_state``: a resumed
        cut), waits for them calling ``hooks``, holds them at each mark of ``cuts`` (values
        of T, the local steps of all workers), stops them and returns the outcome."""

    def progress(self) -> list[WorkerResult | None]:
        """Every worker's last known progress (after :meth:`run` raised: where it stopped)."""

    def snapshot(self) -> ServerState | None:
        """The master's state after :meth:`run` raised (None if it was lost)."""
