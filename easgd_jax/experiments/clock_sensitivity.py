"""The simulated clock's assumptions in the open (issue 33, item 4): the speed-up of one
(method, tau) over another on the simulated cluster, recomputed from the RECORDED steps to
threshold (no retraining) for other bandwidths and topologies.

The recorded runs (configs/sweeps/paper_cluster.py) charge every local step 10 ms: an
assumption, not a measurement (the CIFAR net's 11.85 GFLOP per batch-128 step at 1.2 TFLOP/s,
28% of a K40-class GPU's float32 peak; see that file), 50 us latency and 10 Gb/s links, with
each algorithm on its own topology (``topology = "auto"``: EASGD/EAMSGD a ring all-reduce,
DOWNPOUR a parameter server whose one link serialises the p pushes and pulls). Since the
clock is a deterministic function of the step count (:func:`easgd_jax.parallel.cluster.
sync_time_s`), the time to threshold at another bandwidth or topology is that function at
the same steps: the summary's median steps to threshold at the chosen rate, and the bytes per
exchange the run recorded (``bytes_per_step`` x the exchange period). The recorded setting
is recomputed too and must match the recorded simulated time (:func:`check_recorded`).

    python -m easgd_jax.experiments.clock_sensitivity --runs_csv docs/mnist1d_paper/runs.csv \\
        --config configs/sweeps/mnist1d_paper.py --outdir docs/mnist1d_paper
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from absl import flags

from easgd_jax.experiments import cli, palette
from easgd_jax.parallel.cluster import Cluster, sync_time_s

Row = dict[str, Any]
BANDWIDTHS_GBIT = (1.0, 2.5, 10.0, 25.0, 56.0, 100.0)
# (label, fast's topology, slow's topology): the recorded "auto" assignment and equal ones.
TOPOLOGIES = (("recorded: EAMSGD ring, DOWNPOUR server", "ring", "parameter_server"),
              ("both ring", "ring", "ring"),
              ("both parameter server", "parameter_server", "parameter_server"))


def _row(summary: Sequence[Row], grid: str, method: str, tau: int, p: int) -> Row | None:
    return next((r for r in summary if r["grid"] == grid and r["method"] == method
                 and r["tau"] == tau and r["p"] == p), None)


def time_to_threshold(row: Row, tau: int, cluster: Cluster) -> float | None:
    """Simulated seconds of ``row``'s median steps to threshold on ``cluster`` (None: not
    reached), its exchange of ``bytes_per_step * tau`` bytes opening every period."""
    steps = row.get("steps_to_threshold")
    if steps is None or row.get("bytes_per_step") is None:
        return None
    return float(sync_time_s(cluster, steps, row["p"], tau, row["bytes_per_step"] * tau))


def sensitivity(summary: Sequence[Row], grid: str = "p", fast: tuple[str, int] = ("eamsgd", 10),
                slow: tuple[str, int] = ("downpour", 1), compute_s: float = 0.010,
                latency_us: float = 50.0,
                bandwidths: Sequence[float] = BANDWIDTHS_GBIT) -> list[Row]:
    """One row per (topology assignment, bandwidth, p): both times to threshold and the
    speed-up slow / fast (None when fast did not reach it, inf when only slow did not)."""
    ps = sorted({r["p"] for r in summary if r["grid"] == grid and r["method"] == fast[0]})
    table = []
    for label, fast_topology, slow_topology in TOPOLOGIES:
        for gbit in bandwidths:
            for p in ps:
                fast_row, slow_row = _row(summary, grid, *fast, p), _row(summary, grid, *slow, p)
                if fast_row is None or slow_row is None:
                    continue

                def on(topology: str, gbit: float = gbit) -> Cluster:
                    return Cluster(compute_s, gbit * 1e9 / 8, latency_us * 1e-6, topology)

                fast_s = time_to_threshold(fast_row, fast[1], on(fast_topology))
                slow_s = time_to_threshold(slow_row, slow[1], on(slow_topology))
                speedup = (None if fast_s is None else math.inf if slow_s is None
                           else slow_s / fast_s)
                table.append({"topology": label, "bandwidth_gbit_s": gbit, "p": p,
                              "fast_steps": fast_row["steps_to_threshold"],
                              "slow_steps": slow_row["steps_to_threshold"],
                              "fast_s": fast_s, "slow_s": slow_s, "speedup": speedup})
    return table


def check_recorded(table: Sequence[Row], summary: Sequence[Row], grid: str,
                   fast: tuple[str, int], slow: tuple[str, int],
                   bandwidth: float = 10.0) -> float:
    """The largest relative difference between the recomputed times of the recorded
    setting (``TOPOLOGIES[0]``, ``bandwidth``) and the summary's recorded simulated times
    to threshold; ValueError above 1e-6 (the recomputation would not be the clock's)."""
    worst = 0.0
    for r in table:
        if r["topology"] != TOPOLOGIES[0][0] or r["bandwidth_gbit_s"] != bandwidth:
            continue
        for (method, tau), key in ((fast, "fast_s"), (slow, "slow_s")):
            recorded = _row(summary, grid, method, tau, r["p"])["sim_time_to_threshold_s"]
            if (recorded is None) != (r[key] is None):
                raise ValueError(f"{method} p = {r['p']}: reached in one and not the other.")
            if recorded is not None:
                worst = max(worst, abs(r[key] - recorded) / recorded)
    if worst > 1e-6:
        raise ValueError(f"the recomputed times differ from the recorded ones by {worst:.2g}.")
    return worst


def markdown(table: Sequence[Row], fast: tuple[str, int], slow: tuple[str, int],
             threshold: float, worst: float) -> str:
    """The table: rows topology x bandwidth, columns p, cells the speed-up."""
    ps = sorted({r["p"] for r in table})
    cell = {(r["topology"], r["bandwidth_gbit_s"], r["p"]): r for r in table}
    lines = [
        f"Speed-up of {fast[0].upper()} (tau = {fast[1]}) over {slow[0].upper()} (tau = "
        f"{slow[1]}) on the SIMULATED cluster clock (easgd_jax/parallel/cluster.py), time to "
        f"{100 * threshold:g}% test error of {slow[0]} / that of {fast[0]}, recomputed from "
        "the recorded median steps to threshold at each setting's chosen rate (no "
        "retraining): 10 ms per local step (ASSUMED: the paper's CIFAR net on a K40-class GPU "
        "at 28% of peak, configs/sweeps/paper_cluster.py; no GPU measured), 50 us latency. "
        f"The recorded setting (10 Gb/s, first rows) recomputed matches the recorded "
        f"simulated times to {worst:.1g} (relative).", "",
        f"steps to threshold (median): {fast[0]} "
        + ", ".join(f"p {p}: {cell[(TOPOLOGIES[0][0], 10.0, p)]['fast_steps']}" for p in ps)
        + f"; {slow[0]} "
        + ", ".join(f"p {p}: {cell[(TOPOLOGIES[0][0], 10.0, p)]['slow_steps']}" for p in ps),
        "", "| topology | Gb/s | " + " | ".join(f"p = {p}" for p in ps) + " |",
        "|---|---|" + "---|" * len(ps)]
    for label, _, _ in TOPOLOGIES:
        for gbit in sorted({r["bandwidth_gbit_s"] for r in table}):
            cells = []
            for p in ps:
                s = cell[(label, gbit, p)]["speedup"]
                cells.append("n/a" if s is None else "inf" if math.isinf(s) else f"{s:.2f}x")
            lines.append(f"| {label} | {gbit:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(table: Sequence[Row], path: str, fast: tuple[str, int],
         slow: tuple[str, int]) -> str:
    """Speed-up against bandwidth (log-log), one colour per p, one line style per topology
    assignment; the recorded 10 Gb/s marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    ps = sorted({r["p"] for r in table})
    colours = dict(zip(ps, ("#1b9e77", "#d95f02", "#7570b3", "#e7298a"), strict=False))
    styles = dict(zip([t[0] for t in TOPOLOGIES], ("-", "--", ":"), strict=True))
    fig, ax = plt.subplots(figsize=(7.0, 5.2), layout="constrained")
    for (label, _, _), p in [(t, p) for t in TOPOLOGIES for p in ps]:
        points = sorted((r["bandwidth_gbit_s"], r["speedup"]) for r in table
                        if r["topology"] == label and r["p"] == p and r["speedup"] is not None
                        and math.isfinite(r["speedup"]))
        if points:
            x, y = zip(*points, strict=True)
            ax.plot(x, y, color=colours[p], linestyle=styles[label],
                    marker=palette.style(fast[0])[1], markersize=4, label=f"p = {p}, {label}")
    ax.axhline(1.0, color="grey", linewidth=1)
    ax.axvline(10.0, color="grey", linestyle=":", linewidth=1)
    ax.annotate("recorded: 10 Gb/s", xy=(10.0, 1.0), xytext=(3, 3),
                textcoords="offset points", fontsize=7, color="grey")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.yaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2.0, 5.0)))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_xticks(BANDWIDTHS_GBIT)
    ax.set_xlabel("link bandwidth (Gb/s), log")
    ax.set_ylabel(f"speed-up of {fast[0]} (tau {fast[1]}) over {slow[0]} (tau {slow[1]}),\n"
                  "simulated cluster clock (10 ms/step assumed), log")
    ax.set_title("time to threshold recomputed from the recorded steps", fontsize=10)
    fig.legend(loc="outside lower center", ncol=2, fontsize=7, frameon=False)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


FLAGS = flags.FlagValues()
_RUNS_CSV = flags.DEFINE_string("runs_csv", None, "A report's runs.csv.", flag_values=FLAGS)
_CONFIG = flags.DEFINE_string("config", None, "The sweep config it was run with.",
                              flag_values=FLAGS)
_OUTDIR = flags.DEFINE_string("outdir", None, "Where clock_sensitivity.md/.png go.",
                              flag_values=FLAGS)
flags.mark_flags_as_required(["runs_csv", "config", "outdir"], flag_values=FLAGS)


def write(runs_csv: str, sweep: Mapping[str, Any] | Any, outdir: str) -> tuple[str, str]:
    """clock_sensitivity.md and .png of ``runs_csv`` (written with sweep config ``sweep``,
    whose report's speed-up names the grid and the two methods); returns their paths."""
    from easgd_jax.experiments import report_spec, runs, stats
    from easgd_jax.experiments.report import fixed_methods

    threshold = float(sweep.get("threshold", 0.5))
    spec = report_spec.report_spec(sweep).speedup
    recorded = runs.read_runs_csv(runs_csv, threshold, fixed_methods(sweep))
    summary = stats.summarize(recorded, threshold, stats.grid_selections(sweep),
                              sweep.get("chance_error"), sweep.get("select_on", "test"))
    cluster = sweep.get("overrides", {}).get("cluster", {})
    table = sensitivity(summary, spec.grid, spec.fast, spec.slow,
                        cluster.get("compute_s_per_step", 0.010),
                        cluster.get("latency_us", 50.0))
    worst = check_recorded(table, summary, spec.grid, spec.fast, spec.slow,
                           cluster.get("bandwidth_gbit_s", 10.0))
    md = os.path.join(outdir, "clock_sensitivity.md")
    with open(md, "w", encoding="utf-8") as f:
        f.write(markdown(table, spec.fast, spec.slow, threshold, worst))
    return md, plot(table, os.path.join(outdir, "clock_sensitivity.png"), spec.fast, spec.slow)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    from easgd_jax.experiments.config_files import load_config_file

    sweep = load_config_file(_CONFIG.value).to_dict()
    md, png = write(_RUNS_CSV.value, sweep, _OUTDIR.value)
    print(open(md, encoding="utf-8").read())
    print(png)


if __name__ == "__main__":
    cli.run(main, FLAGS, __doc__)
