"""Several processes (hosts) through JAX's own distributed runtime.

``initialize(config.distributed)`` calls ``jax.distributed.initialize`` when the config names
a coordinator, or when the usual cluster environment says the job spans several processes
(SLURM, Open MPI, or JAX's own ``JAX_COORDINATOR_ADDRESS``; JAX detects the details). After
it, ``jax.devices()`` lists every process's devices and the synchronous executor's mesh
spans them all, with the same code. On CPU the processes talk through gloo collectives, so
local processes can stand in for hosts.
"""

from __future__ import annotations

import os

import jax
import ml_collections
from absl import logging

_CLUSTER_MARKERS = ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE")


def wanted(config: ml_collections.ConfigDict) -> bool:
    """Whether this run spans several processes (config or cluster environment)."""
    if config.coordinator_address:
        return True
    if "SLURM_JOB_ID" in os.environ:
        return int(os.environ.get("SLURM_NTASKS", "1")) > 1
    if "OMPI_COMM_WORLD_SIZE" in os.environ:
        return int(os.environ["OMPI_COMM_WORLD_SIZE"]) > 1
    return "JAX_COORDINATOR_ADDRESS" in os.environ


def num_processes(config: ml_collections.ConfigDict) -> int:
    """The number of processes the run will have (before the runtime starts)."""
    if config.coordinator_address:
        return config.num_processes
    for variable in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        if variable in os.environ:
            return int(os.environ[variable])
    return config.num_processes


def initialize(config: ml_collections.ConfigDict) -> None:
    """Starts the distributed runtime if the run spans several processes; else nothing.

    Must run before jax starts its backend (before any computation). A process silent for
    ``heartbeat_timeout_s`` seconds (killed, host lost) is declared dead: the others abort
    rather than wait in a collective (JAX's default is 100 s).
    """
    if not wanted(config):
        return
    # CPU devices of different processes need a cross-process collectives implementation.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {"heartbeat_timeout_seconds": config.get("heartbeat_timeout_s", 30)}
    if config.coordinator_address:
        kwargs.update(coordinator_address=config.coordinator_address,
                      num_processes=config.num_processes, process_id=config.process_id)
    jax.distributed.initialize(**kwargs)
    logging.info("process %d of %d; %d local and %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())
