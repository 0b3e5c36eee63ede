"""Where workers live: real or simulated devices and the worker axis over them.

p workers are laid out on d devices along one mesh axis, ``WORKER_AXIS``. When p > d each
device holds k = p / d workers, mapped with ``jax.vmap`` over ``LOCAL_AXIS`` inside the
``shard_map``; the algorithms' collectives then run over both names at once.

Grouped algorithms (multi-leader LSGD) use a 2-D layout: n groups along ``GROUP_AXIS`` and
p / n workers per group along ``WORKER_AXIS`` (and ``LOCAL_AXIS``). Worker w of the flat
order sits in group w // (p / n); collectives over ``layout.axis_name`` span all workers,
over ``layout.member_axis_name`` one group, over ``layout.group_axis_name`` the groups.

A worker may also SPAN devices: with ``data`` x ``fsdp`` > 1 devices per worker the mesh
gets two inner axes, ``DATA_AXIS`` and ``FSDP_AXIS`` (d = p x data x fsdp devices)::

    workers:   0                       1
             +-----------------------+-----------------------+
    data 0   | fsdp 0 | fsdp 1 | ... | fsdp 0 | fsdp 1 | ... |
    data 1   | fsdp 0 | fsdp 1 | ... | fsdp 0 | fsdp 1 | ... |
             +-----------------------+-----------------------+

The executor's ``shard_map`` is manual over the worker axes only; inside a worker, XLA
shards automatically: the worker's batch over ``data`` (its gradient is the mean over all
its devices), and every array of its state (params, inner optimizer state, the center copy,
velocities, averages, residuals) over ``fsdp`` (:meth:`WorkerLayout.inner_spec`). The
algorithms' all-reduce then pairs the same shard across workers: each device sends
model bytes / fsdp per exchange.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

WORKER_AXIS = "workers"
LOCAL_AXIS = "local"
GROUP_AXIS = "groups"
DATA_AXIS = "data"  # a worker's batch split over its devices
FSDP_AXIS = "fsdp"  # a worker's state sharded over its devices
INNER_AXES = (DATA_AXIS, FSDP_AXIS)
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


def fsdp_dimension(shape: tuple[int, ...], fsdp: int) -> int | None:
    """The dimension of a one-worker array of ``shape`` that FSDP shards ``fsdp`` ways: the
    largest one divisible by ``fsdp`` (the last of equals), or None (kept whole: scalars,
    counters, small vectors that no dimension of which divides)."""
    if fsdp <= 1:
        return None
    best = None
    for dim, size in enumerate(shape):
        if size % fsdp == 0 and (best is None or size >= shape[best]):
            best = dim
    return best


class LayoutError(ValueError):
    """The model does not fit the layout of workers over devices (found once the model's
    shapes are known; ``launch.py`` exits 2 with its one line)."""


def check_fsdp(params: Any, fsdp: int) -> None:
    """:class:`LayoutError`, in one line naming the numbers, when FSDP over ``fsdp`` devices
    would leave the model's largest parameter array whole (no dimension of it divisible by
    ``fsdp``): the arrays that hold the memory must split. Smaller arrays that no dimension
    of divides (a 10-class bias) stay whole on every device of the worker."""
    if fsdp <= 1:
        return
    leaves = jax.tree_util.tree_leaves_with_path(params)
    path, largest = max(leaves, key=lambda item: int(np.size(item[1])))
    if fsdp_dimension(tuple(np.shape(largest)), fsdp) is None:
        raise LayoutError(
            f"worker_devices.fsdp ({fsdp}) divides no dimension of the model's largest "
            f"parameter, {jax.tree_util.keystr(path)} of shape {tuple(np.shape(largest))}: "
            "choose an fsdp that divides one of its dimensions.")


@dataclasses.dataclass(frozen=True)
class WorkerLayout:
    """p workers over a device mesh, k = p / d of them per device, in ``num_groups`` groups;
    or each worker spanning ``data`` x ``fsdp`` devices."""

    num_workers: int
    mesh: Mesh
    num_groups: int = 1
    data: int = 1
    fsdp: int = 1

    @property
    def num_devices(self) -> int:
        return self.mesh.devices.size

    @property
    def devices_per_worker(self) -> int:
        return self.data * self.fsdp

    @property
    def workers_per_device(self) -> int:
        return self.num_workers * self.devices_per_worker // self.num_devices

    @property
    def device_axes(self) -> tuple[str, ...]:
        """The mesh axes the leading worker axis of stacked arrays is split over (the inner
        axes of a worker that spans devices excluded)."""
        return tuple(a for a in self.mesh.axis_names if a not in INNER_AXES)

    @property
    def spans_devices(self) -> bool:
        """Whether a worker spans several devices (``data`` x ``fsdp`` > 1)."""
        return self.devices_per_worker > 1

    def inner_spec(self, shape: tuple[int, ...], dtype: Any = np.float32) -> PartitionSpec:
        """How one worker's array of ``shape`` and ``dtype`` is laid over its own devices: a
        floating array (params, optimizer and algorithm state) split along its
        :func:`fsdp_dimension` over ``FSDP_AXIS``; others (counters, RNG keys, flags) whole
        on every device of the worker."""
        floating = jax.numpy.issubdtype(dtype, jax.numpy.floating)
        dim = fsdp_dimension(tuple(shape), self.fsdp) if floating else None
        return PartitionSpec(*(FSDP_AXIS if d == dim else None for d in range(len(shape))))

    def state_sharding(self, shape: tuple[int, ...], dtype: Any = np.float32) -> NamedSharding:
        """A stacked state array (leading worker axis) of ``shape`` and ``dtype``: split
        over the workers, and over ``fsdp`` inside each (:meth:`inner_spec` of
        ``shape[1:]``)."""
        inner = tuple(self.inner_spec(shape[1:], dtype)) if self.spans_devices else ()
        return NamedSharding(self.mesh, PartitionSpec(self.device_axes, *inner))

    def batch_sharding(self) -> NamedSharding:
        """Stacked batches ``[p, steps, batch, ...]``: split over the workers, and each
        worker's batch over its ``data`` devices."""
        inner = (None, DATA_AXIS) if self.data > 1 else ()
        return NamedSharding(self.mesh, PartitionSpec(self.device_axes, *inner))

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
    num_workers: int, num_devices: int | None = None, num_groups: int = 1,
    data: int = 1, fsdp: int = 1,
) -> WorkerLayout:
    """Lays ``num_workers`` workers over the first ``num_devices`` devices (default: all),
    in ``num_groups`` groups of equal size (a 2-D mesh when there are several); with
    ``data`` x ``fsdp`` > 1, each worker spans that many devices (num_devices = p x data x
    fsdp, the mesh's inner axes ``DATA_AXIS`` and ``FSDP_AXIS``).

    Raises ValueError when the numbers do not fit, before anything is compiled.
    """
    available = jax.devices()
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}.")
    for name, value in (("worker_devices.data", data), ("worker_devices.fsdp", fsdp)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    if data * fsdp > 1:
        return _spanning_layout(num_workers, num_devices, num_groups, data, fsdp, available)
    if num_devices is None or num_devices == 0:
        num_devices = min(len(available), num_workers)
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


def _spanning_layout(num_workers: int, num_devices: int | None, num_groups: int, data: int,
                     fsdp: int, available: list) -> WorkerLayout:
    """The layout of workers that each span ``data`` x ``fsdp`` devices (one line of error
    naming the numbers when they do not fit)."""
    needed = num_workers * data * fsdp
    if num_devices not in (None, 0, needed):
        raise ValueError(
            f"num_devices ({num_devices}) must be num_workers x worker_devices.data x "
            f"worker_devices.fsdp = {num_workers} x {data} x {fsdp} = {needed} (or 0: "
            "that many): each worker spans its own devices.")
    if needed > len(available):
        raise ValueError(
            f"{num_workers} workers of {data} x {fsdp} devices need {needed} devices; "
            f"{len(available)} {available[0].platform} device(s) are available.")
    if num_groups < 1 or num_workers % num_groups:
        raise ValueError(f"num_groups ({num_groups}) must be >= 1 and divide num_workers "
                         f"({num_workers}).")
    shape: tuple[int, ...] = (num_workers, data, fsdp)
    names: tuple[str, ...] = (WORKER_AXIS, DATA_AXIS, FSDP_AXIS)
    if num_groups > 1:
        shape, names = (num_groups, num_workers // num_groups, data, fsdp), (GROUP_AXIS, *names)
    mesh = Mesh(np.asarray(available[:needed]).reshape(shape), names,
                axis_types=(AxisType.Auto,) * len(names))
    return WorkerLayout(num_workers=num_workers, mesh=mesh, num_groups=num_groups,
                        data=data, fsdp=fsdp)
