"""Other link bandwidths on the simulated cluster clock, recomputed from the RECORDED steps
(no second training), as :mod:`easgd_jax.experiments.clock_sensitivity` does for the paper's
speed-up: a synchronous run's simulated time is a deterministic function of its step count
(:class:`easgd_jax.training.simulated_time.SyncClock`: t compute + n_x(t) T(b_x) + (t -
n_x(t)) T(b_l), T a ring all-reduce or a parameter server's exchange, Zhang, Choromanska &
LeCun 2015 Section 5's cost model), so the same run on a slower link is that function with
another bandwidth at the same steps. Each run's clock is rebuilt from its own files: the
cluster it ran on and its bytes per exchange (``final_metrics.json``'s ``cluster``), its
period, exchange step and fragments (its ``config.json``'s algorithm, through the registry);
the rebuilt clock at the recorded bandwidth must give the recorded ``simulated_time_s`` of
every evaluation (:func:`run_clock` refuses otherwise).

A sweep declares the extra bandwidths as ``sweep.bandwidths`` (Gb/s, e.g. ``[1.0]`` for a
cross-datacenter link beside the recorded 10 Gb/s); the report then writes

    cluster_bandwidths.md           per setting at its chosen rate, the median simulated time
                                    to the threshold at the recorded bandwidth and at each
                                    extra one (a failed seed, or one that never reached it,
                                    counted as not reached)
    GRID_curves_cluster_Xgbit.png   the grid's curves against the simulated time at X Gb/s
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from easgd_jax.experiments import plots, stats
from easgd_jax.experiments import runs as runs_lib
from easgd_jax.experiments.metric import ERROR, Metric

Row = dict[str, Any]
RELATIVE_TOLERANCE = 1e-6


def run_clock(rundir: str, bandwidth_gbit_s: float | None = None,
              recorded_sim_s: Sequence[float] = (), steps: Sequence[int] = ()) -> Any:
    """The synchronous run's cluster clock rebuilt from ``rundir``'s config.json and
    final_metrics.json, at ``bandwidth_gbit_s`` (None: as recorded); ValueError when the
    rebuilt clock at the recorded bandwidth misses a recorded time (``recorded_sim_s`` at
    ``steps``) by more than 1e-6 relative, or the run has no recorded cluster."""
    from easgd_jax.algorithms import registry
    from easgd_jax.parallel.cluster import Cluster
    from easgd_jax.training import config as config_lib
    from easgd_jax.training.simulated_time import SyncClock

    config = ml_collections.ConfigDict(runs_lib.read_json(os.path.join(rundir, "config.json")))
    final = runs_lib.read_json(os.path.join(rundir, "final_metrics.json")) or {}
    recorded = final.get("cluster")
    if recorded is None or config.get("executor", "sync") != "sync":
        raise ValueError(f"{rundir}: no synchronous run's cluster clock recorded.")
    spec = registry.get_spec(config.algorithm.name)
    hparams = config_lib.algorithm_hparams(config)
    cluster = Cluster(recorded["compute_s_per_step"], recorded["bandwidth_bytes_per_s"],
                      recorded["latency_s"], recorded["topology"])
    clock = SyncClock(cluster, config.num_workers, spec.period(hparams), spec.exchange_step,
                      spec.num_fragments(hparams), recorded["exchange_bytes"],
                      recorded["local_bytes"], recorded.get("devices_per_worker", 1),
                      recorded.get("intra_s_per_step", 0.0))
    for step, seconds in zip(steps, recorded_sim_s, strict=True):
        rebuilt = clock.time_s(step)
        if abs(rebuilt - seconds) > RELATIVE_TOLERANCE * max(abs(seconds), 1e-12):
            raise ValueError(f"{rundir}: the rebuilt clock gives {rebuilt!r} s at step {step}, "
                             f"the run recorded {seconds!r} s.")
    return clock if bandwidth_gbit_s is None else _on_link(clock, bandwidth_gbit_s)


def _on_link(clock: Any, bandwidth_gbit_s: float) -> Any:
    """``clock`` with its cluster's link at ``bandwidth_gbit_s``."""
    return dataclasses.replace(clock, cluster=dataclasses.replace(
        clock.cluster, bandwidth_bytes_per_s=bandwidth_gbit_s * 1e9 / 8))


