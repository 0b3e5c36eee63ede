"""The paper's findings judged on hand-made summary rows (easgd_jax/experiments/findings.py)."""

from easgd_jax.experiments import findings as sweep_findings


def row(grid, method, tau, p, mean, std=0.01, diverged="", runs=5, finished=True):
    return {"grid": grid, "method": method, "tau": tau, "p": p, "runs": runs,
            "diverged": len(diverged.split()), "diverged_learning_rates": diverged,
            "best_test_error": mean - std if finished else None,
            "mean_final_test_error": mean if finished else None,
            "std_final_test_error": std if finished else None, "seeds_at_best_lr": 3,
            "time_to_threshold_s": 1.0, "steps_to_threshold": 100}


def tau_grid(eamsgd, easgd, downpour):
    rows = [row("tau", "msgd", None, 1, 0.08), row("tau", "mdownpour", 1, 4, 0.09)]
    for tau, e, a, d in zip((1, 4, 16, 64), eamsgd, easgd, downpour, strict=True):
        rows += [row("tau", "eamsgd", tau, 4, e), row("tau", "easgd", tau, 4, a)]
        rows.append(row("tau", "downpour", tau, 4, *d) if isinstance(d, tuple)
                    else row("tau", "downpour", tau, 4, d))
    return rows


def test_downpour_unstable_at_large_tau_held_and_not_held():
    unstable = tau_grid([0.05] * 4, [0.06] * 4, [0.07, 0.08, 0.5, (0.6, 0.01, "0.1 0.2")])
    lines, verdicts = sweep_findings.downpour_finding(unstable)
    assert verdicts == [True] and "diverged at lr 0.1 0.2" in lines[0]
    stable = tau_grid([0.05] * 4, [0.06] * 4, [0.07, 0.07, 0.08, 0.09])
    assert sweep_findings.downpour_finding(stable)[1] == [False]
    # Best at a large tau: not the finding even if tau 64 diverges with some rate.
    late = tau_grid([0.05] * 4, [0.06] * 4, [0.3, 0.3, 0.07, (0.2, 0.01, "0.2")])
    assert sweep_findings.downpour_finding(late)[1] == [False]


def test_eamsgd_best_at_every_tau_compares_with_every_panel_method():
    rows = tau_grid([0.05, 0.05, 0.05, 0.05], [0.06, 0.04, 0.06, 0.06], [0.07] * 4)
    lines, verdicts = sweep_findings.eamsgd_finding(rows)
    assert verdicts == [True, False, True, True]
    assert "best easgd" in lines[1]
    # MSGD (no tau) is in every panel: below EAMSGD everywhere, the finding fails everywhere.
    rows = [r if r["method"] != "msgd" else row("tau", "msgd", None, 1, 0.01) for r in rows]
    assert sweep_findings.eamsgd_finding(rows)[1] == [False] * 4


def test_larger_tau_and_p_trend_verdicts():
    rows = tau_grid([0.08, 0.07, 0.06, 0.05], [0.05, 0.06, 0.07, 0.08], [0.07] * 4)
    rows += [row("p", "eamsgd", 10, p, m) for p, m in ((4, 0.06), (8, 0.07), (16, 0.05))]
    lines, verdicts = sweep_findings.scaling_finding(rows)
    assert verdicts == ["not held", "held", "partly"]  # easgd tau, eamsgd tau, eamsgd p
    assert lines[1].startswith("- **eamsgd, larger tau (p = 4): held.**")
    # Equal means (up to float noise of averaging) are no improvement.
    flat = tau_grid([0.05] * 4, [0.061, 0.061 - 1e-12, 0.07, 0.08], [0.07] * 4)
    assert sweep_findings.scaling_finding(flat)[1][0] == "not held"


def test_findings_markdown_has_every_section():
    rows = tau_grid([0.05] * 4, [0.06] * 4, [0.07, 0.08, 0.5, 0.6])
    rows += [row("apam", "apam", None, 4, 0.1), row("apam", "amsgrad_sync", None, 4, 0.08)]
    text = sweep_findings.findings_markdown(rows, 0.2)
    for title in ("### 1.", "### 2.", "### 3.", "### APAM against synchronous AMSGrad"):
        assert title in text
    assert "(lowest mean: amsgrad_sync)" in text
