"""The table and plots of a sweep (:mod:`easgd_jax.experiments.sweep`), in the manner of the
EASGD paper's Section 5 (Zhang, Choromanska & LeCun, NIPS 2015, arXiv 1412.6651): the center's
test error of every method and setting at its chosen learning rate, with the number of runs
that failed, the time and steps to a threshold error, and the best run (the paper reports the
best of its runs).

    python -m easgd_jax.experiments.report --workdir SWEEP_DIR [--threshold 0.2]
    python -m easgd_jax.experiments.report --workdir SWEEP_DIR --compare OLD_SUMMARY_CSV
    python -m easgd_jax.experiments.report --new_summary NEW_CSV --compare OLD_SUMMARY_CSV

The protocol (:func:`choose_learning_rate`). With ``learning_rate_selection = "all_seeds"``
(every rate on every seed; the default), each setting's learning rate is the one with the
lowest MEAN over seeds of the final center test error, where a run that diverged (or failed
with an error) counts as a failure with chance error, 1 - 1/classes (0.9 for the 10 classes
of MNIST-1D, digits and CIFAR-10: runs do not record their number of classes unless run.json
or final_metrics.json has ``num_classes``; the sweep config may set ``chance_error``); ties go
to fewer failures, then to the lower rate. Runs not done yet are left out. The mean reported
is that same mean, failures counted as chance, next to the number of failed seeds ("6.10 +-
0.30, 1/3 failed": diverged or ended in an error; ``per_rate`` gives every rate's mean and
failures, ``diverged_learning_rates`` the rates with a diverged run) and the mean over the
finished seeds alone. With "first_seed" (issue 10's protocol: the other seeds ran only at
the rate chosen on the first seed), the rate is the one whose first-seed run reached the
lowest test error, and the mean counts failures the same way.

writes SWEEP_DIR/report/:
    runs.csv             one row per run: settings, status, errors, time/steps to threshold
    summary.csv, .md     one row per (grid, method, tau, p): the chosen rate; the mean +- std
                         over seeds at it (failures as chance), failures, the mean over the
                         finished seeds; the median over those seeds of the steps and the
                         time to threshold (a failed seed, or one that never reached it,
                         counts as not reached); the best run over rates and seeds; the
                         per-rate means; ``sim time to thr.`` when runs record simulated
                         cluster time, ``bytes/step`` when they record their exchange bytes
    GRID_curves_time.png, GRID_curves_steps.png (GRID_curves_cluster.png)
                         training loss (the workers' mini-batches, as training/sync.py
                         reports it), test loss and test error of the center against
                         wall-clock time / steps (/ simulated cluster time), for the best
                         finished seed at each setting's chosen rate, one panel per tau (per
                         p when only p varies); methods without a tau (or with p fixed, e.g.
                         the sequential MSGD) appear dashed in every panel. One colour and
                         marker per method in every figure of the report
                         (:func:`method_styles`), one legend per figure, a log y axis where
                         a row's values span more than a decade, the threshold labelled.
    GRID_error_vs_p.png, GRID_time_to_threshold_vs_p.png (GRID_time_to_threshold_vs_p_cluster.png)
                         when p varies in the grid: the summary's mean error (+- std) and
                         median time to threshold against p
    GRID_error_vs_tau.png, GRID_time_to_threshold_vs_tau.png (..._vs_tau_cluster.png)
                         the same against the period when tau varies in the grid
    GRID_by_period.md    when the period varies in a grid: method x period tables of the mean
                         error (failures counted) and the median time to threshold
                         (:func:`by_period_markdown`)
    speedup_cluster.md   with simulated cluster time and a grid named "p": the speed-up of
                         EAMSGD (tau = 10) over DOWNPOUR (tau = 1) at each p
                         (:func:`speedup_table`)
    findings.md          with a grid named "tau": the paper's three findings, each judged
                         held or not with its numbers (:mod:`easgd_jax.experiments.findings`)
    findings_compare.md  with --compare: finding | old verdict | new verdict | numbers

Times come from metrics.jsonl: ``step / steps_per_second`` at each evaluation (wall-clock
since the run started, evaluations included) less the run's one-off startup cost, mostly
compilation (the first evaluation's excess over the steady rate, ``startup_s`` in runs.csv:
with the persistent compilation cache, only the first seed of a setting compiles, so the
raw times would favour the others). They are approximate for a run resumed from a
checkpoint (``resumed`` in runs.csv). Simulated cluster time is the records'
``simulated_time_s`` as recorded (a run has it when every record has it).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from easgd_jax.experiments import findings

RUNS = "runs"
CURVE_KEYS = ("train_loss", "test_loss", "test_error")
# train_loss is the mean mini-batch loss of the workers since the last evaluation (as
# training/sync.py reports it); the test metrics are the center's.
YLABELS = {"train_loss": "training loss (workers' batches)", "test_loss": "test loss (center)",
           "test_error": "test error (center)"}
SELECTIONS = ("all_seeds", "first_seed")
CHANCE_ERROR = 0.9  # 10 classes, when the runs do not say
FAILED = ("diverged", "error")
DONE = ("finished", *FAILED)
CLOCKS = {"time": ("time_s", "wall-clock time (s), compilation excluded"),
          "steps": ("steps", "steps per worker"),
          "cluster": ("sim_time_s", "simulated cluster time (s)")}


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
    tag: str = ""
    steps: list[int] = dataclasses.field(default_factory=list)
    time_s: list[float] = dataclasses.field(default_factory=list)
    sim_time_s: list[float] = dataclasses.field(default_factory=list)  # [] when not recorded
    train_loss: list[float] = dataclasses.field(default_factory=list)
    test_loss: list[float] = dataclasses.field(default_factory=list)
    test_error: list[float] = dataclasses.field(default_factory=list)
    message: str = ""
    wall_time_s: float | None = None  # as measured, compilation included
    compile_s: float = 0.0  # removed from time_s (see startup_seconds)
    bytes_per_step: float | None = None  # exchange_bytes_per_step, when recorded
    num_classes: int | None = None  # when recorded

    @property
    def final_test_error(self) -> float:
        return self.test_error[-1] if self.test_error else math.nan

    @property
    def best_test_error(self) -> float:
        return min(self.test_error) if self.test_error else math.nan

    def to_threshold(self, threshold: float,
                     clock: str = "time") -> tuple[int | None, float | None]:
        """(steps, time) at the first evaluation with test error <= threshold; the time on
        ``clock`` ("time": wall-clock seconds, "cluster": simulated seconds, None when the
        run has no simulated time)."""
        times = self.sim_time_s if clock == "cluster" else self.time_s
        if clock == "cluster" and len(times) != len(self.steps):
            times = [None] * len(self.steps)
        for step, seconds, error in zip(self.steps, times, self.test_error, strict=True):
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
    final = _read_json(os.path.join(rundir, "final_metrics.json")) or {}
    result = RunResult(
        name=settings["name"], method=settings["method"], algorithm=settings["algorithm"],
        tau=settings["tau"], num_workers=settings["num_workers"],
        fixed_workers=settings["fixed_workers"], learning_rate=settings["learning_rate"],
        seed=settings["seed"], grids=list(settings["grids"]), status=run_status(rundir),
        resumed=bool(settings.get("resumed", False)), tag=settings.get("tag", ""),
        num_classes=settings.get("num_classes", final.get("num_classes")))
    failed = _read_json(os.path.join(rundir, "failed.json"))
    if failed is not None and result.status != "finished":
        result.message = failed.get("message", "")
    path = os.path.join(rundir, "metrics.jsonl")
    records = []
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
        if records and all("simulated_time_s" in r for r in records):
            result.sim_time_s = [float(r["simulated_time_s"]) for r in records]
        result.wall_time_s = result.time_s[-1] if result.time_s else None
        result.compile_s = startup_seconds(result.steps, result.time_s)
        result.time_s = [t - result.compile_s for t in result.time_s]
    for source in (final, *reversed(records)):
        if source.get("exchange_bytes_per_step") is not None:
            result.bytes_per_step = float(source["exchange_bytes_per_step"])
            break
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
            "sim_time_to_threshold_s": r.to_threshold(threshold, "cluster")[1],
            "sim_time_s": r.sim_time_s[-1] if r.sim_time_s else None,
            "bytes_per_step": r.bytes_per_step,
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


def chance_error(runs: Iterable[RunResult], default: float = CHANCE_ERROR) -> float:
    """The error of a failed run: 1 - 1/classes of the first run that records its number of
    classes, else ``default`` (0.9: 10 classes)."""
    for r in runs:
        if r.num_classes:
            return 1.0 - 1.0 / r.num_classes
    return default


@dataclasses.dataclass
class RateStats:
    """The done runs of one setting at one learning rate."""

    learning_rate: float
    errors: list[float]  # final center test error per done run, failures as chance
    failures: int  # diverged or error
    finished_errors: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.errors))

    @property
    def std(self) -> float:
        return float(np.std(self.errors))


def rate_stats(members: Sequence[RunResult], chance: float) -> dict[float, RateStats]:
    """{learning rate: its done runs' final errors, a failed run counted as ``chance``};
    rates with no done run are absent. A finished run without evaluations does not count."""
    stats: dict[float, RateStats] = {}
    for r in sorted(members, key=lambda r: (r.learning_rate, r.seed)):
        if r.status in FAILED:
            error, finished = chance, False
        elif r.status == "finished" and r.test_error:
            error, finished = r.final_test_error, True
        else:
            continue
        s = stats.setdefault(r.learning_rate, RateStats(r.learning_rate, [], 0, []))
        s.errors.append(error)
        s.failures += not finished
        if finished:
            s.finished_errors.append(error)
    return stats


def choose_learning_rate(members: Sequence[RunResult], selection: str = "all_seeds",
                         chance: float = CHANCE_ERROR) -> float | None:
    """The learning rate of one setting's runs (None when no run is done).

    "all_seeds": the rate with the lowest mean over its done seeds of the final center test
    error, a diverged or failed run counted as ``chance``; ties go to fewer failures, then
    to the lower rate. "first_seed": the rate whose first-seed (lowest seed) run reached the
    lowest test error (ties: lower final error, then lower rate), as the sweep ran the other
    seeds; when every first-seed run failed, the "all_seeds" rule.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}; got "
                         f"{selection!r}.")
    stats = rate_stats(members, chance)
    if not stats:
        return None
    if selection == "first_seed":
        first = min(r.seed for r in members)
        finished = [r for r in members if r.seed == first and r.status == "finished"
                    and r.test_error]
        if finished:
            return min((r.best_test_error, r.final_test_error, r.learning_rate)
                       for r in finished)[2]
    return min(stats.values(), key=lambda s: (s.mean, s.failures, s.learning_rate)
               ).learning_rate


