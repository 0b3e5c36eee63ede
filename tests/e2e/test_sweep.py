"""The sweep runner and its report (EASGD paper, arXiv 1412.6651, Section 5 protocol), and the
paper's experiment configs: every config validates, every sweep plans."""

import csv
import glob
import json
import os
import shutil

import jax
import ml_collections
import numpy as np
import pytest

import easgd_jax
from easgd_jax.experiments import report as sweep_report
from easgd_jax.experiments import stats, sweep
from easgd_jax.experiments.sweep import load_config_file, plan
from easgd_jax.training import config as validation
from easgd_jax.training import sync as train
from easgd_jax.training.lock import WorkdirBusyError, workdir_lock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(ROOT, "configs")

# --- the paper's configs --------------------------------------------------------------------

PAPER_CONFIGS = sorted(
    p for p in glob.glob(os.path.join(CONFIGS, "cifar10_*.py"))
    + glob.glob(os.path.join(CONFIGS, "imagenet_*.py")) if not p.endswith("_common.py"))


def test_every_paper_algorithm_has_a_cifar_config():
    names = {os.path.basename(p)[len("cifar10_"):-3] for p in PAPER_CONFIGS if "cifar10" in p}
    assert {"easgd", "eamsgd", "downpour", "mdownpour", "adownpour", "mvadownpour",
            "msgd"} <= names
    assert os.path.join(CONFIGS, "imagenet_eamsgd.py") in PAPER_CONFIGS


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=os.path.basename)
def test_paper_config_validates_with_the_paper_settings(path):
    config = load_config_file(path)
    validation.validate(config)
    algorithm = config.algorithm
    p = config.num_workers
    assert config.train.batch_size == 128
    assert "data_dir" in config.data and config.data.data_dir is None  # from the command line
    if "imagenet" in path:
        assert config.model.name == "imagenet_cnn" and config.data.crop == 221
        assert config.train.weight_decay == 1e-5
    else:
        assert config.model.name == "cifar_cnn" and config.data.name == "cifar10"
        assert config.data.crop == 28 and config.train.weight_decay == 1e-4
    assert p == (1 if algorithm.name == "msgd" else 4) and config.num_devices == p
    if "moving_rate" in algorithm:
        assert algorithm.moving_rate == pytest.approx(0.9 / p)  # beta = 0.9
    if algorithm.name in ("easgd", "eamsgd"):
        assert algorithm.period == 10
    if algorithm.name in ("downpour", "adownpour", "mvadownpour"):
        assert algorithm.period == 1
    if algorithm.name in ("eamsgd", "mdownpour", "msgd"):
        assert algorithm.momentum == 0.99
    if algorithm.name == "mvadownpour":
        assert algorithm.moving_average_rate == 0.001


def test_config_file_by_name_path_and_argument(tmp_path):
    assert load_config_file("easgd").algorithm.name == "easgd"
    assert load_config_file(os.path.join(CONFIGS, "easgd.py")).algorithm.name == "easgd"
    (tmp_path / "c.py").write_text(
        "import ml_collections\n"
        "def get_config(arg='a'):\n    return ml_collections.ConfigDict({'arg': arg})\n")
    assert load_config_file(str(tmp_path / "c.py")).arg == "a"
    assert load_config_file(f"{tmp_path / 'c.py'}:b").arg == "b"
    with pytest.raises(FileNotFoundError, match="no_such_config"):
        load_config_file("no_such_config")


# --- planning -------------------------------------------------------------------------------


def test_paper_sweep_plan():
    runs = plan(load_config_file(os.path.join(CONFIGS, "sweeps", "mnist1d_paper.py")),
                device_budget=4)
    by_name = {r.name: r for r in runs}
    assert len(by_name) == len(runs) == 384
    easgd = by_name["easgd_tau64_p4_lr0.5_seed2"]
    assert easgd.config.algorithm.period == 64 and easgd.grids == ["tau", "lsgd"]
    assert easgd.config.algorithm.moving_rate == pytest.approx(0.9 / 4)
    assert easgd.config.num_devices == 1  # max_devices = 1 in the sweep config
    big = by_name["eamsgd_tau10_p16_lr0.1_seed0"]
    assert big.config.num_workers == 16 and big.config.algorithm.moving_rate == pytest.approx(
        0.9 / 16)
    # Runs in both grids are run once.
    assert by_name["downpour_tau1_p4_lr0.2_seed1"].grids == ["tau", "p"]
    msgd = [r for r in runs if r.method == "msgd"]
    assert len(msgd) == 9 and all(r.num_workers == 1 and r.fixed_workers for r in msgd)
    assert all(r.tau is None and r.grids == ["tau", "p"] for r in msgd)
    mdownpour = [r for r in runs if r.method == "mdownpour"]
    assert {r.tau for r in mdownpour} == {1} and {r.num_workers for r in mdownpour} == {4, 8, 16}
    assert "period" not in mdownpour[0].config.algorithm
    counts = {}
    for r in runs:
        counts[r.method] = counts.get(r.method, 0) + 1
    # + the 2000-step grids: 1 rate x 3 seeds x (4 taus + 3 values of p).
    assert counts == {"easgd": 36 + 27 + 21, "eamsgd": 36 + 27 + 21, "downpour": 36 + 18,
                      "adownpour": 36, "mvadownpour": 36, "mdownpour": 27, "msgd": 9,
                      "lsgd": 36, "apam": 9, "amsgrad_sync": 9}
    # LSGD is compared with EASGD and EAMSGD at the same (tau, p): those runs are shared.
    assert by_name["easgd_tau16_p4_lr0.5_seed0"].grids == ["tau", "lsgd"]
    apam = by_name["apam_tauna_p4_lr0.001_seed0"]
    assert apam.config.executor == "simulated_async" and apam.grids == ["apam"]
    assert by_name["amsgrad_sync_tauna_p4_lr0.001_seed0"].config.executor == "sync"
    long = by_name["easgd_tau64_p4_lr0.5_seed2_steps2000"]
    assert long.config.train.num_steps == 2000 and long.grids == ["long_tau"]
    assert easgd.config.train.num_steps == 1000  # the same setting, 1000 steps
    assert {r.learning_rate for r in runs if r.tag and r.method == "easgd"} == {0.5}
    assert {r.learning_rate for r in runs if r.tag and r.method == "eamsgd"} == {0.1}
    assert by_name["eamsgd_tau10_p16_lr0.1_seed1_steps2000"].grids == ["long_p"]


