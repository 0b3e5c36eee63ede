"""Which variable an algorithm is evaluated on, and which of its state it reports.

The EASGD paper reports losses and errors of the CENTER x~ (for ADOWNPOUR/MVADOWNPOUR of
the averaged variable z); Leader SGD is evaluated on its (global) leader, the worker the
others are pulled toward; any other algorithm on worker 0's parameters. Found by field
name in the optimizer state, so wrappers need no special case.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

# Searched in this order; the first field found is the evaluation point.
EVALUATION_FIELDS = ("average", "center")


def evaluation_params(opt_state: optax.OptState, params: optax.Params) -> optax.Params:
    """The parameters to evaluate: the state's ``average``, else its ``center``, else params."""
    for field in EVALUATION_FIELDS:
        found = optax.tree_utils.tree_get(opt_state, field)
        if found is not None:
            return found
    return params


def evaluation_worker(opt_state: optax.OptState) -> jax.Array:
    """Index (along the stacked worker axis) of the copy to evaluate: the last global leader,
    else the last leader (LSGD, identical on every worker), else 0 (also before the first
    leader is chosen)."""
    for field in ("global_leader", "leader"):
        found = optax.tree_utils.tree_get(opt_state, field)
        if found is not None:
            return jnp.maximum(jnp.asarray(found).reshape(-1)[0], 0)
    return jnp.zeros([], jnp.int32)


# Integer state fields worth a line in the metrics, e.g. which worker led (LSGD).
REPORTED_FIELDS = ("leader", "global_leader")


def reported_state(opt_state: optax.OptState) -> dict[str, object]:
    """The ``REPORTED_FIELDS`` present in ``opt_state``, by name."""
    found = {}
    for field in REPORTED_FIELDS:
        value = optax.tree_utils.tree_get(opt_state, field)
        if value is not None:
            found[field] = value
    return found
