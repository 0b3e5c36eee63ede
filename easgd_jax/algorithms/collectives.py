"""Collectives over the worker axis, shared by the families.

Each takes ``axis_name``, a name or a tuple of names (a ``vmap`` axis, a ``shard_map`` mesh
axis, or both nested), and moves a whole pytree with ONE collective of its flattened leaves.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.flatten_util import ravel_pytree

from easgd_jax.algorithms.base import AxisName


def tree_psum(tree: optax.Updates, axis_name: AxisName) -> optax.Updates:
    """``lax.psum`` of a whole pytree as ONE all-reduce of its flattened leaves.

    One collective per exchange is the whole communication of EASGD; it also keeps XLA:CPU
    from running several blocking all-reduces at once on its small intra-op thread pool,
    which can deadlock simulated devices on a machine with few cores.
    """
    flat, unravel = ravel_pytree(tree)
    return unravel(lax.psum(flat, axis_name))


def tree_pmean(tree: optax.Updates, axis_name: AxisName) -> optax.Updates:
    """``lax.pmean`` of a whole pytree as ONE all-reduce of its flattened leaves."""
    flat, unravel = ravel_pytree(tree)
    return unravel(lax.pmean(flat, axis_name))


def gather(x: jax.Array, axis_name: AxisName) -> jax.Array:
    """All-gather of ``x`` over ``axis_name`` (a name or a tuple), ordered by flat index.

    Written as one psum of a one-hot stack (exact: every other slot adds zeros), because
    ``lax.all_gather`` over a tuple that holds a ``vmap`` axis fails in jax 0.10 ("axis size
    doesn't match"), the layout of several workers per device.
    """
    size = lax.psum(1, axis_name)
    index = lax.axis_index(axis_name)
    x = jnp.asarray(x)
    return lax.psum(jnp.zeros((size, *x.shape), x.dtype).at[index].set(x), axis_name)


def broadcast_from(tree: optax.Params, is_source: jax.Array, axis_name: AxisName) -> optax.Params:
    """The ``tree`` of the one worker where ``is_source``, on every worker: ONE masked psum."""
    masked = jax.tree.map(lambda x: jnp.where(is_source, x, jnp.zeros_like(x)), tree)
    return tree_psum(masked, axis_name)