def _median_or_none(values: Sequence[float]) -> float | None:
    """The median, None when it is not reached (inf) or there are no values."""
    if not values:
        return None
    median = float(np.median(values))
    return None if math.isinf(median) or math.isnan(median) else median


def _time_to_threshold(runs: Sequence[RunResult], threshold: float,
                       clock: str) -> float | None:
    """The median over ``runs`` of the steps (clock "steps", an int when whole) or time to
    threshold; a failed run or one that never reached it counts as not reached (inf)."""
    values = []
    for r in runs:
        steps, seconds = r.to_threshold(threshold, clock)
        value = steps if clock == "steps" else seconds
        values.append(math.inf if r.status != "finished" or value is None else float(value))
    median = _median_or_none(values)
    if clock == "steps" and median is not None and median.is_integer():
        return int(median)
    return median


def summarize(runs: Sequence[RunResult], threshold: float, selection: str = "all_seeds",
              chance: float | None = None) -> list[dict[str, Any]]:
    """One row per (grid, method, tau, p): its chosen learning rate (:func:`choose_learning_rate`)
    and the statistics at it, the best run over rates and seeds, the failures.

    ``chance``: the error of a failed run (None: :func:`chance_error` of the runs).
    """
    groups: dict[tuple, list[RunResult]] = {}
    for r in runs:
        for grid in r.grids:
            groups.setdefault((grid, *_setting_key(r)), []).append(r)
    if chance is None:
        chance = chance_error(runs)
    rows = []
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2], k[3])):
        members = groups[key]
        best = best_run(members)
        counts = {s: sum(r.status == s for r in members)
                  for s in ("finished", "diverged", "error", "unfinished", "pending")}
        stats = rate_stats(members, chance)
        chosen = choose_learning_rate(members, selection, chance)
        at = [r for r in members if r.learning_rate == chosen and r.status in DONE]
        bytes_per_step = [r.bytes_per_step for r in members if r.bytes_per_step is not None]
        row: dict[str, Any] = {
            "grid": key[0], "method": members[0].method, "algorithm": members[0].algorithm,
            "tau": members[0].tau, "p": members[0].num_workers, "runs": len(members),
            **counts, "selection": selection, "chance_error": chance,
            "chosen_learning_rate": chosen, "seeds": 0, "failed_seeds": 0,
            "mean_final_test_error": None, "std_final_test_error": None,
            "finished_mean_final_test_error": None,
            "steps_to_threshold": None, "time_to_threshold_s": None,
            "sim_time_to_threshold_s": None, "reached_threshold": 0,
            "best_test_error": None, "final_test_error": None, "best_learning_rate": None,
            "best_seed": None,
            "bytes_per_step": bytes_per_step[0] if bytes_per_step else None,
            "diverged_learning_rates": " ".join(
                f"{lr:g}" for lr in sorted({r.learning_rate for r in members
                                            if r.status == "diverged"})),
            "per_rate": "; ".join(
                f"{lr:g}: {100 * s.mean:.2f} ({s.failures}/{len(s.errors)} failed)"
                for lr, s in sorted(stats.items())),
        }
        if chosen is not None:
            s = stats[chosen]
            row.update(
                seeds=len(s.errors), failed_seeds=s.failures, mean_final_test_error=s.mean,
                std_final_test_error=s.std,
                finished_mean_final_test_error=(float(np.mean(s.finished_errors))
                                                if s.finished_errors else None),
                steps_to_threshold=_time_to_threshold(at, threshold, "steps"),
                time_to_threshold_s=_time_to_threshold(at, threshold, "time"),
                sim_time_to_threshold_s=_time_to_threshold(at, threshold, "cluster"),
                reached_threshold=sum(r.status == "finished" and r.to_threshold(threshold)[0]
                                      is not None for r in at))
        if best is not None:
            row.update(best_test_error=best.best_test_error,
                       final_test_error=best.final_test_error,
                       best_learning_rate=best.learning_rate, best_seed=best.seed)
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


