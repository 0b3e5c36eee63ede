"""The runs of a sweep's workdir, as :mod:`easgd_jax.experiments.sweep` leaves them:
WORKDIR/runs/NAME/ with ``run.json`` (the run's settings), ``metrics.jsonl`` (one record per
evaluation), and ``final_metrics.json`` (finished) or ``failed.json`` (diverged, error).

Times come from metrics.jsonl: ``step / steps_per_second`` at each evaluation (wall-clock
since the run started, evaluations included) less the run's one-off startup cost, mostly
compilation (the first evaluation's excess over the steady rate, :func:`startup_seconds`:
with the persistent compilation cache, only the first seed of a setting compiles, so the
raw times would favour the others). They are approximate for a run resumed from a
checkpoint (``resumed``). Simulated cluster time is the records' ``simulated_time_s`` as
recorded (a run has it when every record has it); so are the validation split's
``val_loss`` and ``val_accuracy`` (``val_error`` = 1 - accuracy).

The report's metric (:mod:`easgd_jax.experiments.metric`, ``sweep.metric``): read with
"loss_gap", a run's ``test_error`` and ``val_error`` curves hold its ``loss_gap`` and
``val_loss_gap`` (nats per token) instead, so that every statistic of the error applies to
the gap unchanged.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Sequence
from typing import Any

from easgd_jax.experiments import metric as metric_lib

RUNS = "runs"
FAILED = ("diverged", "error")
DONE = ("finished", *FAILED)


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
    # The held-out validation split's (data.kwargs.validation_size): [] when not recorded.
    val_loss: list[float] = dataclasses.field(default_factory=list)
    val_error: list[float] = dataclasses.field(default_factory=list)
    message: str = ""
    wall_time_s: float | None = None  # as measured, compilation included
    compile_s: float = 0.0  # removed from time_s (see startup_seconds)
    bytes_per_step: float | None = None  # exchange_bytes_per_step, when recorded
    num_classes: int | None = None  # when recorded
    optimal_loss: float | None = None  # the test split's optimum, when recorded (synthetic_lm)

    @property
    def final_test_error(self) -> float:
        """The center's test error at the last evaluation (nan without one)."""
        return self.test_error[-1] if self.test_error else math.nan

    @property
    def final_val_error(self) -> float:
        """The center's validation error at the last evaluation (nan when not recorded)."""
        return self.val_error[-1] if self.val_error else math.nan

    @property
    def best_test_error(self) -> float:
        """The lowest center test error of any evaluation (nan without one)."""
        return min(self.test_error) if self.test_error else math.nan

    def to_threshold(self, threshold: float,
                     clock: str = "time") -> tuple[int | None, float | None]:
        """(steps, time) at the first evaluation with test error <= threshold; the time on
        ``clock`` ("time": wall-clock seconds, "cluster": simulated seconds, None when the
        run has no simulated time)."""
        times: Sequence[float | None] = self.sim_time_s if clock == "cluster" else self.time_s
        if clock == "cluster" and len(times) != len(self.steps):
            times = [None] * len(self.steps)
        for step, seconds, error in zip(self.steps, times, self.test_error, strict=True):
            if error <= threshold:
                return step, seconds
        return None, None


def setting_key(run: RunResult) -> tuple[str, int, int]:
    """(method, tau, p) of a run's setting, tau -1 for a method without one."""
    return (run.method, -1 if run.tau is None else run.tau, run.num_workers)


def read_json(path: str) -> Any:
    """The JSON in ``path``; None when there is no such file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def run_status(rundir: str) -> str:
    """``finished``, ``diverged``, ``error``, ``unfinished`` or ``pending``."""
    if os.path.exists(os.path.join(rundir, "final_metrics.json")):
        return "finished"
    failed = read_json(os.path.join(rundir, "failed.json"))
    if failed is not None:
        return failed["status"]
    if os.path.exists(os.path.join(rundir, "metrics.jsonl")) or os.path.exists(
            os.path.join(rundir, "checkpoints")):
        return "unfinished"
    return "pending"


def _read_curves(result: RunResult, path: str,
                 metric: metric_lib.Metric = metric_lib.ERROR) -> list[dict[str, Any]]:
    """Fills ``result``'s curves from the metrics.jsonl at ``path`` (time less the startup
    cost; ``test_error`` / ``val_error``: ``metric``'s values); returns its records ([] when
    there is no such file)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    for r in records:
        result.steps.append(int(r["step"]))
        sps = r.get("steps_per_second") or math.nan
        result.time_s.append(r["step"] / sps if sps else math.nan)
        result.train_loss.append(float(r["train_loss"]))
        result.test_loss.append(float(r["test_loss"]))
        result.test_error.append(metric.test_value(r))
    val = [metric.val_value(r) for r in records]
    if records and all(v is not None for v in val):
        result.val_loss = [float(r["val_loss"]) for r in records]
        result.val_error = val
    if records and records[-1].get("optimal_loss") is not None:
        result.optimal_loss = float(records[-1]["optimal_loss"])
    if records and all("simulated_time_s" in r for r in records):
        result.sim_time_s = [float(r["simulated_time_s"]) for r in records]
    result.wall_time_s = result.time_s[-1] if result.time_s else None
    result.compile_s = startup_seconds(result.steps, result.time_s)
    result.time_s = [t - result.compile_s for t in result.time_s]
    return records


