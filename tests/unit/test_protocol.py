"""Issue 33's protocol: a validation split held out from the training set (recorded by the
loops, choosing the rate), sample std, bootstrap and t intervals, paired tests, rates at the
grid's edge, the report from a runs.csv, curves as seed means, one palette."""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pytest
import scipy.stats

from easgd_jax import data
from easgd_jax.experiments import metric, palette, plots, runs, stats, tables

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(method="easgd", lr=0.1, seed=0, final=0.1, val=None, status="finished",
         test_error=None) -> runs.RunResult:
    errors = test_error or [0.5, final]
    steps = list(range(10, 10 * len(errors) + 1, 10))
    return runs.RunResult(
        name=f"{method}_{lr}_{seed}", method=method, algorithm=method, tau=4, num_workers=4,
        fixed_workers=False, learning_rate=lr, seed=seed, grids=["tau"], status=status,
        steps=steps, time_s=[0.1 * s for s in steps], test_error=errors,
        val_error=[] if val is None else [0.6, val])


def test_hold_out_splits_the_training_set_and_zero_changes_nothing():
    digits = data.load_dataset("digits")
    assert data.load_dataset("digits", validation_size=0) is digits  # every old run's data
    held = data.load_dataset("digits", validation_size=200)
    assert len(held.val_x) == 200 and len(held.train_x) == len(digits.train_x) - 200
    rows = {r.tobytes() for r in digits.train_x}
    assert {r.tobytes() for r in held.train_x} | {r.tobytes() for r in held.val_x} == rows
    assert not {r.tobytes() for r in held.train_x} & {r.tobytes() for r in held.val_x}
    np.testing.assert_array_equal(held.test_x, digits.test_x)
    with pytest.raises(ValueError, match="validation_size must be in"):
        data.load_dataset("digits", validation_size=len(digits.train_x))
    data.check_kwargs("digits", {"validation_size": 10})
    data.check_kwargs("mnist1d", {"validation_size": 10, "num_train": 90, "num_test": 10})
    with pytest.raises(ValueError, match="does not take num_train"):
        data.check_kwargs("digits", {"num_train": 10})


def test_mnist1d_makes_any_number_of_examples():
    small = data.load_dataset("mnist1d", num_train=90, num_test=30, validation_size=20)
    assert (len(small.train_x), len(small.val_x), len(small.test_x)) == (70, 20, 30)
    assert small.train_x.shape[1:] == (40,) and set(np.unique(small.test_y)) <= set(range(10))
    with pytest.raises(ValueError, match="multiple of 10"):
        data.load_dataset("mnist1d", num_train=91, num_test=30)


def test_sample_std_and_intervals():
    values = [0.05, 0.05, 0.9]
    assert stats.sample_std(values) == pytest.approx(np.sqrt(np.sum(
        (np.array(values) - np.mean(values)) ** 2) / 2))
    assert stats.sample_std([0.1]) is None
    half = stats.t_half_width(values)
    assert half == pytest.approx(4.302652729911275 * stats.sample_std(values) / np.sqrt(3))
    low, high = stats.bootstrap_ci(values)
    assert 0.05 <= low < np.mean(values) < high <= 0.9
    assert stats.bootstrap_ci([0.2, 0.2, 0.2]) == (0.2, 0.2)
    assert stats.bootstrap_ci([0.2]) is None


def test_paired_test_pairs_seeds():
    a = {0: 0.10, 1: 0.12, 2: 0.11, 3: 0.13}
    b = {0: 0.12, 1: 0.15, 2: 0.12, 3: 0.16}
    c = stats.paired_test(a, b)
    d = np.array([a[s] - b[s] for s in a])
    t = d.mean() / (d.std(ddof=1) / 2)
    assert c.p_value == pytest.approx(2 * scipy.stats.t.sf(abs(t), 3))
    assert c.n == 4 and c.difference == pytest.approx(d.mean()) and c.test == "paired t"
    welch = stats.paired_test({0: 0.1, 1: 0.2}, {5: 0.3, 6: 0.5})  # no common seed
    assert welch.test == "Welch t" and welch.p_value is not None
    assert stats.parse_seed_errors("0:0.1 2:0.9") == {0: 0.1, 2: 0.9}


def test_the_rate_is_chosen_on_validation_and_edges_are_named():
    # lr 0.1 has the lower test error, lr 0.2 the lower validation error.
    members = [_run(lr=0.1, seed=s, final=0.10, val=0.30) for s in range(3)]
    members += [_run(lr=0.2, seed=s, final=0.20, val=0.25) for s in range(3)]
    members += [_run(lr=0.4, seed=s, status="diverged", test_error=[0.9]) for s in range(3)]
    assert stats.choose_learning_rate(members) == 0.1
    assert stats.choose_learning_rate(members, select_on="validation") == 0.2
    row = stats.summary_row("tau", members, 0.5, "all_seeds", 0.9, "validation")
    assert row["chosen_learning_rate"] == 0.2 and row["rate_edge"] == ""
    assert row["mean_final_test_error"] == pytest.approx(0.2)  # test reported at that rate
    assert row["mean_final_val_error"] == pytest.approx(0.25)
    assert stats.rate_edge(0.1, [0.1, 0.2, 0.4]) == "bottom"
    assert stats.rate_edge(0.4, [0.1, 0.2, 0.4]) == "top"
    assert stats.rate_edge(0.2, [0.2]) == "single"
    with pytest.raises(ValueError, match="no run of easgd records a validation error"):
        stats.choose_learning_rate([_run()], select_on="validation")


def test_first_seed_selection_on_validation_uses_the_first_seeds_validation_alone():
    # Seed 0: lr 0.2 has the lower validation error, lr 0.1 the lower test error; the other
    # seeds ran at 0.2 only, and lr 0.1 would win an average over every run of a rate.
    members = [_run(lr=0.1, seed=0, final=0.05, val=0.30), _run(lr=0.2, seed=0, final=0.2,
                                                               val=0.25)]
    members += [_run(lr=0.2, seed=s, final=0.2, val=0.40) for s in (1, 2)]
    assert stats.choose_learning_rate(members, "first_seed", select_on="validation") == 0.2
    assert stats.choose_learning_rate(members, "first_seed") == 0.1  # on test: best reached
    diverged = [_run(lr=lr, status="diverged", test_error=[0.9]) for lr in (0.1, 0.2)]
    assert stats.choose_learning_rate(diverged, "first_seed", select_on="validation") is None


def test_an_edge_chosen_on_the_first_seed_is_chosen_again_on_every_seed():
    """"first_seed_checked": seed 0 sits at the edge of the stable range and chooses the
    top rate, at which seeds 1 and 2 diverge: the rule falls back on every seed's mean
    validation error (0.1). A first-seed choice inside the grid stands as "first_seed"'s."""
    members = [_run(lr=lr, seed=0, final=0.1, val=v) for lr, v in ((0.05, 0.3), (0.1, 0.2),
                                                                    (0.2, 0.1))]
    members += [_run(lr=0.2, seed=s, status="diverged", test_error=[0.9]) for s in (1, 2)]
    members += [_run(lr=lr, seed=s, final=0.1, val=0.2) for lr in (0.05, 0.1) for s in (1, 2)]
    rule = "first_seed_checked"
    assert stats.choose_learning_rate(members, "first_seed", select_on="validation") == 0.2
    assert stats.choose_learning_rate(members, rule, select_on="validation") == 0.1
    row = stats.summary_row("tau", members, 0.2, rule, 0.9, "validation")
    assert (row["selection"], row["chosen_learning_rate"], row["seeds"]) == (
        stats.ESCALATED, 0.1, 3)
    inside = [r for r in members if r.seed == 0] + [
        _run(lr=0.2, seed=s, final=0.1, val=0.1) for s in (1, 2)]
    inside[1] = _run(lr=0.1, seed=0, final=0.1, val=0.05)  # seed 0 now chooses 0.1
    assert stats.choose_learning_rate(inside, rule, select_on="validation") == 0.1
    plain = stats.summary_row("tau", inside, 0.2, rule, 0.9, "validation")
    assert plain["selection"] == "first_seed" and plain["seeds"] == 1
    summary = stats.summarize(members, 0.2, {"tau": rule}, 0.9, "validation")
    assert [r["selection"] for r in summary] == [stats.ESCALATED]
    assert stats.summarize(members, 0.2, {"other": rule}, 0.9, "validation")[0][
        "selection"] == "all_seeds"  # a grid the mapping does not name
    text = tables.markdown([row, plain], 0.2)
    assert f"in the rows chosen by {stats.ESCALATED}" in text
    assert "in the rows chosen by first_seed, the rate whose first-seed run ended" in text
    assert "| 0.1 | every seed |" in text
    assert "lr 0.1, every rate on every seed)" in tables.by_period_markdown([row], "tau", 0.2)


