r"""The report of a sweep (:mod:`easgd_jax.experiments.sweep`), in the manner of the EASGD
paper's Section 5 (Zhang, Choromanska & LeCun, NIPS 2015, arXiv 1412.6651): the center's
test error of every method and setting at its chosen learning rate, with the number of runs
that failed, the time and steps to a threshold error, and the best run (the paper reports the
best of its runs).

    python -m easgd_jax.experiments.report --workdir SWEEP_DIR [--threshold 0.2]
    python -m easgd_jax.experiments.report --workdir SWEEP_DIR --compare OLD_SUMMARY_CSV
    python -m easgd_jax.experiments.report --new_summary NEW_CSV --compare OLD_SUMMARY_CSV
    python -m easgd_jax.experiments.report --runs_csv docs/mnist1d_paper/runs.csv \
        --config configs/sweeps/mnist1d_paper.py --outdir OUT    # no curves: no records

It reads the runs (:mod:`~easgd_jax.experiments.runs`), chooses each setting's rate and
computes its statistics (:mod:`~easgd_jax.experiments.stats`, the protocol), writes the
tables (:mod:`~easgd_jax.experiments.tables`), the findings
(:mod:`~easgd_jax.experiments.findings`) and the figures (:mod:`~easgd_jax.experiments.plots`)
that the sweep config's ``report`` declares (:mod:`~easgd_jax.experiments.report_spec`).

writes SWEEP_DIR/report/:
    runs.csv             one row per run: settings, status, errors, time/steps to threshold
    summary.csv, .md     one row per (grid, method, tau, p): the chosen rate; the mean +- std
                         over seeds at it (failures as chance), failures, the mean over the
                         finished seeds; the median over those seeds of the steps and the
                         time to threshold (a failed seed, or one that never reached it,
                         counts as not reached); the best run over rates and seeds; the
                         per-rate means; ``sim time to thr.`` when runs record simulated
                         cluster time, ``bytes/step`` when they record their exchange bytes
    findings.md          with the findings' tau grid in the sweep: the paper's three
                         findings, each judged held or not with its numbers
    findings_compare.md  with --compare: finding | old verdict | new verdict | numbers
    GRID_by_period.md    per grid that has them (by default, where the period varies):
                         method x period tables of the mean error (failures counted) and the
                         median time to threshold (:func:`tables.by_period_markdown`);
    GRID_by_p.md         the same, method x p, for a grid without them whose panels are p
    cluster_bandwidths.md, GRID_curves_cluster_Xgbit.png
                         with ``sweep.bandwidths``: the times to threshold and the curves at
                         other link bandwidths, recomputed from the recorded steps
                         (:mod:`~easgd_jax.experiments.bandwidths`)
    GRID_ranking.md      with ``report.ranking``: per panel the methods ranked, each tested
                         against the best (Holm-adjusted), and the named pairs
                         (:mod:`~easgd_jax.experiments.ranking`)
    speedup_cluster.md   with simulated cluster time and the speed-up's grid in the sweep: the
                         speed-up of one (method, tau) over another at each p
                         (:func:`tables.speedup_table`)
    GRID_curves_*.png, GRID_error_vs_AXIS.png, GRID_time_to_threshold_vs_AXIS*.png
                         the figures of every grid (:mod:`~easgd_jax.experiments.plots`)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
from absl import flags, logging

# The names below are also this module's for its callers (sweep.py, tests).
from easgd_jax.experiments import (
    cli,
    findings,
    ranking,
    report_spec,
    stats,
    sweep_plan,
    tables,
)
from easgd_jax.experiments import metric as metric_lib
from easgd_jax.experiments.plots import method_styles, plot_grid
from easgd_jax.experiments.runs import (  # noqa: F401
    RunResult,
    collect,
    read_json,
    read_run,
    read_runs_csv,
    run_status,
    startup_seconds,
)
from easgd_jax.experiments.stats import (  # noqa: F401
    best_run,
    chance_error,
    choose_learning_rate,
    summarize,
)
from easgd_jax.experiments.tables import (  # noqa: F401
    by_period_markdown,
    markdown,
    read_summary_csv,
    run_rows,
    speedup_markdown,
    speedup_table,
)

Row = dict[str, Any]


def _write(path: str, text: str, files: list[str]) -> None:
    """Writes ``text`` to ``path`` and appends the path to ``files``."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    files.append(path)