def test_cifar_sweep_plans_and_spreads_workers_over_the_devices():
    runs = plan(load_config_file(os.path.join(CONFIGS, "sweeps", "cifar10_paper.py")),
                device_budget=4)
    assert len(runs) == 288
    devices = {(r.num_workers, r.config.num_devices) for r in runs}
    assert devices == {(1, 1), (4, 4), (8, 4), (16, 4)}
    assert {r.config.model.name for r in runs} == {"cifar_cnn"}


LOCAL_SGD_METHODS = {  # label -> (algorithm, outer rate and momentum or None, exchange options)
    "easgd": ("easgd", None, {}), "eamsgd": ("eamsgd", None, {}),
    "eamsgd_outer": ("eamsgd_outer", (0.5, 0.5), {}), "diloco": ("diloco", (0.7, 0.9), {}),
    "local_sgd": ("diloco", (1.0, 0.0), {}), "lsgd": ("lsgd_nesterov", None, {}),
    "diloco_f4": ("diloco", (0.7, 0.9), {"num_fragments": 4}),
    "diloco_bf16": ("diloco", (0.7, 0.9), {"exchange_dtype": "bfloat16",
                                          "error_feedback": True}),
}


@pytest.mark.parametrize("name", ["diloco_streaming", "diloco_bf16", "local_sgd"])
def test_local_sgd_sweep_method_configs_validate_as_they_are(name):
    """``launch.py --config configs/NAME.py`` is accepted with the file's own settings."""
    config = load_config_file(name)
    validation.validate(config)
    assert config.algorithm.name == "diloco" and config.train.num_steps == 2000


def test_local_sgd_sweep_plan():
    """Issue 17's sweep: 8 methods x {p 4, 8} x period {16, 64, 256} x 2 rates x 3 seeds, every
    rate on every seed; each method's algorithm gets the grid's period, and the fragments and
    the bfloat16 exchange reach the transformation it builds."""
    config = load_config_file(os.path.join(CONFIGS, "sweeps", "local_sgd.py"))
    assert config.learning_rate_selection == "all_seeds" and config.threshold == 0.2
    runs = plan(config, device_budget=8)
    assert len({r.name for r in runs}) == len(runs) == 288
    counts: dict = {}
    for r in runs:
        key = (r.method, r.tau, r.num_workers)
        counts[key] = counts.get(key, 0) + 1
    assert set(counts) == {(m, tau, p) for m in LOCAL_SGD_METHODS for tau in (16, 64, 256)
                           for p in (4, 8)}
    assert set(counts.values()) == {6}  # 2 rates x 3 seeds, all trained
    for r in runs:
        name, outer, options = LOCAL_SGD_METHODS[r.method]
        algorithm = r.config.algorithm
        assert algorithm.name == name and algorithm.period == r.tau
        assert r.config.num_workers == r.num_workers and r.config.num_devices == 1
        assert (r.config.data.name, r.config.model.name) == ("mnist1d", "cnn1d")
        assert (r.config.train.num_steps, r.config.train.eval_every,
                r.config.train.batch_size) == (1000, 50, 128)
        assert algorithm.learning_rate == r.learning_rate
        if "moving_rate" in algorithm:
            assert algorithm.moving_rate == pytest.approx(0.9 / r.num_workers)
        if outer is not None:
            assert (algorithm.outer_learning_rate, algorithm.outer_momentum) == outer
        hparams = validation.algorithm_hparams(r.config)
        assert {k: hparams[k] for k in ("num_fragments", "exchange_dtype", "error_feedback")
                if hparams.get(k)} == options, r.name
    # The options reach the transformation: 4 outer states on fragments of P / 4 numbers,
    # and a float32 rounding residual per worker.
    by_name = {r.name: r for r in runs}
    params = {"w": np.zeros(8, np.float32)}
    sizes = {}
    for method in ("diloco", "diloco_f4", "diloco_bf16"):
        run = by_name[f"{method}_tau16_p8_lr0.05_seed0"]
        tx = easgd_jax.get_algorithm("diloco", **validation.algorithm_hparams(run.config))
        state = tx.init(params)
        sizes[method] = sorted(leaf.size for leaf in jax.tree.leaves(state.outer_state))
        assert (state.residual is not None) == (method == "diloco_bf16")  # one state type
    assert sizes["diloco_f4"] == [2, 2, 2, 2] and sizes["diloco"] == sizes["diloco_bf16"] == [8]