def test_a_first_seed_choice_that_fails_on_another_seed_is_chosen_again_on_every_seed():
    """"first_seed_checked": seed 0 chooses 0.2, inside the grid, and seed 2 diverges at
    it (issue 33's 40k-example EASGD: the first seed sat near the edge of the stable
    range); the rule falls back on every seed's mean (0.1, which never failed)."""
    members = [_run(lr=lr, seed=0, final=0.1, val=v) for lr, v in ((0.05, 0.3), (0.1, 0.2),
                                                                    (0.2, 0.1), (0.4, 0.5))]
    members += [_run(lr=0.2, seed=1, final=0.1, val=0.1),
                _run(lr=0.2, seed=2, status="diverged", test_error=[0.9])]
    members += [_run(lr=lr, seed=s, final=0.1, val=0.2) for lr in (0.05, 0.1, 0.4)
                for s in (1, 2)]
    assert stats.choose_learning_rate(members, "first_seed", select_on="validation") == 0.2
    assert stats.choose_learning_rate(members, "first_seed_checked",
                                      select_on="validation") == 0.1
    row = stats.summary_row("tau", members, 0.2, "first_seed_checked", 0.9, "validation")
    assert (row["selection"], row["chosen_learning_rate"]) == (stats.ESCALATED, 0.1)
    assert not stats.escalated(0.2, [0.05, 0.2, 0.4]) and stats.escalated(0.2, [0.05, 0.2, 0.4],
                                                                         [0.4, 0.2])


def test_a_runs_csv_keeps_what_a_validation_choice_and_a_tagged_grid_need(tmp_path):
    """runs.csv holds each run's final validation error and its grid's tag: the report read
    back from it chooses the same rates on validation, by the same rules, as from the runs
    (before, it held neither: a validation sweep's report could not be read back)."""
    members = [_run(lr=lr, seed=s, final=0.1 + lr / 10 + s / 100, val=0.3 - lr + s / 50)
               for lr in (0.05, 0.1, 0.2) for s in (0, 1, 2)]
    members += [_run(lr=0.2, seed=3, status="diverged", test_error=[0.9])]
    for r in members[:5]:
        r.tag = "n40k"
    path = str(tmp_path / "runs.csv")
    tables.write_csv(path, tables.run_rows(members, 0.2))
    back = runs.read_runs_csv(path, 0.2)
    assert [r.tag for r in back] == [r.tag for r in members]
    assert [r.val_error for r in back[:2]] == [[m.final_val_error] for m in members[:2]]
    assert back[-1].val_error == []  # diverged: no validation point
    for rule in ("all_seeds", "first_seed", "first_seed_checked"):
        for original, read in zip(stats.summarize(members, 0.2, rule, 0.9, "validation"),
                                  stats.summarize(back, 0.2, rule, 0.9, "validation"),
                                  strict=True):
            for column in ("chosen_learning_rate", "selection", "mean_final_test_error",
                           "mean_final_val_error", "seeds", "failed_seeds"):
                assert read[column] == pytest.approx(original[column]), (rule, column)


def test_a_runs_csv_keeps_what_a_language_models_failed_run_counts_as(tmp_path):
    """A language-model run's optimum and vocabulary go into runs.csv: a diverged run's gap
    (ln V - optimum) is known again when the report is read back (before, the lm_compare
    report could not be read back from its runs.csv: "no run records its optimal_loss")."""
    members = [dataclasses.replace(_run(lr=lr, seed=0, final=1.2 + lr), optimal_loss=2.6474,
                                   num_classes=256) for lr in (0.1, 0.3)]
    members += [dataclasses.replace(_run(lr=1.0, seed=0, status="diverged", test_error=[3.0]),
                                    optimal_loss=2.6474, num_classes=256)]
    path = str(tmp_path / "runs.csv")
    tables.write_csv(path, tables.run_rows(members, 1.25))
    back = runs.read_runs_csv(path, 1.25)
    assert [(r.optimal_loss, r.num_classes) for r in back] == [(2.6474, 256)] * 3
    gap = metric.get("loss_gap")
    assert gap.failure_value(back) == gap.failure_value(members) == math.log(256) - 2.6474


def test_a_p_grid_gets_its_method_by_p_table():
    """GRID_by_p.md: a p grid's methods against p (each row named with its tau), the
    column's lowest error in bold; a tau grid's table is unchanged."""
    members = [dataclasses.replace(_run(method=m, lr=0.1, seed=s, final=e + s / 1000),
                                   num_workers=p, tau=tau, grids=["pg"])
               for m, tau, errors in (("eamsgd", 10, (0.05, 0.04)), ("downpour", 1, (0.09, 0.08)))
               for p, e in zip((4, 8), errors, strict=True) for s in (0, 1)]
    summary = stats.summarize(members, 0.2)
    text = tables.by_period_markdown(summary, "pg", 0.2, axis="p")
    assert "| method | p 4 | p 8 |" in text
    assert ("| eamsgd (tau 10) | **5.05 +- 0.07** (0/2 failed, lr 0.1, one rate run) | "
            "**4.05 +- 0.07**") in text
    assert "| downpour (tau 1) | 9.05 +- 0.07 (0/2 failed, lr 0.1, one rate run) | 8.05" in text
    assert "| method | tau 1 | tau 10 |" in tables.by_period_markdown(summary, "pg", 0.2)


def _assert_same_columns(summary, shipped, keys) -> None:
    """Each row of a summary recomputed from runs.csv against the shipped one's: every column
    of ``keys`` missing in both or equal to 1e-9."""
    for new, old in zip(summary, shipped, strict=True):
        for key in keys:
            assert (new[key] is None) == (old[key] is None), (new["method"], key)
            if new[key] is not None:
                assert math.isclose(new[key], old[key], rel_tol=1e-9), (new["method"], key)


def test_a_runs_csv_gives_back_its_report_summary():
    """The report read from docs/mnist1d_paper/runs.csv chooses the rates and gives the means
    and times of docs/mnist1d_paper/summary.csv (itself written from it)."""
    recorded = runs.read_runs_csv(os.path.join(ROOT, "docs/mnist1d_paper/runs.csv"), 0.2,
                                  ["msgd"])
    summary = stats.summarize(recorded, 0.2)
    shipped = tables.read_summary_csv(os.path.join(ROOT, "docs/mnist1d_paper/summary.csv"))
    assert len(summary) == len(shipped) == 63
    _assert_same_columns(summary, shipped, (
        "chosen_learning_rate", "mean_final_test_error", "steps_to_threshold",
        "sim_time_to_threshold_s", "best_test_error", "reached_threshold"))
    with pytest.raises(ValueError, match="records the steps to 0.2"):
        recorded[0].to_threshold(0.1)
    # APAM's runs record no simulated time: "not recorded", not "not reached" (3/3 reached).
    line = next(x for x in tables.markdown(summary, 0.2).splitlines() if "| apam | apam |" in x)
    assert "not recorded" in line and "not reached" not in line and "| 3/3 |" in line


