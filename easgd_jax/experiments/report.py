"""The table and plots of a sweep (:mod:`easgd_jax.sweep`), in the manner of the EASGD paper's
Section 5 (Zhang, Choromanska & LeCun, NIPS 2015, arXiv 1412.6651): the center's test error
of every method and setting, best over learning rates (and runs, as the paper reports the
best of its runs), the time and steps to a threshold error, and failures (divergence).

    python -m easgd_jax.experiments.report --workdir SWEEP_DIR [--threshold 0.2]

writes SWEEP_DIR/report/:
    runs.csv             one row per run: settings, status, errors, time/steps to threshold
    summary.csv, .md     one row per (grid, method, tau, p): the best run over learning rates
                         and seeds, the mean +- std over seeds at its learning rate, failures
    GRID_curves_time.png, GRID_curves_steps.png
                         training loss (the workers' mini-batches, as training/sync.py reports it),
                         test loss and test error of the center of each best
                         run against wall-clock time / steps, one panel per tau (per p when
                         only p varies); methods without a tau (or with p fixed, e.g. the
                         sequential MSGD) appear in every panel
    GRID_error_vs_p.png, GRID_time_to_threshold_vs_p.png   when p varies in the grid
    findings.md          with a grid named "tau": the paper's three findings, each judged
                         held or not with its numbers (:mod:`easgd_jax.experiments.findings`)

Times come from metrics.jsonl: ``step / steps_per_second`` at each evaluation (wall-clock
since the run started, evaluations included) less the run's one-off startup cost, mostly
compilation (the first evaluation's excess over the steady rate, ``startup_s`` in runs.csv:
with the persistent compilation cache, only the first seed of a setting compiles, so the
raw times would favour the others). They are approximate for a run resumed from a
checkpoint (``resumed`` in runs.csv).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from easgd_jax.experiments import findings

RUNS = "runs"
CURVE_KEYS = ("train_loss", "test_loss", "test_error")
# train_loss is the mean mini-batch loss of the workers since the last evaluation (as
# training/sync.py reports it); the test metrics are the center's.
YLABELS = {"train_loss": "training loss (workers' batches)", "test_loss": "test loss (center)",
           "test_error": "test error (center)"}


@dataclasses.dataclass
class RunResult:
    """One run's settings, status and curves (lists over evaluations)."""

    name: str
    method: str
    algorithm: str
    tau: int | None
    num_workers: int
    fixed_workers: bool
    learning_rate: float
    seed: int
    grids: list[str]
    status: str
    resumed: bool = False
    steps: list[int] = dataclasses.field(default_factory=list)
    time_s: list[float] = dataclasses.field(default_factory=list)
    train_loss: list[float] = dataclasses.field(default_factory=list)
    test_loss: list[float] = dataclasses.field(default_factory=list)
    test_error: list[float] = dataclasses.field(default_factory=list)
    message: str = ""
    wall_time_s: float | None = None  # as measured, compilation included
    compile_s: float = 0.0  # removed from time_s (see startup_seconds)

    @property
    def final_test_error(self) -> float:
        return self.test_error[-1] if self.test_error else math.nan

    @property
    def best_test_error(self) -> float:
        return min(self.test_error) if self.test_error else math.nan

    def to_threshold(self, threshold: float) -> tuple[int | None, float | None]:
        """(steps, seconds) at the first evaluation with test error <= threshold."""
        for step, seconds, error in zip(self.steps, self.time_s, self.test_error, strict=True):
            if error <= threshold:
                return step, seconds
        return None, None


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def run_status(rundir: str) -> str:
    """``finished``, ``diverged``, ``error``, ``unfinished`` or ``pending``."""
    if os.path.exists(os.path.join(rundir, "final_metrics.json")):
        return "finished"
    failed = _read_json(os.path.join(rundir, "failed.json"))
    if failed is not None:
        return failed["status"]
    if os.path.exists(os.path.join(rundir, "metrics.jsonl")) or os.path.exists(
            os.path.join(rundir, "checkpoints")):
        return "unfinished"
    return "pending"


