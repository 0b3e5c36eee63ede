"""The shared communication clock of the periodic algorithms.

EASGD, EAMSGD (Zhang, Choromanska & LeCun, NIPS 2015, arXiv 1412.6651, Algorithms 1-2),
DOWNPOUR and its averaging variants, and Leader SGD communicate when tau divides the local
clock t (``count`` in their states), which every worker advances in lockstep:

    communicate(operand)   if t mod tau == 0
    skip(operand)          otherwise

Written as ``lax.cond`` on the clock, each step decides at run time: every step then
carries the communication state through a conditional, and under ``vmap`` (several
workers per device) the conditional becomes a ``select`` that runs the collective every
step. An executor that knows the phase of the clock when it traces a step (a round of
whole periods that starts at a multiple of tau, see :func:`easgd_jax.parallel.make_round`)
declares it with :func:`known_phase`; :func:`on_clock` then traces only the branch that
the clock would take, and the step has no conditional at all. The clock still advances,
so the state is the same either way.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jax
from jax import lax

_PHASE = threading.local()  # jax traces in the calling thread


@contextlib.contextmanager
def known_phase(communicate: bool) -> Iterator[None]:
    """Traces the steps inside as communication steps (``True``) or local steps (``False``).

    Only for an executor that guarantees it: the step so traced must run exactly when the
    clock is (``True``) or is not (``False``) a multiple of the period of every algorithm in
    it. Nesting restores the outer phase on exit.

    The phase is read while tracing, and jax caches traces by function and argument types,
    not by this phase: a function traced under one phase must not be reused, as the same
    object, under the other (e.g. one ``jax.jit(tx.update)`` called inside both kinds of
    steps). :func:`easgd_jax.parallel.make_round` traces each phase through its own
    function.
    """
    previous = getattr(_PHASE, "value", None)
    _PHASE.value = bool(communicate)
    try:
        yield
    finally:
        _PHASE.value = previous


def current_phase() -> bool | None:
    """The phase declared by :func:`known_phase` around this trace, or None."""
    return getattr(_PHASE, "value", None)


def on_clock(count: jax.Array, period: int, communicate: Callable[[Any], Any],
             skip: Callable[[Any], Any], operand: Any) -> Any:
    """``communicate(operand)`` if ``count % period == 0`` else ``skip(operand)``.

    A ``lax.cond`` on the clock, or, under :func:`known_phase`, the declared branch alone.
    The predicate is the shared clock, identical on every worker: the collectives inside
    ``communicate`` are entered by all workers or by none.
    """
    phase = current_phase()
    if phase is None:
        return lax.cond(count % period == 0, communicate, skip, operand)
    return communicate(operand) if phase else skip(operand)