def _tiny_sweep(**changes) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict({
        "methods": {"easgd": {"config": "easgd", "learning_rates": [0.1, 1e9]},
                    "msgd": {"config": "msgd", "learning_rates": [0.1], "num_workers": 1}},
        "grids": [{"name": "tau", "methods": ["easgd"], "periods": [2], "num_workers": [2]}],
        "seeds": [0],
        "beta": 0.9,
        "threshold": 0.85,
        "max_devices": 1,
        "overrides": {
            # Small and quick to compile: 8x8 digits (embedded, no generation) and a tiny MLP.
            "data": {"name": "digits"},
            "model": {"name": "mlp", "kwargs": {"hidden": (16,)}},
            "train": {"num_steps": 20, "eval_every": 10, "steps_per_round": 2},
            "checkpoint": {"every": 0},
            "tensorboard": False,
            "cluster": {"compute_s_per_step": 1e-3},  # given: no step measured per run
        },
    })
    config.update(changes)
    return config


@pytest.mark.parametrize("changes, message", [
    ({"learning_rate_selection": "best"}, "learning_rate_selection must be one of"),
    ({"grids": [{"name": "g", "methods": ["sgdd"], "periods": [1], "num_workers": [2]}]},
     "method 'sgdd', which sweep.methods does not define"),
    ({"overrides": {"train": {"num_stepz": 3}}}, "override 'train.num_stepz'"),
    ({"overrides": {"train": {"num_steps": 15}}}, "sweep run easgd_tau2_p2_lr0.1_seed0: "
     "config.train.num_steps \\(15\\) must be a multiple"),
    ({"methods": {"easgd": {"learning_rates": []}}}, "needs config and learning_rates"),
    ({"grids": [{"name": "g", "methods": ["easgd"], "periods": [2], "num_workers": [2],
                 "overrides": {"train": {"num_steps": 40}}}]}, "has overrides and no tag"),
    ({"grids": [{"name": "g", "methods": ["easgd"], "periods": [2], "num_workers": [2],
                 "tag": "long", "overrides": {"train": {"num_stepz": 40}}}]},
     "sweep grid 'g': override 'train.num_stepz'"),
    ({"grids": [{"name": "g", "methods": ["easgd"], "periods": [2], "num_workers": [2],
                 "step": 40}]}, "may set periods, overrides, tag, learning_rates"),
    ({"grids": [{"name": "g", "methods": ["easgd"], "periods": [2], "num_workers": [2],
                 "learning_rates": {"msgd": [0.1]}}]}, "for methods of the grid only"),
    ({"grids": [{"name": "g", "methods": ["easgd"], "periods": [2], "num_workers": [2]},
                {"name": "h", "methods": ["easgd"], "periods": [2], "num_workers": [2],
                 "tag": "x", "overrides": {"train": {"num_steps": 40}}},
                {"name": "k", "methods": ["easgd"], "periods": [2], "num_workers": [2],
                 "tag": "x", "overrides": {"train": {"num_steps": 60}}}]},
     "give the grids different tags"),
    ({"grids": [{"name": "g", "methods": ["easgd"], "periods": [2], "num_workers": [2],
                 "learning_rate_selection": "best"}]},
     "sweep grid 'g': learning_rate_selection must be one of"),
    ({"grids": [{"name": "g", "methods": ["easgd"], "periods": [2], "num_workers": [2]},
                {"name": "g", "methods": ["easgd"], "periods": [4], "num_workers": [2],
                 "learning_rate_selection": "first_seed"}]},
     "grids named 'g' give learning_rate_selection 'all_seeds' and 'first_seed'"),
])
def test_bad_sweeps_fail_at_planning(changes, message):
    with pytest.raises(ValueError, match=message):
        plan(_tiny_sweep(**changes))


def test_grid_overrides_tag_and_learning_rates():
    """A grid's overrides change its runs only, whose names carry its tag; its learning
    rates replace the method's."""
    config = _tiny_sweep(grids=[
        {"name": "tau", "methods": ["easgd"], "periods": [2], "num_workers": [2]},
        {"name": "long", "methods": ["easgd"], "periods": [2], "num_workers": [2],
         "tag": "steps40", "overrides": {"train": {"num_steps": 40}},
         "learning_rates": {"easgd": [0.1]}}])
    runs = {r.name: r for r in plan(config)}
    assert sorted(runs) == ["easgd_tau2_p2_lr0.1_seed0", "easgd_tau2_p2_lr0.1_seed0_steps40",
                            "easgd_tau2_p2_lr1e+09_seed0"]
    assert runs["easgd_tau2_p2_lr0.1_seed0_steps40"].config.train.num_steps == 40
    assert runs["easgd_tau2_p2_lr0.1_seed0"].config.train.num_steps == 20
    assert runs["easgd_tau2_p2_lr0.1_seed0_steps40"].grids == ["long"]
    assert runs["easgd_tau2_p2_lr0.1_seed0_steps40"].settings()["tag"] == "steps40"


def test_largest_divisor():
    assert [sweep.largest_divisor(16, b) for b in (1, 3, 4, 5, 8, 100)] == [1, 2, 4, 4, 8, 16]
    assert sweep.largest_divisor(6, 4) == 3