STRING_COLUMNS = ("grid", "method", "algorithm", "diverged_learning_rates", "per_rate",
                  "selection")


def read_summary_csv(path: str) -> list[dict[str, Any]]:
    """A summary.csv written by :func:`write_report`, this version's or issue 10's (best run,
    mean over the finished seeds at the best run's rate, ``seeds_at_best_lr``), as rows of
    this version's fields: numbers parsed, empty cells None. An old row gets
    ``chosen_learning_rate`` = its ``best_learning_rate``, ``seeds`` = the finished seeds,
    ``failed_seeds`` None (unknown: its mean left them out) and ``selection`` "first_seed
    (failures left out)"."""
    with open(path, encoding="utf-8", newline="") as f:
        raw = list(csv.DictReader(f))
    rows = []
    for r in raw:
        row: dict[str, Any] = {}
        for k, v in r.items():
            if v == "":
                row[k] = None if k not in STRING_COLUMNS else ""
            elif k in STRING_COLUMNS:
                row[k] = v
            else:
                try:
                    row[k] = int(v)
                except ValueError:
                    try:
                        row[k] = float(v)
                    except ValueError:
                        row[k] = v
        if "chosen_learning_rate" not in row:  # issue 10's format
            row["chosen_learning_rate"] = row.get("best_learning_rate")
            row["seeds"] = row.get("seeds_at_best_lr") or 0
            row["failed_seeds"] = None
            row["finished_mean_final_test_error"] = row.get("mean_final_test_error")
            row["selection"] = "first_seed (failures left out)"
        rows.append(row)
    return rows