def _write_tables(outdir: str, rows: Sequence[Row], summary: Sequence[Row],
                  threshold: float, spec: report_spec.ReportSpec,
                  grids: Mapping[str, report_spec.GridSpec], compare: str | None,
                  metric: metric_lib.Metric = metric_lib.ERROR) -> list[str]:
    """runs.csv (``rows``), summary.csv and .md, and the findings, comparison, method x period and
    speed-up tables that ``spec`` and ``grids`` declare; returns their paths. The paper's
    findings and their comparison are judged on the test error: with another ``metric``
    they are not written."""
    files = [os.path.join(outdir, n) for n in ("runs.csv", "summary.csv")]
    tables.write_csv(files[0], rows)
    tables.write_csv(files[1], summary)
    _write(os.path.join(outdir, "summary.md"), tables.markdown(summary, threshold, metric),
           files)
    names = {row["grid"] for row in summary}
    if metric is not metric_lib.ERROR:
        spec = dataclasses.replace(spec, findings=None)
        compare = None
    if spec.findings is not None and spec.findings.tau_grid in names:
        _write(os.path.join(outdir, "findings.md"),
               findings.findings_markdown(summary, threshold, spec.findings), files)
    if compare:
        _write(os.path.join(outdir, "findings_compare.md"), findings.compare_markdown(
            tables.read_summary_csv(compare), summary, spec.findings or
            report_spec.PAPER_FINDINGS), files)
    for name, grid in grids.items():
        if grid.by_period:
            _write(os.path.join(outdir, f"{name}_by_period.md"),
                   tables.by_period_markdown(summary, name, threshold, metric), files)
        elif grid.panels == "p":
            _write(os.path.join(outdir, f"{name}_by_p.md"),
                   tables.by_period_markdown(summary, name, threshold, metric, "p"), files)
    for name in spec.ranking.grids if spec.ranking is not None else ():
        if name in names:
            _write(os.path.join(outdir, f"{name}_ranking.md"), ranking.ranking_markdown(
                summary, name, spec.ranking.pairs, metric), files)
    speedup = spec.speedup
    sim = any(row["sim_time_s"] is not None for row in rows)
    if speedup is not None and sim and speedup.grid in names:
        table = tables.speedup_table(summary, speedup.grid, speedup.fast, speedup.slow)
        _write(os.path.join(outdir, "speedup_cluster.md"), tables.speedup_markdown(
            table, threshold, speedup.fast, speedup.slow), files)
    return files


def fixed_methods(sweep: Any) -> list[str]:
    """The methods whose p the sweep config fixes (``num_workers`` > 0: MSGD)."""
    methods = sweep.get("methods") or {}
    methods = methods.to_dict() if hasattr(methods, "to_dict") else methods
    return [m for m, spec in methods.items() if spec.get("num_workers")]


def declared(runs: Sequence[RunResult], sweep: Mapping[str, Any]) -> list[RunResult]:
    """The ``runs`` the sweep config plans (:func:`easgd_jax.experiments.sweep_plan.plan`, by
    run name): a run of a seed, rate, period or p the sweep no longer declares stays in the
    workdir but out of the report, with a warning (a probe's rate the grid has since dropped
    would otherwise enter the per-rate means and the choice). All of them when the config
    declares no methods (a report read from a bare sweep.json)."""
    if not report_spec.plain(sweep.get("methods")):
        return list(runs)
    names = {run.name for run in sweep_plan.plan(ml_collections.ConfigDict(
        report_spec.plain(sweep)))}
    kept = [r for r in runs if r.name in names]
    left = sorted({r.name for r in runs} - {r.name for r in kept})
    if left:  # (a part of a sweep, lm_compare.py:p8/64, leaves out the other parts' runs)
        shown = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
        logging.warning("report: %d run(s) in the workdir that the sweep config does not plan "
                        "(another seed, rate, period or p), left out: %s", len(left), shown)
    return kept


