"""The sweep report's protocol and figures on hand-made run directories (no training):
the learning rate chosen on the mean over all seeds with failures counted as chance, the
failure counts, simulated cluster time, the speed-up table, one colour per method."""

import json
import os

import helpers
import matplotlib.figure
import ml_collections
import pytest
from absl import flags

from easgd_jax.experiments import report, report_spec


def fake_run(root, method, tau, p, lr, seed, grids, errors, status="finished", sim=None,
             nbytes=None, test_loss=None):
    """A run directory as the sweep leaves it: run.json, metrics.jsonl (an evaluation every
    10 steps, 0.1 s per step), final_metrics.json or failed.json."""
    name = report_name = f"{method}_tau{tau}_p{p}_lr{lr:g}_seed{seed}"
    rundir = os.path.join(root, "runs", report_name)
    os.makedirs(rundir)
    with open(os.path.join(rundir, "run.json"), "w") as f:
        json.dump({"name": name, "method": method, "algorithm": method, "tau": tau,
                   "num_workers": p, "fixed_workers": False, "learning_rate": lr,
                   "seed": seed, "grids": grids}, f)
    with open(os.path.join(rundir, "metrics.jsonl"), "w") as f:
        for i, error in enumerate(errors):
            step = 10 * (i + 1)
            record = {"step": step, "train_loss": 1.0 + error,
                      "test_loss": test_loss[i] if test_loss else 2 * error,
                      "test_accuracy": 1 - error, "steps_per_second": 10.0}
            if sim is not None:
                record["simulated_time_s"] = sim * step
            if nbytes is not None:
                record["exchange_bytes_per_step"] = nbytes
            f.write(json.dumps(record) + "\n")
    if status == "finished":
        with open(os.path.join(rundir, "final_metrics.json"), "w") as f:
            json.dump({"step": 10 * len(errors)}, f)
    else:
        with open(os.path.join(rundir, "failed.json"), "w") as f:
            json.dump({"status": status, "message": "non-finite value"}, f)


def only(rows, **match):
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, rows)
    return found[0]


@pytest.fixture
def edge_of_stability(tmp_path):
    """EASGD at tau 4: lr 1 finishes at 5% on seeds 0 and 1 and diverges on seed 2; lr 0.5
    finishes at 6% on every seed."""
    root = str(tmp_path)
    for seed in (0, 1, 2):
        if seed < 2:
            fake_run(root, "easgd", 4, 4, 1.0, seed, ["tau"], [0.3, 0.05])
        else:
            fake_run(root, "easgd", 4, 4, 1.0, seed, ["tau"], [0.3], status="diverged")
        fake_run(root, "easgd", 4, 4, 0.5, seed, ["tau"], [0.3, 0.06])
    return root


def test_a_rate_that_diverged_on_one_seed_loses_to_a_stable_one(edge_of_stability):
    runs = report.collect(edge_of_stability)
    assert report.choose_learning_rate(runs) == 0.5
    row = report.summarize(runs, threshold=0.2)[0]
    assert row["chosen_learning_rate"] == 0.5 and row["failed_seeds"] == 0 and row["seeds"] == 3
    assert row["mean_final_test_error"] == pytest.approx(0.06)
    # lr 1: (0.05 + 0.05 + 0.9) / 3, the diverged seed at chance.
    assert row["per_rate"] == "0.5: 6.00 (0/3 failed); 1: 33.33 (1/3 failed)"
    # The first-seed rule (issue 10's) picks lr 1 and now pays for its failure in the mean.
    first = report.summarize(runs, threshold=0.2, selection="first_seed")[0]
    assert first["chosen_learning_rate"] == 1.0 and first["failed_seeds"] == 1
    assert first["mean_final_test_error"] == pytest.approx(1.0 / 3)
    assert first["finished_mean_final_test_error"] == pytest.approx(0.05)
    assert first["steps_to_threshold"] == 20 and first["reached_threshold"] == 2
    md = report.markdown([first], threshold=0.2)
    # The sample std (ddof 1) of (5, 5, 90)%: 49.07; the chosen rate is the grid's top.
    assert "| tau | easgd | 4 | 4 | 1 | top | 33.33 +- 49.07, 1/3 failed |" in md
    assert "| 33.33 | 5.00 | 20 |" in md  # mean best (5, 5, 90), finished mean, steps
    assert "the rate whose first-seed run reached the lowest error" in md
    # The chance error follows the runs' number of classes when they record it.
    for r in runs:
        r.num_classes = 2
    assert report.summarize(runs, 0.2, "first_seed")[0]["mean_final_test_error"] == (
        pytest.approx((0.05 + 0.05 + 0.5) / 3))
    with pytest.raises(ValueError, match="selection must be one of"):
        report.choose_learning_rate(runs, "best")