def markdown(rows: Sequence[dict[str, Any]], threshold: float) -> str:
    """The summary as a Markdown table (errors in %, failures spelled out), its rule stated."""
    selection = rows[0]["selection"] if rows else "all_seeds"
    chance = rows[0]["chance_error"] if rows else CHANCE_ERROR
    rule = ("the rate with the lowest mean over seeds of the final error, a diverged or "
            "failed run counted as chance" if selection == "all_seeds" else
            "the rate whose first-seed run reached the lowest error (learning_rate_selection "
            "= first_seed)")
    sim = any(r["sim_time_to_threshold_s"] is not None for r in rows)
    nbytes = any(r["bytes_per_step"] is not None for r in rows)
    lines = [
        f"Center test error (%) at each setting's chosen learning rate: {rule} "
        f"({100 * chance:g}%; ties: fewer failures, then the lower rate). "
        f"**mean +- std** is over all seeds at that rate with the failed ones counted as "
        f"chance, next to the number that failed; **finished mean** leaves them out. Steps "
        f"and time to the threshold ({100 * threshold:g}%): median over the seeds at the "
        "chosen rate, a failed seed or one that never reached it counted as not reached "
        "(reached: how many did). **best**: the lowest error any run of the setting reached "
        "(the paper's best run), with its rate. **per rate**: mean (failures as chance) "
        "and failures at every rate.",
        "",
    ]
    header = ["grid", "method", "tau", "p", "chosen lr", "mean +- std, failed",
              "finished mean", "steps to thr.", "time to thr. (s)"]
    header += ["sim time to thr. (s)"] * sim + ["bytes/step"] * nbytes
    header += ["reached", "best (lr)", "runs", "diverged (lr)", "errors", "per rate"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        tau = "-" if r["tau"] is None else str(r["tau"])
        if r["chosen_learning_rate"] is None:
            cells = ["", "no run done", "", "", ""] + [""] * sim
        else:
            failed = r["failed_seeds"]
            cells = [
                _fmt(r["chosen_learning_rate"]),
                f"{100 * r['mean_final_test_error']:.2f} +- "
                f"{100 * r['std_final_test_error']:.2f}, {failed}/{r['seeds']} failed",
                (f"{100 * r['finished_mean_final_test_error']:.2f}"
                 if r["finished_mean_final_test_error"] is not None else "none finished"),
                _fmt(r["steps_to_threshold"]) or "not reached",
                _fmt(r["time_to_threshold_s"], 3) or "not reached",
            ]
            if sim:
                cells.append(_fmt(r["sim_time_to_threshold_s"], 3) or "not reached")
        if nbytes:
            cells.append(_fmt(r["bytes_per_step"], 6))
        best = ("" if r["best_test_error"] is None else
                f"{100 * r['best_test_error']:.2f} ({_fmt(r['best_learning_rate'])})")
        diverged = str(r["diverged"])
        if r["diverged_learning_rates"]:
            diverged += f" ({r['diverged_learning_rates']})"
        cells += [f"{r['reached_threshold']}/{r['seeds']}", best, str(r["runs"]), diverged,
                  str(r["error"]), r["per_rate"]]
        lines.append("| " + " | ".join([r["grid"], r["method"], tau, str(r["p"]), *cells])
                     + " |")
    return "\n".join(lines) + "\n"


# --- figures ----------------------------------------------------------------------------------

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


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


LINESTYLES = ("-", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))


