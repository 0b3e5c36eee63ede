"""Where workers live: real or simulated devices and the worker axis over them.

p workers are laid out on d devices along one mesh axis, ``WORKER_AXIS``. When p > d each
device holds k = p / d workers, mapped with ``jax.vmap`` over ``LOCAL_AXIS`` inside the
``shard_map``; the algorithms' collectives then run over both names at once.

Grouped algorithms (multi-leader LSGD) use a 2-D layout: n groups along ``GROUP_AXIS`` and
p / n workers per group along ``WORKER_AXIS`` (and ``LOCAL_AXIS``). Worker w of the flat
order sits in group w // (p / n); collectives over ``layout.axis_name`` span all workers,
over ``layout.member_axis_name`` one group, over ``layout.group_axis_name`` the groups.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

WORKER_AXIS = "workers"
LOCAL_AXIS = "local"
GROUP_AXIS = "groups"
_COLLECTIVE_TIMEOUTS = ("--xla_cpu_collective_call_terminate_timeout_seconds=900",
                        "--xla_cpu_collective_timeout_seconds=900")


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
    # A loaded machine can keep a simulated device from reaching a collective for longer
    # than XLA:CPU's default 40 s, after which it aborts the process: allow minutes.
    for timeout in _COLLECTIVE_TIMEOUTS:
        if not any(f.startswith(timeout.split("=")[0]) for f in flags):
            flags.append(timeout)
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


AxisName = str | tuple[str, ...]


def _name(axes: tuple[str, ...]) -> AxisName:
    return axes[0] if len(axes) == 1 else axes


@dataclasses.dataclass(frozen=True)
class WorkerLayout:
    """p workers over a device mesh, k = p / d of them per device, in ``num_groups`` groups."""

    num_workers: int
    mesh: Mesh
    num_groups: int = 1

    @property
    def num_devices(self) -> int:
        return self.mesh.devices.size

    @property
    def workers_per_device(self) -> int:
        return self.num_workers // self.num_devices

    @property
    def device_axes(self) -> tuple[str, ...]:
        """The mesh axes the leading worker axis of stacked arrays is split over."""
        return tuple(self.mesh.axis_names)

    @property
    def _local_axes(self) -> tuple[str, ...]:
        return () if self.workers_per_device == 1 else (LOCAL_AXIS,)

    @property
    def axis_name(self) -> AxisName:
        """The axis name(s) spanning all workers: what the algorithms' collectives use."""
        return _name(self.device_axes + self._local_axes)

    @property
    def member_axis_name(self) -> AxisName:
        """The axis name(s) spanning the workers of one group."""
        return _name((WORKER_AXIS,) + self._local_axes)

    @property
    def group_axis_name(self) -> str | None:
        """The axis across groups (None with one group)."""
        return GROUP_AXIS if self.num_groups > 1 else None

    def worker_sharding(self) -> NamedSharding:
        """Arrays with a leading worker axis, split over the devices."""
        return NamedSharding(self.mesh, PartitionSpec(self.device_axes))

    def replicated_sharding(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())


def make_worker_layout(
    num_workers: int, num_devices: int | None = None, num_groups: int = 1
) -> WorkerLayout:
    """Lays ``num_workers`` workers over the first ``num_devices`` devices (default: all),
    in ``num_groups`` groups of equal size (a 2-D mesh when there are several).

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
    if num_groups < 1 or num_workers % num_groups or num_devices % num_groups:
        raise ValueError(
            f"num_groups ({num_groups}) must be >= 1 and divide both num_workers "
            f"({num_workers}) and num_devices ({num_devices}): each group spans whole devices.")
    if num_groups == 1:
        mesh = Mesh(available[:num_devices], (WORKER_AXIS,), axis_types=(AxisType.Auto,))
    else:
        devices = np.asarray(available[:num_devices]).reshape(num_groups, -1)
        mesh = Mesh(devices, (GROUP_AXIS, WORKER_AXIS), axis_types=(AxisType.Auto,) * 2)
    return WorkerLayout(num_workers=num_workers, mesh=mesh, num_groups=num_groups)