# --- the report, from hand-made run directories ------------------------------------------------


def _fake_run(root, name, method, tau, p, lr, seed, grids, errors, status="finished",
              seconds_per_step=0.1, startup=5.0, fixed=False):
    rundir = os.path.join(root, "runs", name)
    os.makedirs(rundir)
    settings = {"name": name, "method": method, "algorithm": method, "tau": tau,
                "num_workers": p, "fixed_workers": fixed, "learning_rate": lr, "seed": seed,
                "grids": grids}
    with open(os.path.join(rundir, "run.json"), "w") as f:
        json.dump(settings, f)
    with open(os.path.join(rundir, "metrics.jsonl"), "w") as f:
        for i, error in enumerate(errors):
            step = 10 * (i + 1)
            elapsed = startup + seconds_per_step * step
            f.write(json.dumps({"step": step, "train_loss": 1.0 + error, "test_loss": 2 * error,
                                "test_accuracy": 1 - error,
                                "steps_per_second": step / elapsed}) + "\n")
    if status == "finished":
        with open(os.path.join(rundir, "final_metrics.json"), "w") as f:
            json.dump({"step": 10 * len(errors)}, f)
    elif status == "diverged":
        with open(os.path.join(rundir, "failed.json"), "w") as f:
            json.dump({"status": "diverged", "message": "non-finite value at step 7"}, f)


@pytest.fixture
def fake_sweep(tmp_path):
    root = str(tmp_path)
    for seed, errors in ((0, [0.6, 0.28, 0.35]), (1, [0.5, 0.4, 0.25])):
        _fake_run(root, f"easgd_t1_lr0.1_s{seed}", "easgd", 1, 4, 0.1, seed, ["tau"], errors)
    _fake_run(root, "easgd_t1_lr1_s0", "easgd", 1, 4, 1.0, 0, ["tau"], [0.9], "diverged")
    _fake_run(root, "easgd_t1_lr1_s1", "easgd", 1, 4, 1.0, 1, ["tau"], [0.5, 0.45, 0.5])
    _fake_run(root, "easgd_t4_lr0.1_s0", "easgd", 4, 4, 0.1, 0, ["tau"], [0.5, 0.2, 0.1],
              seconds_per_step=0.05)
    _fake_run(root, "downpour_t4_s0", "downpour", 4, 4, 0.1, 0, ["tau"], [0.9], "diverged")
    _fake_run(root, "msgd_s0", "msgd", None, 1, 0.1, 0, ["tau", "p"], [0.7, 0.6, 0.5],
              fixed=True)
    for p in (4, 8):
        _fake_run(root, f"easgd_t10_p{p}", "easgd", 10, p, 0.1, 0, ["p"],
                  [0.5, 0.3 - 0.01 * p, 0.25])
    return root


def _row(rows, **match):
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, rows)
    return found[0]


def test_report_chosen_rate_failures_best_run_and_threshold(fake_sweep):
    out = sweep_report.write_report(fake_sweep, threshold=0.3)
    summary = out["summary"]
    row = _row(summary, grid="tau", method="easgd", tau=1, p=4)
    # lr 0.1: mean (0.35 + 0.25) / 2 = 0.3; lr 1: (0.9 as chance for the diverged seed + 0.5)
    # / 2 = 0.7: lr 0.1 is chosen, its two seeds both finished.
    assert row["chosen_learning_rate"] == 0.1 and row["selection"] == "all_seeds"
    assert row["mean_final_test_error"] == pytest.approx(0.3)
    assert row["std_final_test_error"] == pytest.approx(0.05 * 2 ** 0.5)  # sample std, ddof 1
    assert row["seeds"] == 2 and row["failed_seeds"] == 0
    assert row["per_rate"] == "0.1: 30.00 (0/2 failed); 1: 70.00 (1/2 failed)"
    # Best over learning rates AND seeds: seed 1 of lr 0.1 reached 0.25.
    assert row["best_test_error"] == pytest.approx(0.25) and row["best_learning_rate"] == 0.1
    assert row["best_seed"] == 1 and row["final_test_error"] == pytest.approx(0.25)
    assert row["runs"] == 4 and row["diverged"] == 1 and row["diverged_learning_rates"] == "1"
    # Threshold 0.3: seed 0 at step 20 (2 s), seed 1 at step 30 (3 s; 0.1 s per step, startup
    # removed): the medians.
    assert row["steps_to_threshold"] == 25 and row["time_to_threshold_s"] == pytest.approx(2.5)
    assert row["reached_threshold"] == 2 and row["sim_time_to_threshold_s"] is None
    faster = _row(summary, grid="tau", method="easgd", tau=4, p=4)
    assert faster["steps_to_threshold"] == 20 and faster["time_to_threshold_s"] == pytest.approx(
        1.0)
    failed = _row(summary, method="downpour")
    assert failed["best_test_error"] is None and failed["diverged"] == 1
    assert failed["mean_final_test_error"] == pytest.approx(0.9)  # chance
    assert failed["failed_seeds"] == 1 and failed["finished_mean_final_test_error"] is None
    assert _row(summary, grid="p", method="msgd")["best_test_error"] == pytest.approx(0.5)
    assert [r["p"] for r in summary if r["grid"] == "p" and r["method"] == "easgd"] == [4, 8]

    runs = {r["name"]: r for r in out["runs"]}
    assert runs["easgd_t1_lr1_s0"]["status"] == "diverged"
    assert "non-finite" in runs["easgd_t1_lr1_s0"]["message"]
    assert runs["easgd_t1_lr0.1_s0"]["startup_s"] == pytest.approx(5.0)
    assert runs["easgd_t1_lr0.1_s0"]["wall_time_s"] == pytest.approx(8.0)

    report = os.path.join(fake_sweep, "report")
    with open(os.path.join(report, "summary.csv")) as f:
        assert len(list(csv.DictReader(f))) == len(summary)
    with open(os.path.join(report, "runs.csv")) as f:
        assert {r["name"] for r in csv.DictReader(f)} == set(runs)
    md = open(os.path.join(report, "summary.md")).read()
    # One seed: no sample std, no interval; a grid of one rate: no choice ("single").
    assert ("| tau | downpour | 4 | 4 | 0.1 | single | 90.00 +- n/a, 1/1 failed |  | 90.00 | "
            "none finished |") in md
    # The chosen 0.1 is the bottom of its grid; the mean best of (0.28, 0.25) is 26.50.
    assert ("| tau | easgd | 1 | 4 | 0.1 | bottom | 30.00 +- 7.07, 0/2 failed | [25.00, 35.00] "
            "[t +-63.53] | 26.50 | 30.00 | 25 | 2.5 | 2/2 | 25.00 (0.1) | 4 | 1 (1) | 0 |") in md
    assert "| tau | msgd | - | 1 |" in md
    assert "sim time" not in md and "bytes/step" not in md  # the runs record neither
    for name in ("tau_curves_time.png", "tau_curves_steps.png", "p_curves_time.png",
                 "p_error_vs_p.png", "p_time_to_threshold_vs_p.png"):
        assert os.path.getsize(os.path.join(report, name)) > 1000, name
    assert not os.path.exists(os.path.join(report, "tau_error_vs_p.png"))  # p fixed there


def test_best_run_is_ranked_by_the_best_error_reached_not_the_final_one(tmp_path):
    """lr 0.1 reached 10% then degraded to 40%; lr 0.05 ended at 20%, its best: the paper's
    best run (best error reached) is lr 0.1's; the chosen rate (final error, mean over
    seeds) is 0.05, and "first_seed" (best reached on the first seed) chooses 0.1."""
    root = str(tmp_path)
    _fake_run(root, "easgd_lr0.1", "easgd", 4, 4, 0.1, 0, ["tau"], [0.5, 0.1, 0.4])
    _fake_run(root, "easgd_lr0.05", "easgd", 4, 4, 0.05, 0, ["tau"], [0.5, 0.3, 0.2])
    runs = sweep_report.collect(root)
    assert sweep_report.best_run(runs).name == "easgd_lr0.1"
    assert sweep_report.best_run(runs[::-1]).name == "easgd_lr0.1"  # not the order read
    row = _row(sweep_report.summarize(runs, threshold=0.3), method="easgd")
    assert row["best_learning_rate"] == 0.1
    assert row["best_test_error"] == pytest.approx(0.1)
    assert row["final_test_error"] == pytest.approx(0.4)
    assert row["chosen_learning_rate"] == 0.05
    assert row["mean_final_test_error"] == pytest.approx(0.2)
    first = _row(sweep_report.summarize(runs, 0.3, "first_seed"), method="easgd")
    assert first["chosen_learning_rate"] == 0.1
    assert first["mean_final_test_error"] == pytest.approx(0.4)


def test_startup_seconds():
    assert sweep_report.startup_seconds([10, 20, 30], [7.0, 8.0, 9.0]) == pytest.approx(6.0)
    assert sweep_report.startup_seconds([10], [7.0]) == 0.0
    assert sweep_report.startup_seconds([10, 20], [1.0, 5.0]) == 0.0  # never negative


# --- a tiny sweep, trained ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_sweep_run(tmp_path_factory) -> tuple[str, dict[str, str]]:
    """The tiny sweep, trained once: ``(workdir, statuses)``. Its two runs (easgd at lr 0.1
    and 1e9, seed 0) are also the first seed's runs at those rates in the first-seed
    selection test, which starts from a copy of them."""
    workdir = str(tmp_path_factory.mktemp("tiny_sweep"))
    return workdir, sweep.run_sweep(_tiny_sweep(), workdir)