def _legend(fig: Any, styles: Mapping[str, tuple[str, str]],
            entries: Sequence[tuple[str, str, Any]], threshold: float | None,
            width: float) -> int:
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


def plot_grid(grid: str, runs: Sequence[RunResult], threshold: float, outdir: str,
              summary: Sequence[dict[str, Any]] = (),
              styles: Mapping[str, tuple[str, str]] | None = None) -> list[str]:
    """The figures of one grid; returns their paths. Curves: the best finished seed at each
    setting's chosen rate (the ``summary`` row's; without one, the best run of the setting).
    ``styles``: :func:`method_styles` of the whole sweep (default: of these runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = styles or method_styles(r.method for r in runs)
    members = [r for r in runs if grid in r.grids]
    rows = {(r["method"], -1 if r["tau"] is None else r["tau"], r["p"]): r
            for r in summary if r["grid"] == grid}
    settings: dict[tuple, list[RunResult]] = {}
    for r in members:
        settings.setdefault(_setting_key(r), []).append(r)
    best: dict[tuple, RunResult] = {}
    for key, group in settings.items():
        if key in rows:
            group = [r for r in group if r.learning_rate == rows[key]["chosen_learning_rate"]]
        if (b := best_run(group)) is not None:
            best[key] = b
    taus = sorted({r.tau for r in members if r.tau is not None})
    ps = sorted({r.num_workers for r in members if not r.fixed_workers})
    panel_dim = "p" if len(ps) > 1 else "tau"
    values = (taus if panel_dim == "tau" else ps) or [None]
    # A method with several lines in a panel (e.g. two p in a tau panel): one line style each.
    variants: dict[str, list] = {}
    for r in best.values():
        other = r.num_workers if panel_dim == "tau" else r.tau
        variants.setdefault(r.method, [])
        if other not in variants[r.method]:
            variants[r.method] = sorted([*variants[r.method], other],
                                        key=lambda v: -1 if v is None else v)
    paths = []
    clocks = ["time", "steps"] + ["cluster"] * any(r.sim_time_s for r in best.values())
    width = 4 * len(values)
    for clock in clocks:
        attribute, xlabel = CLOCKS[clock]
        fig, axes = plt.subplots(len(CURVE_KEYS), len(values), squeeze=False, sharey="row",
                                 figsize=(width, 2.8 * len(CURVE_KEYS) + 0.8))
        entries: dict[tuple, tuple[str, str, Any]] = {}
        plotted: dict[str, list[float]] = {key: [] for key in CURVE_KEYS}
        for col, value in enumerate(values):
            for run in sorted(best.values(), key=lambda r: r.name):
                shared = (run.tau is None) if panel_dim == "tau" else run.fixed_workers
                own = run.tau if panel_dim == "tau" else run.num_workers
                if value is not None and own != value and not shared:
                    continue
                x = getattr(run, attribute)
                if len(x) != len(run.steps):  # no simulated time in this run
                    continue
                colour, marker = styles[run.method]
                other = run.num_workers if panel_dim == "tau" else run.tau
                index = variants[run.method].index(other)
                style = "--" if shared else LINESTYLES[index % len(LINESTYLES)]
                entries.setdefault((run.method, index), (run.method, _entry_label(
                    run, panel_dim, variants[run.method], shared and len(values) > 1), style))
                for row, key in enumerate(CURVE_KEYS):
                    axes[row][col].plot(x, getattr(run, key), color=colour, marker=marker,
                                        markersize=3, linewidth=1.2, linestyle=style)
                    plotted[key] += getattr(run, key)
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
        for row, key in enumerate(CURVE_KEYS):
            if _log_scale_if_spread(axes[row], plotted[key] + [threshold] * (
                    key == "test_error")):
                axes[row][0].set_ylabel(YLABELS[key] + ", log")
        legend_rows = _legend(fig, styles, [entries[k] for k in sorted(entries)], threshold,
                              width)
        # Fixed margins: tight_layout would render every label an extra time.
        height = 2.8 * len(CURVE_KEYS) + 0.8
        fig.subplots_adjust(left=0.75 / width, right=1 - 0.1 / width,
                            bottom=(0.55 + 0.22 * legend_rows) / height, top=0.96,
                            wspace=0.12, hspace=0.35)
        path = os.path.join(outdir, f"{grid}_curves_{clock}.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    cluster = any(r.sim_time_s for r in members)
    if len(ps) > 1 and rows:
        paths += _plot_against(grid, rows, "p", ps, threshold, outdir, styles, cluster)
    method_taus: dict[str, set] = {}
    for method, tau, _ in rows:
        method_taus.setdefault(method, set()).add(tau)
    if rows and any(len(t - {-1}) > 1 for t in method_taus.values()):  # a method's periods vary
        paths += _plot_against(grid, rows, "tau", taus, threshold, outdir, styles, cluster)
    return paths


AGAINST = {"p": ("p (workers)", "tau"), "tau": ("period (tau)", "p")}  # x label, line key


def _plot_against(grid: str, rows: Mapping[tuple, dict[str, Any]], dim: str,
                  values: Sequence[int], threshold: float, outdir: str,
                  styles: Mapping[str, tuple[str, str]], cluster: bool) -> list[str]:
    """Mean error (+- std) and median time to threshold against ``dim`` ("p" or "tau"),
    from the summary rows: one line per method (and value of the other dimension)."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    xlabel, other = AGAINST[dim]
    lines: dict[tuple, list[dict[str, Any]]] = {}
    for (method, tau, p), row in rows.items():
        own = {"p": p, "tau": tau}
        # Methods with the dimension fixed (e.g. MSGD's p = 1, no tau) are not lines here.
        if own[dim] in values:
            lines.setdefault((method, {"p": p, "tau": tau}[other]), []).append(row)
    figures = [(f"error_vs_{dim}", "mean final test error (center)", "mean_final_test_error",
                "std_final_test_error"),
               (f"time_to_threshold_vs_{dim}", f"time to test error {100 * threshold:g}% (s)",
                "time_to_threshold_s", None)]
    if cluster:
        figures.append((f"time_to_threshold_vs_{dim}_cluster",
                        f"simulated time to {100 * threshold:g}% (s)",
                        "sim_time_to_threshold_s", None))
    several = len({key for _, key in lines}) > 1  # name the other dimension in the legend
    paths = []
    for name, ylabel, column, spread in figures:
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        entries, plotted = [], []
        for (method, key), members in sorted(lines.items()):
            points = sorted((r[dim], r[column], r[spread] if spread else 0.0) for r in members
                            if r[column] is not None)
            if not points:
                continue
            colour, marker = styles[method]
            x, y, err = zip(*points, strict=True)
            plotted += y
            style = LINESTYLES[sorted({k for _, k in lines}).index(key) % len(LINESTYLES)]
            ax.errorbar(x, y, yerr=err if spread else None, color=colour, marker=marker,
                        capsize=3, linestyle=style if dim == "tau" else "-")
            label = method if key < 0 or (dim == "tau" and not several) else \
                f"{method} ({other} {key})"
            entries.append((method, label, style if dim == "tau" else "-"))
        ax.set_xscale("log", base=2)
        ax.set_xticks(values, [str(v) for v in values])
        ax.set_xlabel(xlabel)
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