def write_report(workdir: str, sweep: Any = None, threshold: float | None = None,
                 plots: bool = True, compare: str | None = None,
                 runs_csv: str | None = None, outdir: str | None = None) -> dict[str, Any]:
    """Collects the runs of the sweep in ``workdir`` and writes WORKDIR/report as the sweep
    config (``sweep``; default: WORKDIR/sweep.json) declares it; returns {"runs": rows,
    "summary": rows, "files": paths}. ``compare``: an older summary.csv whose findings are
    set against this one's (findings_compare.md). ``plots``: draw the figures.

    ``runs_csv``: read the runs from a report's runs.csv instead of ``workdir``
    (:func:`~easgd_jax.experiments.runs.read_runs_csv`: settings and scalars, no curves, so
    no curve figures), written at the sweep's threshold; ``outdir`` (default
    WORKDIR/report): where the report goes."""
    if sweep is None:
        sweep = read_json(os.path.join(workdir, "sweep.json")) or {}
    if threshold is None:
        threshold = float(sweep.get("threshold", 0.5))
    spec = report_spec.report_spec(sweep)
    metric = metric_lib.of_sweep(sweep)
    runs = declared(read_runs_csv(runs_csv, threshold, fixed_methods(sweep)) if runs_csv
                    else collect(workdir, metric), sweep)
    summary = summarize(runs, threshold, stats.grid_selections(sweep),
                        sweep.get("chance_error"), sweep.get("select_on", "test"), metric)
    grids = {name: spec.grid(name, runs, summary)
             for name in sorted({row["grid"] for row in summary})}
    outdir = outdir or os.path.join(workdir, "report")
    os.makedirs(outdir, exist_ok=True)
    rows = tables.run_rows(runs, threshold)
    files = _write_tables(outdir, rows, summary, threshold, spec, grids, compare, metric)
    if plots:
        styles = method_styles(r.method for r in runs)
        for name, grid in grids.items():
            if grid.plots:
                files += plot_grid(name, runs, threshold, outdir, summary, styles,
                                   grid.panels, grid.against, metric)
    if sweep.get("bandwidths") and not runs_csv:  # other links, from the recorded steps
        from easgd_jax.experiments import bandwidths

        files += bandwidths.write(workdir, outdir, runs, summary, sweep["bandwidths"],
                                  threshold, grids, metric, plots)
    return {"runs": rows, "summary": summary, "files": files}


# The command line's flags, on a FlagValues of their own (importing this module defines
# nothing in absl's global FLAGS).
FLAGS = flags.FlagValues()
_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep's workdir.", flag_values=FLAGS)
_THRESHOLD = flags.DEFINE_float("threshold", None, "Test error threshold (default: the "
                                "sweep config's).", flag_values=FLAGS)
_COMPARE = flags.DEFINE_string("compare", None, "An older summary.csv: its findings' "
                               "verdicts next to this sweep's (findings_compare.md).",
                               flag_values=FLAGS)
_RUNS_CSV = flags.DEFINE_string(
    "runs_csv", None, "Write the report from a report's runs.csv (no curves) instead of "
    "--workdir's runs; needs --config (the sweep config) and --outdir.", flag_values=FLAGS)
_CONFIG = flags.DEFINE_string("config", None, "With --runs_csv: the sweep config file.",
                              flag_values=FLAGS)
_OUTDIR = flags.DEFINE_string("outdir", None, "With --runs_csv: where the report goes.",
                              flag_values=FLAGS)
_NEW_SUMMARY = flags.DEFINE_string("new_summary", None, "With --compare and no --workdir: "
                                   "the newer summary.csv to compare.", flag_values=FLAGS)


def main(argv: list[str]) -> None:
    """Writes the report of --workdir and prints its summary (and comparison) and files; or,
    without --workdir, prints the comparison of --new_summary with --compare."""
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    if _RUNS_CSV.value:
        if not (_CONFIG.value and _OUTDIR.value):
            raise ValueError("--runs_csv needs --config and --outdir.")
        from easgd_jax.experiments.config_files import load_config_file

        os.makedirs(_OUTDIR.value, exist_ok=True)
        out = write_report(_OUTDIR.value, load_config_file(_CONFIG.value), _THRESHOLD.value,
                           compare=_COMPARE.value, runs_csv=_RUNS_CSV.value,
                           outdir=_OUTDIR.value)
        print("\n".join(out["files"]))
        return
    if _WORKDIR.value is None:
        if not (_NEW_SUMMARY.value and _COMPARE.value):
            raise ValueError("give --workdir, or --new_summary and --compare.")
        print(findings.compare_markdown(read_summary_csv(_COMPARE.value),
                                        read_summary_csv(_NEW_SUMMARY.value)))
        return
    out = write_report(_WORKDIR.value, threshold=_THRESHOLD.value, compare=_COMPARE.value)
    print(open(out["files"][2], encoding="utf-8").read())
    if _COMPARE.value:
        print(open(next(f for f in out["files"] if f.endswith("findings_compare.md")),
                   encoding="utf-8").read())
    print("\n".join(out["files"]))


def run_main() -> None:
    """The command line: this module's flags (``FLAGS``), then absl's own (``--verbosity``)
    and :func:`main` (:func:`easgd_jax.experiments.cli.run`)."""
    cli.run(main, FLAGS, __doc__)


if __name__ == "__main__":
    run_main()
