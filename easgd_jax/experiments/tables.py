"""The tables of a sweep's report, as CSV and Markdown: one row per run (``runs.csv``), the
summary (:func:`easgd_jax.experiments.stats.summarize`; ``summary.csv``, ``summary.md``),
the method x period tables of a grid (``GRID_by_period.md``) and the speed-up of one
(method, tau) over another on the simulated cluster (``speedup_cluster.md``)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from typing import Any

from easgd_jax.experiments.metric import ERROR, Metric
from easgd_jax.experiments.runs import RunResult
from easgd_jax.experiments.stats import CHANCE_ERROR, ESCALATED

Row = dict[str, Any]
STRING_COLUMNS = ("grid", "method", "algorithm", "diverged_learning_rates", "per_rate",
                  "selection", "select_on", "rate_edge", "seed_errors")


def fmt(value: Any, digits: int = 4) -> str:
    """A cell: "" for None or nan, a float to ``digits`` significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def run_rows(runs: Sequence[RunResult], threshold: float) -> list[Row]:
    """One row per run: its settings (grid tag included), status, errors (the final
    validation error too, nan when not recorded), steps and time to ``threshold``, its
    simulated time and bytes per step, wall time and startup, its recorded optimum and number
    of classes, its message's first line."""
    rows = []
    for r in runs:
        steps, seconds = r.to_threshold(threshold)
        rows.append({
            "name": r.name, "grids": " ".join(r.grids), "method": r.method,
            "algorithm": r.algorithm, "tau": r.tau, "p": r.num_workers,
            "learning_rate": r.learning_rate, "seed": r.seed, "status": r.status,
            "steps": r.steps[-1] if r.steps else None,
            "final_test_error": r.final_test_error, "best_test_error": r.best_test_error,
            "final_val_error": r.final_val_error, "tag": r.tag,
            "steps_to_threshold": steps, "time_to_threshold_s": seconds,
            "sim_time_to_threshold_s": r.to_threshold(threshold, "cluster")[1],
            "sim_time_s": r.sim_time_s[-1] if r.sim_time_s else None,
            "bytes_per_step": r.bytes_per_step,
            "wall_time_s": r.wall_time_s, "startup_s": r.compile_s, "resumed": r.resumed,
            # What a failed run's gap or error is counted as (metric.failure_value).
            "optimal_loss": r.optimal_loss, "num_classes": r.num_classes,
            "message": r.message.splitlines()[0] if r.message else "",
        })
    return rows