def read_run(rundir: str, metric: metric_lib.Metric | str | None = None) -> RunResult:
    """The run in ``rundir`` (which holds the sweep's run.json); its ``test_error`` /
    ``val_error`` curves hold ``metric``'s values (None: the test error)."""
    settings = read_json(os.path.join(rundir, "run.json"))
    if settings is None:
        raise FileNotFoundError(f"{rundir} holds no run.json (not a sweep run).")
    final = read_json(os.path.join(rundir, "final_metrics.json")) or {}
    result = RunResult(
        name=settings["name"], method=settings["method"], algorithm=settings["algorithm"],
        tau=settings["tau"], num_workers=settings["num_workers"],
        fixed_workers=settings["fixed_workers"], learning_rate=settings["learning_rate"],
        seed=settings["seed"], grids=list(settings["grids"]), status=run_status(rundir),
        resumed=bool(settings.get("resumed", False)), tag=settings.get("tag", ""),
        num_classes=settings.get("num_classes", final.get("num_classes")))
    failed = read_json(os.path.join(rundir, "failed.json"))
    if failed is not None and result.status != "finished":
        result.message = failed.get("message", "")
    records = _read_curves(result, os.path.join(rundir, "metrics.jsonl"),
                           metric_lib.get(metric))
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


def collect(workdir: str, metric: metric_lib.Metric | str | None = None) -> list[RunResult]:
    """Every run under ``workdir/runs``, sorted by name, read with ``metric``
    (:func:`read_run`)."""
    root = os.path.join(workdir, RUNS)
    names = sorted(os.listdir(root)) if os.path.isdir(root) else []
    return [read_run(os.path.join(root, n), metric) for n in names
            if os.path.exists(os.path.join(root, n, "run.json"))]


@dataclasses.dataclass
class RecordedRun(RunResult):
    """A run as one row of a report's ``runs.csv`` (:func:`read_runs_csv`): its settings and
    the scalars the row records (final and best test error, steps / time / simulated time to
    the report's threshold), no curves. ``test_error`` holds the final error alone, so that
    a finished run counts as evaluated; :meth:`to_threshold` answers for the recorded
    threshold only."""

    recorded_best: float = math.nan
    recorded_threshold: float = math.nan
    recorded_to: dict[str, float | None] = dataclasses.field(default_factory=dict)

    @property
    def best_test_error(self) -> float:
        return self.recorded_best

    def to_threshold(self, threshold: float,
                     clock: str = "time") -> tuple[int | None, float | None]:
        """(steps, time on ``clock``) to the recorded threshold, as runs.csv holds them."""
        if not math.isclose(threshold, self.recorded_threshold):
            raise ValueError(f"run {self.name}: runs.csv records the steps to "
                             f"{self.recorded_threshold:g}, not to {threshold:g}.")
        steps = self.recorded_to.get("steps")
        time = self.recorded_to.get("cluster" if clock == "cluster" else "time")
        return (None if steps is None else int(steps)), time


def _cell(value: str, cast: Any = float) -> Any:
    return None if value in ("", "nan") else cast(value)


def read_runs_csv(path: str, threshold: float, fixed_methods: Sequence[str] = ()
                  ) -> list[RecordedRun]:
    """The runs of a report's ``runs.csv`` (written at ``threshold``) as
    :class:`RecordedRun` (the final validation error as its one validation point, when the
    file records it); ``fixed_methods``: the methods whose p the sweep fixes (MSGD)."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    runs = []
    for r in rows:
        final = _cell(r["final_test_error"])
        val = _cell(r.get("final_val_error", ""))
        sim = _cell(r.get("sim_time_s", ""))
        # The tag: its column (issue 33's files on); before it, issue 16's one tag.
        tag = r["tag"] if "tag" in r else (
            "steps2000" if r["name"].endswith("_steps2000") else "")
        runs.append(RecordedRun(
            name=r["name"], method=r["method"], algorithm=r["algorithm"],
            tau=_cell(r["tau"], int), num_workers=int(r["p"]),
            fixed_workers=r["method"] in fixed_methods,
            learning_rate=float(r["learning_rate"]), seed=int(r["seed"]),
            grids=r["grids"].split(), status=r["status"], resumed=r["resumed"] == "True",
            tag=tag, steps=[int(r["steps"])] if r["steps"] else [],
            test_error=[] if final is None else [final],
            val_error=[] if val is None else [val],
            sim_time_s=[sim] if sim is not None else [],
            message=r.get("message", ""), wall_time_s=_cell(r.get("wall_time_s", "")),
            compile_s=_cell(r.get("startup_s", "")) or 0.0,
            bytes_per_step=_cell(r.get("bytes_per_step", "")),
            optimal_loss=_cell(r.get("optimal_loss", "")),
            num_classes=_cell(r.get("num_classes", ""), int),
            recorded_best=_cell(r["best_test_error"]) or math.nan,
            recorded_threshold=threshold,
            recorded_to={"steps": _cell(r["steps_to_threshold"]),
                         "time": _cell(r["time_to_threshold_s"]),
                         "cluster": _cell(r["sim_time_to_threshold_s"])}))
    return runs