def by_period_markdown(summary: Sequence[dict[str, Any]], grid: str, threshold: float) -> str:
    """One grid's summary as method x period tables: the mean final test error (failures as
    chance) +- std with the failed seeds, and the median simulated (or wall) time to
    ``threshold``; the lowest mean error and the shortest time in each column in bold."""
    rows = [r for r in summary if r["grid"] == grid and r["tau"] is not None]
    taus = sorted({r["tau"] for r in rows})
    methods = sorted({r["method"] for r in rows})
    cell = {(r["method"], r["tau"]): r for r in rows}
    clock = "sim_time_to_threshold_s" if any(r["sim_time_to_threshold_s"] is not None
                                             for r in rows) else "time_to_threshold_s"
    ps = sorted({r["p"] for r in rows})
    header = "| method | " + " | ".join(f"tau {t}" for t in taus) + " |"
    rule = "|---|" + "---|" * len(taus)

    def best(column: str, tau: int) -> float | None:
        values = [r[column] for r in rows if r["tau"] == tau and r[column] is not None]
        return min(values) if values else None

    error_lines, time_lines = [header, rule], [header, rule]
    for method in methods:
        errors, times = [], []
        for tau in taus:
            r = cell.get((method, tau))
            if r is None or r["mean_final_test_error"] is None:
                errors.append("")
                times.append("")
                continue
            text = (f"{100 * r['mean_final_test_error']:.2f} +- "
                    f"{100 * (r['std_final_test_error'] or 0):.2f}")
            if r["mean_final_test_error"] == best("mean_final_test_error", tau):
                text = f"**{text}**"
            errors.append(f"{text} ({r['failed_seeds']}/{r['seeds']} failed, lr "
                          f"{r['chosen_learning_rate']:g})")
            value = r[clock]
            times.append("not reached" if value is None else
                         f"**{value:.3g}**" if value == best(clock, tau) else f"{value:.3g}")
        error_lines.append(f"| {method} | " + " | ".join(errors) + " |")
        time_lines.append(f"| {method} | " + " | ".join(times) + " |")
    what = "simulated cluster" if clock.startswith("sim") else "wall-clock"
    return "\n".join([
        f"Grid {grid} (p = {', '.join(map(str, ps))}): mean final center test error (%) +- std "
        "over the seeds at the chosen rate, a failed run counted as chance; the lowest in each "
        "column in bold.", "", *error_lines, "",
        f"Median {what} time (s) to {100 * threshold:g}% test error at the chosen rate (a "
        "failed seed, or one that never reached it, counted as not reached); the shortest in "
        "each column in bold.", "", *time_lines, ""])


