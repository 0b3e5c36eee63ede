"""Argument checks shared by the algorithm constructors.

Every constructor checks its hyperparameters when it is called, before any tracing or
compilation, and raises a ``ValueError`` that names the argument, the bad value and what
is allowed.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import optax


def check_rate(name: str, value: optax.ScalarOrSchedule) -> None:
    """A learning rate: a non-negative number or an optax schedule (a callable)."""
    if callable(value):
        return
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ValueError(
            f"{name} must be a non-negative number or an optax schedule, got {value!r}.")
    if not value >= 0:  # also rejects NaN
        raise ValueError(f"{name} must be >= 0, got {value!r}.")


def check_interval(name: str, value: float, low: float, high: float) -> None:
    """A number in the closed interval [low, high]."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}.")
    if not low <= value <= high:  # also rejects NaN
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}.")


def check_period(name: str, value: int) -> None:
    """A communication period: an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")


def check_momentum(value: float) -> None:
    """A momentum delta in [0, 1)."""
    check_interval("momentum", value, 0.0, 1.0)
    if value == 1.0:
        raise ValueError("momentum must be < 1, got 1.0.")


def check_moving_average_rate(value: float) -> None:
    """The constant rate a of a moving average, in (0, 1] (0 would freeze the average)."""
    check_interval("moving_average_rate", value, 0.0, 1.0)
    if value == 0.0:
        raise ValueError(
            "moving_average_rate must be in (0, 1] (0 would freeze the average), got 0.0.")


def check_axis_name(axis_name: object) -> None:
    """A collective axis name: a string or a non-empty tuple of strings."""
    names = axis_name if isinstance(axis_name, tuple) else (axis_name,)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(
                f"axis_name must be a non-empty string or a tuple of them, got {axis_name!r}.")


def schedule_value(rate: optax.ScalarOrSchedule) -> Callable:
    """Returns ``count -> rate`` for a constant or an optax schedule."""
    return rate if callable(rate) else (lambda _count: rate)
