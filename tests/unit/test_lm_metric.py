"""The report on the loss-gap metric (issue 32, item 5; easgd_jax/experiments/metric.py): a
fake sweep workdir of runs whose metrics.jsonl record ``loss_gap`` and ``val_loss_gap``; the
rate chosen on the validation gap, the threshold crossed in nats per token, a failure counted
as the uniform predictor's gap, the tables labelled; the validation split's own optimum; the
cluster clock at another bandwidth rebuilt from a run's files."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from easgd_jax import data
from easgd_jax.data import synthetic_lm
from easgd_jax.experiments import bandwidths, metric, report, runs, stats, tables

OPTIMUM = 2.5  # nats/token, the test split's optimum every fake run records


def _write_run(workdir: str, name: str, lr: float, seed: int, test_gap: list[float],
               val_gap: list[float], steps: list[int] | None = None, status: str = "finished",
               tau: int = 16, extra: dict | None = None) -> str:
    """A sweep run in ``workdir/runs/name``: run.json, metrics.jsonl (gaps, and a test
    accuracy that orders the rates the other way), final_metrics.json or failed.json."""
    rundir = os.path.join(workdir, "runs", name)
    os.makedirs(rundir)
    steps = steps or [64 * (i + 1) for i in range(len(test_gap))]
    settings = {"name": name, "method": "eamsgd", "algorithm": "eamsgd", "tag": "",
                "tau": tau, "num_workers": 4, "fixed_workers": False, "learning_rate": lr,
                "seed": seed, "grids": ["p4"], "num_devices": 1}
    records = [{"step": s, "train_loss": OPTIMUM + t, "test_loss": OPTIMUM + t,
                "optimal_loss": OPTIMUM, "loss_gap": t, "test_accuracy": 0.5 + lr,
                "val_loss": OPTIMUM + v, "val_accuracy": 0.5 + lr, "val_loss_gap": v,
                "optimal_val_loss": OPTIMUM, "steps_per_second": 10.0,
                **(extra or {}).get(s, {})}
               for s, t, v in zip(steps, test_gap, val_gap, strict=True)]
    with open(os.path.join(rundir, "run.json"), "w") as f:
        json.dump(settings, f)
    with open(os.path.join(rundir, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    final = "final_metrics.json" if status == "finished" else "failed.json"
    with open(os.path.join(rundir, final), "w") as f:
        json.dump(records[-1] if status == "finished" else {"status": status}, f)
    return rundir


@pytest.fixture
def workdir(tmp_path) -> str:
    """Rate 0.1: the lower VALIDATION gap (0.10 vs 0.20) and the higher TEST gap (0.30 vs
    0.05); its accuracy is the lower too. Rate 0.3's seed 1 diverged."""
    w = str(tmp_path)
    for seed in (0, 1):
        _write_run(w, f"a_lr0.1_seed{seed}", 0.1, seed, [0.9, 0.4, 0.30 + 0.02 * seed],
                   [0.9, 0.3, 0.10])
    _write_run(w, "b_lr0.3_seed0", 0.3, 0, [0.9, 0.12, 0.05], [0.9, 0.25, 0.20])
    _write_run(w, "b_lr0.3_seed1", 0.3, 1, [0.9], [0.9], status="diverged")
    return w


SWEEP = {"metric": "loss_gap", "threshold": 0.35, "select_on": "validation",
         "learning_rate_selection": "all_seeds",
         "report": {"grids": [{"name": "p4", "panels": "tau", "against": ["tau"],
                               "by_period": True}], "findings": None, "speedup": None}}


def test_runs_read_their_gaps_and_the_rate_is_chosen_on_the_validation_gap(workdir):
    read = runs.collect(workdir, "loss_gap")
    a = next(r for r in read if r.name == "a_lr0.1_seed1")
    assert a.test_error == [0.9, 0.4, 0.32] and a.val_error == [0.9, 0.3, 0.10]
    assert a.optimal_loss == OPTIMUM
    (row,) = stats.summarize(read, 0.35, select_on="validation", metric="loss_gap")
    assert row["chosen_learning_rate"] == 0.1  # on the test gap 0.3 would win (0.05)
    assert row["mean_final_test_error"] == pytest.approx(0.31)  # the test gap, reported once
    assert row["mean_final_val_error"] == pytest.approx(0.10)
    assert row["rate_edge"] == "bottom"
    # The finished runs read as errors choose on the validation error, 1 - accuracy: 0.3.
    as_error = [r for r in runs.collect(workdir) if r.status == "finished"]
    assert as_error[0].val_error[-1] == pytest.approx(0.4)
    assert stats.summarize(as_error, 0.35, select_on="validation")[0][
        "chosen_learning_rate"] == 0.3


def test_a_failed_run_counts_as_the_uniform_predictors_gap(workdir):
    read = runs.collect(workdir, metric.LOSS_GAP)
    chance = math.log(256) - OPTIMUM
    assert metric.LOSS_GAP.failure_value(read) == pytest.approx(chance)
    (row,) = stats.summarize(read, 0.35, select_on="test", metric="loss_gap")
    # On the test gap: 0.1's mean 0.31 against 0.3's (0.05 + chance) / 2 with 1 failure.
    assert row["chosen_learning_rate"] == 0.1
    assert f"0.3: {(0.05 + chance) / 2:.4f} (1/2 failed)" in row["per_rate"]
    assert metric.ERROR.failure_value(read) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="no run records its optimal_loss"):
        metric.LOSS_GAP.failure_value([runs.RunResult("x", "m", "m", 1, 4, False, 0.1, 0,
                                                      ["g"], "diverged")])


