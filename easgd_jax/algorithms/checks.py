"""Argument checks shared by the algorithm constructors.

Every constructor checks its hyperparameters when it is called, before any tracing or
compilation, and raises a ``ValueError`` that names the argument, the bad value and what
is allowed.

A hyperparameter may be a Python number, a NumPy scalar or a 0-d JAX array: that is what
``optax.inject_hyperparams`` passes (``jnp.asarray`` of the value at ``init``, the state's
copy, possibly a tracer, at every ``update``). Concrete values are checked; a tracer, whose
value is unknown while tracing, is accepted as it is (its concrete value was checked when
the transformation was built).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

_SKIP = object()  # a traced value: unknown while tracing, accepted unchecked


def _number(value: Any, integral: bool = False) -> Any:
    """``value`` as a Python number, :data:`_SKIP` for a scalar tracer, or None when it is
    not a real scalar (nor a 0-d array of a real, non-boolean dtype)."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, numbers.Real):
        if integral and not isinstance(value, numbers.Integral):
            return None
        return value
    if isinstance(value, jax.Array | np.ndarray):
        kind = np.dtype(value.dtype).kind
        if value.shape != () or kind not in ("iu" if integral else "iuf"):
            return None
        if isinstance(value, jax.core.Tracer):
            return _SKIP
        return value.item()
    return None


def scalar(value: Any) -> Any:
    """A checked hyperparameter as used in arithmetic: a Python float for a concrete value
    of any type, a JAX array (a tracer under ``inject_hyperparams``) as it is."""
    if isinstance(value, jax.core.Tracer):
        return value
    return float(value)


def check_rate(name: str, value: optax.ScalarOrSchedule) -> None:
    """A learning rate: a non-negative number (or 0-d array) or an optax schedule."""
    if callable(value):
        return
    number = _number(value)
    if number is None:
        raise ValueError(
            f"{name} must be a non-negative number or an optax schedule, got {value!r}.")
    if number is not _SKIP and not number >= 0:  # also rejects NaN
        raise ValueError(f"{name} must be >= 0, got {value!r}.")


def check_interval(name: str, value: float, low: float, high: float) -> None:
    """A number (or 0-d array) in the closed interval [low, high]."""
    number = _number(value)
    if number is None:
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}.")
    if number is not _SKIP and not low <= number <= high:  # also rejects NaN
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}.")


def check_period(name: str, value: int) -> None:
    """A communication period (or a window length): an integer >= 1 (or a 0-d integer
    array)."""
    number = _number(value, integral=True)
    if number is None or (number is not _SKIP and number < 1):
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")


def check_positive(name: str, value: float) -> None:
    """A number (or 0-d array) > 0."""
    number = _number(value)
    if number is None or (number is not _SKIP and not number > 0):
        raise ValueError(f"{name} must be a number > 0, got {value!r}.")


def is_concrete(*values: Any) -> bool:
    """Whether none of ``values`` is a tracer (their relations can be checked now)."""
    return not any(isinstance(v, jax.core.Tracer) for v in values)


def check_momentum(value: float, name: str = "momentum") -> None:
    """A momentum delta in [0, 1)."""
    check_interval(name, value, 0.0, 1.0)
    if _number(value) == 1.0:
        raise ValueError(f"{name} must be < 1, got {value!r}.")


def check_moving_average_rate(value: float) -> None:
    """The constant rate a of a moving average, in (0, 1] (0 would freeze the average)."""
    check_interval("moving_average_rate", value, 0.0, 1.0)
    if _number(value) == 0.0:
        raise ValueError(
            f"moving_average_rate must be in (0, 1] (0 would freeze the average), got "
            f"{value!r}.")


def check_axis_name(axis_name: object) -> None:
    """A collective axis name: a string or a non-empty tuple of strings."""
    names = axis_name if isinstance(axis_name, tuple) else (axis_name,)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(
                f"axis_name must be a non-empty string or a tuple of them, got {axis_name!r}.")


def schedule_value(rate: optax.ScalarOrSchedule) -> Callable:
    """Returns ``count -> rate`` for a constant or an optax schedule."""
    return rate if callable(rate) else (lambda _count: rate)
