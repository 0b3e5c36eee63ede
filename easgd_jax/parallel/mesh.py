"""Where workers live: real or simulated devices and the worker axis over them.

p workers are laid out on d devices along one mesh axis, ``WORKER_AXIS``. When p > d each
device holds k = p / d workers, mapped with ``jax.vmap`` over ``LOCAL_AXIS`` inside the
``shard_map``; the algorithms' collectives then run over both names at once.
"""

from __future__ import annotations

import dataclasses
import os

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

WORKER_AXIS = "workers"
LOCAL_AXIS = "local"


def use_simulated_cpu_devices(count: int) -> None:
    """Asks XLA for ``count`` host (CPU) devices; must run before jax starts its backend.

    Has no effect on GPU/TPU backends, which expose their real devices. Raises if the CPU
    backend is already up with a different number of devices.

    It also sizes XLA:CPU's intra-op thread pool (``PJRT_NPROC``, shared by all simulated
    devices) to ``count`` + the cores: a device waiting in an all-reduce holds a pool thread,
    and with more devices than threads (8 simulated devices on 2 cores) the devices still
    working can starve and the collective deadlocks.
    """
    if count < 1:
        raise ValueError(f"num_devices must be >= 1, got {count}.")
    threads = count + (os.cpu_count() or 1)
    if int(os.environ.get("PJRT_NPROC", "0") or 0) < threads:
        os.environ["PJRT_NPROC"] = str(threads)
    flag = f"--xla_force_host_platform_device_count={count}"
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    os.environ["XLA_FLAGS"] = " ".join([*flags, flag])
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:
        # The backend is already initialized: accept it if it already has what we need.
        available = len(jax.devices("cpu"))
        if available < count:
            raise RuntimeError(
                f"jax started with {available} CPU devices before {count} could be set; set "
                f"XLA_FLAGS={flag} before importing jax.") from None


@dataclasses.dataclass(frozen=True)
class WorkerLayout:
    """p workers over a 1-D device mesh, k = p / d of them per device."""

    num_workers: int
    mesh: Mesh

    @property
    def num_devices(self) -> int:
        return self.mesh.devices.size

    @property
    def workers_per_device(self) -> int:
        return self.num_workers // self.num_devices

    @property
    def axis_name(self) -> str | tuple[str, str]:
        """The axis name(s) the algorithms' collectives must use in this layout."""
        return WORKER_AXIS if self.workers_per_device == 1 else (WORKER_AXIS, LOCAL_AXIS)

    def worker_sharding(self) -> NamedSharding:
        """Arrays with a leading worker axis, split over the devices."""
        return NamedSharding(self.mesh, PartitionSpec(WORKER_AXIS))

    def replicated_sharding(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())


def make_worker_layout(num_workers: int, num_devices: int | None = None) -> WorkerLayout:
    """Lays ``num_workers`` workers over the first ``num_devices`` devices (default: all).

    Raises ValueError when the numbers do not fit, before anything is compiled.
    """
    available = jax.devices()
    if num_devices is None or num_devices == 0:
        num_devices = min(len(available), num_workers)
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}.")
    if num_devices < 1 or num_devices > len(available):
        raise ValueError(
            f"num_devices must be in [1, {len(available)}] (devices available: "
            f"{len(available)} {available[0].platform}), got {num_devices}.")
    if num_workers % num_devices:
        raise ValueError(
            f"num_workers ({num_workers}) must be a multiple of num_devices ({num_devices}): "
            "each device holds the same number of workers.")
    mesh = Mesh(available[:num_devices], (WORKER_AXIS,), axis_types=(AxisType.Auto,))
    return WorkerLayout(num_workers=num_workers, mesh=mesh)
