"""Algorithms looked up by name, so that a config (or a sweep) is plain data.

``get_algorithm(name, axis_name=..., **hparams)`` builds the transformation; the hparams
are checked against the constructor's signature first, so a misspelled or missing one fails
with the list of accepted names before anything is traced. Grouped algorithms (multi-leader
LSGD) also take ``group_axis_name``; :func:`is_grouped` tells them apart.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import optax

from easgd_jax.algorithms.amsgrad_async import amsgrad_sync
from easgd_jax.algorithms.averaging import asgd, data_parallel_sgd, msgd, mvasgd, sgd
from easgd_jax.algorithms.downpour import adownpour, downpour, mdownpour, mvadownpour
from easgd_jax.algorithms.elastic import eamsgd, easgd
from easgd_jax.algorithms.leader import lsgd_multi_nesterov, lsgd_nesterov

# Constructors whose arguments are all plain data (a config can hold them): the optimizer-
# wrapping forms (elastic_averaging, lsgd, lsgd_multi) are for code, not configs.
_REGISTRY: dict[str, Callable[..., optax.GradientTransformation]] = {
    # Elastic averaging (Zhang et al., 2015).
    "easgd": easgd,
    "eamsgd": eamsgd,
    # The EASGD paper's baselines.
    "downpour": downpour,
    "mdownpour": mdownpour,
    "adownpour": adownpour,
    "mvadownpour": mvadownpour,
    "sgd": sgd,
    "msgd": msgd,
    "asgd": asgd,
    "mvasgd": mvasgd,
    "data_parallel_sgd": data_parallel_sgd,
    # Leader SGD (Teng et al., 2019).
    "lsgd_nesterov": lsgd_nesterov,
    "lsgd_multi_nesterov": lsgd_multi_nesterov,
    # Synchronous parallel AMSGrad, the baseline of APAM (Xu et al., 2020).
    "amsgrad_sync": amsgrad_sync,
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


AXIS_ARGUMENTS = ("axis_name", "group_axis_name")


def hyperparameter_names(name: str) -> list[str]:
    """The hyperparameters ``name`` accepts (all but the axis names)."""
    params = inspect.signature(_lookup(name)).parameters
    return [p for p in params if p not in AXIS_ARGUMENTS]


def is_grouped(name: str) -> bool:
    """Whether ``name`` runs on a 2-D (groups x workers) layout: takes ``group_axis_name``."""
    return "group_axis_name" in inspect.signature(_lookup(name)).parameters


def _lookup(name: str) -> Callable[..., optax.GradientTransformation]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown algorithm {name!r}; known: {', '.join(algorithm_names())}.") from None


def get_algorithm(
    name: str, *, axis_name: Any = "workers", group_axis_name: Any = None, **hparams: Any
) -> optax.GradientTransformation:
    """Builds the registered algorithm ``name`` with ``hparams`` over ``axis_name``.

    ``group_axis_name`` is passed to grouped algorithms only (their ``axis_name`` then spans
    the workers of one group).
    """
    constructor = _lookup(name)
    check_hyperparameters(name, hparams)
    axes = {"axis_name": axis_name}
    if is_grouped(name) and group_axis_name is not None:
        axes["group_axis_name"] = group_axis_name
    return constructor(**axes, **hparams)


def check_hyperparameters(name: str, hparams: Mapping[str, Any]) -> None:
    """Raises ValueError for hyperparameters ``name`` does not take or misses."""
    params = inspect.signature(_lookup(name)).parameters
    allowed = hyperparameter_names(name)
    unknown = sorted(set(hparams) - set(allowed))
    if unknown:
        raise ValueError(
            f"algorithm {name!r} does not take {', '.join(unknown)}; it takes "
            f"{', '.join(allowed)}.")
    missing = [p for p in allowed
               if params[p].default is inspect.Parameter.empty and p not in hparams]
    if missing:
        raise ValueError(f"algorithm {name!r} needs {', '.join(missing)}.")