def test_curves_are_seed_means_with_a_band():
    a = _run(seed=0, test_error=[0.6, 0.4, 0.2])
    b = _run(seed=1, test_error=[0.8, 0.6])  # diverged after two evaluations
    x, mean, low, high = plots.mean_curve([a, b], "steps", "test_error")
    np.testing.assert_allclose(x, [10, 20, 30])
    np.testing.assert_allclose(mean, [0.7, 0.5, 0.2])
    np.testing.assert_allclose(low, [0.6, 0.4, 0.2])
    np.testing.assert_allclose(high, [0.8, 0.6, 0.2])


def test_curve_legends_count_each_panels_seeds_and_name_the_clock_once(tmp_path,
                                                                       monkeypatch):
    """A method's legend entry counts the seeds of every panel it is drawn in (a first
    panel of 1 seed said "mean of 1" for panels of 8); the clock's full name is the
    legend's title, each bottom panel its short name (in every panel it overran the next)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.figure

    runs_ = [_run(seed=0), *[dataclasses.replace(_run(seed=s), tau=16) for s in range(3)]]
    for r in runs_:
        r.sim_time_s = [0.1 * s for s in r.steps]
    layout = plots._panels("tau", [4, 16], {("easgd", 4): runs_[:1], ("easgd", 16): runs_[1:]})
    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, *a, **k: saved.append(fig))
    plots.plot_curves("tau", "cluster", layout, 0.2, str(tmp_path),
                      plots.method_styles(["easgd"]), ["easgd"])
    (legend,) = saved[0].legends
    assert [t.get_text() for t in legend.get_texts()][0] == "easgd, mean of 1-3 (by panel)"
    assert legend.get_title().get_text() == "x axis: " + plots.CLOCKS["cluster"][1]
    bottom = [ax.get_xlabel() for ax in saved[0].axes]
    assert bottom[-2:] == ["simulated cluster time (s)"] * 2 and bottom[0] == ""
    assert plots._entry_label(runs_[1:], "tau", [4], False, [(8, 0), (8, 2)]) == (
        "easgd, mean of 8 (0-2 failed)")
    assert {ax.get_xscale() for ax in saved[0].axes} == {"linear"}
    runs_[0].sim_time_s = [6 * t for t in runs_[0].sim_time_s]  # ends 6x later: log time
    plots.plot_curves("tau", "cluster", layout, 0.2, str(tmp_path),
                      plots.method_styles(["easgd"]), ["easgd"])
    assert {ax.get_xscale() for ax in saved[1].axes} == {"log"}
    assert saved[1].axes[-1].get_xlabel() == "simulated cluster time (s), log"


def test_a_method_without_tau_is_a_reference_line_across_every_tau():
    """MSGD (no tau; -1 in the rows' keys) in the error-against-tau figure: a dashed line
    at its mean with its bootstrap interval as a band, as the curve figures show it in
    every panel (it was left out, unnamed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    msgd = {"mean_final_test_error": 0.0775, "ci95_low": 0.0727, "ci95_high": 0.0831}
    eamsgd = {"mean_final_test_error": 0.08, "ci95_low": 0.07, "ci95_high": 0.09, "tau": 1}
    rows = {("msgd", -1, 1): msgd, ("eamsgd", 1, 4): eamsgd}
    styles = plots.method_styles(["msgd", "eamsgd"])
    fig, ax = plt.subplots()
    entries, drawn = plots._draw_references(ax, rows, "tau", [1, 4], "mean_final_test_error",
                                            True, styles)
    assert entries == [("msgd", "msgd (no tau: every tau)", "--")] and drawn == [0.0775]
    (line,) = ax.lines
    assert list(line.get_ydata()) == [0.0775, 0.0775] and line.get_linestyle() == "--"
    (band,) = ax.patches
    assert band.get_y() == pytest.approx(0.0727) and band.get_height() == pytest.approx(
        0.0831 - 0.0727)
    plt.close(fig)


def test_one_palette_everywhere():
    assert plots.method_styles(["eamsgd"])["eamsgd"] == plots.method_styles(
        ["diloco", "eamsgd", "lsgd"])["eamsgd"] == palette.PALETTE["eamsgd"]
    colours = [c for c, _ in palette.PALETTE.values()]
    assert len(set(colours)) == len(colours)
    assert palette.style("new_method") == palette.style("new_method")
    assert palette.style("new_method")[0] not in colours


def test_clock_sensitivity_recomputes_the_recorded_times():
    """At the recorded setting the recomputed times are the recorded ones; with both methods
    on one topology the speed-ups are the clock's at the recorded steps."""
    from easgd_jax.experiments import clock_sensitivity as cs
    from easgd_jax.parallel.cluster import Cluster, sync_time_s

    recorded = runs.read_runs_csv(os.path.join(ROOT, "docs/mnist1d_paper/runs.csv"), 0.2,
                                  ["msgd"])
    summary = stats.summarize(recorded, 0.2)
    table = cs.sensitivity(summary, "p", ("eamsgd", 10), ("downpour", 1))
    assert cs.check_recorded(table, summary, "p", ("eamsgd", 10), ("downpour", 1)) < 1e-9
    row = next(r for r in table if r["topology"] == "both ring"
               and r["bandwidth_gbit_s"] == 10.0 and r["p"] == 4)
    ring = Cluster(0.01, 1.25e9, 50e-6, "ring")
    eamsgd = next(r for r in summary if r["grid"] == "p" and r["method"] == "eamsgd"
                  and r["tau"] == 10 and r["p"] == 4)
    downpour = next(r for r in summary if r["grid"] == "p" and r["method"] == "downpour"
                    and r["p"] == 4)
    slow = sync_time_s(ring, downpour["steps_to_threshold"], 4, 1, downpour["bytes_per_step"])
    fast = sync_time_s(ring, eamsgd["steps_to_threshold"], 4, 10,
                       eamsgd["bytes_per_step"] * 10)
    assert row["speedup"] == pytest.approx(slow / fast)
    assert row["speedup"] == pytest.approx(2.35, abs=0.005)  # issue 33's figure


def test_the_language_model_comparison_reads_back_from_its_runs_csv():
    """docs/lm_compare/summary.csv (issue 32's table in docs/RESULTS.md) is what its runs.csv
    gives: the rates chosen on the first seed's validation gap, the means, intervals, failed
    seeds and times to the threshold, with a failed run counted as the uniform predictor's gap
    (its optimum read from runs.csv)."""
    from easgd_jax.experiments.config_files import load_config_file

    sweep = load_config_file("sweeps/lm_compare")
    recorded = runs.read_runs_csv(os.path.join(ROOT, "docs/lm_compare/runs.csv"),
                                  sweep.threshold)
    summary = stats.summarize(recorded, sweep.threshold, stats.grid_selections(sweep), None,
                              sweep.select_on, sweep.metric)
    shipped = tables.read_summary_csv(os.path.join(ROOT, "docs/lm_compare/summary.csv"))
    assert len(summary) == len(shipped) > 0
    for new, old in zip(summary, shipped, strict=True):
        assert (new["method"], new["tau"], new["p"]) == (old["method"], old["tau"], old["p"])
    _assert_same_columns(summary, shipped, (
        "chosen_learning_rate", "mean_final_test_error", "std_final_test_error", "ci95_low",
        "ci95_high", "seeds", "failed_seeds", "sim_time_to_threshold_s", "mean_final_val_error"))
