"""What a synchronous exchange sends: streaming fragments and a compressed message.

Shared by DiLoCo (:mod:`easgd_jax.algorithms.outer`) and elastic averaging
(:mod:`easgd_jax.algorithms.elastic`); both features are off by default, and then the
exchange is the one of the unfragmented, uncompressed algorithm, operation for operation.

**Streaming fragments** (Streaming DiLoCo, Douillard et al. 2025, arXiv 2501.18512),
``num_fragments = F`` dividing the period H: the parameters, raveled into one vector of P
numbers (``jax.flatten_util.ravel_pytree``, leaf order), are cut into F CONTIGUOUS slices of
P // F or P // F + 1 numbers (``numpy.array_split``): equal sizes whatever the leaves,
so that the peak bytes of one exchange drop F-fold (whole leaves would leave the largest
matrix of a model in one fragment). Fragment f is exchanged at the steps where the
unfragmented exchange happens, shifted by f H / F:

    exchange clock s = H / F;  at an exchange step of clock value c (c mod s == 0):
    fragment f = (c / s) mod F

(c = t for elastic averaging, whose exchange opens a period; c = t + 1 for DiLoCo, whose
outer step closes one). So an exchange of P / F numbers happens every s steps: the same
bytes per step as unfragmented, in F-fold smaller pieces. Each fragment keeps its own outer
optimizer state, built on its slice; the other fragments' workers and center are untouched
by its exchange. F = 1 is the unfragmented algorithm exactly (no raveling at all). The
fragment index is dynamic, a ``lax.switch`` over F branches, each with its own static slice
and all-reduce: with one worker per device (``shard_map``) it stays a real conditional and
ONE all-reduce of P / F numbers runs per exchange; with several vmapped workers per device
the switch becomes a select that runs all F branches' all-reduces (as an unknown-phase
``lax.cond`` does, see :mod:`easgd_jax.algorithms.clock`). For the executor's known-phase
rounds the algorithm's clock period is s (``training.config.round_period`` divides
``config.algorithm.period`` by ``num_fragments``).

**Compressed exchange**, ``exchange_dtype`` (e.g. ``"bfloat16"``): the all-reduced message
m_i is cast to ``exchange_dtype`` before the collective, summed in it (the wire format),
and the sum cast back to the center's dtype; the center and the outer state stay float32.
What is compressed is always a DIFFERENCE from the center (DiLoCo: the displacement
x_i - x~; elastic averaging: alpha (x_i - x~)), never x_i itself: the rounding error is then
relative to the (small) displacement, and, since the center is float32 and the workers
restart from / are pulled toward it, it does not accumulate in the center from one exchange
to the next. With ``error_feedback=True`` each worker keeps the rounding residual e_i of its
last cast (in its optimizer state, float32, shaped like the center) and adds it to its next
message:

    r_i = m_i + e_i;   wire_i = cast(r_i);   e_i <- r_i - wire_i        (per fragment slice)

so that what the cast dropped is sent later instead of lost. The rounding of the sum of the
p casts in ``exchange_dtype`` (the all-reduce itself) is not fed back, and it depends on the
order the all-reduce adds in: with p > 2 workers, the same run on another layout (workers
per device) differs at that rounding (about 1e-2 after a few bfloat16 exchanges on the test
quadratics), where the uncompressed exchange agrees to float32 rounding.

The agreement check of the replicated centers rides in the same narrow all-reduce, its
float32 checksums sent as their bytes (:func:`easgd_jax.algorithms.collectives.
tree_psum_checking` with ``wire_dtype``), so a compressed exchange is still ONE all-reduce.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.flatten_util import ravel_pytree

from easgd_jax.algorithms.clock import on_clock
from easgd_jax.algorithms.collectives import check_on_disagreement, tree_psum_checking


def check_exchange(period: Any, num_fragments: int | None, exchange_dtype: Any,
                   error_feedback: bool) -> tuple[int, Any]:
    """Checks the exchange options; returns ``(F, dtype or None)``.

    ``num_fragments`` None or 1: not fragmented; else an integer >= 1 dividing ``period``.
    ``exchange_dtype`` None: not compressed; else a floating dtype (or its name) with at
    least bfloat16's 8 significant bits. ``error_feedback`` needs an ``exchange_dtype``.
    """
    fragments = 1 if num_fragments is None else num_fragments
    if isinstance(fragments, bool) or not isinstance(fragments, int | np.integer) or fragments < 1:
        raise ValueError(f"num_fragments must be None or an integer >= 1, got {num_fragments!r}.")
    fragments = int(fragments)
    if fragments > 1 and (not isinstance(period, int | np.integer) or period % fragments):
        raise ValueError(f"num_fragments ({fragments}) must divide the period ({period!r}): "
                         "fragment f is exchanged every period steps, shifted by f period / F.")
    if not isinstance(error_feedback, bool):
        raise ValueError(f"error_feedback must be True or False, got {error_feedback!r}.")
    if exchange_dtype is None:
        if error_feedback:
            raise ValueError("error_feedback=True needs an exchange_dtype (e.g. 'bfloat16'): "
                             "without a cast there is no rounding residual to feed back.")
        return fragments, None
    try:
        dtype = jnp.dtype(exchange_dtype)
    except TypeError:
        raise ValueError(f"exchange_dtype must be a floating dtype such as 'bfloat16', got "
                         f"{exchange_dtype!r}.") from None
    if not jnp.issubdtype(dtype, jnp.floating) or jnp.finfo(dtype).nmant < 7:
        raise ValueError(f"exchange_dtype must be a floating dtype with at least 8 significant "
                         f"bits (bfloat16, float16, float32), got {dtype}.")
    return fragments, dtype


def fragment_bounds(size: int, fragments: int) -> list[tuple[int, int]]:
    """The F contiguous slices ``[lo, hi)`` of a raveled vector of ``size`` numbers, of
    sizes ``size // F`` or ``size // F + 1`` (the first ``size % F`` are one longer)."""
    edges = np.cumsum([0] + [len(a) for a in np.array_split(np.arange(size), fragments)])
    return [(int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


class Fragment:
    """Selects fragment ``[lo, hi)`` of a pytree raveled in leaf order, and puts it back.

    ``Fragment(None)`` is the whole tree, untouched (F = 1: no raveling).
    """

    def __init__(self, bounds: tuple[int, int] | None):
        self.bounds = bounds

    def take(self, tree: Any) -> Any:
        """The fragment of ``tree``: the tree itself, or a slice of its raveled vector."""
        if self.bounds is None:
            return tree
        lo, hi = self.bounds
        return ravel_pytree(tree)[0][lo:hi]

    def put(self, tree: Any, part: Any) -> Any:
        """``tree`` with its fragment replaced by ``part`` (cast to the raveled dtype)."""
        if self.bounds is None:
            return part
        lo, hi = self.bounds
        flat, unravel = ravel_pytree(tree)
        return unravel(flat.at[lo:hi].set(part.astype(flat.dtype)))


def fragments_of(tree: Any, fragments: int) -> list[Fragment]:
    """The F :class:`Fragment` s of ``tree`` (one whole-tree fragment when F = 1)."""
    if fragments == 1:
        return [Fragment(None)]
    size = ravel_pytree(tree)[0].size
    if size < fragments:
        raise ValueError(f"num_fragments ({fragments}) exceeds the number of parameters "
                         f"({size}).")
    return [Fragment(b) for b in fragment_bounds(size, fragments)]


def init_outer(outer: optax.GradientTransformation, center: Any, fragments: int) -> Any:
    """The outer optimizer's state: on the center (F = 1), or a tuple of F states, one per
    fragment, each built on its slice of the raveled center."""
    parts = fragments_of(center, fragments)
    if fragments == 1:
        return outer.init(center)
    return tuple(outer.init(part.take(center)) for part in parts)


def on_fragment(clock_value: jax.Array, fragments: int, sub_period: int,
                branch: Callable[[int, Any], Any], operand: Any) -> Any:
    """``branch(f, operand)`` for the fragment f = (clock_value // sub_period) mod F of this
    exchange step: directly when F = 1, else a ``lax.switch`` over F static branches."""
    if fragments == 1:
        return branch(0, operand)
    index = (clock_value // sub_period) % fragments
    return lax.switch(index, [lambda op, f=f: branch(f, op) for f in range(fragments)],
                      operand)


def replace(states: Sequence[Any], index: int, new: Any) -> tuple[Any, ...]:
    """``states`` (a tuple of per-fragment states) with entry ``index`` replaced."""
    return (*states[:index], new, *states[index + 1:])


def compress(message: Any, residual: Any, dtype: Any) -> tuple[Any, Any]:
    """The cast of one message, with error feedback when ``residual`` is not None.

        r = message + residual;   wire = cast(r, dtype);   residual' = r - wire

    Returns ``(wire, residual')`` (``residual'`` None without feedback), each leaf of
    ``residual'`` in its message leaf's dtype.
    """
    if residual is not None:
        message = jax.tree.map(lambda m, e: m + e.astype(m.dtype), message, residual)
    wire = jax.tree.map(lambda m: m.astype(dtype), message)
    if residual is None:
        return wire, None
    return wire, jax.tree.map(lambda m, w: m - w.astype(m.dtype), message, wire)


def decompress(total: Any, like: Any) -> Any:
    """The all-reduced ``total`` cast back to the dtypes of ``like`` (the center's part)."""
    return jax.tree.map(lambda s, c: s.astype(c.dtype), total, like)


class Exchange(NamedTuple):
    """The periodic, possibly fragmented and compressed, exchange of a transformation whose
    workers each hold a copy of a center: ONE all-reduce of the workers' messages per
    exchange step, with the agreement check of the copies riding in it.

    Shared by elastic averaging (the message alpha (x_i - x~)) and DiLoCo (x_i, or the
    displacement x_i - x~ when compressed); each says what it sends (``message``) and what
    it does with the sum (``apply``), and :meth:`run` does the rest: the clock, the
    fragment of this step, the cast with error feedback, the all-reduce with the check,
    the per-fragment outer states and putting the fragment back.

    Attributes:
        fragments: F >= 1.
        sub_period: the exchange clock s = tau / F (an exchange step when s divides the
            clock value).
        wire_dtype: the dtype of the all-reduce (None: the center's).
        error_feedback: each worker keeps its rounding residual e_i.
        axis_name: the worker axis of the all-reduce.
        on_disagreement: what the check does when the copies differ
            (:func:`easgd_jax.algorithms.collectives.check_on_disagreement`).
    """

    fragments: int
    sub_period: int
    wire_dtype: Any
    error_feedback: bool
    axis_name: Any
    on_disagreement: str

    def init(self, center: Any, outer: optax.GradientTransformation | None
             ) -> tuple[Any, Any]:
        """``(outer_state, residual)`` of a worker's state: the outer optimizer's state
        (:func:`init_outer`; None without one) and e_i = 0 (None without error feedback)."""
        outer_state = None if outer is None else init_outer(outer, center, self.fragments)
        residual = jax.tree.map(jnp.zeros_like, center) if self.error_feedback else None
        return outer_state, residual

    def all_reduce(self, message: Any, center: Any, residual: Any, part: Fragment
                   ) -> tuple[Any, Any, Any, jax.Array]:
        """sum_i message_i and the checked center, in ONE all-reduce.

        Uncompressed: ``tree_psum_checking(message, center)``. Compressed: r_i = m_i + e_i,
        w_i = cast(r_i), e_i <- r_i - w_i (the fragment of the residual), the all-reduce in
        ``wire_dtype`` and the sum cast back to the message's dtypes.

        Returns ``(total, center, residual, agree)``: the center NaN where the copies
        differed, the residual updated on this fragment (None without error feedback), and
        whether the copies agreed.
        """
        if self.wire_dtype is None:
            total, center, agree = tree_psum_checking(
                message, center, self.axis_name, on_disagreement=self.on_disagreement)
            return total, center, residual, agree
        wire, residual_part = compress(
            message, None if residual is None else part.take(residual), self.wire_dtype)
        total, center, agree = tree_psum_checking(wire, center, self.axis_name,
                                                  wire_dtype=self.wire_dtype,
                                                  on_disagreement=self.on_disagreement)
        if residual is not None:
            residual = part.put(residual, residual_part)
        return decompress(total, message), center, residual, agree

    def run(self, clock_value: jax.Array, phase: bool | None, center: Any, outer_state: Any,
            residual: Any, copies_agree: jax.Array,
            message: Callable[[Fragment, Any], tuple[Any, Any]],
            apply: Callable[..., tuple[Any, Any, Any]], idle: Any) -> tuple[Any, tuple]:
        """One step's exchange, if the clock says so.

        At an exchange step (s divides ``clock_value``; or as ``phase`` says, see
        :func:`easgd_jax.algorithms.clock.on_clock`), for the fragment f of the step
        (:func:`on_fragment`):

            m, aux = message(part, center)                      (this worker's message)
            total, center, residual, agree = all_reduce(m, ...)  (sum over workers)
            out, center_f, outer_f = apply(part, total, part.take(center), outer_f, aux)

        and the center's fragment f becomes center_f, ``copies_agree`` (the state's record,
        :data:`~easgd_jax.algorithms.collectives.AGREEMENT_FIELD`) ANDed with ``agree``; at
        other steps the result is ``idle`` and nothing changes. Returns
        ``(out, (center, outer_state, residual, copies_agree))``.
        """
        parts = fragments_of(center, self.fragments)
        split = self.fragments > 1 and outer_state is not None

        def fragment_step(f: int, operand: tuple) -> tuple[Any, tuple]:
            part = parts[f]
            center, outer_states, residual, copies_agree = operand
            outer_f = outer_states[f] if split else outer_states
            sent, aux = message(part, center)
            total, center, residual, agree = self.all_reduce(sent, center, residual, part)
            out, center_f, outer_f = apply(part, total, part.take(center), outer_f, aux)
            outer_states = replace(outer_states, f, outer_f) if split else outer_f
            return out, (part.put(center, center_f), outer_states, residual,
                         copies_agree & agree)

        def exchange_step(operand: tuple) -> tuple[Any, tuple]:
            return on_fragment(clock_value, self.fragments, self.sub_period, fragment_step,
                               operand)

        return on_clock(clock_value, self.sub_period, exchange_step,
                        lambda operand: (idle, operand),
                        (center, outer_state, residual, copies_agree), phase)


def make_exchange(period: Any, num_fragments: int | None, exchange_dtype: Any,
                  error_feedback: bool, axis_name: Any, on_disagreement: str) -> Exchange:
    """The checked :class:`Exchange` of a transformation's options (:func:`check_exchange`,
    :func:`easgd_jax.algorithms.collectives.check_on_disagreement`)."""
    check_on_disagreement(on_disagreement)
    fragments, wire_dtype = check_exchange(period, num_fragments, exchange_dtype,
                                           error_feedback)
    return Exchange(fragments, period // fragments, wire_dtype, error_feedback, axis_name,
                    on_disagreement)
