"""The figures of a sweep's report (matplotlib, Agg), one set per grid:

    GRID_curves_time.png, GRID_curves_steps.png (GRID_curves_cluster.png)
        training loss (the workers' mini-batches, as training/sync.py reports it), test loss
        and test error of the center against wall-clock time / steps (/ simulated cluster
        time): for each setting, the MEAN over its seeds at the chosen rate, with a band from
        the lowest to the highest seed (never the best seed alone, issue 33); a seed that
        diverged leaves the mean where its curve ends (the legend counts the seeds); one
        panel per value of the grid's panel axis (tau or p); methods without a tau (or with p
        fixed, e.g. the sequential MSGD) appear dashed in every panel;
    GRID_error_vs_AXIS.png, GRID_time_to_threshold_vs_AXIS.png (..._vs_AXIS_cluster.png)
        for each axis (p, tau) the grid's figures are against: the summary's mean error with
        its bootstrap 95% interval and every seed's error as a small dot, and the median
        time to threshold, against it.

One colour and marker per method in EVERY figure of every report
(:mod:`easgd_jax.experiments.palette`), one legend per figure outside the axes (constrained
layout: no clipped labels), a log y axis where a row's values span more than a decade, the
threshold labelled, every time axis naming its clock, and a note naming any method of the
grid a figure does not draw (and why). Runs read from a runs.csv
(:class:`~easgd_jax.experiments.runs.RecordedRun`) have no curves: only the figures against
p or tau are drawn for them. Which axis a grid's panels and figures are over is its
:class:`easgd_jax.experiments.report_spec.GridSpec`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from easgd_jax.experiments import palette
from easgd_jax.experiments.metric import ERROR, Metric
from easgd_jax.experiments.runs import RunResult, setting_key
from easgd_jax.experiments.stats import parse_seed_errors

Row = dict[str, Any]
Styles = Mapping[str, tuple[str, str]]
CURVE_KEYS = ("train_loss", "test_loss", "test_error")
# train_loss is the mean mini-batch loss of the workers since the last evaluation (as
# training/sync.py reports it); the test metrics are the center's (LSGD's: its leader's).
YLABELS = {"train_loss": "training loss (workers' batches)",
           "test_loss": "test loss (center / leader)",
           "test_error": "test error (center / leader)"}
CLOCKS = {"time": ("time_s", "wall-clock time (s) of the machine that ran it, "
                   "compilation excluded"),
          "steps": ("steps", "steps per worker"),
          "cluster": ("sim_time_s", "simulated cluster time (s): the sweep's cluster clock, "
                      "parallel/cluster.py")}
LINESTYLES = ("-", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))
AGAINST = {"p": ("p (workers)", "tau"), "tau": ("period (tau)", "p")}  # x label, line key
AXES = ("p", "tau")


def method_styles(methods: Iterable[str]) -> dict[str, tuple[str, str]]:
    """{method: (colour, marker)} from the one palette (:mod:`~easgd_jax.experiments.palette`):
    the same in every figure of every report."""
    return palette.styles(methods)


def _log_scale_if_spread(axes: Sequence[Any], values: Iterable[float]) -> bool:
    """Log y on ``axes`` when the positive finite ``values`` span more than a decade."""
    finite = [v for v in values if v is not None and np.isfinite(v) and v > 0]
    if finite and max(finite) > 10 * min(finite):
        for ax in axes:
            ax.set_yscale("log")
        return True
    return False


def _legend(fig: Any, styles: Styles, entries: Sequence[tuple[str, str, Any]],
            threshold: float | None, width: float, metric: Metric = ERROR,
            title: str | None = None) -> None:
    """One legend for the figure, outside below its axes (constrained layout makes room):
    (method, label, linestyle) entries in the method's colour and marker, under ``title``."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=styles[m][0], marker=styles[m][1], linestyle=style,
                      label=label) for m, label, style in entries]
    if threshold is not None:
        handles.append(Line2D([], [], color="grey", linestyle=":",
                              label=f"threshold {metric.amount(threshold)}"))
    ncol = max(1, min(len(handles), int(width // 2.6)))
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize=8,
               frameon=False, title=title, title_fontsize=8)


def _missing_note(fig: Any, missing: Mapping[str, str]) -> None:
    """Names, at the top of the figure, every method of the grid it does not draw and why."""
    if missing:
        import textwrap

        width = int(fig.get_figwidth() * 14)  # characters of 7-point text across the figure
        text = "not drawn: " + "; ".join(f"{m} ({why})" for m, why in sorted(missing.items()))
        fig.suptitle(textwrap.fill(text, width), fontsize=7, color="firebrick")


def _threshold_line(ax: Any, threshold: float, metric: Metric = ERROR) -> None:
    """The threshold as a labelled grey dotted line."""
    ax.axhline(threshold, color="grey", linestyle=":", linewidth=1)
    ax.annotate(f"threshold {metric.amount(threshold)}", xy=(1, threshold),
                xycoords=("axes fraction", "data"), xytext=(-2, 2),
                textcoords="offset points", ha="right", va="bottom", fontsize=7, color="grey")


def _entry_label(runs: Sequence[RunResult], panel_dim: str, variants: Sequence,
                 shared: bool, counts: Sequence[tuple[int, int]] = ()) -> str:
    """The method, its tau when panels are per p, the other dimension's value when the
    method has several lines in a panel, "(every panel)" for the shared ones, and the
    seeds the mean is over (with how many failed): ``counts``, (seeds, failed) of each
    panel drawn (default: ``runs``'), as a range when panels differ."""
    run = runs[0]
    label = run.method
    other = run.num_workers if panel_dim == "tau" else run.tau
    if len(variants) > 1:
        label += f" ({'p' if panel_dim == 'tau' else 'tau'} {other})"
    elif panel_dim == "p" and run.tau is not None:
        label += f" (tau {run.tau})"
    counts = list(counts) or [(len(runs), sum(r.status != "finished" for r in runs))]
    seeds, failed = sorted({n for n, _ in counts}), sorted({f for _, f in counts})
    label += f", mean of {seeds[0]}" + (f"-{seeds[-1]} (by panel)" if len(seeds) > 1 else "")
    if failed[-1]:
        label += f" ({failed[0]}-{failed[-1]} failed)" if len(failed) > 1 else (
            f" ({failed[0]} failed)")
    return label + (" (every panel)" if shared else "")


# --- the curves -------------------------------------------------------------------------------


@dataclasses.dataclass
class Panels:
    """A grid's curve figure: its panel axis ("tau" or "p") and values ([None]: one panel),
    the runs drawn (every seed at each setting's chosen rate) and, per method, the values of
    the other axis among them (one line style each)."""

    dim: str
    values: list
    groups: dict[tuple, list[RunResult]]
    variants: dict[str, list]

    def placement(self, run: RunResult, value: Any) -> tuple[bool, bool]:
        """(drawn in the panel of ``value``, shared: drawn dashed in every panel)."""
        shared = (run.tau is None) if self.dim == "tau" else run.fixed_workers
        own = run.tau if self.dim == "tau" else run.num_workers
        return value is None or own == value or shared, shared

    def other(self, run: RunResult) -> int | None:
        """The run's value of the axis that is not the panels'."""
        return run.num_workers if self.dim == "tau" else run.tau


def chosen_runs(grid: str, runs: Sequence[RunResult],
                rows: Mapping[tuple, Row]) -> dict[tuple, list[RunResult]]:
    """{setting: every done run of ``grid``'s setting at its chosen rate (the summary row's;
    without one, at the rate of the lowest mean final error) that has curves}."""
    settings: dict[tuple, list[RunResult]] = {}
    for r in runs:
        if grid in r.grids:
            settings.setdefault(setting_key(r), []).append(r)
    chosen: dict[tuple, list[RunResult]] = {}
    for key, group in settings.items():
        rate = rows[key]["chosen_learning_rate"] if key in rows else None
        if rate is None:
            continue
        members = [r for r in group if r.learning_rate == rate and len(r.test_error) > 1]
        if members:
            chosen[key] = sorted(members, key=lambda r: r.seed)
    return chosen


def _panels(dim: str, values: list, groups: dict[tuple, list[RunResult]]) -> Panels:
    """The :class:`Panels` of ``groups`` over ``dim``'s ``values``."""
    panels = Panels(dim, values or [None], groups, {})
    for members in groups.values():
        r = members[0]
        other = panels.other(r)
        panels.variants.setdefault(r.method, [])
        if other not in panels.variants[r.method]:
            panels.variants[r.method] = sorted([*panels.variants[r.method], other],
                                               key=lambda v: -1 if v is None else v)
    return panels


def mean_curve(runs: Sequence[RunResult], attribute: str,
               key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, mean, lowest, highest) of ``key`` over ``runs`` at each evaluation index, x the
    mean of ``attribute`` (steps, time) over the runs that reached that index (a diverged
    run's curve ends early; later points are over the others)."""
    length = max(len(getattr(r, attribute)) for r in runs)
    x, mean, low, high = [], [], [], []
    for i in range(length):
        xs = [getattr(r, attribute)[i] for r in runs if len(getattr(r, attribute)) > i]
        ys = [getattr(r, key)[i] for r in runs if len(getattr(r, key)) > i]
        if not xs or not ys:
            break
        x.append(np.mean(xs))
        mean.append(np.mean(ys))
        low.append(np.min(ys))
        high.append(np.max(ys))
    return np.array(x), np.array(mean), np.array(low), np.array(high)


def _draw_panel(axes: Any, col: int, value: Any, panels: Panels, attribute: str,
                styles: Styles, entries: dict, plotted: dict[str, list[float]]) -> None:
    """The mean curves (and min-max bands) of column ``col`` (the panel of ``value``)
    against ``attribute``; records their legend entries ({(method, line): (runs, style,
    [(seeds, failed) per panel])}) and the values drawn."""
    for _, runs in sorted(panels.groups.items()):
        run = runs[0]
        drawn, shared = panels.placement(run, value)
        runs = [r for r in runs if len(getattr(r, attribute)) == len(r.steps)]
        if not drawn or not runs:  # or no simulated time in these runs
            continue
        colour, marker = styles[run.method]
        index = panels.variants[run.method].index(panels.other(run))
        style = "--" if shared else LINESTYLES[index % len(LINESTYLES)]
        entries.setdefault((run.method, index), (runs, style, []))[2].append(
            (len(runs), sum(r.status != "finished" for r in runs)))
        for row, key in enumerate(CURVE_KEYS):
            x, mean, low, high = mean_curve(runs, attribute, key)
            ax = axes[row][col]
            ax.plot(x, mean, color=colour, marker=marker, markersize=3, linewidth=1.2,
                    linestyle=style)
            if len(runs) > 1:
                ax.fill_between(x, low, high, color=colour, alpha=0.15, linewidth=0)
            plotted[key] += [*low, *high]
        if len(x):  # where the curve ends on the x axis (the same in every row)
            plotted.setdefault("x_end", []).append(float(x[-1]))


def _dress_panel(axes: Any, col: int, value: Any, grid: str, panel_dim: str, xlabel: str,
                 threshold: float, metric: Metric = ERROR) -> None:
    """Column ``col``'s labels, title and threshold line (the last row: ``metric``); the x
    label on the bottom row only, up to its first colon (the figure's own x label gives the
    rest once: :func:`plot_curves`)."""
    for row, key in enumerate(CURVE_KEYS):
        ax = axes[row][col]
        if row == len(CURVE_KEYS) - 1:
            ax.set_xlabel(xlabel.split(":")[0], fontsize=8)
        if col == 0:
            ax.set_ylabel(_ylabel(key, metric))
        if key == "test_error":
            _threshold_line(ax, threshold, metric)
        if row == 0:
            ax.set_title(f"grid {grid}: {panel_dim} = {value}" if value is not None
                         else f"grid {grid}")


def _ylabel(key: str, metric: Metric) -> str:
    """A curve row's y label; the last row is ``metric``'s (the error's as before)."""
    if key == "test_error" and metric is not ERROR:
        return f"test {metric.heading}\n(center / leader)"
    return YLABELS[key]


def _curve_missing(panels: Panels, methods: Iterable[str], attribute: str) -> dict[str, str]:
    """{method of the grid: why the curve figure on ``attribute`` does not draw it}."""
    drawn = {runs[0].method for runs in panels.groups.values()
             if any(len(getattr(r, attribute)) == len(r.steps) for r in runs)}
    have = {runs[0].method for runs in panels.groups.values()}
    return {m: ("no simulated cluster time recorded" if m in have else
                "no finished run with curves at the chosen rate")
            for m in set(methods) - drawn}


def plot_curves(grid: str, clock: str, panels: Panels, threshold: float, outdir: str,
                styles: Styles, methods: Iterable[str] = (), metric: Metric = ERROR,
                xlabel: str | None = None) -> str:
    """GRID_curves_CLOCK.png: training loss, test loss and test error (or ``metric``)
    against ``clock``'s axis, one column per panel, each setting's seed mean with its
    min-max band; ``methods``: the grid's methods (those not drawn are named); ``xlabel``
    replaces the clock's (another cluster setting); returns its path."""
    import matplotlib.pyplot as plt

    attribute, clock_label = CLOCKS[clock]
    xlabel = xlabel or clock_label
    width = max(4 * len(panels.values), 7)
    height = 2.8 * len(CURVE_KEYS) + 1.2
    fig, axes = plt.subplots(len(CURVE_KEYS), len(panels.values), squeeze=False,
                             sharey="row", figsize=(width, height), layout="constrained")
    entries: dict[tuple, tuple[str, str, Any]] = {}
    plotted: dict[str, list[float]] = {key: [] for key in CURVE_KEYS}
    for col, value in enumerate(panels.values):
        _draw_panel(axes, col, value, panels, attribute, styles, entries, plotted)
        _dress_panel(axes, col, value, grid, panels.dim, xlabel, threshold, metric)
    for row, key in enumerate(CURVE_KEYS):
        if _log_scale_if_spread(axes[row], plotted[key] + [threshold] * (
                key == "test_error")):
            axes[row][0].set_ylabel(_ylabel(key, metric) + ", log")
    ends = [e for e in plotted.get("x_end", []) if e > 0]
    if clock != "steps" and ends and max(ends) > 5 * min(ends):
        # Curves that end 5x apart in time (an every-step all-reduce beside local
        # methods): on a linear axis the fast ones crowd into its first fifth.
        for ax in np.ravel(axes):
            ax.set_xscale("log")
        for ax in axes[-1]:
            ax.set_xlabel(ax.get_xlabel() + ", log", fontsize=8)
    labels = []
    for key in sorted(entries):
        runs, style, counts = entries[key]
        shared = panels.placement(runs[0], panels.values[0])[1] and len(panels.values) > 1
        labels.append((key[0], _entry_label(runs, panels.dim, panels.variants[key[0]], shared,
                                            counts), style))
    # The clock in full, once, over the legend (in a panel it would overrun its neighbour).
    _legend(fig, styles, labels, threshold, width, metric,
            title=f"x axis: {xlabel}" if ":" in xlabel else None)
    _missing_note(fig, _curve_missing(panels, methods, attribute))
    path = os.path.join(outdir, f"{grid}_curves_{clock}.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_grid(grid: str, runs: Sequence[RunResult], threshold: float, outdir: str,
              summary: Sequence[Row] = (), styles: Styles | None = None,
              panels: str | None = None, against: Sequence[str] | None = None,
              metric: Metric = ERROR) -> list[str]:
    """The figures of one grid; returns their paths. Curves (when the runs have them): every
    seed at each setting's chosen rate (the ``summary`` row's), drawn as their mean and
    min-max band, one panel per value of ``panels`` ("tau" or "p"); figures against each
    axis in ``against``. None: as :func:`easgd_jax.experiments.report_spec.infer_grid`
    infers them. ``styles``: default :func:`method_styles`. ``metric``: what the runs'
    ``test_error`` curves and the summary's error columns hold (labels and threshold)."""
    import matplotlib

    matplotlib.use("Agg")
    from easgd_jax.experiments.report_spec import infer_grid

    if panels is None or against is None:
        inferred = infer_grid(grid, runs, summary)
        panels = inferred.panels if panels is None else panels
        against = inferred.against if against is None else against
    members = [r for r in runs if grid in r.grids]
    styles = styles or method_styles(r.method for r in runs)
    rows = {(r["method"], -1 if r["tau"] is None else r["tau"], r["p"]): r
            for r in summary if r["grid"] == grid}
    values = {"tau": sorted({r.tau for r in members if r.tau is not None}),
              "p": sorted({r.num_workers for r in members if not r.fixed_workers})}
    layout = _panels(panels, values[panels], chosen_runs(grid, runs, rows))
    methods = {r.method for r in members}
    paths = []
    if layout.groups:
        clocks = ["time", "steps"] + ["cluster"] * any(
            r.sim_time_s for group in layout.groups.values() for r in group)
        paths = [plot_curves(grid, clock, layout, threshold, outdir, styles, methods, metric)
                 for clock in clocks]
    cluster = any(r.sim_time_s for r in members)
    for dim in AXES:
        if dim in against and rows:
            paths += plot_against(grid, rows, dim, values[dim], threshold, outdir, styles,
                                  cluster, metric)
    return paths


# --- against p or tau -------------------------------------------------------------------------


def _against_lines(rows: Mapping[tuple, Row], dim: str,
                   values: Sequence[int]) -> dict[tuple, list[Row]]:
    """{(method, value of the other axis): its summary rows with ``dim`` in ``values``}.
    Methods with the dimension fixed (e.g. MSGD's p = 1, no tau) are not lines."""
    other = AGAINST[dim][1]
    lines: dict[tuple, list[Row]] = {}
    for (method, tau, p), row in rows.items():
        own = {"p": p, "tau": tau}
        if own[dim] in values:
            lines.setdefault((method, own[other]), []).append(row)
    return lines


def _interval(row: Row, column: str) -> tuple[float, float]:
    """(below, above) the mean: the bootstrap 95% interval's, else the sample std's, else 0."""
    mean = row[column]
    if row.get("ci95_low") is not None:
        return max(mean - row["ci95_low"], 0.0), max(row["ci95_high"] - mean, 0.0)
    std = row.get("std_final_test_error") or 0.0
    return min(std, mean), std


def _draw_against(ax: Any, lines: Mapping[tuple, list[Row]], dim: str, column: str,
                  spread: bool, styles: Styles) -> tuple[list, list]:
    """One line per (method, other value) of ``column`` against ``dim``; with ``spread``,
    the bootstrap 95% interval as error bars and every seed's value as a small dot (a
    little apart on x, so that equal values stay visible); returns the legend entries and
    the values drawn."""
    other = AGAINST[dim][1]
    keys = sorted({k for _, k in lines})
    several = len(keys) > 1  # name the other dimension in the legend
    entries, plotted = [], []
    for (method, key), members in sorted(lines.items()):
        points = sorted(((r[dim], r[column], *(_interval(r, column) if spread else (0, 0)),
                          r.get("seed_errors") or "") for r in members
                         if r[column] is not None), key=lambda t: t[0])
        if not points:
            continue
        colour, marker = styles[method]
        x, y, below, above, seeds = zip(*points, strict=True)
        plotted += y
        style = LINESTYLES[keys.index(key) % len(LINESTYLES)]
        ax.errorbar(x, y, yerr=np.array([below, above]) if spread else None, color=colour,
                    marker=marker, capsize=3, linestyle=style if dim == "tau" else "-")
        if spread:
            for xi, text in zip(x, seeds, strict=True):
                errors = list(parse_seed_errors(text).values())
                offsets = xi * 2 ** (0.1 * (np.arange(len(errors)) - (len(errors) - 1) / 2))
                ax.scatter(offsets, errors, s=16, facecolors="none", edgecolors=colour,
                           alpha=0.8, marker=marker, linewidths=0.8)
                plotted += errors
        label = method if key < 0 or (dim == "tau" and not several) else \
            f"{method} ({other} {key})"
        entries.append((method, label, style if dim == "tau" else "-"))
    return entries, plotted


def _draw_references(ax: Any, rows: Mapping[tuple, Row], dim: str, values: Sequence[int],
                     column: str, spread: bool, styles: Styles) -> tuple[list, list]:
    """The grid's methods with ``dim`` fixed (the sequential MSGD: no tau, -1 in the keys of
    ``rows``; p = 1) as horizontal dashed lines at their mean, across every value of ``dim``
    (as the curve figures draw them in every panel), with the bootstrap 95% interval as a
    band when ``spread``; returns the legend entries and the values drawn."""
    entries, plotted = [], []
    for (method, tau, p), row in sorted(rows.items(), key=lambda kv: str(kv[0])):
        if {"p": p, "tau": tau}[dim] in values or row[column] is None:
            continue
        colour, _ = styles[method]
        ax.axhline(row[column], color=colour, linestyle="--", linewidth=1.2)
        plotted.append(row[column])
        if spread:
            below, above = _interval(row, column)
            ax.axhspan(row[column] - below, row[column] + above, color=colour, alpha=0.12,
                       linewidth=0)
        fixed = "no tau" if dim == "tau" and tau == -1 else f"{dim} = {p if dim == 'p' else tau}"
        entries.append((method, f"{method} ({fixed}: every {dim})", "--"))
    return entries, plotted


def _missing_reason(row: Row, column: str) -> str:
    """Why ``row`` has no ``column`` to draw: no run finished (all failed, or some not done
    yet: stopped or pending), or its median seed never reached the threshold."""
    if row["mean_final_test_error"] is None:  # the error column's only way to be missing
        if row.get("unfinished") or row.get("pending"):
            return "no run finished yet"
        return "all its runs failed"
    return "median seed did not reach the threshold"


def _against_missing(lines: Mapping[tuple, list[Row]], column: str,
                     dim: str) -> dict[str, str]:
    """{method: the values of ``dim`` where it has no point, and why}."""
    missing: dict[str, dict[str, list]] = {}
    for (method, _), members in lines.items():
        for r in members:
            if r[column] is None:
                reasons = missing.setdefault(method, {})
                reasons.setdefault(_missing_reason(r, column), []).append(r[dim])
    return {m: "; ".join(f"{dim} {', '.join(map(str, sorted(v)))}: {why}"
                         for why, v in reasons.items()) for m, reasons in missing.items()}


def plot_against(grid: str, rows: Mapping[tuple, Row], dim: str, values: Sequence[int],
                 threshold: float, outdir: str, styles: Styles, cluster: bool,
                 metric: Metric = ERROR) -> list[str]:
    """Mean error (bootstrap 95% interval, every seed a dot) and median time to threshold
    (wall-clock, and simulated with ``cluster``) against ``dim`` ("p" or "tau"), from the
    summary rows: one line per method (and value of the other dimension); returns the
    figures' paths."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    lines = _against_lines(rows, dim, values)
    what = "test error" if metric is ERROR else f"test {metric.heading}"
    figures = [(f"error_vs_{dim}", f"final {what}\n(center; LSGD: leader): mean over "
                "seeds,\nbootstrap 95% CI, each seed a dot", "mean_final_test_error", True),
               (f"time_to_threshold_vs_{dim}", f"wall-clock time to "
                f"{metric.amount(threshold)} (s),\nmedian over seeds", "time_to_threshold_s",
                False)]
    if cluster:
        figures.append((f"time_to_threshold_vs_{dim}_cluster",
                        f"simulated cluster time to {metric.amount(threshold)} (s),\nmedian "
                        "over seeds", "sim_time_to_threshold_s", False))
    paths = []
    for name, ylabel, column, spread in figures:
        fig, ax = plt.subplots(figsize=(6.4, 5.0), layout="constrained")
        entries, plotted = _draw_against(ax, lines, dim, column, spread, styles)
        references = _draw_references(ax, rows, dim, values, column, spread, styles)
        entries, plotted = entries + references[0], plotted + references[1]
        ax.set_xscale("log", base=2)
        ax.set_xticks(values, [str(v) for v in values])
        ax.set_xlabel(AGAINST[dim][0])
        log = _log_scale_if_spread([ax], plotted)
        if log:  # plain numbers (0.02, 0.05, 0.1), not 2 x 10^-2; minor labels at 2 and 5
            ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.yaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2.0, 5.0)))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_ylabel(ylabel + (", log" if log else ""), fontsize=9)
        ax.set_title(f"grid {grid}", fontsize=10)
        _legend(fig, styles, entries, None, 6.4)
        _missing_note(fig, _against_missing(lines, column, dim))
        path = os.path.join(outdir, f"{grid}_{name}.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths
