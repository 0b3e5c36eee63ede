"""A tiny sweep of configs/sweeps/lm_compare.py end to end (issue 32, item 5): one method at
two rates, one seed, a few steps of a toy transformer on a small generated language; the runs record
the validation split's own gap, the report chooses on it and writes the gap table in
nats/token, the 1 Gb/s times recomputed from the recorded steps, and the figures."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from easgd_jax.experiments import sweep
from easgd_jax.experiments.config_files import load_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tiny_lm_sweep():
    config = load_config_file(os.path.join(ROOT, "configs", "sweeps", "lm_compare.py"))
    config.methods = {"eamsgd": {"config": "default", "learning_rates": [0.1, 0.5]}}
    config.grids = [{"name": "p2", "periods": [4], "num_workers": [2],
                     "methods": ["eamsgd"]}]
    config.seeds = [0]
    config.threshold = 2.5  # nats/token: the toy model crosses it within its 16 steps
    config.report = {"grids": [{"name": "p2", "panels": "tau", "against": ["tau"],
                                "by_period": True}], "findings": None, "speedup": None}
    config.overrides.model.kwargs.update(width=16, depth=1, num_heads=2)
    config.overrides.data.kwargs.update(context=16, num_states=16, train_tokens=8192,
                                        test_tokens=1024, validation_size=64)
    config.overrides.train.update(num_steps=16, eval_every=4, steps_per_round=4)
    config.overrides.checkpoint.every = 0
    config.overrides.tensorboard = False
    return config


@pytest.mark.slow
def test_tiny_lm_sweep_reports_the_gap_chosen_on_validation(tmp_path):
    config = _tiny_lm_sweep()
    workdir = str(tmp_path)
    statuses = sweep.run_sweep(config, workdir)
    assert set(statuses.values()) == {"finished"}, statuses
    report = os.path.join(workdir, "report")
    summary_md = open(os.path.join(report, "summary.md")).read()
    print(summary_md)
    assert summary_md.startswith("Center loss gap to the optimum (nats/token)")
    assert "VALIDATION gap" in summary_md and "(2.5 nats/token)" in summary_md

    # Each run records the validation split's own gap; the rate of the lowest mean final
    # validation gap is the one chosen.
    val_gap: dict[float, list[float]] = {}
    for lr in (0.1, 0.5):
        for seed in (0,):
            rundir = os.path.join(workdir, "runs", f"eamsgd_tau4_p2_lr{lr:g}_seed{seed}")
            last = [json.loads(line) for line in open(os.path.join(rundir, "metrics.jsonl"))][-1]
            assert last["val_loss_gap"] == pytest.approx(
                last["val_loss"] - last["optimal_val_loss"])
            assert last["optimal_val_loss"] != pytest.approx(last["optimal_loss"], abs=1e-6)
            val_gap.setdefault(lr, []).append(last["val_loss_gap"])
    chosen = min(val_gap, key=lambda lr: np.mean(val_gap[lr]))
    summary = {r["method"]: r for r in sweep.sweep_report.read_summary_csv(
        os.path.join(report, "summary.csv"))}
    assert summary["eamsgd"]["chosen_learning_rate"] == chosen
    assert summary["eamsgd"]["mean_final_val_error"] == pytest.approx(np.mean(val_gap[chosen]))

    bandwidths_md = open(os.path.join(report, "cluster_bandwidths.md")).read()
    print(bandwidths_md)
    assert "| 10 Gb/s (s) | 1 Gb/s (s) |" in bandwidths_md
    for method in ("eamsgd",):
        row = next(line for line in bandwidths_md.splitlines()
                   if line.startswith(f"| p2 | {method} |"))
        fast, slow = (float(cell) for cell in row.strip("| ").split(" | ")[-2:])
        assert slow > fast  # the same steps on a slower link
    for name in ("p2_curves_steps.png", "p2_curves_cluster.png",
                 "p2_curves_cluster_1gbit.png", "p2_error_vs_tau.png", "p2_by_period.md"):
        assert os.path.exists(os.path.join(report, name)), name


def test_a_part_of_the_sweep_plans_the_same_runs_as_the_whole():
    """``lm_compare.py:p8/64`` (a column run first on a budget): its runs are the whole
    sweep's p = 8 runs at H = 64 and the data-parallel baselines at p = 8, under the same
    names with the same configs, so the whole sweep finds them done; a bad part is refused."""
    path = os.path.join(ROOT, "configs", "sweeps", "lm_compare.py")
    whole = {run.name: run for run in sweep.plan(load_config_file(path))}
    part = sweep.plan(load_config_file(path + ":p8/64"))
    assert {(r.method, r.tau, r.num_workers) for r in part} == {
        (m, 64 if m.startswith(("di", "ea", "lo", "ls")) else None, 8)
        for m in ("diloco", "diloco_f4", "easgd", "eamsgd", "eamsgd_outer", "local_sgd",
                  "lsgd", "dp_adamw", "dp_nesterov")}
    assert len(part) == (7 * 4 + 2 * 5) * 5  # EAMSGD's two grids have 5 rates
    for run in part:
        assert run.config.to_json_best_effort() == whole[run.name].config.to_json_best_effort()
    for bad in (":p16/64", ":p8/32", ":p8/", ":8/64"):
        with pytest.raises(ValueError, match="expected pP/H"):
            load_config_file(path + bad)
