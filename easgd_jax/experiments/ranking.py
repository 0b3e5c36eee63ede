"""Methods ranked within each panel of a grid, every one tested against the panel's best,
and named pairs of methods compared setting by setting (``sweep.report.ranking``).

A panel is one period tau of a grid (its p fixed): the methods run at that tau and the
methods without one (data-parallel baselines, shown in every panel, as the EASGD paper's
Figure 2 draws MSGD beside every tau). Each row is a method's summary row
(:func:`easgd_jax.experiments.stats.summary_row`): the mean final metric over the seeds at its
chosen rate, failures counted as the metric's failure value. Within a panel the methods are
ordered by that mean, and each is compared with the panel's best seed by seed
(:func:`easgd_jax.experiments.stats.paired_test`: a paired t test, the same seed drawing the
same initialisation and data order). A panel tests k - 1 methods against its best, so the
p-values are also given Holm-adjusted within the panel (Holm 1979: the i-th smallest of m
p-values multiplied by m - i + 1, made monotone, capped at 1); "tied with the best" means
the adjusted p is >= 0.05, the method's mean is then not told apart from the best one's.

The pairs (``pairs``: [[A, B], ...]) are the comparisons the sweep was run for, e.g. EAMSGD
against DiLoCo: one line per pair, giving at every setting both ran the mean difference
A - B with its test, and which is lower when the (unadjusted) p < 0.05. They are planned
comparisons, fewer, and are given unadjusted, with the number of settings they are made at.

Written by the report to ``GRID_ranking.md`` per ranked grid
(:func:`easgd_jax.experiments.report.write_report`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from easgd_jax.experiments import metric as metric_lib
from easgd_jax.experiments.stats import SIGNIFICANCE
from easgd_jax.experiments.stats import compare_rows as compare
from easgd_jax.experiments.tables import mean_std

Row = dict[str, Any]


def _mean(row: Row) -> float:
    value = row.get("mean_final_test_error")
    return math.nan if value is None else float(value)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """The Holm step-down adjustment of ``p_values`` (None stays None and is not counted):
    the i-th smallest of the m given is multiplied by m - i + 1, then made non-decreasing
    in that order and capped at 1."""
    order = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(order)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def panels(summary: Sequence[Row], grid: str) -> dict[Any, list[Row]]:
    """{tau: the grid's rows at that tau and those without one, lowest mean first (a row
    without a finished seed last)}; one panel (key None) when no row has a tau."""
    rows = [r for r in summary if r["grid"] == grid]
    taus = sorted({r["tau"] for r in rows} - {None})
    out = {}
    for tau in taus or [None]:
        panel = [r for r in rows if r["tau"] in (tau, None)]
        out[tau] = sorted(panel, key=lambda r: (math.isnan(_mean(r)), _mean(r), r["method"]))
    return out


def _cell(row: Row, metric: metric_lib.Metric) -> str:
    if row.get("mean_final_test_error") is None:
        return "no run done"
    return f"{mean_std(row, metric)} ({row['failed_seeds']}/{row['seeds']} failed)"


def _p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def panel_markdown(panel: Sequence[Row], metric: metric_lib.Metric) -> str:
    """One panel's table: rank, method, mean +- std (failed), chosen rate, the difference
    to the best with its test, the Holm-adjusted p and the verdict."""
    best = panel[0]
    tests = [None] + [compare(r, best) for r in panel[1:]]
    adjusted = holm([None if c is None else c.p_value for c in tests])
    best_tau = next((r["tau"] for r in panel if r["tau"] is not None), None)
    lines = [f"| rank | method | {metric.short} mean +- std (failed) | lr | "
             f"difference to the best ({metric.unit}) | test against the best | Holm p | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for rank, (row, c, p_adj) in enumerate(zip(panel, tests, adjusted, strict=True), start=1):
        tau = " (no period)" if row["tau"] is None and best_tau is not None else ""
        if rank == 1:
            verdict, diff, test = "**best**", "", ""
        elif c is None:
            verdict, diff, test = "no per-seed values", "", ""
        else:
            diff = f"{c.difference * metric.scale:+.{metric.digits}f}"
            test = c.text()
            verdict = ("worse" if p_adj is not None and p_adj < SIGNIFICANCE
                       else "tied with the best")
        lr = row.get("chosen_learning_rate")
        edge = f" ({row['rate_edge']} of grid)" if row.get("rate_edge") in ("top",
                                                                             "bottom") else ""
        lines.append(f"| {rank} | {row['method']}{tau} | {_cell(row, metric)} | "
                     f"{'' if lr is None else f'{lr:g}'}{edge} | {diff} | {test} | "
                     f"{'' if rank == 1 or p_adj is None else _p(p_adj)} | {verdict} |")
    return "\n".join(lines)


def _at(rows: Sequence[Row], method: str, tau: Any) -> Row | None:
    """``method``'s row at ``tau``, or its row without a period (it stands for every tau)."""
    return next((r for r in rows if r["method"] == method and r["tau"] in (tau, None)), None)


def pair_lines(summary: Sequence[Row], grid: str, pairs: Sequence[tuple[str, str]],
               metric: metric_lib.Metric) -> list[str]:
    """One line per (A, B) pair: at every tau of ``grid`` where both have a row (a row
    without a period stands for every tau), A - B, its test, and which is lower when p <
    0.05."""
    rows = [r for r in summary if r["grid"] == grid]
    lines = []
    for a_name, b_name in pairs:
        taus = {r["tau"] for r in rows if r["method"] in (a_name, b_name)}
        items = []
        for tau in sorted(taus - {None}) or [None]:
            a, b = _at(rows, a_name, tau), _at(rows, b_name, tau)
            c = None if a is None or b is None else compare(a, b)
            if c is None:
                continue
            lower = (a_name if c.difference < 0 else b_name) if (
                c.p_value is not None and c.p_value < SIGNIFICANCE) else None
            where = "" if tau is None else f"tau {tau}: "
            verdict = f"**{lower} lower**" if lower else "not told apart"
            diff = f"{c.difference * metric.scale:+.{metric.digits}f}"
            items.append(f"{where}{a_name} - {b_name} = {diff} ({c.text()}), {verdict}")
        if items:
            n = f"{len(items)} setting{'s' * (len(items) > 1)}"
            lines.append(f"- **{a_name} against {b_name}** ({n}): "
                         + "; ".join(items) + ".")
    return lines


def ranking_markdown(summary: Sequence[Row], grid: str,
                     pairs: Sequence[tuple[str, str]] = (),
                     metric: metric_lib.Metric = metric_lib.ERROR) -> str:
    """``GRID_ranking.md``: the module docstring's panels, then its pairs."""
    rows = [r for r in summary if r["grid"] == grid]
    ps = sorted({r["p"] for r in rows})
    out = [f"# Grid {grid}: methods ranked by mean final {metric.label} (p = "
           f"{', '.join(map(str, ps))})", "",
           "Each panel: the methods at one tau and those without one, lowest mean first; "
           "each against the panel's best seed by seed (paired t on the seeds both ran), "
           f"the p-values Holm-adjusted within the panel; 'worse': adjusted p < "
           f"{SIGNIFICANCE}. Failed seeds count as the metric's failure value."]
    for tau, panel in panels(summary, grid).items():
        out += ["", f"## tau {tau}" if tau is not None else "## every method", "",
                panel_markdown(panel, metric)]
    lines = pair_lines(summary, grid, pairs, metric)
    if lines:
        out += ["", "## Planned pairs (unadjusted p; lower when p < 0.05)", ""] + lines
    return "\n".join(out) + "\n"