def test_the_threshold_is_crossed_in_nats(workdir):
    read = {r.name: r for r in runs.collect(workdir, "loss_gap")}
    assert read["a_lr0.1_seed0"].to_threshold(0.35) == (192, pytest.approx(19.2))
    assert read["b_lr0.3_seed0"].to_threshold(0.35) == (128, pytest.approx(12.8))
    assert read["a_lr0.1_seed0"].to_threshold(0.05)[0] is None
    (row,) = stats.summarize(list(read.values()), 0.35, select_on="validation",
                             metric="loss_gap")
    assert row["steps_to_threshold"] == 192 and row["reached_threshold"] == 2


def test_the_tables_say_gap_in_nats(workdir):
    out = report.write_report(workdir, SWEEP, plots=False)
    summary_md = open(os.path.join(workdir, "report", "summary.md")).read()
    assert "Center loss gap to the optimum (nats/token)" in summary_md
    assert "VALIDATION gap" in summary_md and "(0.35 nats/token)" in summary_md
    assert "| p4 | eamsgd | 16 | 4 | 0.1 | bottom | 0.3100 +- 0.0141, 0/2 failed |" \
        in summary_md
    assert not [line for line in summary_md.splitlines()
                if line.startswith("| p4") and "%" in line]  # no percent in the rows
    by_period = open(os.path.join(workdir, "report", "p4_by_period.md")).read()
    assert "mean final center loss gap to the optimum (nats/token)" in by_period
    assert "to a loss gap to the optimum of 0.35 nats/token" in by_period
    assert not any(f.endswith("findings.md") for f in out["files"])
    # The error path keeps its words and percent.
    assert tables.markdown(out["summary"], 0.2).startswith("Center test error (%)")
    assert metric.ERROR.amount(0.2) == "20%" and metric.ERROR.fmt(0.1234) == "12.34"
    with pytest.raises(ValueError, match="sweep.metric must be one of"):
        metric.get("perplexity")


def test_the_validation_split_has_its_own_exact_optimum():
    kwargs = dict(seed=3, context=8, num_states=16, train_tokens=4096, test_tokens=512)
    held = data.load_dataset("synthetic_lm", validation_size=64, **kwargs)
    source = synthetic_lm.make_source(3, 16)
    windows = np.concatenate([held.val_x[:, :1], held.val_y], axis=1)
    assert held.optimal_val_loss == pytest.approx(source.optimal_loss(windows), abs=1e-12)
    assert held.optimal_val_loss != pytest.approx(held.optimal_test_loss, abs=1e-6)
    assert held.optimal_test_loss == data.load_dataset("synthetic_lm", **kwargs).optimal_test_loss
    assert data.optimum_metrics(2.0, 2.25, "val") == {"optimal_val_loss": 2.0,
                                                      "val_loss_gap": 0.25}


def test_another_bandwidth_is_recomputed_from_the_runs_files(tmp_path):
    from easgd_jax.experiments.config_files import load_config_file
    from easgd_jax.parallel.cluster import Cluster
    from easgd_jax.training.simulated_time import SyncClock

    config = load_config_file("default")  # EAMSGD, p = 4, tau = 10, exchange at the first step
    cluster = Cluster(0.1, 10e9 / 8, 50e-6, "ring")
    clock = SyncClock(cluster, 4, 10, "first", 1, 6e8, 0.0)
    steps = [64, 128, 192]
    extra = {s: {"simulated_time_s": clock.time_s(s)} for s in steps}
    rundir = _write_run(str(tmp_path), "run", 0.1, 0, [0.5, 0.3, 0.2], [0.5, 0.3, 0.2],
                        steps, extra=extra)
    with open(os.path.join(rundir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort())
    final = json.load(open(os.path.join(rundir, "final_metrics.json")))
    final["cluster"] = clock.describe()
    json.dump(final, open(os.path.join(rundir, "final_metrics.json"), "w"))
    (run,) = runs.collect(str(tmp_path), "loss_gap")
    slow = bandwidths.at_bandwidth(str(tmp_path), run, 1.0)
    # 13 exchanges in 128 steps (t = 0, 10, ..., 120), each 2 (p - 1) (latency + b / (p bw)).
    exchange = 2 * 3 * (50e-6 + 6e8 / 4 / (1e9 / 8))
    assert slow.sim_time_s[1] == pytest.approx(128 * 0.1 + 13 * exchange, rel=1e-12)
    assert bandwidths.recorded_bandwidth(str(tmp_path), [run]) == pytest.approx(10.0)
    run.sim_time_s[1] *= 1.001  # a recorded time the rebuilt clock does not give
    with pytest.raises(ValueError, match="the rebuilt clock gives"):
        bandwidths.at_bandwidth(str(tmp_path), run, 1.0)