def _has_clock(run: runs_lib.RunResult) -> bool:
    return run.status == "finished" and bool(run.sim_time_s)


def at_bandwidth(workdir: str, run: runs_lib.RunResult, bandwidth_gbit_s: float,
                 clock: Any = None) -> runs_lib.RunResult:
    """``run`` with its simulated times recomputed at ``bandwidth_gbit_s`` (every evaluation)
    by its ``clock`` as recorded (default: rebuilt here, the recorded times checked first,
    :func:`run_clock`); a run without a recorded clock (failed before its end) keeps no
    simulated time."""
    if not _has_clock(run):
        return dataclasses.replace(run, sim_time_s=[])
    if clock is None:
        clock = run_clock(os.path.join(workdir, runs_lib.RUNS, run.name), None,
                          run.sim_time_s, run.steps)
    at = _on_link(clock, bandwidth_gbit_s)
    return dataclasses.replace(run, sim_time_s=[at.time_s(s) for s in run.steps])


def recorded_bandwidth(workdir: str, runs: Sequence[runs_lib.RunResult]) -> float | None:
    """The link bandwidth (Gb/s) the finished runs recorded (None: none recorded one);
    ValueError when they differ."""
    seen = set()
    for r in runs:
        final = runs_lib.read_json(os.path.join(workdir, runs_lib.RUNS, r.name,
                                                "final_metrics.json")) or {}
        if "cluster" in final:
            seen.add(final["cluster"]["bandwidth_bytes_per_s"] * 8 / 1e9)
    if len(seen) > 1:
        raise ValueError(f"the runs recorded different bandwidths: {sorted(seen)} Gb/s.")
    return seen.pop() if seen else None


def table(summary: Sequence[Row], by_bandwidth: Mapping[float, Sequence[runs_lib.RunResult]],
          threshold: float) -> list[Row]:
    """Per summary row (grid, method, tau, p): the median simulated time to ``threshold``
    over the done seeds at the chosen rate, at every bandwidth of ``by_bandwidth``
    ({Gb/s: the runs with their times at it}), and the ratio of the slowest to the first."""
    out = []
    for row in summary:
        if row["chosen_learning_rate"] is None:
            continue
        key = (row["method"], -1 if row["tau"] is None else row["tau"], row["p"])
        cells: dict[float, float | None] = {}
        for gbit, members in by_bandwidth.items():
            at = [r for r in members if row["grid"] in r.grids
                  and runs_lib.setting_key(r) == key
                  and r.learning_rate == row["chosen_learning_rate"]
                  and r.status in runs_lib.DONE]
            cells[gbit] = stats.time_to_threshold(at, threshold, "cluster")
        out.append({"grid": row["grid"], "method": row["method"], "tau": row["tau"],
                    "p": row["p"], "chosen_learning_rate": row["chosen_learning_rate"],
                    "steps_to_threshold": row["steps_to_threshold"],
                    "times": cells})
    return out