def test_summary_states_the_rule_and_counts_failures(edge_of_stability):
    out = report.write_report(edge_of_stability, threshold=0.2, plots=False)
    md = open(os.path.join(edge_of_stability, "report", "summary.md")).read()
    assert "a diverged or failed run counted as chance (90%" in md
    assert "| tau | easgd | 4 | 4 | 0.5 | bottom | 6.00 +- 0.00, 0/3 failed |" in md
    assert out["summary"][0]["diverged"] == 1 and out["summary"][0]["runs"] == 6
    back = report.read_summary_csv(os.path.join(edge_of_stability, "report", "summary.csv"))
    assert back[0]["chosen_learning_rate"] == 0.5 and back[0]["failed_seeds"] == 0
    assert back[0]["tau"] == 4 and back[0]["diverged_learning_rates"] == "1"


def test_old_summary_is_read_as_failures_left_out():
    rows = report.read_summary_csv(os.path.join(helpers.ROOT, "docs", "mnist1d_paper",
                                                "issue10_summary.csv"))
    row = only(rows, grid="p", method="easgd", p=4)
    assert row["chosen_learning_rate"] == 1.0 and row["seeds"] == 1
    assert row["failed_seeds"] is None and row["mean_final_test_error"] == pytest.approx(0.048)
    assert only(rows, grid="apam", method="apam")["tau"] is None


def cluster_sweep(root, grid="p"):
    """The p grid on a simulated cluster: DOWNPOUR (tau 1) and EAMSGD (tau 10) at p = 4 and
    8, 3 seeds; the simulated seconds per step and when each run reaches 20%."""
    for p, downpour, eamsgd in ((4, (1.0, 1.0, 2.0), (0.5, 0.5, 0.5)),
                                (8, (1.0, 1.0, 1.0), (0.1, 0.2, 0.4))):
        for seed in range(3):
            # DOWNPOUR reaches 20% at step 20; at p = 8, seed 2 never does.
            errors = [0.5, 0.15, 0.1] if (p, seed) != (8, 2) else [0.5, 0.4, 0.3]
            fake_run(root, "downpour", 1, p, 0.1, seed, [grid], errors, sim=downpour[seed],
                     nbytes=4000.0 * p)
            # EAMSGD reaches it at step 10 at p = 4, at step 30 at p = 8.
            errors = [0.15, 0.1, 0.1] if p == 4 else [0.5, 0.4, 0.1]
            fake_run(root, "eamsgd", 10, p, 0.1, seed, [grid], errors, sim=eamsgd[seed],
                     nbytes=400.0)


def test_simulated_time_speedup_and_bytes(tmp_path):
    root = str(tmp_path)
    cluster_sweep(root)
    out = report.write_report(root, threshold=0.2)
    summary = out["summary"]
    # Medians over the 3 seeds of step x seconds per step: DOWNPOUR p = 4: 20 x (1, 1, 2) ->
    # 20 s; p = 8: 20, 20, not reached -> 20 s. EAMSGD p = 4: 10 x 0.5 = 5 s; p = 8:
    # 30 x (0.1, 0.2, 0.4) -> 6 s.
    sim = {(r["method"], r["p"]): r["sim_time_to_threshold_s"] for r in summary}
    assert sim == pytest.approx({("downpour", 4): 20.0, ("downpour", 8): 20.0,
                                 ("eamsgd", 4): 5.0, ("eamsgd", 8): 6.0})
    assert only(summary, method="downpour", p=8)["reached_threshold"] == 2
    assert only(summary, method="downpour", p=8)["bytes_per_step"] == 32000.0
    table = report.speedup_table(summary)
    assert [(r["p"], r["speedup"]) for r in table] == [(4, pytest.approx(4.0)),
                                                       (8, pytest.approx(20 / 6))]
    assert table[0]["downpour_time_s"] == 20.0 and table[0]["eamsgd_time_s"] == 5.0
    md = open(os.path.join(root, "report", "speedup_cluster.md")).read()
    assert "| 4 | 20 | 5 | 4.00x |" in md and "| 8 | 20 | 6 | 3.33x |" in md
    summary_md = open(os.path.join(root, "report", "summary.md")).read()
    assert "simulated cluster time to thr. (s) | bytes/step" in summary_md
    for name in ("p_curves_cluster.png", "p_time_to_threshold_vs_p_cluster.png"):
        assert os.path.getsize(os.path.join(root, "report", name)) > 1000, name
    # A slow method that never reaches the threshold: the speed-up is unbounded; a fast one
    # that never does: none.
    rows = [dict(r) for r in summary]
    only(rows, method="downpour", p=4)["sim_time_to_threshold_s"] = None
    only(rows, method="eamsgd", p=8)["sim_time_to_threshold_s"] = None
    assert [r["speedup"] for r in report.speedup_table(rows)] == [float("inf"), None]
    # The method names are parameters.
    swapped = report.speedup_table(summary, fast=("downpour", 1), slow=("eamsgd", 10))
    assert swapped[0]["speedup"] == pytest.approx(0.25)