def write_csv(path: str, rows: Sequence[Row]) -> None:
    """``rows`` as CSV (their first row's keys as header, None as empty; no rows: empty)."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        if not rows:
            return
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def _parse_cell(key: str, value: str) -> Any:
    """A summary.csv cell: a string column as is, "" as None, else an int, float or str."""
    if value == "":
        return None if key not in STRING_COLUMNS else ""
    if key in STRING_COLUMNS:
        return value
    if value in ("True", "False"):
        return value == "True"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def read_summary_csv(path: str) -> list[Row]:
    """A summary.csv written by the report, this version's or issue 10's (best run, mean
    over the finished seeds at the best run's rate, ``seeds_at_best_lr``), as rows of this
    version's fields: numbers parsed, empty cells None. An old row gets
    ``chosen_learning_rate`` = its ``best_learning_rate``, ``seeds`` = the finished seeds,
    ``failed_seeds`` None (unknown: its mean left them out) and ``selection`` "first_seed
    (failures left out)"."""
    with open(path, encoding="utf-8", newline="") as f:
        raw = list(csv.DictReader(f))
    rows = []
    for r in raw:
        row = {k: _parse_cell(k, v) for k, v in r.items()}
        if "chosen_learning_rate" not in row:  # issue 10's format
            row["chosen_learning_rate"] = row.get("best_learning_rate")
            row["seeds"] = row.get("seeds_at_best_lr") or 0
            row["failed_seeds"] = None
            row["finished_mean_final_test_error"] = row.get("mean_final_test_error")
            row["selection"] = "first_seed (failures left out)"
        rows.append(row)
    return rows


def _pct_or_blank(value: Any, metric: Metric = ERROR) -> str:
    """``value`` in ``metric``'s unit (an error in %), "" for None."""
    return "" if value is None else f"{metric.scale * value:.{metric.digits}f}"


def _summary_preamble(rows: Sequence[Row], threshold: float, metric: Metric = ERROR) -> str:
    """The summary table's rule, stated: the rate chosen, the statistics in its columns."""
    selections = list(dict.fromkeys(r["selection"] for r in rows)) or ["all_seeds"]
    chance = rows[0]["chance_error"] if rows else CHANCE_ERROR
    select_on = (rows[0].get("select_on") or "test") if rows else "test"
    short = metric.short
    split = (f"VALIDATION {short} (held out from the training set; the {metric.label} below "
             "is reported once, at that rate)" if select_on == "validation" else
             f"TEST {short}, the same {short} that is reported (no validation split: a "
             "selection bias)")
    rules = {
        "all_seeds": (f"the rate with the lowest mean over seeds of the final {split}, a "
                      "diverged or failed run counted as chance"),
        "first_seed": (f"the rate whose first-seed run ended at the lowest {split} "
                       "(learning_rate_selection = first_seed: the other seeds ran at it "
                       "alone)" if select_on == "validation" else
                       f"the rate whose first-seed run reached the lowest {short} "
                       "(learning_rate_selection = first_seed)"),
    }
    rules[ESCALATED] = (
        f"{rules['all_seeds']} (learning_rate_selection = first_seed_checked: the first "
        "seed chose the top or bottom rate of the grid, or a rate at which another seed "
        "failed, so every rate ran on every seed; marked 'every seed')")
    rule = "; ".join(
        (f"in the rows chosen by {s}, " if len(selections) > 1 else "")
        + rules.get(s, rules["first_seed"]) for s in selections)
    return (f"Center {metric.heading} at each setting's chosen learning rate: {rule} "
            f"({metric.amount(chance)}; ties: fewer failures, then the lower rate). "
            f"**mean +- std** is over all seeds at that rate with the failed ones counted as "
            f"chance (std: sample, ddof 1), next to the number that failed; **95% CI**: "
            "percentile bootstrap of the mean [t: Student-t half-width, wider and honest at "
            "n = 3]; **edge**: the chosen rate is the top or bottom of the setting's grid (a "
            "better rate may lie beyond it; 'single': one rate run, no choice); **mean best**: "
            f"the paper's metric, the lowest {short} each seed reached, averaged; **finished "
            "mean** leaves the failed seeds out. Steps "
            f"and time to the threshold ({metric.amount(threshold)}): median over the seeds at the "
            "chosen rate, a failed seed or one that never reached it counted as not reached "
            f"(reached: how many did). **best**: the lowest {short} any run of the setting "
            "reached (the paper's best run), with its rate. **per rate**: mean (failures as "
            "chance) and failures at every rate.")


def _summary_cells(r: Row, sim: bool, nbytes: bool, metric: Metric = ERROR) -> list[str]:
    """One summary row's Markdown cells after its grid, method, tau and p (values in
    ``metric``'s unit)."""
    def pct(value: Any) -> str:
        return _pct_or_blank(value, metric)

    if r["chosen_learning_rate"] is None:
        cells = ["", "", "no run done", "", "", "", "", ""] + [""] * sim
    else:
        ci = ("" if r.get("ci95_low") is None else
              f"[{pct(r['ci95_low'])}, {pct(r['ci95_high'])}]")
        if r.get("t95_half_width") is not None:
            ci += f" [t +-{pct(r['t95_half_width'])}]"
        cells = [
            fmt(r["chosen_learning_rate"]),
            " ".join(filter(None, [r.get("rate_edge") or "",
                                   "every seed" if r["selection"] == ESCALATED else ""])),
            f"{pct(r['mean_final_test_error'])} +- "
            f"{pct(r['std_final_test_error']) or 'n/a'}, "
            f"{r['failed_seeds']}/{r['seeds']} failed",
            ci, pct(r.get("mean_best_test_error")),
            (pct(r['finished_mean_final_test_error'])
             if r["finished_mean_final_test_error"] is not None else "none finished"),
            fmt(r["steps_to_threshold"]) or "not reached",
            fmt(r["time_to_threshold_s"], 3) or "not reached",
        ]
        if sim:  # a run without a simulated clock (APAM's) has no simulated time at all
            cells.append(fmt(r["sim_time_to_threshold_s"], 3) or (
                "not reached" if r.get("sim_time_recorded", True) else "not recorded"))
    if nbytes:
        cells.append(fmt(r["bytes_per_step"], 6))
    best = ("" if r["best_test_error"] is None else
            f"{pct(r['best_test_error'])} ({fmt(r['best_learning_rate'])})")
    diverged = str(r["diverged"])
    if r["diverged_learning_rates"]:
        diverged += f" ({r['diverged_learning_rates']})"
    return cells + [f"{r['reached_threshold']}/{r['seeds']}", best, str(r["runs"]), diverged,
                    str(r["error"]), r["per_rate"]]


def markdown(rows: Sequence[Row], threshold: float, metric: Metric = ERROR) -> str:
    """The summary as a Markdown table (errors in %, or ``metric``'s values in its unit;
    failures spelled out), its rule stated; the simulated time and bytes per step columns
    when some row has them."""
    sim = any(r["sim_time_to_threshold_s"] is not None for r in rows)
    nbytes = any(r["bytes_per_step"] is not None for r in rows)
    header = ["grid", "method", "tau", "p", "chosen lr", "edge", "mean +- std, failed",
              "95% CI", "mean best", "finished mean", "steps to thr.",
              "wall time to thr. (s)"]
    header += ["simulated cluster time to thr. (s)"] * sim + ["bytes/step"] * nbytes
    header += ["reached", "best (lr)", "runs", "diverged (lr)", "errors", "per rate"]
    lines = [_summary_preamble(rows, threshold, metric), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        tau = "-" if r["tau"] is None else str(r["tau"])
        cells = [r["grid"], r["method"], tau, str(r["p"]),
                 *_summary_cells(r, sim, nbytes, metric)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- a grid's method x period tables ----------------------------------------------------------


def edge_note(edge: str | None) -> str:
    """", top of grid" / ", bottom of grid" / ", one rate run" (``rate_edge`` "single"), or ""."""
    return "" if not edge else ", one rate run" if edge == "single" else f", {edge} of grid"


def mean_std(cell: Row, metric: Metric = ERROR) -> str:
    """A setting's "mean +- std" in ``metric``'s unit (std "n/a" for one seed)."""
    return (f"{_pct_or_blank(cell['mean_final_test_error'], metric)} +- "
            f"{_pct_or_blank(cell['std_final_test_error'], metric) or 'n/a'}")


def rate_note(cell: Row) -> str:
    """A setting's "(failed/seeds failed, lr RATE[, edge][, every rate on every seed])"."""
    edge = edge_note(cell.get("rate_edge"))
    if cell.get("selection") == ESCALATED:
        edge += ", every rate on every seed"
    return (f"({cell['failed_seeds']}/{cell['seeds']} failed, lr "
            f"{cell['chosen_learning_rate']:g}{edge})")


def _by_period_cells(rows: Sequence[Row], cell: Row | None, tau: int,
                     clock: str, metric: Metric = ERROR, axis: str = "tau") -> tuple[str, str]:
    """One (method, ``axis`` value) cell of the error table and of the time table, the
    column's lowest error and shortest time in bold."""
    if cell is None or cell["mean_final_test_error"] is None:
        return "", ""

    def best(column: str) -> float | None:
        values = [r[column] for r in rows if r[axis] == tau and r[column] is not None]
        return min(values) if values else None

    text = mean_std(cell, metric)
    if cell["mean_final_test_error"] == best("mean_final_test_error"):
        text = f"**{text}**"
    error = f"{text} {rate_note(cell)}"
    value = cell[clock]
    time = ("not reached" if value is None else
            f"**{value:.3g}**" if value == best(clock) else f"{value:.3g}")
    return error, time


def by_period_markdown(summary: Sequence[Row], grid: str, threshold: float,
                       metric: Metric = ERROR, axis: str = "tau") -> str:
    """One grid's summary as method x period tables (``axis`` "p": method x p, a method's
    row named with its tau): the mean final test error (failures as chance) +- std with the
    failed seeds, and the median simulated (or wall) time to ``threshold``; the lowest mean
    error and the shortest time in each column in bold."""
    other = "p" if axis == "tau" else "tau"
    rows = [r for r in summary if r["grid"] == grid and r[axis] is not None
            and (axis == "tau" or r["tau"] is not None)]
    values = sorted({r[axis] for r in rows})
    cell = {(r["method"], r[other], r[axis]): r for r in rows}
    clock = "sim_time_to_threshold_s" if any(r["sim_time_to_threshold_s"] is not None
                                             for r in rows) else "time_to_threshold_s"
    ps = sorted({r["p"] for r in rows})
    header = "| method | " + " | ".join(f"{axis} {v}" for v in values) + " |"
    rule = "|---|" + "---|" * len(values)
    error_lines, time_lines = [header, rule], [header, rule]
    lines = sorted({(r["method"], r[other]) for r in rows})
    for method, key in lines:
        errors, times = zip(*(_by_period_cells(rows, cell.get((method, key, v)), v, clock,
                                               metric, axis)
                              for v in values), strict=True)
        label = method if axis == "tau" and len({k for m, k in lines if m == method}) == 1 \
            else f"{method} ({other} {key})"
        error_lines.append(f"| {label} | " + " | ".join(errors) + " |")
        time_lines.append(f"| {label} | " + " | ".join(times) + " |")
    what = "simulated cluster" if clock.startswith("sim") else "wall-clock"
    return "\n".join([
        f"Grid {grid} (p = {', '.join(map(str, ps))}): mean final center {metric.heading} +- "
        "sample std over the seeds at the chosen rate, a failed run counted as chance; the "
        "lowest in each column in bold (not a significant difference: see findings.md).", "",
        *error_lines, "",
        f"Median {what} time (s) to {metric.reach(threshold)} at the chosen rate (a "
        "failed seed, or one that never reached it, counted as not reached); the shortest in "
        "each column in bold.", "", *time_lines, ""])


# --- the speed-up on the simulated cluster ------------------------------------------------------


def speedup_table(summary: Sequence[Row], grid: str = "p",
                  fast: tuple[str, int] = ("eamsgd", 10),
                  slow: tuple[str, int] = ("downpour", 1)) -> list[Row]:
    """Per p of ``grid``: the simulated time to threshold of ``slow`` = (method, tau) and of
    ``fast``, and the speed-up slow / fast. Each time is the summary's: the median over the
    seeds at the setting's chosen rate, a failed seed or one that never reached the threshold
    counted as not reached (None: the median did not reach it). Speed-up: None when ``fast``
    did not reach it, inf when only ``slow`` did not."""
    def time_of(method: str, tau: int, p: int) -> float | None:
        row = next((r for r in summary if r["grid"] == grid and r["method"] == method
                    and r["tau"] == tau and r["p"] == p), None)
        return None if row is None else row["sim_time_to_threshold_s"]

    table = []
    for p in sorted({r["p"] for r in summary if r["grid"] == grid
                     and (r["method"], r["tau"]) in (fast, slow)}):
        slow_s, fast_s = time_of(*slow, p), time_of(*fast, p)
        if fast_s is None:
            speedup = None
        elif slow_s is None:
            speedup = math.inf
        else:
            speedup = slow_s / fast_s
        table.append({"p": p, f"{slow[0]}_time_s": slow_s, f"{fast[0]}_time_s": fast_s,
                      "speedup": speedup})
    return table


def speedup_markdown(table: Sequence[Row], threshold: float,
                     fast: tuple[str, int] = ("eamsgd", 10),
                     slow: tuple[str, int] = ("downpour", 1)) -> str:
    """:func:`speedup_table` as Markdown, its statistic stated."""
    lines = [f"Speed-up of {fast[0].upper()} (tau = {fast[1]}) over {slow[0].upper()} (tau = "
             f"{slow[1]}) on the simulated cluster: time to {100 * threshold:g}% test error of "
             f"{slow[0]} / that of {fast[0]}, each the median over the seeds at the setting's "
             "chosen learning rate (a failed seed, or one that never reached the threshold, "
             "counted as not reached).", "",
             f"| p | {slow[0]} (s) | {fast[0]} (s) | speed-up |", "|---|---|---|---|"]
    for r in table:
        speedup = r["speedup"]
        cell = ("n/a" if speedup is None else "inf (only the first reached)"
                if math.isinf(speedup) else f"{speedup:.2f}x")
        lines.append(f"| {r['p']} | {fmt(r[f'{slow[0]}_time_s'], 4) or 'not reached'} | "
                     f"{fmt(r[f'{fast[0]}_time_s'], 4) or 'not reached'} | {cell} |")
    return "\n".join(lines) + "\n"