def markdown(rows: Sequence[Row], bandwidths: Sequence[float], recorded: float,
             threshold: float, metric: Metric = ERROR) -> str:
    """:func:`table` as Markdown, the recomputation stated."""
    lines = [
        f"Median simulated cluster time (s) to {metric.reach(threshold)} at each setting's "
        f"chosen rate (a failed seed, or one that never reached it, counted as not reached), "
        f"at the recorded {recorded:g} Gb/s and RECOMPUTED from the recorded steps at "
        + ", ".join(f"{b:g}" for b in bandwidths if b != recorded) + " Gb/s (no second "
        "training: each run's clock rebuilt from its config.json and final_metrics.json, "
        "checked against every recorded time to 1e-6; easgd_jax/experiments/bandwidths.py). "
        "Steps: the median steps to the threshold (the same at every bandwidth).", "",
        "| grid | method | tau | p | lr | steps to thr. | "
        + " | ".join(f"{b:g} Gb/s (s)" for b in bandwidths) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(bandwidths)]
    for r in rows:
        tau = "-" if r["tau"] is None else str(r["tau"])
        times = [("not reached" if r["times"].get(b) is None else f"{r['times'][b]:.4g}")
                 for b in bandwidths]
        steps = r["steps_to_threshold"]
        lines.append(f"| {r['grid']} | {r['method']} | {tau} | {r['p']} | "
                     f"{r['chosen_learning_rate']:g} | "
                     f"{'not reached' if steps is None else steps} | " + " | ".join(times)
                     + " |")
    return "\n".join(lines) + "\n"


def write(workdir: str, outdir: str, runs: Sequence[runs_lib.RunResult],
          summary: Sequence[Row], extra: Sequence[float], threshold: float,
          grids: Mapping[str, Any], metric: Metric = ERROR, plot: bool = True) -> list[str]:
    """cluster_bandwidths.md and, with ``plot``, each grid's curves against the simulated
    time at every ``extra`` bandwidth (module docstring); returns their paths."""
    recorded = recorded_bandwidth(workdir, runs)
    if recorded is None:
        return []
    bandwidths = [recorded, *sorted({float(b) for b in extra} - {recorded}, reverse=True)]
    # Each run's clock rebuilt once, and checked against every time it recorded.
    clocks = {r.name: run_clock(os.path.join(workdir, runs_lib.RUNS, r.name), None,
                                r.sim_time_s, r.steps) for r in runs if _has_clock(r)}
    by_bandwidth = {recorded: list(runs)}
    for gbit in bandwidths[1:]:
        by_bandwidth[gbit] = [at_bandwidth(workdir, r, gbit, clocks.get(r.name)) for r in runs]
    path = os.path.join(outdir, "cluster_bandwidths.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(markdown(table(summary, by_bandwidth, threshold), bandwidths, recorded,
                         threshold, metric))
    files = [path]
    if plot:
        files += _curves(outdir, by_bandwidth, bandwidths[1:], summary, threshold, grids,
                         metric)
    return files


def _curves(outdir: str, by_bandwidth: Mapping[float, Sequence[runs_lib.RunResult]],
            extra: Sequence[float], summary: Sequence[Row], threshold: float,
            grids: Mapping[str, Any], metric: Metric) -> list[str]:
    """GRID_curves_cluster_Xgbit.png for every grid with curves and every extra bandwidth."""
    import matplotlib

    matplotlib.use("Agg")
    paths = []
    for gbit in extra:
        runs = by_bandwidth[gbit]
        styles = plots.method_styles(r.method for r in runs)
        for name, grid in grids.items():
            if not grid.plots:
                continue
            members = [r for r in runs if name in r.grids]
            rows = {(r["method"], -1 if r["tau"] is None else r["tau"], r["p"]): r
                    for r in summary if r["grid"] == name}
            values = {"tau": sorted({r.tau for r in members if r.tau is not None}),
                      "p": sorted({r.num_workers for r in members if not r.fixed_workers})}
            layout = plots._panels(grid.panels, values[grid.panels],
                                   plots.chosen_runs(name, runs, rows))
            if not any(r.sim_time_s for group in layout.groups.values() for r in group):
                continue
            with tempfile.TemporaryDirectory(dir=outdir) as scratch:  # not over the recorded
                drawn = plots.plot_curves(
                    name, "cluster", layout, threshold, scratch, styles,
                    {r.method for r in members}, metric,
                    xlabel=f"simulated cluster time (s) at {gbit:g} Gb/s: recomputed from the "
                    "recorded steps")
                path = os.path.join(outdir, f"{name}_curves_cluster_{gbit:g}gbit.png")
                os.replace(drawn, path)
            paths.append(path)
    return paths

