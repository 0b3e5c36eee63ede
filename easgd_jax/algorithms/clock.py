"""The shared communication clock of the periodic algorithms, and the phase argument.

EASGD, EAMSGD (Zhang, Choromanska & LeCun, NIPS 2015, arXiv 1412.6651, Algorithms 1-2),
DOWNPOUR and its averaging variants, Leader SGD and DiLoCo communicate when tau divides their
clock c (``count`` in their states, or ``count + 1`` for DiLoCo's closing outer step), which
every worker advances in lockstep:

    communicate(operand)   if c mod tau == 0
    skip(operand)          otherwise

Written as ``lax.cond`` on the clock, each step decides at run time: every step then carries
the communication state through a conditional, and under ``vmap`` (several workers per
device) the conditional becomes a ``select`` that runs the collective every step.

A caller that knows the phase of the clock when it traces a step says so with the extra
argument ``communicate`` of the transformation's ``update`` (:data:`COMMUNICATE`):

    tx.update(grads, state, params, communicate=True)    # a step where tau | c
    tx.update(grads, state, params, communicate=False)   # a step where it does not
    tx.update(grads, state, params)                      # None: the clock decides

``optax.chain`` forwards it to every transformation that takes extra arguments, and
:func:`easgd_jax.parallel.make_round` passes it for the two kinds of steps it traces (a round
of whole periods that starts at a multiple of tau). :func:`on_clock` then traces only the
branch the clock would take, and the step has no conditional at all. The clock still
advances, so the state is the same either way. The caller guarantees the phase: a step
traced with ``communicate=True`` must run exactly when the clock is a multiple of the
period (of every algorithm in it), one traced with ``False`` exactly when it is not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
from jax import lax

COMMUNICATE = "communicate"  # the extra argument of ``update`` that carries the phase


def phase_argument(extra_args: Mapping[str, Any]) -> tuple[bool | None, dict[str, Any]]:
    """Splits an update's extra keyword arguments into the phase and the others.

    Returns ``(communicate, rest)``: ``communicate`` is None (absent or None: the clock
    decides), True or False; ``rest`` the other extra arguments (a wrapping transformation
    forwards them to its inner optimizer). ValueError for anything else, e.g. a traced
    array: the phase chooses the traced program, so it must be known while tracing.
    """
    rest = dict(extra_args)
    phase = rest.pop(COMMUNICATE, None)
    if phase is not None and not isinstance(phase, bool):
        raise ValueError(
            f"{COMMUNICATE}= must be None (the clock decides at run time), True or False (the "
            f"phase known when the step is traced); got {phase!r}.")
    return phase, rest


def on_clock(count: jax.Array, period: int, communicate: Callable[[Any], Any],
             skip: Callable[[Any], Any], operand: Any, phase: bool | None = None) -> Any:
    """``communicate(operand)`` if ``count % period == 0`` else ``skip(operand)``.

    ``phase`` None: a ``lax.cond`` on the clock. The predicate is the shared clock, identical
    on every worker: the collectives inside ``communicate`` are entered by all workers or
    by none. ``phase`` True / False (the caller's ``communicate`` argument, see the module
    docstring): that branch alone, traced without a conditional.
    """
    if phase is None:
        return lax.cond(count % period == 0, communicate, skip, operand)
    return communicate(operand) if phase else skip(operand)
