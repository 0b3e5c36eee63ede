"""How workers run: the same algorithm under several executors."""

from easgd_jax.parallel.mesh import (
    GROUP_AXIS,
    LOCAL_AXIS,
    WORKER_AXIS,
    WorkerLayout,
    make_worker_layout,
    use_simulated_cpu_devices,
)
from easgd_jax.parallel.spmd import make_round, per_worker

__all__ = [
    "GROUP_AXIS",
    "LOCAL_AXIS",
    "WORKER_AXIS",
    "WorkerLayout",
    "make_round",
    "make_worker_layout",
    "per_worker",
    "use_simulated_cpu_devices",
]