def test_one_colour_per_method_in_every_figure_log_scale_and_labelled_threshold(
        tmp_path, monkeypatch):
    """Two grids with different method sets: a method has the same colour and marker in
    every figure (curves and legend); a test loss spike of 60 puts its row on a log scale."""
    root = str(tmp_path)
    for method, tau in (("adownpour", 4), ("downpour", 1), ("easgd", 4), ("easgd", 1),
                        ("lsgd", 4)):
        fake_run(root, method, tau, 4, 0.1, 0, ["tau"], [0.5, 0.3, 0.1],
                 test_loss=[1.0, 60.0, 0.3] if method == "downpour" else None)
    for method, tau in (("easgd", 10), ("downpour", 1)):
        for p in (4, 8):
            if (method, p) != ("downpour", 4):
                fake_run(root, method, tau, p, 0.1, 0, ["p"], [0.5, 0.3, 0.1])
    seen = {}

    def record(fig, path, **kwargs):
        # The labels end in the seeds the mean is over (", mean of 1"): keyed without it.
        legend_texts = [t.get_text().split(", mean of")[0] for t in fig.legends[0].get_texts()]
        legend = dict(zip(legend_texts, [(h.get_color(), h.get_marker())
                                         for h in fig.legends[0].legend_handles], strict=True))
        curves = {(line.get_color(), line.get_marker()) for ax in fig.axes
                  for line in ax.get_lines() if line.get_color() != "grey"}
        texts = [t.get_text() for ax in fig.axes for t in ax.texts]
        scales = [ax.get_yscale() for ax in fig.axes]
        seen[os.path.basename(path)] = (legend, curves, texts, scales, len(fig.legends))

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    report.write_report(root, threshold=0.2)
    tau_legend, tau_curves, texts, scales, n_legends = seen["tau_curves_steps.png"]
    p_legend, p_curves = seen["p_curves_steps.png"][:2]
    assert n_legends == 1 and "threshold 20%" in tau_legend and "threshold 20%" in texts
    assert tau_legend["easgd"] == p_legend["easgd (tau 10)"]  # the same colour and marker
    assert tau_legend["downpour"] == p_legend["downpour (tau 1)"]
    assert len({tau_legend[m] for m in ("adownpour", "downpour", "easgd", "lsgd")}) == 4
    assert tau_curves == {tau_legend[m] for m in ("adownpour", "downpour", "easgd", "lsgd")}
    assert p_curves == {p_legend["easgd (tau 10)"], p_legend["downpour (tau 1)"]}
    assert seen["p_error_vs_p.png"][0]["easgd (tau 10)"][0] == tau_legend["easgd"][0]
    # Against the period (grid "tau" has tau 1 and 4): every method with a tau, same styles.
    against_tau, against_tau_curves = seen["tau_error_vs_tau.png"][:2]
    assert {colour for colour, _ in against_tau_curves} == {c for c, _ in against_tau.values()}
    assert against_tau == {m: tau_legend[m] for m in ("adownpour", "downpour", "easgd", "lsgd")}
    assert "tau_time_to_threshold_vs_tau.png" in seen and "p_error_vs_tau.png" not in seen
    # Rows: training loss, test loss (the spike: log), test error; two panels (tau 1, 4).
    assert scales[2:4] == ["log", "log"] and scales[0:2] == ["linear", "linear"]
    assert report.method_styles(["lsgd", "easgd"])["easgd"] == report.method_styles(
        ["easgd", "lsgd", "easgd"])["easgd"]