@pytest.mark.slow
def test_tiny_sweep_runs_skips_and_records_divergence(tiny_sweep_run, monkeypatch):
    workdir, statuses = tiny_sweep_run
    config = _tiny_sweep()
    assert statuses == {"easgd_tau2_p2_lr0.1_seed0": "finished",
                        "easgd_tau2_p2_lr1e+09_seed0": "diverged"}
    diverged = os.path.join(workdir, "runs", "easgd_tau2_p2_lr1e+09_seed0")
    failure = json.load(open(os.path.join(diverged, "failed.json")))
    assert failure["status"] == "diverged" and "non-finite" in failure["message"]
    saved = json.load(open(os.path.join(workdir, "runs", "easgd_tau2_p2_lr0.1_seed0",
                                        "config.json")))
    assert saved["algorithm"]["period"] == 2 and saved["num_workers"] == 2
    assert saved["algorithm"]["moving_rate"] == pytest.approx(0.45)
    assert saved["data"]["name"] == "digits" and saved["num_devices"] == 1

    summary = list(csv.DictReader(open(os.path.join(workdir, "report", "summary.csv"))))
    assert len(summary) == 1
    row = summary[0]
    assert (row["method"], row["tau"], row["p"]) == ("easgd", "2", "2")
    assert row["chosen_learning_rate"] == "0.1" and row["diverged"] == "1"
    assert row["finished"] == "1" and row["diverged_learning_rates"] == "1e+09"
    # The table's best error and steps to threshold are those of metrics.jsonl.
    best = os.path.join(workdir, "runs", "easgd_tau2_p2_lr0.1_seed0")
    records = [json.loads(line) for line in open(os.path.join(best, "metrics.jsonl"))]
    errors = [1 - r["test_accuracy"] for r in records]
    assert [r["step"] for r in records] == [10, 20]
    assert float(row["best_test_error"]) == pytest.approx(min(errors))
    reached = [r["step"] for r, e in zip(records, errors, strict=True) if e <= 0.85]
    assert row["steps_to_threshold"] == (str(reached[0]) if reached else "")
    assert np.isfinite(float(row["mean_final_test_error"]))

    # Rerun: nothing is trained again (finished and diverged runs are skipped).
    def no_training(*args, **kwargs):
        raise AssertionError("a finished or diverged run was trained again")

    monkeypatch.setattr(train, "train_and_evaluate", no_training)
    mtime = os.path.getmtime(os.path.join(best, "final_metrics.json"))
    assert sweep.run_sweep(config, workdir, report=False) == statuses
    assert os.path.getmtime(os.path.join(best, "final_metrics.json")) == mtime
    # A finished run of another config in the workdir is refused, not silently reused.
    changed = _tiny_sweep()
    changed.overrides.train.weight_decay = 0.0
    with pytest.raises(ValueError, match="weight_decay: 0.0001 in the workdir, 0.0 now"):
        sweep.run_sweep(changed, workdir)


@pytest.mark.slow
def test_first_seed_selection_runs_the_other_seeds_at_the_chosen_rate(tmp_path,
                                                                      tiny_sweep_run):
    workdir = str(tmp_path)
    # The first seed's runs at 0.1 and 1e9 are the tiny sweep's (the same configs, so the
    # sweep skips them as finished and diverged): copied, not trained again.
    for name in ("easgd_tau2_p2_lr0.1_seed0", "easgd_tau2_p2_lr1e+09_seed0"):
        shutil.copytree(os.path.join(tiny_sweep_run[0], "runs", name),
                        os.path.join(workdir, "runs", name))
    config = _tiny_sweep(seeds=[0, 1], learning_rate_selection="first_seed")
    config.methods.easgd.learning_rates = [0.1, 0.5, 1e9]
    statuses = sweep.run_sweep(config, workdir, report=False)
    first = {lr: sweep_report.read_run(os.path.join(
        workdir, "runs", f"easgd_tau2_p2_lr{lr:g}_seed0")) for lr in (0.1, 0.5, 1e9)}
    assert first[1e9].status == "diverged"
    errors = {lr: min(1 - json.loads(line)["test_accuracy"] for line in open(
        os.path.join(workdir, "runs", f"easgd_tau2_p2_lr{lr:g}_seed0", "metrics.jsonl")))
        for lr in (0.1, 0.5)}
    assert errors[0.1] != errors[0.5]
    chosen = min(errors, key=errors.get)
    other = 0.5 if chosen == 0.1 else 0.1
    assert statuses[f"easgd_tau2_p2_lr{chosen:g}_seed1"] == "finished"
    for lr in (other, 1e9):
        assert statuses[f"easgd_tau2_p2_lr{lr:g}_seed1"] == sweep.NOT_SELECTED
        assert not os.path.exists(os.path.join(workdir, "runs", f"easgd_tau2_p2_lr{lr:g}_seed1"))
    summary = sweep_report.summarize(sweep_report.collect(workdir), 0.85, "first_seed")
    assert summary[0]["chosen_learning_rate"] == chosen and summary[0]["seeds"] == 2


@pytest.mark.slow
def test_a_first_seed_edge_runs_every_rate_on_every_seed(tmp_path, tiny_sweep_run):
    """The tiny sweep's seed 0 chooses 0.1, the bottom of [0.1, 1e9] (1e9 diverges): under
    "first_seed_checked" seed 1 runs both rates, and the report says so."""
    workdir = str(tmp_path)
    for name in ("easgd_tau2_p2_lr0.1_seed0", "easgd_tau2_p2_lr1e+09_seed0"):
        shutil.copytree(os.path.join(tiny_sweep_run[0], "runs", name),
                        os.path.join(workdir, "runs", name))
    config = _tiny_sweep(seeds=[0, 1], learning_rate_selection="first_seed_checked")
    statuses = sweep.run_sweep(config, workdir)
    assert statuses == {"easgd_tau2_p2_lr0.1_seed0": "finished",
                        "easgd_tau2_p2_lr1e+09_seed0": "diverged",
                        "easgd_tau2_p2_lr0.1_seed1": "finished",
                        "easgd_tau2_p2_lr1e+09_seed1": "diverged"}
    row = _row(sweep_report.summarize(sweep_report.collect(workdir), 0.85,
                                      stats.grid_selections(config)), method="easgd")
    assert (row["selection"], row["chosen_learning_rate"], row["seeds"], row["rate_edge"]) == (
        stats.ESCALATED, 0.1, 2, "bottom")
    summary_md = open(os.path.join(workdir, "report", "summary.md")).read()
    assert "| 0.1 | bottom every seed |" in summary_md


