"""The models' logical axis names: flax partitioning metadata, read without changing ``init``.

Every parameter of the shipped models names each of its dimensions (Flax's logical axis
names, ``nn.with_logical_partitioning``), so that a layout can shard it by a rules table
that maps names to mesh axes (``nn.logical_to_mesh_axes``; MaxText and big_vision shard
FSDP this way, e.g. ``("embed", "fsdp")``). The names used:

    features_in   a kernel's input dimension (a dense layer's rows, a convolution's input
                  channels)
    features      a layer's output units or channels (a kernel's columns, its bias)
    classes       the output layer's class scores
    window        a 1-D convolution's window; window_h, window_w: a 2-D one's
    vocab, embed, heads, kv, mlp, length: the transformer's (models/transformer.py)

The small and paper models attach their names with :func:`named`: only while
:func:`logical_axes` reads them (inside :func:`naming`) do their initializers return Flax's
``LogicallyPartitioned`` boxes; a plain ``model.init`` returns plain arrays, as every caller
that indexes ``params["Dense_0"]["kernel"]`` expects. (The transformer boxes always; the
training code unboxes, ``training.common.init_params``.)
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

_NAMING: contextvars.ContextVar[bool] = contextvars.ContextVar("easgd_jax_naming",
                                                                default=False)


@contextlib.contextmanager
def naming() -> Iterator[None]:
    """Inside, the initializers wrapped by :func:`named` box their values with their logical
    axis names (``nn.LogicallyPartitioned``)."""
    token = _NAMING.set(True)
    try:
        yield
    finally:
        _NAMING.reset(token)


def named(init: nn.initializers.Initializer, names: tuple[str | None, ...]
          ) -> nn.initializers.Initializer:
    """``init`` whose parameter carries the logical axis ``names`` (one per dimension):
    ``nn.with_logical_partitioning(init, names)`` inside :func:`naming`, ``init`` itself
    outside (the same values either way: the same initializer on the same key)."""
    boxed = nn.with_logical_partitioning(init, names)

    def initializer(*args: Any, **kwargs: Any) -> Any:
        return boxed(*args, **kwargs) if _NAMING.get() else init(*args, **kwargs)

    return initializer


def logical_axes(model: nn.Module, example_shape: tuple[int, ...]) -> Any:
    """The logical axis names of ``model``'s params for examples of ``example_shape``: a tree
    like the params of one ``jax.sharding.PartitionSpec`` each, of logical names (e.g.
    ``PartitionSpec("features_in", "features")``), read from an abstract ``init`` (nothing
    is computed); a parameter without names gets ``PartitionSpec()``. Map them to mesh axes
    with ``nn.logical_to_mesh_axes`` (:func:`easgd_jax.parallel.mesh.fsdp_plan` does)."""
    sample = jnp.zeros((1, *example_shape), jnp.float32)
    with naming():
        abstract = jax.eval_shape(
            lambda: model.init(jax.random.PRNGKey(0), sample, train=False))["params"]
    return nn.get_partition_spec(abstract)