def test_by_period_table_bolds_the_best_per_column_and_counts_failures():
    """The method x period tables: each cell is that setting's summary (mean with failures
    counted, std, failed seeds, chosen rate); the lowest error and the shortest time of each
    column are bold; a median that never reached the threshold says so."""
    def row(method, tau, mean, time_s, failed=0):
        return {"grid": "p4", "method": method, "tau": tau, "p": 4,
                "mean_final_test_error": mean, "std_final_test_error": 0.01,
                "failed_seeds": failed, "seeds": 3, "chosen_learning_rate": 0.1,
                "sim_time_to_threshold_s": time_s, "time_to_threshold_s": 99.0}

    summary = [row("diloco", 16, 0.06, 1.5), row("diloco", 64, 0.07, 2.0),
               row("easgd", 16, 0.08, 3.0), row("easgd", 64, 0.05, None, failed=1),
               {**row("msgd", None, 0.01, 0.1), "p": 1},  # no period: not a row here
               {**row("easgd", 16, 0.01, 0.1), "grid": "other"}]
    text = report.by_period_markdown(summary, "p4", 0.2)
    assert "| method | tau 16 | tau 64 |" in text and "msgd" not in text
    error_rows = [line for line in text.splitlines() if "failed, lr" in line]
    assert error_rows == [
        "| diloco | **6.00 +- 1.00** (0/3 failed, lr 0.1) | 7.00 +- 1.00 (0/3 failed, lr 0.1) |",
        "| easgd | 8.00 +- 1.00 (0/3 failed, lr 0.1) | **5.00 +- 1.00** (1/3 failed, lr 0.1) |"]
    time_rows = [line for line in text.splitlines()
                 if line.startswith("| ") and "failed" not in line and "method" not in line]
    assert time_rows == ["| diloco | **1.5** | **2** |", "| easgd | 3 | not reached |"]
    assert "simulated cluster time" in text


def test_main_runs_after_a_plain_import(edge_of_stability, capsys):
    """The command line's flags live on ``report.FLAGS`` (absl's global FLAGS holds none of
    them): once they are parsed, :func:`report.main` runs in this process, with --workdir
    and with --new_summary and --compare."""
    assert "workdir" in report.FLAGS and "new_summary" not in flags.FLAGS
    assert report.FLAGS.find_module_defining_flag("workdir") == report.__name__
    docs = os.path.join(helpers.ROOT, "docs", "mnist1d_paper")
    try:
        report.FLAGS(["report", f"--workdir={edge_of_stability}", "--threshold=0.2"])
        report.main(["report"])
        out = capsys.readouterr().out
        assert "| tau | easgd | 4 | 4 | 0.5 | bottom | 6.00 +- 0.00, 0/3 failed |" in out
        assert os.path.join(edge_of_stability, "report", "tau_curves_steps.png") in out
        report.FLAGS.unparse_flags()
        report.FLAGS(["report", f"--new_summary={os.path.join(docs, 'summary.csv')}",
                      f"--compare={os.path.join(docs, 'issue10_summary.csv')}"])
        report.main(["report"])
        assert "| 1 | downpour | held | held |" in capsys.readouterr().out
    finally:
        report.FLAGS.unparse_flags()


def test_a_declared_report_layout_gets_its_tables(tmp_path):
    """Grids named otherwise than the paper's ("periods", "workers") get the findings, the
    speed-up and the method x period tables their sweep config declares in ``report``, from
    the ConfigDict as from its sweep.json; without the declaration they get none of them,
    and a declared grid's panel axis and figures override the inferred ones."""
    root = str(tmp_path)
    cluster_sweep(root, grid="workers")
    for method, tau, error in (("eamsgd", 1, 0.1), ("eamsgd", 4, 0.05), ("downpour", 1, 0.2),
                               ("downpour", 4, 0.15)):
        fake_run(root, method, tau, 4, 0.2, 0, ["periods"], [0.5, 0.3, error])
    sweep = ml_collections.ConfigDict({"threshold": 0.2, "report": {
        "grids": [{"name": "periods", "by_period": False},
                  {"name": "workers", "panels": "tau", "against": ["p", "tau"]}],
        "findings": {"tau_grid": "periods", "p_grid": "workers", "comparisons": []},
        "speedup": {"grid": "workers", "fast": ["eamsgd", 10], "slow": ["downpour", 1]},
        "ranking": {"grids": ["periods"], "pairs": [["eamsgd", "downpour"]]}}})
    undeclared = {os.path.basename(f) for f in report.write_report(
        root, {"threshold": 0.2}, plots=False)["files"]}
    assert {"findings.md", "speedup_cluster.md", "periods_ranking.md"}.isdisjoint(undeclared)
    assert {"periods_by_period.md", "workers_by_period.md"} <= undeclared  # periods vary
    # The sweep.json form declares the same spec, so it writes the same tables (its figures,
    # drawn from the spec alone, are drawn once: for the ConfigDict).
    as_json = json.loads(sweep.to_json_best_effort())
    assert report_spec.report_spec(as_json) == report_spec.report_spec(sweep)
    for declared, plots in ((as_json, False), (sweep, True)):
        out = report.write_report(root, declared, plots=plots)
        files = {os.path.basename(f) for f in out["files"]}
        assert {"findings.md", "speedup_cluster.md", "workers_by_period.md",
                "periods_ranking.md"} <= files
        assert "periods_by_period.md" not in files  # declared off
    # Declared: against tau too, where no method's period varies.
    assert {"workers_error_vs_p.png", "workers_error_vs_tau.png"} <= files
    text = open(os.path.join(root, "report", "findings.md")).read()
    assert "- **tau 1: " in text and "(p = 4)" in text  # finding 2 per tau of "periods"
    text = open(os.path.join(root, "report", "periods_ranking.md")).read()
    assert "## tau 4" in text and "| 1 | eamsgd | 5.00 +- n/a (0/1 failed) | 0.2 |" in text
    assert "- **eamsgd against downpour** (2 settings)" in text
    assert "| 4 | 20 | 5 | 4.00x |" in open(os.path.join(root, "report",
                                                         "speedup_cluster.md")).read()
    spec = report_spec.report_spec(sweep)
    assert spec.grid("workers", report.collect(root), out["summary"]).panels == "tau"
    assert report_spec.infer_grid("workers", report.collect(root), out["summary"]).panels == "p"
    with pytest.raises(ValueError, match="unknown keys"):
        report_spec.report_spec({"report": {"tables": []}})


