"""Small pytree helpers shared by the algorithm families."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def fresh_copy(tree: optax.Params) -> optax.Params:
    """``tree`` in new buffers.

    Every ``init`` stores its copies of the params (the center x~, the average z, the
    master's x) through this: ``jnp.asarray(params)`` under an eager ``jax.vmap(tx.init)``
    returns the params' own arrays, and a step that donates ``(params, opt_state)`` then
    donates one buffer twice.
    """
    return jax.tree.map(lambda a: jnp.array(a, copy=True), tree)
