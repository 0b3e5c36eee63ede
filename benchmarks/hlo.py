"""Collectives read from compiled HLO text: which ones, how many bytes, under which branch.

``parse_collectives(text)`` takes the text of a compiled XLA program (``jitted.lower(*args)
.compile().as_text()``) and returns one :class:`Collective` per collective instruction
(all-reduce, all-gather, reduce-scatter, all-to-all, collective-permute, collective-broadcast
and their async ``-start`` forms; the ``-done`` halves are not counted twice) with

- ``op``: the HLO opcode, e.g. ``"all-reduce"``;
- ``bytes``: the payload ONE participant contributes per execution (its operand): the result
  size for all-reduce / all-to-all / collective-permute, result / group size for all-gather,
  result * group size for reduce-scatter. The bytes a ring all-reduce actually puts on the
  wire per participant are ``2 (n - 1) / n`` of that (:func:`ring_allreduce_wire_bytes`);
- ``inside_conditional``: whether the instruction is reachable from the entry computation
  only through a branch of a ``conditional`` (``lax.cond`` / ``lax.switch``). How often that
  branch runs is a property of the predicate, not of the HLO: for the algorithms here it is
  the shared clock ``count % period == 0``, i.e. once every ``period`` steps;
- ``trip_count``: the product of the known trip counts of the ``while`` loops around it
  (``lax.scan`` over the local steps of a round), ``None`` when a loop's count is unknown.

The parser reads only the text, so it works for programs compiled on any backend, and the
module imports nothing but the standard library.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import NamedTuple

COLLECTIVE_OPS = (
    "all-reduce",
    "all-gather",
    "reduce-scatter",
    "all-to-all",
    "ragged-all-to-all",
    "collective-permute",
    "collective-broadcast",
)

DTYPE_BYTES = {
    "pred": 1, "s4": 1, "u4": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
    "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
}

_SHAPE = re.compile(r"\b(pred|[suf]\d+|bf16|f8e\w+?|c64|c128)\[([\d,]*)\]")
_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_OPCODE = re.compile(r"\s*([a-z][a-z0-9\-]*)\(")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_TRUE_FALSE = re.compile(r"(true|false)_computation=%?([\w.\-]+)")
_BODY = re.compile(r"\bbody=%?([\w.\-]+)")
_CONDITION = re.compile(r"\bcondition=%?([\w.\-]+)")
_CALLS = re.compile(r"\b(?:calls|to_apply)=(\{[^}]*\}|%?[\w.\-]+)")
_TRIP_COUNT = re.compile(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"(\d+)"')
_GROUPS_LIST = re.compile(r"replica_groups=\{(\{[\d,\s]*\}(?:\s*,\s*\{[\d,\s]*\})*)?\}")
_GROUPS_IOTA = re.compile(r"replica_groups=\[([\d,]+)\]<=")


class Collective(NamedTuple):
    """One collective instruction of a compiled program (see the module docstring)."""

    op: str
    bytes: int
    inside_conditional: bool
    dtype: str
    elements: int
    name: str
    computation: str
    group_size: int | None
    trip_count: int | None
    branches: tuple[tuple[str, int, int], ...]
    """(conditional instruction, branch index, number of branches) from outer to inner."""


class _Instruction(NamedTuple):
    name: str
    result_type: str
    opcode: str
    text: str


def _split_type(rest: str) -> tuple[str, str]:
    """Splits ``"<type> opcode(...)..."`` into the result type and the remainder."""
    rest = rest.lstrip()
    if not rest.startswith("("):
        head, _, tail = rest.partition(" ")
        return head, tail
    depth = 0
    for i, char in enumerate(rest):
        depth += char == "("
        depth -= char == ")"
        if depth == 0:
            return rest[:i + 1], rest[i + 1:]
    return rest, ""


def shapes(type_text: str) -> list[tuple[str, int]]:
    """``[(dtype, elements), ...]`` of every array shape in an HLO type (tuples flattened)."""
    out = []
    for dtype, dims in _SHAPE.findall(type_text):
        out.append((dtype, math.prod(int(d) for d in dims.split(",") if d)))
    return out


def _nbytes(dtype: str, elements: int) -> int:
    if dtype.startswith("f8"):
        return elements
    return DTYPE_BYTES.get(dtype, 4) * elements


def _group_size(text: str) -> int | None:
    iota = _GROUPS_IOTA.search(text)
    if iota:
        return int(iota.group(1).split(",")[-1])
    groups = _GROUPS_LIST.search(text)
    if groups and groups.group(1):
        first = groups.group(1).split("}")[0].strip("{ ,")
        return len([g for g in first.split(",") if g.strip()])
    return None


def _computations(text: str) -> tuple[dict[str, list[_Instruction]], str | None]:
    """The instructions of every computation, and the name of the entry computation."""
    comps: dict[str, list[_Instruction]] = {}
    entry, current = None, None
    for line in text.splitlines():
        if current is None:
            header = _HEADER.match(line)
            if header and not line.startswith((" ", "\t")):
                current = header.group(2)
                comps[current] = []
                if header.group(1):
                    entry = current
            continue
        if line.startswith("}"):
            current = None
            continue
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        result_type, rest = _split_type(match.group(2))
        opcode = _OPCODE.match(rest)
        if opcode:
            comps[current].append(
                _Instruction(match.group(1), result_type, opcode.group(1), line))
    return comps, entry


def _names(group: str) -> list[str]:
    return [n.strip().lstrip("%") for n in group.strip("{}").split(",") if n.strip()]


def _callees(inst: _Instruction) -> list[tuple[str, str, int, int]]:
    """``(callee, kind, index, count)`` for every computation ``inst`` calls."""
    text = inst.text.split(", metadata=")[0] + " " + " ".join(
        m.group(0) for m in _TRIP_COUNT.finditer(inst.text))
    out: list[tuple[str, str, int, int]] = []
    if inst.opcode == "conditional":
        branches = _BRANCHES.search(text)
        if branches:
            names = _names(branches.group(1))
        else:  # true_computation/false_computation: HLO's branch 0 is the true branch
            pairs = dict((kind, name) for kind, name in _TRUE_FALSE.findall(text))
            names = [pairs[k] for k in ("true", "false") if k in pairs]
        out += [(name, "branch", i, len(names)) for i, name in enumerate(names)]
    elif inst.opcode == "while":
        trip = _TRIP_COUNT.search(inst.text)
        count = int(trip.group(1)) if trip else -1
        for pattern in (_BODY, _CONDITION):
            found = pattern.search(text)
            if found:
                out.append((found.group(1), "loop", 0, count))
    for group in _CALLS.findall(text):
        out += [(name, "call", 0, 1) for name in _names(group)]
    return out


def _collective_opcode(opcode: str) -> str | None:
    base = opcode.removesuffix("-start")
    return base if base in COLLECTIVE_OPS else None


def _payload(base: str, opcode: str, result_type: str, group: int | None
             ) -> tuple[str, int, int]:
    """(dtype, elements, bytes) one participant contributes: a variadic collective (one
    operand per leaf of a pytree) counts every operand; its dtype is the first's."""
    parts = shapes(result_type)
    if opcode.endswith("-start") and base != "all-reduce" and parts:
        parts = parts[:1]  # async (operand, result, ...) tuples: the operand comes first
    elif opcode.endswith("-start") and base == "all-reduce" and result_type.startswith("(("):
        parts = parts[:len(parts) // 2]
    dtype = parts[0][0] if parts else "?"
    elements = sum(n for _, n in parts)
    nbytes = sum(_nbytes(d, n) for d, n in parts)
    if base == "all-gather" and not opcode.endswith("-start") and group:
        elements, nbytes = elements // group, nbytes // group
    if base == "reduce-scatter" and group:
        elements, nbytes = elements * group, nbytes * group
    return dtype, elements, nbytes


def parse_collectives(text: str) -> list[Collective]:
    """Every collective of a compiled HLO module, with its payload and context.

    A collective in a computation reached along several paths is listed once per path.
    Without an ``ENTRY`` computation every computation counts as top level.
    """
    comps, entry = _computations(text)
    roots = [entry] if entry else list(comps)
    found: list[Collective] = []

    def visit(comp: str, branches: tuple, trip: int | None, seen: frozenset) -> None:
        for inst in comps.get(comp, []):
            base = _collective_opcode(inst.opcode)
            if base:
                group = _group_size(inst.text)
                dtype, elements, nbytes = _payload(base, inst.opcode, inst.result_type, group)
                found.append(Collective(
                    op=base, bytes=nbytes, inside_conditional=bool(branches),
                    dtype=dtype, elements=elements, name=inst.name, computation=comp,
                    group_size=group, trip_count=trip, branches=branches))
            for callee, kind, index, count in _callees(inst):
                if callee in seen or callee not in comps:
                    continue
                inner_branches, inner_trip = branches, trip
                if kind == "branch":
                    inner_branches = (*branches, (inst.name, index, count))
                elif kind == "loop":
                    inner_trip = None if trip is None or count < 0 else trip * count
                visit(callee, inner_branches, inner_trip, seen | {callee})

    for root in roots:
        visit(root, (), 1, frozenset({root}))
    return found


def executions_per_round(c: Collective, branch_rate: float = 1.0) -> float:
    """How often ``c`` runs per call of the program: its loop trip count, times
    ``branch_rate`` (the fraction of iterations whose conditional takes its branch) when it
    sits inside a conditional."""
    trips = 1 if c.trip_count is None else c.trip_count
    return trips * (branch_rate if c.inside_conditional else 1.0)


def bytes_per_step(
    collectives: Iterable[Collective], steps: int, branch_rate: float = 1.0
) -> float:
    """Payload bytes per participant per local step of a round of ``steps`` steps."""
    return sum(c.bytes * executions_per_round(c, branch_rate) for c in collectives) / steps


def ring_allreduce_wire_bytes(payload: float, participants: int) -> float:
    """Bytes a ring all-reduce sends per participant: ``2 (n - 1) / n`` of the payload."""
    return 2.0 * (participants - 1) / participants * payload if participants > 1 else 0.0


_BOOKKEEPING = frozenset({"parameter", "get-tuple-element", "tuple", "constant", "bitcast"})


def ops_per_iteration(text: str, trip_count: int) -> dict[str, int]:
    """Instructions run per iteration of the ``while`` loop with ``trip_count`` iterations.

    Counts the top-level instructions of the loop body (fusions, copies, dots, collectives,
    ...; not the bookkeeping ``parameter`` / ``get-tuple-element`` / ``tuple`` / ``constant``
    / ``bitcast``, not the instructions inside fusions; a nested loop counts as one) under
    ``"body"``, and those of branch i of the conditionals in the body under ``"branch<i>"``.
    On XLA:CPU each counted instruction is roughly one thunk, with a fixed dispatch cost: for
    small models the count, not the arithmetic, sets the time per step. Raises ValueError
    without such a loop.
    """
    comps, entry = _computations(text)
    body = None
    for comp in comps.values():
        for inst in comp:
            trip = _TRIP_COUNT.search(inst.text)
            if inst.opcode == "while" and trip and int(trip.group(1)) == trip_count:
                body = _BODY.search(inst.text.split(", metadata=")[0]).group(1)
    if body is None:
        raise ValueError(f"no while loop with {trip_count} iterations")
    counts: dict[str, int] = {}

    def visit(comp: str, key: str) -> None:
        for inst in comps.get(comp, []):
            if inst.opcode not in _BOOKKEEPING:
                counts[key] = counts.get(key, 0) + 1
            for callee, kind, index, _ in _callees(inst):
                if kind == "branch":
                    visit(callee, f"branch{index}")
                elif inst.opcode == "call" and kind == "call":
                    visit(callee, key)

    visit(body, "body")
    return counts


def compiled_text(jitted, *args) -> str:
    """The compiled HLO text of ``jitted`` (a ``jax.jit`` function) for ``args``."""
    return jitted.lower(*args).compile().as_text()