def test_runs_the_sweep_does_not_plan_are_left_out(tmp_path):
    """A probe's rate the grid has since dropped (0.05, the best error here), a seed, a
    period and a p the sweep no longer runs stay in the workdir but out of the report: they
    would enter the per-rate means and win the choice, or add settings no one declared."""
    root = str(tmp_path)
    for tau, p, lr, seed, error in ((5, 4, 0.1, 0, 0.3), (5, 4, 0.2, 0, 0.2),
                                    (5, 4, 0.05, 0, 0.01), (5, 4, 0.2, 1, 0.9),
                                    (10, 4, 0.2, 0, 0.01), (5, 2, 0.2, 0, 0.01)):
        fake_run(root, "eamsgd", tau, p, lr, seed, ["g"], [0.5, error])
    sweep = {"threshold": 0.4, "seeds": [0], "beta": 0.9,
             "report": {"findings": None, "speedup": None},
             "methods": {"eamsgd": {"config": "eamsgd_outer", "learning_rates": [0.1, 0.2]}},
             "grids": [{"name": "g", "methods": ["eamsgd"], "periods": [5],
                        "num_workers": [4]}]}
    out = report.write_report(root, sweep, plots=False)
    (row,) = out["summary"]
    assert row["chosen_learning_rate"] == 0.2 and row["seeds"] == 1
    assert row["per_rate"] == "0.1: 30.00 (0/1 failed); 0.2: 20.00 (0/1 failed)"
    assert len(out["runs"]) == 2
    # A grid's own rates count for its runs; no declared methods: every run.
    sweep["grids"][0]["learning_rates"] = {"eamsgd": [0.05]}
    assert [r.name for r in report.declared(report.collect(root), sweep)] == [
        "eamsgd_tau5_p4_lr0.05_seed0"]
    assert len(report.declared(report.collect(root), {"seeds": [0]})) == 6


def test_a_figure_says_why_a_setting_is_not_drawn():
    """A setting with no finished run is "not finished yet" while one is stopped or pending,
    "all its runs failed" only when every run failed; a finished one without a time never
    reached the threshold."""
    from easgd_jax.experiments import plots

    def row(tau, mean, time, **counts):
        return {"tau": tau, "mean_final_test_error": mean, "sim_time_to_threshold_s": time,
                "unfinished": 0, "pending": 0, "diverged": 0, **counts}

    lines = {("diloco", 8): [row(16, None, None, unfinished=1), row(64, 1.1, None),
                             row(256, None, None, diverged=4), row(1024, 1.0, 50.0)]}
    assert plots._against_missing(lines, "mean_final_test_error", "tau") == {
        "diloco": "tau 16: no run finished yet; tau 256: all its runs failed"}
    assert plots._against_missing(lines, "sim_time_to_threshold_s", "tau") == {
        "diloco": "tau 16: no run finished yet; tau 64: median seed did not reach the "
                  "threshold; tau 256: all its runs failed"}
