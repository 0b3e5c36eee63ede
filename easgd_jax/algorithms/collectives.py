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
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.flatten_util import ravel_pytree

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
    """``lax.psum`` of a whole pytree as ONE all-reduce of its flattened leaves.

    One collective per exchange is the whole communication of EASGD; it also keeps XLA:CPU
    from running several blocking all-reduces at once on its small intra-op thread pool,
    which can deadlock simulated devices on a machine with few cores.
    """
    flat, unravel = ravel_pytree(tree)
    with bound(axis_name):
        return unravel(lax.psum(flat, axis_name))


def tree_pmean(tree: optax.Updates, axis_name: AxisName) -> optax.Updates:
    """``lax.pmean`` of a whole pytree as ONE all-reduce of its flattened leaves."""
    flat, unravel = ravel_pytree(tree)
    with bound(axis_name):
        return unravel(lax.pmean(flat, axis_name))


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