def read_run(rundir: str) -> RunResult:
    """The run in ``rundir`` (which holds the sweep's run.json)."""
    settings = _read_json(os.path.join(rundir, "run.json"))
    if settings is None:
        raise FileNotFoundError(f"{rundir} holds no run.json (not a sweep run).")
    result = RunResult(
        name=settings["name"], method=settings["method"], algorithm=settings["algorithm"],
        tau=settings["tau"], num_workers=settings["num_workers"],
        fixed_workers=settings["fixed_workers"], learning_rate=settings["learning_rate"],
        seed=settings["seed"], grids=list(settings["grids"]), status=run_status(rundir),
        resumed=bool(settings.get("resumed", False)))
    failed = _read_json(os.path.join(rundir, "failed.json"))
    if failed is not None and result.status != "finished":
        result.message = failed.get("message", "")
    path = os.path.join(rundir, "metrics.jsonl")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
        for r in records:
            result.steps.append(int(r["step"]))
            sps = r.get("steps_per_second") or math.nan
            result.time_s.append(r["step"] / sps if sps else math.nan)
            result.train_loss.append(float(r["train_loss"]))
            result.test_loss.append(float(r["test_loss"]))
            result.test_error.append(1.0 - float(r["test_accuracy"]))
        result.wall_time_s = result.time_s[-1] if result.time_s else None
        result.compile_s = startup_seconds(result.steps, result.time_s)
        result.time_s = [t - result.compile_s for t in result.time_s]
    return result


def startup_seconds(steps: Sequence[int], times: Sequence[float]) -> float:
    """The one-off cost (mostly compilation) in the first evaluation's time: its excess over
    the steady rate of the later evaluations (0 with fewer than two evaluations)."""
    if len(steps) < 2 or steps[-1] == steps[0]:
        return 0.0
    rate = (times[-1] - times[0]) / (steps[-1] - steps[0])  # seconds per step
    return float(min(max(times[0] - steps[0] * rate, 0.0), times[0]))


def collect(workdir: str) -> list[RunResult]:
    """Every run under ``workdir/runs``, sorted by name."""
    root = os.path.join(workdir, RUNS)
    names = sorted(os.listdir(root)) if os.path.isdir(root) else []
    return [read_run(os.path.join(root, n)) for n in names
            if os.path.exists(os.path.join(root, n, "run.json"))]


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def run_rows(runs: Sequence[RunResult], threshold: float) -> list[dict[str, Any]]:
    rows = []
    for r in runs:
        steps, seconds = r.to_threshold(threshold)
        rows.append({
            "name": r.name, "grids": " ".join(r.grids), "method": r.method,
            "algorithm": r.algorithm, "tau": r.tau, "p": r.num_workers,
            "learning_rate": r.learning_rate, "seed": r.seed, "status": r.status,
            "steps": r.steps[-1] if r.steps else None,
            "final_test_error": r.final_test_error, "best_test_error": r.best_test_error,
            "steps_to_threshold": steps, "time_to_threshold_s": seconds,
            "wall_time_s": r.wall_time_s, "startup_s": r.compile_s, "resumed": r.resumed,
            "message": r.message.splitlines()[0] if r.message else "",
        })
    return rows


def _setting_key(r: RunResult) -> tuple:
    return (r.method, -1 if r.tau is None else r.tau, r.num_workers)


def best_run(runs: Sequence[RunResult]) -> RunResult | None:
    """The finished run with the lowest test error reached (ties: lower final error)."""
    finished = [r for r in runs if r.status == "finished" and r.test_error]
    if not finished:
        return None
    return min(finished, key=lambda r: (r.best_test_error, r.final_test_error, r.name))


def summarize(runs: Sequence[RunResult], threshold: float) -> list[dict[str, Any]]:
    """One row per (grid, method, tau, p): the best run over learning rates and seeds."""
    groups: dict[tuple, list[RunResult]] = {}
    for r in runs:
        for grid in r.grids:
            groups.setdefault((grid, *_setting_key(r)), []).append(r)
    rows = []
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2], k[3])):
        members = groups[key]
        best = best_run(members)
        counts = {s: sum(r.status == s for r in members)
                  for s in ("finished", "diverged", "error", "unfinished", "pending")}
        row: dict[str, Any] = {
            "grid": key[0], "method": members[0].method, "algorithm": members[0].algorithm,
            "tau": members[0].tau, "p": members[0].num_workers, "runs": len(members),
            **{s: n for s, n in counts.items()},
            "best_test_error": None, "final_test_error": None, "best_learning_rate": None,
            "best_seed": None, "mean_final_test_error": None, "std_final_test_error": None,
            "seeds_at_best_lr": 0, "steps_to_threshold": None, "time_to_threshold_s": None,
            "diverged_learning_rates": " ".join(
                f"{lr:g}" for lr in sorted({r.learning_rate for r in members
                                            if r.status == "diverged"})),
        }
        if best is not None:
            same_lr = [r.final_test_error for r in members if r.status == "finished"
                       and r.learning_rate == best.learning_rate and r.test_error]
            steps, seconds = best.to_threshold(threshold)
            row.update(best_test_error=best.best_test_error,
                       final_test_error=best.final_test_error,
                       best_learning_rate=best.learning_rate, best_seed=best.seed,
                       mean_final_test_error=float(np.mean(same_lr)),
                       std_final_test_error=float(np.std(same_lr)),
                       seeds_at_best_lr=len(same_lr), steps_to_threshold=steps,
                       time_to_threshold_s=seconds)
        rows.append(row)
    return rows