def test_a_second_sweep_in_a_workdir_is_refused_before_it_touches_a_run(tmp_path):
    """One sweep per workdir (its .sweep.lock): a second would start the runs the first
    trains, each refused by the run's lock and recorded as an error."""
    workdir = str(tmp_path)
    with workdir_lock(workdir, sweep.SWEEP_LOCK):
        with pytest.raises(WorkdirBusyError, match=r"in use by pid \d+"):
            sweep.run_sweep(_tiny_sweep(), workdir)
    assert os.listdir(workdir) == [".sweep.lock"]


@pytest.mark.slow
def test_two_shards_train_every_run_once_and_the_last_writes_the_whole_report(
        tmp_path, tiny_sweep_run):
    """--shard 0/2 and 1/2 in one workdir (one after the other here; beside each other on
    a machine): each trains its part's settings, together every run once."""
    workdir = str(tmp_path)
    for name in ("easgd_tau2_p2_lr0.1_seed0", "easgd_tau2_p2_lr1e+09_seed0"):
        shutil.copytree(os.path.join(tiny_sweep_run[0], "runs", name),
                        os.path.join(workdir, "runs", name))
    config = _tiny_sweep()
    config.grids[0]["periods"] = [2, 4]
    config.methods.easgd.learning_rates = [0.1]
    first = sweep.run_sweep(config, workdir, shard=(0, 2))
    second = sweep.run_sweep(config, workdir, shard=(1, 2))
    assert first.keys().isdisjoint(second.keys())
    assert {**first, **second} == {"easgd_tau2_p2_lr0.1_seed0": "finished",
                                   "easgd_tau4_p2_lr0.1_seed0": "finished"}
    summary = list(csv.DictReader(open(os.path.join(workdir, "report", "summary.csv"))))
    assert sorted(r["tau"] for r in summary) == ["2", "4"]


def test_a_failure_at_the_chosen_rate_runs_the_earlier_seeds_other_rates_too(
        tmp_path, monkeypatch):
    """first_seed_checked: seed 2 diverges at seed 0's choice (0.2, inside the grid) after
    seed 1 ran at it alone; the sweep passes again and runs seeds 1 and 2 at every rate.
    Training is stood in for: run_one records the order and writes each run's status."""
    config = _tiny_sweep(seeds=[0, 1, 2], learning_rate_selection="first_seed_checked")
    config.methods.easgd.learning_rates = [0.1, 0.2, 0.4]
    workdir = str(tmp_path)
    order = []

    def fake_run_one(run, workdir_, *args):
        order.append(run.name)
        rundir = os.path.join(workdir_, "runs", run.name)
        os.makedirs(rundir, exist_ok=True)
        failed = run.name == "easgd_tau2_p2_lr0.2_seed2"
        name = "failed.json" if failed else "final_metrics.json"
        with open(os.path.join(rundir, name), "w") as f:
            json.dump({"status": "diverged"} if failed else {}, f)
        return "diverged" if failed else "finished"

    monkeypatch.setattr(sweep, "run_one", fake_run_one)
    monkeypatch.setattr(sweep, "chosen_learning_rate", lambda *a, **k: 0.2)
    statuses = sweep.run_sweep(config, workdir, report=False)
    assert order[:5] == ["easgd_tau2_p2_lr0.1_seed0", "easgd_tau2_p2_lr0.2_seed0",
                         "easgd_tau2_p2_lr0.4_seed0", "easgd_tau2_p2_lr0.2_seed1",
                         "easgd_tau2_p2_lr0.2_seed2"]
    assert sorted(order[5:]) == ["easgd_tau2_p2_lr0.1_seed1", "easgd_tau2_p2_lr0.1_seed2",
                                 "easgd_tau2_p2_lr0.4_seed1", "easgd_tau2_p2_lr0.4_seed2"]
    assert len(statuses) == 9 and sweep.NOT_SELECTED not in statuses.values()


