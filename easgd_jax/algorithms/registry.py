"""Algorithms looked up by name, so that a config (or a sweep) is plain data.

``get_algorithm(name, axis_name=..., **hparams)`` builds the transformation; the hparams
are checked against the constructor's signature first, so a misspelled or missing one fails
with the list of accepted names before anything is traced.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import optax

from easgd_jax.algorithms import elastic

_REGISTRY: dict[str, Callable[..., optax.GradientTransformation]] = {
    "easgd": elastic.easgd,
    "eamsgd": elastic.eamsgd,
}


def register(name: str, constructor: Callable[..., optax.GradientTransformation]) -> None:
    """Adds an algorithm; its constructor must take ``axis_name`` as a keyword."""
    if name in _REGISTRY:
        raise ValueError(f"algorithm {name!r} is already registered.")
    if "axis_name" not in inspect.signature(constructor).parameters:
        raise ValueError(f"the constructor of {name!r} must accept axis_name.")
    _REGISTRY[name] = constructor


def algorithm_names() -> list[str]:
    """The registered names, sorted."""
    return sorted(_REGISTRY)


def hyperparameter_names(name: str) -> list[str]:
    """The hyperparameters ``name`` accepts (all but ``axis_name``)."""
    params = inspect.signature(_lookup(name)).parameters
    return [p for p in params if p != "axis_name"]


def _lookup(name: str) -> Callable[..., optax.GradientTransformation]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown algorithm {name!r}; known: {', '.join(algorithm_names())}.") from None


def get_algorithm(
    name: str, *, axis_name: Any = "workers", **hparams: Any
) -> optax.GradientTransformation:
    """Builds the registered algorithm ``name`` with ``hparams`` over ``axis_name``."""
    constructor = _lookup(name)
    check_hyperparameters(name, hparams)
    return constructor(axis_name=axis_name, **hparams)


def check_hyperparameters(name: str, hparams: Mapping[str, Any]) -> None:
    """Raises ValueError for hyperparameters ``name`` does not take or misses."""
    params = inspect.signature(_lookup(name)).parameters
    allowed = [p for p in params if p != "axis_name"]
    unknown = sorted(set(hparams) - set(allowed))
    if unknown:
        raise ValueError(
            f"algorithm {name!r} does not take {', '.join(unknown)}; it takes "
            f"{', '.join(allowed)}.")
    missing = [p for p in allowed
               if params[p].default is inspect.Parameter.empty and p not in hparams]
    if missing:
        raise ValueError(f"algorithm {name!r} needs {', '.join(missing)}.")