# --- the speed-up on the simulated cluster ------------------------------------------------------


def speedup_table(summary: Sequence[dict[str, Any]], grid: str = "p",
                  fast: tuple[str, int] = ("eamsgd", 10),
                  slow: tuple[str, int] = ("downpour", 1)) -> list[dict[str, Any]]:
    """Per p of ``grid``: the simulated time to threshold of ``slow`` = (method, tau) and of
    ``fast``, and the speed-up slow / fast. Each time is the summary's: the median over the
    seeds at the setting's chosen rate, a failed seed or one that never reached the threshold
    counted as not reached (None: the median did not reach it). Speed-up: None when ``fast``
    did not reach it, inf when only ``slow`` did not."""
    def row_of(method: str, tau: int, p: int) -> dict[str, Any] | None:
        return next((r for r in summary if r["grid"] == grid and r["method"] == method
                     and r["tau"] == tau and r["p"] == p), None)

    table = []
    for p in sorted({r["p"] for r in summary if r["grid"] == grid
                     and (r["method"], r["tau"]) in (fast, slow)}):
        times = {}
        for role, (method, tau) in (("slow", slow), ("fast", fast)):
            row = row_of(method, tau, p)
            times[role] = None if row is None else row["sim_time_to_threshold_s"]
        if times["fast"] is None:
            speedup = None
        elif times["slow"] is None:
            speedup = math.inf
        else:
            speedup = times["slow"] / times["fast"]
        table.append({"p": p, f"{slow[0]}_time_s": times["slow"],
                      f"{fast[0]}_time_s": times["fast"], "speedup": speedup})
    return table