def test_each_grid_keeps_its_learning_rate_rule_and_a_shared_run_trains_for_the_most_needing(
        monkeypatch):
    """A grid's own learning_rate_selection; a run of two grids trains when either rule needs
    it; "first_seed_checked" trains every rate on the other seeds when the first seed's
    choice is an edge of the grid, the chosen rate alone when it lies inside."""
    config = _tiny_sweep(seeds=[0, 1], learning_rate_selection="first_seed")
    config.methods.easgd.learning_rates = [0.1, 0.2, 0.4]
    config.grids = [
        {"name": "tau", "methods": ["easgd"], "periods": [2], "num_workers": [2]},
        {"name": "edge", "methods": ["easgd"], "periods": [4], "num_workers": [2],
         "learning_rate_selection": "first_seed_checked"},
        {"name": "every", "methods": ["easgd"], "periods": [4], "num_workers": [2],
         "learning_rates": {"easgd": [0.2]}, "learning_rate_selection": "all_seeds"}]
    runs = {r.name: r for r in plan(config)}
    assert runs["easgd_tau2_p2_lr0.2_seed1"].selections == ["first_seed"]
    assert runs["easgd_tau4_p2_lr0.1_seed1"].selections == ["first_seed_checked"]
    assert runs["easgd_tau4_p2_lr0.2_seed1"].selections == ["first_seed_checked",
                                                           "all_seeds"]
    assert stats.grid_selections(config) == {"tau": "first_seed", "edge":
                                             "first_seed_checked", "every": "all_seeds"}
    planned = list(runs.values())
    assert sweep._dry_run_count(planned, 0) == (
        "12 runs planned; learning rates chosen on the first seed where a grid says so, "
        "so between 8 and 10 of them train (2 settings)")

    def trains(chosen: float) -> set[str]:
        monkeypatch.setattr(sweep, "chosen_learning_rate", lambda *a, **k: chosen)
        return {r.name for r in planned if sweep.selected(r, planned, "unused", 0)}

    seed0 = {n for n in runs if n.endswith("seed0")}
    assert trains(0.2) - seed0 == {"easgd_tau2_p2_lr0.2_seed1", "easgd_tau4_p2_lr0.2_seed1"}
    assert trains(0.4) - seed0 == {"easgd_tau2_p2_lr0.4_seed1", "easgd_tau4_p2_lr0.1_seed1",
                                   "easgd_tau4_p2_lr0.2_seed1", "easgd_tau4_p2_lr0.4_seed1"}
    assert trains(None) - seed0 == {"easgd_tau4_p2_lr0.2_seed1"}  # first seed not done


@pytest.mark.slow
def test_first_seed_selection_waits_for_the_first_seed_and_skips_a_diverged_setting(tmp_path):
    config = _tiny_sweep(seeds=[0, 1], learning_rate_selection="first_seed")
    runs = plan(config)
    setting = ("easgd", 2, 2, "")
    assert sweep.chosen_learning_rate(runs, setting, 0, str(tmp_path)) is None  # none run yet
    config.methods.easgd.learning_rates = [1e9]
    statuses = sweep.run_sweep(config, str(tmp_path), report=False)
    assert statuses == {"easgd_tau2_p2_lr1e+09_seed0": "diverged",
                        "easgd_tau2_p2_lr1e+09_seed1": sweep.NOT_SELECTED}


def _stand_in_run_one(order: list[str], signalled: bool):
    """A stand-in for ``sweep.run_one``: notes the run in ``order``, leaves it finished
    (final_metrics.json) and, when ``signalled``, records a SIGTERM as the handler would
    during its final evaluation."""
    from easgd_jax.training import common

    def run_one(run, workdir_, *args):
        order.append(run.name)
        rundir = os.path.join(workdir_, "runs", run.name)
        os.makedirs(rundir, exist_ok=True)
        with open(os.path.join(rundir, "final_metrics.json"), "w") as f:
            json.dump({}, f)
        if signalled:
            common.signals_received.append(15)
        return "finished"

    return run_one


def test_a_stop_signal_after_a_runs_last_step_stops_the_sweep_before_the_next_run(
        tmp_path, monkeypatch):
    """A SIGTERM that lands in a run's final evaluation (after its loop's last look) is only
    recorded (training.common.signals_received); the sweep must stop before its next run
    instead of starting it (session 14: a shard trained two more runs after its SIGTERM).
    Training is stood in for: the first run records the signal as the handler would."""
    from easgd_jax.training import common

    config = _tiny_sweep(seeds=[0])
    config.methods.easgd.learning_rates = [0.1, 0.2]
    order = []
    monkeypatch.setattr(sweep, "run_one", _stand_in_run_one(order, signalled=True))
    monkeypatch.setattr(common, "signals_received", [])
    statuses = sweep.run_sweep(config, str(tmp_path), report=False)
    assert order == ["easgd_tau2_p2_lr0.1_seed0"]
    assert statuses == {"easgd_tau2_p2_lr0.1_seed0": "finished"}


@pytest.mark.parametrize("signalled", [False, True])
def test_the_command_line_exits_75_when_a_stop_signal_stopped_the_sweep(
        tmp_path, monkeypatch, signalled):
    """A stopped sweep exits as a stopped run does (launch.py's 75): a script that chains
    sweeps (`sweep ... && sweep ...`) must not start the next one after a SIGTERM. A sweep
    that trained all its runs exits 0. Training is stood in for, as above."""
    import launch
    from easgd_jax import parallel
    from easgd_jax.training import common

    monkeypatch.setattr(sweep, "run_one", _stand_in_run_one([], signalled))
    monkeypatch.setattr(sweep, "load_config_file", lambda name: _tiny_sweep() if name == "tiny"
                        else load_config_file(name))  # (the methods' configs too)
    monkeypatch.setattr(parallel, "use_simulated_cpu_devices", lambda _: None)
    monkeypatch.setattr(common, "signals_received", [])
    monkeypatch.setattr(sweep_report, "write_report", lambda *args, **kwargs: None)
    sweep.FLAGS(["sweep", "--config=tiny", f"--workdir={tmp_path}"])
    try:
        status = sweep.main(["sweep"])
    finally:
        sweep.FLAGS.unparse_flags()
    assert status == (launch.EXIT_STOPPED if signalled else 0)
    assert sweep.EXIT_STOPPED == launch.EXIT_STOPPED
