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
velocities, averages, residuals) over ``fsdp``. The algorithms' all-reduce then pairs the
same shard across workers: each device sends model bytes / fsdp per exchange.

Which dimension of a parameter FSDP splits (:func:`fsdp_plan`, attached to a layout by
:meth:`WorkerLayout.with_params`):

- by the model's LOGICAL AXIS NAMES (Flax partitioning metadata, models/axes.py) and the
  rules table :data:`FSDP_RULES`, in order of precedence as ``nn.logical_to_mesh_axes``
  reads it (as MaxText and big_vision map ``"embed"`` to their fsdp axis): the first
  named dimension of the parameter whose rule maps it to ``fsdp`` and whose size ``fsdp``
  divides;
- a parameter WITHOUT names (a model that declares none): its largest dimension that
  ``fsdp`` divides (big_vision's ``fsdp`` rule, :func:`fsdp_dimension`).

Every leaf of the optimizer and algorithm state that mirrors a parameter (the same key
path at its end, the same shape: ``trace['Dense_0']['kernel']``, ``center[...]``) takes
that parameter's split; other leaves (counters, keys, flags, per-worker scalars) stay whole
on every device of the worker (with a model that names nothing: any floating array along
its largest dimension fsdp divides, the rule for everything). A layout without a plan (no
:meth:`~WorkerLayout.with_params`) uses that largest-dimension rule for every floating
array: :meth:`WorkerLayout.inner_spec` / :meth:`~WorkerLayout.state_sharding` of a shape.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

WORKER_AXIS = "workers"
LOCAL_AXIS = "local"
GROUP_AXIS = "groups"
DATA_AXIS = "data"  # a worker's batch split over its devices
FSDP_AXIS = "fsdp"  # a worker's state sharded over its devices
INNER_AXES = (DATA_AXIS, FSDP_AXIS)
# Logical axis names -> the fsdp mesh axis, in order of precedence (flax's logical axis
# rules): a transformer's width first (MaxText's ("embed", "fsdp")), then its MLP width;
# a dense or convolutional layer's input, then its output features; a vocabulary or the
# class scores last. ``heads``, ``kv``, ``length`` and convolution windows are never split.
FSDP_RULES: tuple[tuple[str, str], ...] = (
    ("embed", FSDP_AXIS), ("mlp", FSDP_AXIS), ("features_in", FSDP_AXIS),
    ("features", FSDP_AXIS), ("vocab", FSDP_AXIS), ("classes", FSDP_AXIS))
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


Path = tuple[Any, ...]  # a pytree key path (jax.tree_util key entries)


def _has_names(spec: Any, ndim: int) -> bool:
    return (isinstance(spec, PartitionSpec) and len(spec) == ndim and ndim > 0
            and any(isinstance(name, str) for name in spec))


def _largest_dim_spec(shape: tuple[int, ...], fsdp: int) -> PartitionSpec:
    dim = fsdp_dimension(shape, fsdp)
    return PartitionSpec(*(FSDP_AXIS if d == dim else None for d in range(len(shape))))


def logical_fsdp_spec(names: PartitionSpec, shape: tuple[int, ...], fsdp: int,
                      rules: tuple[tuple[str, str], ...] = FSDP_RULES) -> PartitionSpec:
    """The split of a parameter of ``shape`` whose dimensions carry the logical ``names``:
    ``nn.logical_to_mesh_axes(names, rules)`` with the rules kept to those whose dimension
    ``fsdp`` divides (so the first such rule in precedence takes the fsdp axis; a parameter
    none of whose named dimensions divides stays whole)."""
    if fsdp <= 1:
        return PartitionSpec(*(None for _ in shape))
    fits = tuple((name, axis) for name, axis in rules
                 if name in names and shape[tuple(names).index(name)] % fsdp == 0)
    return PartitionSpec(*nn.logical_to_mesh_axes(tuple(names), fits))


@dataclasses.dataclass(frozen=True, eq=False)
class FsdpPlan:
    """How one worker's params split over its ``fsdp`` devices (:func:`fsdp_plan`).

    ``specs``: each parameter's key path -> (its shape, its PartitionSpec over ``FSDP_AXIS``);
    ``named``: the paths whose split came from logical axis names (the others: the
    largest-dimension rule)."""

    fsdp: int
    specs: dict[Path, tuple[tuple[int, ...], PartitionSpec]]
    named: frozenset[Path]
    rules: tuple[tuple[str, str], ...] = FSDP_RULES

    @property
    def logical(self) -> bool:
        """Whether any parameter is split by its logical names (then a state leaf that
        mirrors no parameter stays whole)."""
        return bool(self.named)

    def spec_of(self, path: Path, shape: tuple[int, ...], dtype: Any) -> PartitionSpec:
        """The split of one worker's state leaf at key ``path`` (any prefix before the
        parameter's own path: ``.params``, ``.opt_state[0].center``, ...): a floating leaf
        whose path ends with a parameter's path and whose shape is that parameter's takes
        its split; another floating leaf stays whole under logical names, or is split by the
        largest-dimension rule when the model names nothing; integers, keys, flags whole."""
        if not jax.numpy.issubdtype(dtype, jax.numpy.floating):
            return PartitionSpec(*(None for _ in shape))
        for start in range(len(path)):  # the longest parameter path that ends the leaf's
            found = self.specs.get(tuple(path[start:]))
            if found is not None and found[0] == tuple(shape):
                return found[1]
        if self.logical:
            return PartitionSpec(*(None for _ in shape))
        return _largest_dim_spec(tuple(shape), self.fsdp)

    def describe(self) -> str:
        """One line for the run's log: which rule split the parameters."""
        total = len(self.specs)
        head = f"FSDP over {self.fsdp} devices per worker: "
        if not self.named:
            return (head + f"the model's {total} parameters carry no logical axis names: each "
                    "floating array split along its largest dimension fsdp divides")
        rules = ", ".join(name for name, _ in self.rules)
        line = (head + f"{len(self.named)} of {total} parameters split by their logical axis "
                f"names (rules, in precedence: {rules} -> {FSDP_AXIS}); the optimizer and "
                "algorithm state follow their parameter's split, other leaves whole")
        unnamed = [jax.tree_util.keystr(p) for p in self.specs if p not in self.named]
        if unnamed:
            line += (f"; without names, along their largest dimension fsdp divides: "
                     f"{', '.join(unnamed)}")
        return line

    def table(self) -> list[tuple[str, tuple[int, ...], str]]:
        """(parameter path, shape, its split as text) for every parameter."""
        return [(jax.tree_util.keystr(p), shape, str(spec))
                for p, (shape, spec) in self.specs.items()]


def fsdp_plan(params: Any, fsdp: int, logical: Any = None,
              rules: tuple[tuple[str, str], ...] = FSDP_RULES) -> FsdpPlan:
    """How FSDP over ``fsdp`` devices splits each parameter of ``params`` (one worker's
    tree, arrays or shape structs): by its logical names in ``logical`` (a tree like
    ``params`` of ``PartitionSpec``s of names, ``easgd_jax.models.logical_axes``) and
    ``rules`` (:func:`logical_fsdp_spec`); a parameter without names (or ``logical`` None)
    along its largest dimension fsdp divides (:func:`fsdp_dimension`).

    Raises :class:`LayoutError`, in one line naming the numbers, when the split leaves the
    model's largest parameter whole: the arrays that hold the memory must split. By names:
    the logical dimensions the rules would split and their sizes, none divisible by ``fsdp``
    (smaller parameters none of whose named dimensions divides, a 10-class bias, stay whole
    on every device of the worker)."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    names: dict[Path, Any] = {}
    if logical is not None:
        names = {tuple(p): n for p, n in jax.tree_util.tree_leaves_with_path(
            logical, is_leaf=lambda x: isinstance(x, PartitionSpec) or x is None)}
    specs: dict[Path, tuple[tuple[int, ...], PartitionSpec]] = {}
    named = set()
    for path, leaf in leaves:
        shape, path = tuple(np.shape(leaf)), tuple(path)
        if _has_names(names.get(path), len(shape)):
            specs[path] = (shape, logical_fsdp_spec(names[path], shape, fsdp, rules))
            named.add(path)
        else:
            specs[path] = (shape, _largest_dim_spec(shape, fsdp))
    plan = FsdpPlan(fsdp, specs, frozenset(named), tuple(rules))
    if fsdp > 1 and leaves:
        path, largest = max(leaves, key=lambda item: int(np.size(item[1])))
        path, shape = tuple(path), tuple(np.shape(largest))
        if FSDP_AXIS not in tuple(specs[path][1]):
            where = f"the model's largest parameter, {jax.tree_util.keystr(path)} of shape {shape}"
            if path not in named:
                raise LayoutError(
                    f"worker_devices.fsdp ({fsdp}) divides no dimension of {where}: choose an "
                    "fsdp that divides one of its dimensions.")
            ruled = {name for name, _ in rules}
            dims = [f"{n} = {size}" for n, size in zip(names[path], shape, strict=True)
                    if n in ruled]
            raise LayoutError(
                f"worker_devices.fsdp ({fsdp}) divides none of the logical dimensions FSDP "
                f"splits of {where}: {', '.join(dims) or 'none is in the rules'} (names "
                f"{tuple(names[path])}): choose an fsdp that divides one of them.")
    return plan


def check_fsdp(params: Any, fsdp: int, logical: Any = None,
               rules: tuple[tuple[str, str], ...] = FSDP_RULES) -> FsdpPlan:
    """:class:`LayoutError`, in one line naming the numbers, when FSDP over ``fsdp`` devices
    would leave the model's largest parameter array whole (:func:`fsdp_plan`: with the
    model's logical names ``logical``, it names the logical dimensions fsdp does not
    divide); otherwise the plan."""
    return fsdp_plan(params, fsdp, logical, rules)


@dataclasses.dataclass(frozen=True)
class WorkerLayout:
    """p workers over a device mesh, k = p / d of them per device, in ``num_groups`` groups;
    or each worker spanning ``data`` x ``fsdp`` devices."""

    num_workers: int
    mesh: Mesh
    num_groups: int = 1
    data: int = 1
    fsdp: int = 1
    # How the params split over fsdp (:meth:`with_params`); None: the largest-dimension rule.
    plan: FsdpPlan | None = dataclasses.field(default=None, compare=False, repr=False)

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

    def with_params(self, params: Any, logical: Any = None,
                    rules: tuple[tuple[str, str], ...] = FSDP_RULES) -> WorkerLayout:
        """This layout with the FSDP plan of a model: ``params`` one worker's params (arrays
        or shape structs), ``logical`` their logical axis names
        (``easgd_jax.models.logical_axes(model, example_shape)``; None: the
        largest-dimension rule). :class:`LayoutError` on a misfit (:func:`fsdp_plan`).
        :meth:`inner_specs` / :meth:`state_shardings` then split by it."""
        return dataclasses.replace(self, plan=fsdp_plan(params, self.fsdp, logical, rules))

    def inner_spec(self, shape: tuple[int, ...], dtype: Any = np.float32) -> PartitionSpec:
        """The largest-dimension rule for one worker's array of ``shape`` and ``dtype`` (the
        rule of a layout without a plan, and of a model without names): a floating array
        split along its :func:`fsdp_dimension` over ``FSDP_AXIS``; others (counters, RNG
        keys, flags) whole on every device of the worker. By the tree, following the
        plan: :meth:`inner_specs`."""
        floating = jax.numpy.issubdtype(dtype, jax.numpy.floating)
        dim = fsdp_dimension(tuple(shape), self.fsdp) if floating else None
        return PartitionSpec(*(FSDP_AXIS if d == dim else None for d in range(len(shape))))

    def inner_specs(self, tree: Any) -> Any:
        """How each leaf of one worker's ``tree`` (its TrainState, or any tree whose
        param-mirroring leaves end with the params' key paths) is laid over the worker's
        devices: :meth:`FsdpPlan.spec_of` (its parameter's split) with a plan, else
        :meth:`inner_spec`. A tree like ``tree`` of ``PartitionSpec``s."""
        def spec(path, leaf):
            shape, dtype = tuple(np.shape(leaf)), _dtype(leaf)
            if self.plan is None:
                return self.inner_spec(shape, dtype)
            return self.plan.spec_of(tuple(path), shape, dtype)

        return jax.tree_util.tree_map_with_path(spec, tree)

    def state_sharding(self, shape: tuple[int, ...], dtype: Any = np.float32) -> NamedSharding:
        """A stacked state array (leading worker axis) of ``shape`` and ``dtype``: split
        over the workers, and over ``fsdp`` inside each by the largest-dimension rule
        (:meth:`inner_spec` of ``shape[1:]``). Following the plan: :meth:`state_shardings`."""
        inner = tuple(self.inner_spec(shape[1:], dtype)) if self.spans_devices else ()
        return NamedSharding(self.mesh, PartitionSpec(self.device_axes, *inner))

    def state_shardings(self, tree: Any) -> Any:
        """The shardings of a stacked ``tree`` (leading worker axis on every leaf: the
        executor's TrainState): split over the workers, and inside each over ``fsdp`` as
        :meth:`inner_specs` of one worker's leaves says."""
        def sharding(path, leaf):
            shape = tuple(np.shape(leaf))
            inner: tuple = ()
            if self.spans_devices:
                inner = tuple(self.inner_spec(shape[1:], _dtype(leaf)) if self.plan is None
                              else self.plan.spec_of(tuple(path), shape[1:], _dtype(leaf)))
            return NamedSharding(self.mesh, PartitionSpec(self.device_axes, *inner))

        return jax.tree_util.tree_map_with_path(sharding, tree)

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


def _dtype(leaf: Any) -> Any:
    return leaf.dtype if hasattr(leaf, "dtype") else np.result_type(leaf)


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
