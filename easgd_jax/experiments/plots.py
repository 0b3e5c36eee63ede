"""The figures of a sweep's report (matplotlib, Agg), one set per grid:

    GRID_curves_time.png, GRID_curves_steps.png (GRID_curves_cluster.png)
        training loss (the workers' mini-batches, as training/sync.py reports it), test loss
        and test error of the center against wall-clock time / steps (/ simulated cluster
        time), for the best finished seed at each setting's chosen rate, one panel per value
        of the grid's panel axis (tau or p); methods without a tau (or with p fixed, e.g.
        the sequential MSGD) appear dashed in every panel;
    GRID_error_vs_AXIS.png, GRID_time_to_threshold_vs_AXIS.png (..._vs_AXIS_cluster.png)
        for each axis (p, tau) the grid's figures are against: the summary's mean error
        (+- std) and median time to threshold against it.

One colour and marker per method in every figure of the report (:func:`method_styles`), one
legend per figure, a log y axis where a row's values span more than a decade, the threshold
labelled. Which axis a grid's panels and figures are over is its
:class:`easgd_jax.experiments.report_spec.GridSpec`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from easgd_jax.experiments.runs import RunResult, setting_key
from easgd_jax.experiments.stats import best_run

Row = dict[str, Any]
Styles = Mapping[str, tuple[str, str]]
CURVE_KEYS = ("train_loss", "test_loss", "test_error")
# train_loss is the mean mini-batch loss of the workers since the last evaluation (as
# training/sync.py reports it); the test metrics are the center's.
YLABELS = {"train_loss": "training loss (workers' batches)", "test_loss": "test loss (center)",
           "test_error": "test error (center)"}
CLOCKS = {"time": ("time_s", "wall-clock time (s), compilation excluded"),
          "steps": ("steps", "steps per worker"),
          "cluster": ("sim_time_s", "simulated cluster time (s)")}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
LINESTYLES = ("-", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))
AGAINST = {"p": ("p (workers)", "tau"), "tau": ("period (tau)", "p")}  # x label, line key
AXES = ("p", "tau")


def method_styles(methods: Iterable[str]) -> dict[str, tuple[str, str]]:
    """{method: (colour, marker)}: the sorted set of ``methods`` takes tab10's colours (tab20's
    beyond ten) and MARKERS in order, so that a report built from one sweep gives every
    method one colour and one marker in every figure."""
    import matplotlib

    names = sorted(set(methods))
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {m: (matplotlib.colors.to_hex(cmap(i % cmap.N)), MARKERS[i % len(MARKERS)])
            for i, m in enumerate(names)}


def _log_scale_if_spread(axes: Sequence[Any], values: Iterable[float]) -> bool:
    """Log y on ``axes`` when the positive finite ``values`` span more than a decade."""
    finite = [v for v in values if v is not None and np.isfinite(v) and v > 0]
    if finite and max(finite) > 10 * min(finite):
        for ax in axes:
            ax.set_yscale("log")
        return True
    return False


def _legend(fig: Any, styles: Styles, entries: Sequence[tuple[str, str, Any]],
            threshold: float | None, width: float) -> int:
    """One legend for the figure, below its axes: (method, label, linestyle) entries in the
    method's colour and marker; returns its number of rows."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=styles[m][0], marker=styles[m][1], linestyle=style,
                      label=label) for m, label, style in entries]
    if threshold is not None:
        handles.append(Line2D([], [], color="grey", linestyle=":",
                              label=f"threshold {100 * threshold:g}%"))
    ncol = max(1, min(len(handles), int(width // 1.9)))
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    return -(-len(handles) // ncol)


def _threshold_line(ax: Any, threshold: float) -> None:
    """The threshold as a labelled grey dotted line."""
    ax.axhline(threshold, color="grey", linestyle=":", linewidth=1)
    ax.annotate(f"threshold {100 * threshold:g}%", xy=(1, threshold),
                xycoords=("axes fraction", "data"), xytext=(-2, 2),
                textcoords="offset points", ha="right", va="bottom", fontsize=7, color="grey")


def _entry_label(run: RunResult, panel_dim: str, variants: Sequence, shared: bool) -> str:
    """The method, its tau when panels are per p, the other dimension's value when the
    method has several lines in a panel, and "(every panel)" for the shared ones."""
    label = run.method
    other = run.num_workers if panel_dim == "tau" else run.tau
    if len(variants) > 1:
        label += f" ({'p' if panel_dim == 'tau' else 'tau'} {other})"
    elif panel_dim == "p" and run.tau is not None:
        label += f" (tau {run.tau})"
    return label + (" (every panel)" if shared else "")


# --- the curves -------------------------------------------------------------------------------


@dataclasses.dataclass
class Panels:
    """A grid's curve figure: its panel axis ("tau" or "p") and values ([None]: one panel),
    the runs drawn (one per setting) and, per method, the values of the other axis among
    them (one line style each)."""

    dim: str
    values: list
    best: dict[tuple, RunResult]
    variants: dict[str, list]

    def placement(self, run: RunResult, value: Any) -> tuple[bool, bool]:
        """(drawn in the panel of ``value``, shared: drawn dashed in every panel)."""
        shared = (run.tau is None) if self.dim == "tau" else run.fixed_workers
        own = run.tau if self.dim == "tau" else run.num_workers
        return value is None or own == value or shared, shared

    def other(self, run: RunResult) -> int | None:
        """The run's value of the axis that is not the panels'."""
        return run.num_workers if self.dim == "tau" else run.tau


def chosen_best_runs(grid: str, runs: Sequence[RunResult],
                     rows: Mapping[tuple, Row]) -> dict[tuple, RunResult]:
    """{setting: the best finished run of ``grid``'s setting at its chosen rate (the summary
    row's in ``rows``; without one, over every rate)}."""
    settings: dict[tuple, list[RunResult]] = {}
    for r in runs:
        if grid in r.grids:
            settings.setdefault(setting_key(r), []).append(r)
    best: dict[tuple, RunResult] = {}
    for key, group in settings.items():
        if key in rows:
            group = [r for r in group if r.learning_rate == rows[key]["chosen_learning_rate"]]
        if (b := best_run(group)) is not None:
            best[key] = b
    return best


def _panels(dim: str, values: list, best: dict[tuple, RunResult]) -> Panels:
    """The :class:`Panels` of ``best`` runs over ``dim``'s ``values``."""
    panels = Panels(dim, values or [None], best, {})
    for r in best.values():
        other = panels.other(r)
        panels.variants.setdefault(r.method, [])
        if other not in panels.variants[r.method]:
            panels.variants[r.method] = sorted([*panels.variants[r.method], other],
                                               key=lambda v: -1 if v is None else v)
    return panels


def _draw_panel(axes: Any, col: int, value: Any, panels: Panels, attribute: str,
                styles: Styles, entries: dict, plotted: dict[str, list[float]]) -> None:
    """The curves of column ``col`` (the panel of ``value``) against ``attribute``; records
    their legend entries and the values drawn."""
    for run in sorted(panels.best.values(), key=lambda r: r.name):
        drawn, shared = panels.placement(run, value)
        x = getattr(run, attribute)
        if not drawn or len(x) != len(run.steps):  # or no simulated time in this run
            continue
        colour, marker = styles[run.method]
        index = panels.variants[run.method].index(panels.other(run))
        style = "--" if shared else LINESTYLES[index % len(LINESTYLES)]
        entries.setdefault((run.method, index), (run.method, _entry_label(
            run, panels.dim, panels.variants[run.method], shared and len(panels.values) > 1),
            style))
        for row, key in enumerate(CURVE_KEYS):
            axes[row][col].plot(x, getattr(run, key), color=colour, marker=marker,
                                markersize=3, linewidth=1.2, linestyle=style)
            plotted[key] += getattr(run, key)


def _dress_panel(axes: Any, col: int, value: Any, grid: str, panel_dim: str, xlabel: str,
                 threshold: float) -> None:
    """Column ``col``'s labels, title and threshold line."""
    for row, key in enumerate(CURVE_KEYS):
        ax = axes[row][col]
        ax.set_xlabel(xlabel)
        if col == 0:
            ax.set_ylabel(YLABELS[key])
        if key == "test_error":
            _threshold_line(ax, threshold)
        if row == 0:
            ax.set_title(f"grid {grid}: {panel_dim} = {value}" if value is not None
                         else f"grid {grid}")


def plot_curves(grid: str, clock: str, panels: Panels, threshold: float, outdir: str,
                styles: Styles) -> str:
    """GRID_curves_CLOCK.png: training loss, test loss and test error against ``clock``'s
    axis, one column per panel; returns its path."""
    import matplotlib.pyplot as plt

    attribute, xlabel = CLOCKS[clock]
    width = 4 * len(panels.values)
    height = 2.8 * len(CURVE_KEYS) + 0.8
    fig, axes = plt.subplots(len(CURVE_KEYS), len(panels.values), squeeze=False,
                             sharey="row", figsize=(width, height))
    entries: dict[tuple, tuple[str, str, Any]] = {}
    plotted: dict[str, list[float]] = {key: [] for key in CURVE_KEYS}
    for col, value in enumerate(panels.values):
        _draw_panel(axes, col, value, panels, attribute, styles, entries, plotted)
        _dress_panel(axes, col, value, grid, panels.dim, xlabel, threshold)
    for row, key in enumerate(CURVE_KEYS):
        if _log_scale_if_spread(axes[row], plotted[key] + [threshold] * (
                key == "test_error")):
            axes[row][0].set_ylabel(YLABELS[key] + ", log")
    legend_rows = _legend(fig, styles, [entries[k] for k in sorted(entries)], threshold, width)
    # Fixed margins: tight_layout would render every label an extra time.
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.1 / width,
                        bottom=(0.55 + 0.22 * legend_rows) / height, top=0.96,
                        wspace=0.12, hspace=0.35)
    path = os.path.join(outdir, f"{grid}_curves_{clock}.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_grid(grid: str, runs: Sequence[RunResult], threshold: float, outdir: str,
              summary: Sequence[Row] = (), styles: Styles | None = None,
              panels: str | None = None, against: Sequence[str] | None = None) -> list[str]:
    """The figures of one grid; returns their paths. Curves: the best finished seed at each
    setting's chosen rate (the ``summary`` row's; without one, the best run of the setting),
    one panel per value of ``panels`` ("tau" or "p"); figures against each axis in
    ``against``. None: as :func:`easgd_jax.experiments.report_spec.infer_grid` infers them.
    ``styles``: :func:`method_styles` of the whole sweep (default: of these runs)."""
    import matplotlib

    matplotlib.use("Agg")
    from easgd_jax.experiments.report_spec import infer_grid

    if panels is None or against is None:
        inferred = infer_grid(grid, runs, summary)
        panels = inferred.panels if panels is None else panels
        against = inferred.against if against is None else against
    styles = styles or method_styles(r.method for r in runs)
    members = [r for r in runs if grid in r.grids]
    rows = {(r["method"], -1 if r["tau"] is None else r["tau"], r["p"]): r
            for r in summary if r["grid"] == grid}
    values = {"tau": sorted({r.tau for r in members if r.tau is not None}),
              "p": sorted({r.num_workers for r in members if not r.fixed_workers})}
    layout = _panels(panels, values[panels], chosen_best_runs(grid, runs, rows))
    clocks = ["time", "steps"] + ["cluster"] * any(r.sim_time_s for r in layout.best.values())
    paths = [plot_curves(grid, clock, layout, threshold, outdir, styles) for clock in clocks]
    cluster = any(r.sim_time_s for r in members)
    for dim in AXES:
        if dim in against and rows:
            paths += plot_against(grid, rows, dim, values[dim], threshold, outdir, styles,
                                  cluster)
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


def _draw_against(ax: Any, lines: Mapping[tuple, list[Row]], dim: str, column: str,
                  spread: str | None, styles: Styles) -> tuple[list, list]:
    """One line per (method, other value) of ``column`` against ``dim``, with ``spread`` as
    error bars; returns the legend entries and the values drawn."""
    other = AGAINST[dim][1]
    keys = sorted({k for _, k in lines})
    several = len(keys) > 1  # name the other dimension in the legend
    entries, plotted = [], []
    for (method, key), members in sorted(lines.items()):
        points = sorted((r[dim], r[column], r[spread] if spread else 0.0) for r in members
                        if r[column] is not None)
        if not points:
            continue
        colour, marker = styles[method]
        x, y, err = zip(*points, strict=True)
        plotted += y
        style = LINESTYLES[keys.index(key) % len(LINESTYLES)]
        ax.errorbar(x, y, yerr=err if spread else None, color=colour, marker=marker,
                    capsize=3, linestyle=style if dim == "tau" else "-")
        label = method if key < 0 or (dim == "tau" and not several) else \
            f"{method} ({other} {key})"
        entries.append((method, label, style if dim == "tau" else "-"))
    return entries, plotted


def plot_against(grid: str, rows: Mapping[tuple, Row], dim: str, values: Sequence[int],
                 threshold: float, outdir: str, styles: Styles, cluster: bool) -> list[str]:
    """Mean error (+- std) and median time to threshold (simulated too, with ``cluster``)
    against ``dim`` ("p" or "tau"), from the summary rows: one line per method (and value of
    the other dimension); returns the figures' paths."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    lines = _against_lines(rows, dim, values)
    figures = [(f"error_vs_{dim}", "mean final test error (center)", "mean_final_test_error",
                "std_final_test_error"),
               (f"time_to_threshold_vs_{dim}", f"time to test error {100 * threshold:g}% (s)",
                "time_to_threshold_s", None)]
    if cluster:
        figures.append((f"time_to_threshold_vs_{dim}_cluster",
                        f"simulated time to {100 * threshold:g}% (s)",
                        "sim_time_to_threshold_s", None))
    paths = []
    for name, ylabel, column, spread in figures:
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        entries, plotted = _draw_against(ax, lines, dim, column, spread, styles)
        ax.set_xscale("log", base=2)
        ax.set_xticks(values, [str(v) for v in values])
        ax.set_xlabel(AGAINST[dim][0])
        log = _log_scale_if_spread([ax], plotted)
        if log:  # plain numbers (3, 10, 20), not 3 x 10^0
            ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_ylabel(ylabel + (", log" if log else ""))
        ax.set_title(f"grid {grid}" + ("" if spread else "\n(no point: the median seed did "
                                        "not reach it)"), fontsize=10)
        legend_rows = _legend(fig, styles, entries, None, 5.5)
        fig.subplots_adjust(left=0.16, right=0.97, bottom=(0.6 + 0.22 * legend_rows) / 4.2,
                            top=0.92 if spread else 0.87)
        path = os.path.join(outdir, f"{grid}_{name}.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths
