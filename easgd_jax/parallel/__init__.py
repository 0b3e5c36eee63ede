"""How workers run: the same algorithm under several executors."""

from easgd_jax.parallel.mesh import (
    GROUP_AXIS,
    LOCAL_AXIS,
    WORKER_AXIS,
    WorkerLayout,
    make_worker_layout,
    use_simulated_cpu_devices,
)
from easgd_jax.parallel.schedules import (
    Schedule,
    make_delay_simulator,
    make_simulator,
    random_delays,
    round_robin,
    worker_clocks,
)
from easgd_jax.parallel.server import ParameterServer, run_threads, train_threads
from easgd_jax.parallel.spmd import make_round, per_worker, unrolled_over_workers

__all__ = [
    "GROUP_AXIS",
    "LOCAL_AXIS",
    "make_delay_simulator",
    "make_round",
    "make_simulator",
    "make_worker_layout",
    "ParameterServer",
    "per_worker",
    "random_delays",
    "round_robin",
    "run_threads",
    "Schedule",
    "train_threads",
    "unrolled_over_workers",
    "use_simulated_cpu_devices",
    "WORKER_AXIS",
    "worker_clocks",
    "WorkerLayout",
]