def speedup_markdown(table: Sequence[dict[str, Any]], threshold: float,
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
        lines.append(f"| {r['p']} | {_fmt(r[f'{slow[0]}_time_s'], 4) or 'not reached'} | "
                     f"{_fmt(r[f'{fast[0]}_time_s'], 4) or 'not reached'} | {cell} |")
    return "\n".join(lines) + "\n"


def write_report(workdir: str, sweep: Any = None, threshold: float | None = None,
                 plots: bool = True, compare: str | None = None) -> dict[str, Any]:
    """Collects the runs of the sweep in ``workdir`` and writes WORKDIR/report; returns
    {"runs": rows, "summary": rows, "files": paths}. ``compare``: an older summary.csv whose
    findings are set against this one's (findings_compare.md)."""
    if sweep is None:
        sweep = _read_json(os.path.join(workdir, "sweep.json")) or {}
    if threshold is None:
        threshold = float(sweep.get("threshold", 0.5))
    selection = sweep.get("learning_rate_selection", "all_seeds")
    runs = collect(workdir)
    outdir = os.path.join(workdir, "report")
    os.makedirs(outdir, exist_ok=True)
    rows = run_rows(runs, threshold)
    summary = summarize(runs, threshold, selection, sweep.get("chance_error"))
    files = [os.path.join(outdir, n) for n in ("runs.csv", "summary.csv", "summary.md")]
    _write_csv(files[0], rows)
    _write_csv(files[1], summary)
    with open(files[2], "w", encoding="utf-8") as f:
        f.write(markdown(summary, threshold))
    if any(row["grid"] == "tau" for row in summary):  # the paper's grid: its findings
        files.append(os.path.join(outdir, "findings.md"))
        with open(files[-1], "w", encoding="utf-8") as f:
            f.write(findings.findings_markdown(summary, threshold))
    if compare:
        files.append(os.path.join(outdir, "findings_compare.md"))
        with open(files[-1], "w", encoding="utf-8") as f:
            f.write(findings.compare_markdown(read_summary_csv(compare), summary))
    for grid in sorted({row["grid"] for row in summary}):
        taus = {row["tau"] for row in summary if row["grid"] == grid} - {None}
        if len(taus) > 1:  # the period varies: a method x period table
            files.append(os.path.join(outdir, f"{grid}_by_period.md"))
            with open(files[-1], "w", encoding="utf-8") as f:
                f.write(by_period_markdown(summary, grid, threshold))
    if any(r.sim_time_s for r in runs) and any(row["grid"] == "p" for row in summary):
        files.append(os.path.join(outdir, "speedup_cluster.md"))
        with open(files[-1], "w", encoding="utf-8") as f:
            f.write(speedup_markdown(speedup_table(summary), threshold))
    if plots:
        styles = method_styles(r.method for r in runs)
        for grid in sorted({g for r in runs for g in r.grids}):
            files += plot_grid(grid, runs, threshold, outdir, summary, styles)
    return {"runs": rows, "summary": summary, "files": files}


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
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


if __name__ == "__main__":
    from absl import app, flags

    _WORKDIR = flags.DEFINE_string("workdir", None, "The sweep's workdir.")
    _THRESHOLD = flags.DEFINE_float("threshold", None, "Test error threshold (default: the "
                                    "sweep config's).")
    _COMPARE = flags.DEFINE_string("compare", None, "An older summary.csv: its findings' "
                                   "verdicts next to this sweep's (findings_compare.md).")
    _NEW_SUMMARY = flags.DEFINE_string("new_summary", None, "With --compare and no --workdir: "
                                       "the newer summary.csv to compare.")
    app.run(main)
