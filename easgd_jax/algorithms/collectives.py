"""Collectives over the worker axis, shared by the families.

Each takes ``axis_name``, a name or a tuple of names (a ``vmap`` axis, a ``shard_map`` mesh
axis, or both nested), and moves a whole pytree with ONE collective of its flattened leaves.

Called where ``axis_name`` is not bound (``tx.update`` outside any mapped function, or under
a ``jax.vmap`` without ``axis_name``), JAX's own error ("unbound axis name: workers ... call
psum under jax.shard_map") names neither the transformation nor the fix: each collective
here raises :class:`UnboundAxisError` instead, saying which ``axis_name`` the transformation
was built with and how to bind it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from easgd_jax.algorithms.base import AxisName


class UnboundAxisError(NameError):
    """A collective of a transformation ran where its worker axis is not bound."""


@contextlib.contextmanager
def bound(axis_name: AxisName) -> Iterator[None]:
    """Turns JAX's unbound-axis ``NameError`` raised inside into :class:`UnboundAxisError`,
    which names ``axis_name`` and the two ways to bind it."""
    try:
        yield
    except NameError as e:
        if isinstance(e, UnboundAxisError) or "axis name" not in str(e):
            raise
        raise UnboundAxisError(
            f"this transformation was built with axis_name={axis_name!r}, and its "
            "collective over the workers ran where no axis of that name is bound. "
            "tx.update runs once per worker, inside a mapped function that binds the worker axis: "
            f"jax.vmap(step, axis_name={axis_name!r}) for workers on one device, or "
            f"jax.shard_map(step, mesh=mesh, ...) over a mesh with an axis named "
            f"{axis_name!r} (a tuple axis_name binds every name in it, e.g. a vmap inside "
            "a shard_map). jax.vmap without axis_name does not bind it.") from None


def tree_psum(tree: optax.Updates, axis_name: AxisName) -> optax.Updates:
    """``lax.psum`` of a whole pytree as ONE all-reduce: one variadic collective over all
    its leaves (an XLA ``all-reduce`` with one operand per leaf).

    One collective per exchange is the whole communication of EASGD; it also keeps XLA:CPU
    from running several blocking all-reduces at once on its small intra-op thread pool,
    which can deadlock simulated devices on a machine with few cores. The leaves are not
    raveled into one vector: a leaf sharded inside a worker (FSDP over a mesh axis that the
    ``shard_map`` leaves automatic) is all-reduced shard by shard, each device sending its
    own shard only, and leaves of different shardings need no common layout (a concat of
    them is refused on ``Explicit`` mesh axes).
    """
    leaves, treedef = jax.tree.flatten(tree)
    narrow = _cpu_partly_automatic()
    wide = [a.astype(jnp.float32) if narrow and _is_narrow(a) else a for a in leaves]
    with bound(axis_name):
        summed = lax.psum(wide, axis_name)
    summed = [s.astype(a.dtype) for s, a in zip(summed, leaves, strict=True)]
    return jax.tree.unflatten(treedef, summed)


def _is_narrow(a: Any) -> bool:
    return jnp.dtype(a.dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def _cpu_partly_automatic() -> bool:
    """Whether this collective is traced for XLA:CPU inside a ``shard_map`` that leaves some
    mesh axes automatic (a worker spanning devices). There XLA:CPU aborts on a bfloat16 or
    float16 all-reduce ("Invalid binary instruction opcode copy", jax 0.10), so such leaves
    are all-reduced in float32 and cast back: what XLA:CPU does anyway when it compiles a
    narrow all-reduce (its reducer is promoted), so the numbers are the same. GPUs and TPUs
    all-reduce the narrow dtype as such."""
    if jax.default_backend() != "cpu":
        return False
    mesh = jax.sharding.get_abstract_mesh()
    return bool(mesh.axis_names) and len(mesh.manual_axes) < len(mesh.axis_names)


def tree_pmean(tree: optax.Updates, axis_name: AxisName) -> optax.Updates:
    """``lax.pmean`` of a whole pytree as ONE all-reduce (:func:`tree_psum`)."""
    leaves, treedef = jax.tree.flatten(tree)
    with bound(axis_name):
        return jax.tree.unflatten(treedef, lax.pmean(leaves, axis_name))


def axis_index(axis_name: AxisName) -> jax.Array:
    """``lax.axis_index`` with the error of :func:`bound`."""
    with bound(axis_name):
        return lax.axis_index(axis_name)


def axis_size(axis_name: AxisName) -> int:
    """The number of workers along ``axis_name``, with the error of :func:`bound`."""
    with bound(axis_name):
        return lax.psum(1, axis_name)


def gather(x: jax.Array, axis_name: AxisName) -> jax.Array:
    """All-gather of ``x`` over ``axis_name`` (a name or a tuple), ordered by flat index.

    Written as one psum of a one-hot stack (exact: every other slot adds zeros), because
    ``lax.all_gather`` over a tuple that holds a ``vmap`` axis fails in jax 0.10 ("axis size
    doesn't match"), the layout of several workers per device.
    """
    with bound(axis_name):
        size = lax.psum(1, axis_name)
        index = lax.axis_index(axis_name)
        x = jnp.asarray(x)
        return lax.psum(jnp.zeros((size, *x.shape), x.dtype).at[index].set(x), axis_name)


def broadcast_from(tree: optax.Params, is_source: jax.Array, axis_name: AxisName) -> optax.Params:
    """The ``tree`` of the one worker where ``is_source``, on every worker: ONE masked psum."""
    masked = jax.tree.map(lambda x: jnp.where(is_source, x, jnp.zeros_like(x)), tree)
    return tree_psum(masked, axis_name)


def _checksums(tree: optax.Params) -> jax.Array:
    """Two float32 checksums of a pytree: the sum of its elements and of their squares."""
    leaves = [jnp.asarray(a, jnp.float32) for a in jax.tree.leaves(tree)]
    return jnp.stack([sum(jnp.sum(a) for a in leaves), sum(jnp.sum(a * a) for a in leaves)])


def disagreement_message(what: str, detail: str = "") -> str:
    """The explanatory text of a disagreement of the workers' copies of ``what``."""
    return (
        f"the workers' copies of the {what} differ{detail}. Each worker's tx.init copies the "
        f"{what} from that worker's params, so all workers must start from the SAME "
        "params: build them once and stack them, "
        "stacked = easgd_jax.replicate(params, num_workers); "
        "opt_state = jax.vmap(tx.init)(stacked) -- not one random init per worker. "
        f"Copies that differ would stay different forever (each worker pulled toward "
        f"its own {what}).")


def _raise_disagreement(what: str, axis_name: AxisName) -> Callable[[Any, Any], np.ndarray]:
    def fail(slots, agree) -> np.ndarray:
        # Under an outer vmap (e.g. independent chains) the branch that calls this becomes
        # a select and runs at every exchange: raise only where the copies really differ.
        if np.all(np.asarray(agree)):
            return np.asarray(agree)
        raise ValueError(disagreement_message(
            what, f" (checksums per worker along {axis_name!r}: "
                  f"{np.asarray(slots).tolist()})"))

    return fail


# The state field in which a transformation records whether its workers' copies of the
# center agreed at every exchange so far (a boolean per worker, True from tx.init on).
AGREEMENT_FIELD = "copies_agree"


def check_agreement(opt_state: Any, what: str = "center") -> None:
    """Raises the explanatory ``ValueError`` when an optimizer state (one worker's, or the
    workers' stacked) records that its workers' copies of the center differed at an
    exchange (its ``copies_agree`` field, at any depth, False somewhere); else returns.

    Where the transformation cannot raise (a traced update holds no host callback by
    default, so that it runs when a worker spans devices under a partly automatic
    ``shard_map``, exports with ``jax.export`` and is kept by the persistent compilation
    cache), the exchange turns the copy NaN and records the disagreement in the state;
    this reads that record on the host. :func:`easgd_jax.center` calls it, and so does the
    training loop when it finds a non-finite evaluation point. On a traced state (inside a
    jitted function) there is nothing to read yet, and it returns.
    """
    flags = optax.tree_utils.tree_get_all_with_path(opt_state, AGREEMENT_FIELD)
    for _, flag in flags:
        if flag is None or isinstance(flag, jax.core.Tracer):
            continue  # nothing recorded, or a traced state (read where it is concrete)
        values = np.asarray(jax.device_get(flag))
        if not values.all():
            workers = np.flatnonzero(~values.reshape(-1)).tolist() if values.ndim else []
            detail = f" (recorded by workers {workers})" if workers else ""
            raise ValueError(disagreement_message(what, detail))


def _checksum_digits(tree: optax.Params, dtype: Any) -> jax.Array:
    """The two float32 checksums of ``tree`` as their 8 bytes, each an integer 0..255 held
    in ``dtype`` (exact in any float dtype of >= 8 significant bits): they ride, unrounded,
    in an all-reduce of a narrow dtype. NaN and -0.0 are made canonical first, so that equal
    checksums give equal bytes."""
    sums = _checksums(tree)
    sums = jnp.where(jnp.isnan(sums), jnp.nan, sums) + 0.0
    return lax.bitcast_convert_type(sums, jnp.uint8).reshape(-1).astype(dtype)


# What tree_psum_checking does when the workers' copies differ, chosen when a transformation
# is built (its ``on_disagreement`` argument). Each mode is a function of (copy, slots,
# agree, what, axis_name) that returns the copy to keep; every mode also returns ``agree``,
# which the transformation records in its state (``AGREEMENT_FIELD``).
DISAGREEMENT_MODES = ("nan", "raise")


def check_on_disagreement(on_disagreement: Any) -> str:
    """Checks a transformation's ``on_disagreement`` argument; returns it.

    ``"nan"`` (the default of every constructor): the copy turns NaN, so that nothing trains
    on silently, the state records the disagreement (its ``copies_agree`` turns False) and
    :func:`check_agreement` (called by :func:`easgd_jax.center` and by the training loop)
    raises the explanatory ``ValueError`` on the host. The traced program holds no host
    callback: it runs under a ``shard_map`` that is manual over the worker axis only (a
    worker spanning devices), exports with ``jax.export`` and is kept by JAX's persistent
    compilation cache. ``"raise"``: the same, and a host callback inside the update raises
    the error at the exchange itself (only where every mesh axis is manual, or under vmap).
    The check and its cost in the all-reduce are the same.
    """
    if on_disagreement not in DISAGREEMENT_MODES:
        modes = ", ".join(map(repr, DISAGREEMENT_MODES))
        raise ValueError(f"on_disagreement must be one of {modes}, got {on_disagreement!r}.")
    return on_disagreement


def _nan_copy(copy: optax.Params) -> optax.Params:
    return jax.tree.map(lambda a: jnp.full_like(a, jnp.nan), copy)


def _disagree_raise(copy, slots, agree, what: str, axis_name: AxisName) -> optax.Params:
    # A pure_callback whose result is used (not DCE'd), called ONCE per exchange with the
    # batched values under an outer vmap (jax.debug.callback would be unrolled over the
    # batch: a host call per chain and step).
    ok = jax.pure_callback(_raise_disagreement(what, axis_name),
                           jax.ShapeDtypeStruct(agree.shape, agree.dtype), slots, agree,
                           vmap_method="expand_dims")
    return jax.tree.map(lambda a: jnp.where(ok, a, jnp.full_like(a, jnp.nan)), copy)


def _disagree_nan(copy, slots, agree, what: str, axis_name: AxisName) -> optax.Params:
    del slots, agree, what, axis_name
    return _nan_copy(copy)


_ON_DISAGREEMENT: dict[str, Callable[..., optax.Params]] = {
    "raise": _disagree_raise, "nan": _disagree_nan}


def tree_psum_checking(tree: optax.Updates, replicated: optax.Params, axis_name: AxisName,
                       what: str = "center", wire_dtype: Any = None,
                       on_disagreement: str = "nan",
                       ) -> tuple[optax.Updates, optax.Params, jax.Array]:
    """``tree_psum(tree)`` that also checks that ``replicated`` (the center each worker
    holds) is the same on every worker, in the SAME all-reduce.

    Each worker adds two checksums of its copy into its own slot of a ``[p, 2]`` array
    (zeros elsewhere, so the psum of the slots is exact: an all-gather); the copies agree
    when every row equals the first (NaN rows count as equal: a diverged center is the
    NaN check's business). When they differ, the returned copy is NaN, so that nothing
    trains on silently, and the caller records ``agree`` in its state
    (:func:`check_agreement` reads it); with ``on_disagreement="raise"``
    (:func:`check_on_disagreement`) a ``jax.pure_callback`` also raises a ``ValueError``
    that says why and what to do (through jit it surfaces as a ``JaxRuntimeError``
    carrying that text); with ``"nan"`` the program holds no callback. The check costs
    two reductions of the copy and 2p numbers more in the exchange's one all-reduce; the
    callback runs only on a
    disagreement (its condition is the same on every worker, so under the workers'
    ``vmap`` it stays a real branch).
    Under an OUTER vmap (independent chains, as ``analysis/montecarlo.py`` runs) the
    condition is batched, the branch becomes a select and the callback runs once per
    exchange, with the whole batch, raising only where a chain's copies differ.

    ``wire_dtype`` (a compressed exchange, every leaf of ``tree`` already in it): the
    all-reduce runs in that dtype, and the checksums travel as their 8 bytes (each exact in
    it), ``[p, 8]`` numbers more, so that the one all-reduce keeps the narrow dtype.

    Returns ``(psum of tree, replicated, agree)``: ``replicated`` unchanged when the copies
    agree, and ``agree``, a boolean scalar, the same on every worker.
    """
    if wire_dtype is None:
        slots = jnp.zeros((axis_size(axis_name), 2), jnp.float32)
        slots = slots.at[axis_index(axis_name)].set(_checksums(replicated))
    else:
        slots = jnp.zeros((axis_size(axis_name), 8), wire_dtype)
        slots = slots.at[axis_index(axis_name)].set(_checksum_digits(replicated, wire_dtype))
    total, slots = tree_psum((tree, slots), axis_name)
    same = (slots == slots[0]) | (jnp.isnan(slots) & jnp.isnan(slots[0]))
    agree = jnp.all(same)
    disagree = _ON_DISAGREEMENT[check_on_disagreement(on_disagreement)]
    return total, lax.cond(agree, lambda copy: copy,
                           lambda copy: disagree(copy, slots, agree, what, axis_name),
                           replicated), agree
