"""Which variable an algorithm is evaluated on, and which of its state it reports.

The EASGD paper reports losses and errors of the CENTER x~ (for ADOWNPOUR/MVADOWNPOUR of
the averaged variable z); an algorithm without either is evaluated on the worker's own
parameters. Found by field name in the optimizer state, so wrappers need no special case.
"""

from __future__ import annotations

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
