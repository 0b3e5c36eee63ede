"""One colour and one marker per method, the same in every figure of every report (issue 33,
item 6): a method keeps its look across docs/mnist1d_paper/, docs/local_sgd/ and any sweep.

Families share a hue: the elastic methods are blues (EAMSGD blue, EASGD cyan, EAMSGD with an
outer step purple), the DOWNPOUR family warm (DOWNPOUR red, ADOWNPOUR orange, MVADOWNPOUR
brown, MDOWNPOUR pink), the sequential MSGD grey, LSGD green, the DiLoCo family dark
(DiLoCo black, local SGD navy, streaming DiLoCo olive-green, bfloat16 DiLoCo plum), APAM and
AMSGrad olive. A method not listed gets a colour and marker from its name's CRC32 (the same
in every process and figure) among colours no listed method uses.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

PALETTE: dict[str, tuple[str, str]] = {
    "eamsgd": ("#1f77b4", "o"),
    "easgd": ("#17becf", "s"),
    "eamsgd_outer": ("#9467bd", "P"),
    "downpour": ("#d62728", "v"),
    "adownpour": ("#ff7f0e", "<"),
    "mvadownpour": ("#8c564b", ">"),
    "mdownpour": ("#e377c2", "^"),
    "msgd": ("#7f7f7f", "D"),
    "lsgd": ("#2ca02c", "X"),
    "apam": ("#bcbd22", "*"),
    "amsgrad_sync": ("#6b6b00", "h"),
    "diloco": ("#000000", "p"),
    "local_sgd": ("#393b79", "d"),
    "diloco_f4": ("#637939", "H"),
    "diloco_bf16": ("#7b4173", "8"),
}
_SPARE_COLOURS = ("#e7ba52", "#5254a3", "#ad494a", "#3182bd", "#31a354", "#756bb1",
                  "#636363", "#d6616b")
_SPARE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def style(method: str) -> tuple[str, str]:
    """(colour, marker) of ``method``: :data:`PALETTE`'s, else one chosen by its name."""
    if method in PALETTE:
        return PALETTE[method]
    h = zlib.crc32(method.encode())
    return _SPARE_COLOURS[h % len(_SPARE_COLOURS)], _SPARE_MARKERS[(h // 7) % len(
        _SPARE_MARKERS)]


def styles(methods: Iterable[str]) -> dict[str, tuple[str, str]]:
    """{method: :func:`style`} for ``methods``."""
    return {m: style(m) for m in set(methods)}