def _write_csv(path: str, rows: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        if not rows:
            return
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def markdown(rows: Sequence[dict[str, Any]], threshold: float) -> str:
    """The summary as a Markdown table (errors in %, failures spelled out)."""
    lines = [
        f"Center test error (%), best over learning rates and seeds; threshold "
        f"{100 * threshold:g}% for the time and steps to it.",
        "",
        "| grid | method | tau | p | best error | final error | lr | seed | mean +- std "
        "(seeds) | steps to thr. | time to thr. (s) | runs | diverged | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["best_test_error"] is None:
            outcome = "all diverged" if r["diverged"] == r["runs"] else "no finished run"
            cells = [outcome, "", "", "", "", "", ""]
        else:
            cells = [
                f"{100 * r['best_test_error']:.2f}", f"{100 * r['final_test_error']:.2f}",
                _fmt(r["best_learning_rate"]), str(r["best_seed"]),
                f"{100 * r['mean_final_test_error']:.2f} +- "
                f"{100 * r['std_final_test_error']:.2f} ({r['seeds_at_best_lr']})",
                _fmt(r["steps_to_threshold"]) or "not reached",
                _fmt(r["time_to_threshold_s"], 3) or "not reached",
            ]
        diverged = str(r["diverged"])
        if r["diverged_learning_rates"]:
            diverged += f" (lr {r['diverged_learning_rates']})"
        tau = "-" if r["tau"] is None else str(r["tau"])
        lines.append("| " + " | ".join([r["grid"], r["method"], tau, str(r["p"]), *cells,
                                        str(r["runs"]), diverged, str(r["error"])]) + " |")
    return "\n".join(lines) + "\n"


def _label(r: RunResult, panel_dim: str) -> str:
    parts = [r.method]
    if panel_dim != "tau" and r.tau is not None:
        parts.append(f"tau={r.tau}")
    if panel_dim != "p":
        parts.append(f"p={r.num_workers}")
    return " ".join(parts)


def plot_grid(grid: str, runs: Sequence[RunResult], threshold: float, outdir: str) -> list[str]:
    """The figures of one grid; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    members = [r for r in runs if grid in r.grids]
    settings: dict[tuple, list[RunResult]] = {}
    for r in members:
        settings.setdefault(_setting_key(r), []).append(r)
    best = {k: b for k, v in settings.items() if (b := best_run(v)) is not None}
    taus = sorted({r.tau for r in members if r.tau is not None})
    ps = sorted({r.num_workers for r in members if not r.fixed_workers})
    panel_dim = "tau" if len(taus) > 1 or len(ps) <= 1 else "p"
    values = taus if panel_dim == "tau" else ps
    values = values or [None]
    paths = []
    for axis, xlabel in (("time", "wall-clock time (s)"), ("steps", "steps per worker")):
        fig, axes = plt.subplots(len(CURVE_KEYS), len(values), squeeze=False,
                                 figsize=(4 * len(values), 2.8 * len(CURVE_KEYS)))
        for col, value in enumerate(values):
            for run in sorted(best.values(), key=lambda r: r.name):
                shared = (run.tau is None) if panel_dim == "tau" else run.fixed_workers
                own = run.tau if panel_dim == "tau" else run.num_workers
                if value is not None and own != value and not shared:
                    continue
                x = run.time_s if axis == "time" else run.steps
                for row, key in enumerate(CURVE_KEYS):
                    axes[row][col].plot(x, getattr(run, key), label=_label(run, panel_dim),
                                        linestyle="--" if shared else "-", marker=".")
            for row, key in enumerate(CURVE_KEYS):
                ax = axes[row][col]
                ax.set_ylabel(YLABELS[key])
                ax.set_xlabel(xlabel)
                if key == "test_error":
                    ax.axhline(threshold, color="grey", linewidth=0.5)
                if row == 0:
                    ax.set_title(f"grid {grid}: {panel_dim} = {value}" if value is not None
                                 else f"grid {grid}")
            axes[0][col].legend(fontsize=7)
        # Fixed margins: tight_layout would render every label an extra time.
        width = 4 * len(values)
        fig.subplots_adjust(left=0.75 / width, right=1 - 0.1 / width, bottom=0.07,
                            top=0.95, wspace=0.35, hspace=0.35)
        path = os.path.join(outdir, f"{grid}_curves_{axis}.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    if len(ps) > 1:
        lines: dict[tuple, list[tuple[int, RunResult]]] = {}
        for (method, tau, p), run in best.items():
            if not run.fixed_workers:
                lines.setdefault((method, tau), []).append((p, run))
        for name, ylabel, value_of in (
                ("error_vs_p", "best test error (center)", lambda r: r.best_test_error),
                ("time_to_threshold_vs_p", f"time to test error {threshold:g} (s)",
                 lambda r: r.to_threshold(threshold)[1])):
            fig, ax = plt.subplots(figsize=(5, 3.5))
            for (method, tau), points in sorted(lines.items()):
                points = sorted((p, value_of(r)) for p, r in points)
                points = [(p, v) for p, v in points if v is not None]
                if points:
                    label = method if tau < 0 else f"{method} tau={tau}"
                    ax.plot(*zip(*points, strict=True), marker="o", label=label)
            ax.set_xscale("log", base=2)
            ax.set_xticks(ps, [str(p) for p in ps])
            ax.set_xlabel("p (workers)")
            ax.set_ylabel(ylabel)
            ax.set_title(f"grid {grid}")
            ax.legend(fontsize=7)
            fig.subplots_adjust(left=0.16, right=0.97, bottom=0.14, top=0.92)
            path = os.path.join(outdir, f"{grid}_{name}.png")
            fig.savefig(path, dpi=90)
            plt.close(fig)
            paths.append(path)
    return paths


def write_report(workdir: str, sweep: Any = None, threshold: float | None = None,
                 plots: bool = True) -> dict[str, Any]:
    """Collects the runs of the sweep in ``workdir`` and writes WORKDIR/report; returns
    {"runs": rows, "summary": rows, "files": paths}."""
    if threshold is None:
        if sweep is None:
            sweep = _read_json(os.path.join(workdir, "sweep.json")) or {}
        threshold = float(sweep.get("threshold", 0.5))
    runs = collect(workdir)
    outdir = os.path.join(workdir, "report")
    os.makedirs(outdir, exist_ok=True)
    rows, summary = run_rows(runs, threshold), summarize(runs, threshold)
    files = [os.path.join(outdir, n) for n in ("runs.csv", "summary.csv", "summary.md")]
    _write_csv(files[0], rows)
    _write_csv(files[1], summary)
    with open(files[2], "w", encoding="utf-8") as f:
        f.write(markdown(summary, threshold))
    if any(row["grid"] == "tau" for row in summary):  # the paper's grid: its findings

        files.append(os.path.join(outdir, "findings.md"))
        with open(files[-1], "w", encoding="utf-8") as f:
            f.write(findings.findings_markdown(summary, threshold))
    if plots:
        for grid in sorted({g for r in runs for g in r.grids}):
            files += plot_grid(grid, runs, threshold, outdir)
    return {"runs": rows, "summary": summary, "files": files}


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    out = write_report(_WORKDIR.value, threshold=_THRESHOLD.value)
    print(open(out["files"][2], encoding="utf-8").read())
    print("\n".join(out["files"]))


if __name__ == "__main__":
    from absl import app, flags

    _WORKDIR = flags.DEFINE_string("workdir", None, "The sweep's workdir.")
    _THRESHOLD = flags.DEFINE_float("threshold", None, "Test error threshold (default: the "
                                    "sweep config's).")
    flags.mark_flags_as_required(["workdir"])
    app.run(main)
