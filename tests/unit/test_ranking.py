"""Methods ranked per panel and tested against the best (easgd_jax/experiments/ranking.py):
the Holm adjustment, the panels (a method without a period in every one), the verdicts'
direction and the planned pairs' sign."""

from __future__ import annotations

import math

import pytest

from easgd_jax.experiments import metric as metric_lib
from easgd_jax.experiments import ranking
from easgd_jax.experiments.report_spec import RankingSpec, report_spec


def _row(method, tau, errors, p=4, grid="g", lr=0.1, failed=0):
    mean = sum(errors) / len(errors)
    std = (sum((e - mean) ** 2 for e in errors) / (len(errors) - 1)) ** 0.5
    return {"grid": grid, "method": method, "tau": tau, "p": p, "chosen_learning_rate": lr,
            "rate_edge": "", "mean_final_test_error": mean, "std_final_test_error": std,
            "seeds": len(errors), "failed_seeds": failed,
            "seed_errors": " ".join(f"{s}:{e}" for s, e in enumerate(errors))}


def test_holm_multiplies_the_ith_smallest_by_m_minus_i_and_keeps_the_order():
    # sorted 0.01, 0.03, 0.04 -> 0.03, 0.06, max(0.06, 0.04) = 0.06; None is not counted
    assert ranking.holm([0.04, None, 0.01, 0.03]) == pytest.approx([0.06, None, 0.03, 0.06])
    assert ranking.holm([0.5, 0.9]) == [1.0, 1.0]  # capped
    assert ranking.holm([]) == []


def test_a_panel_holds_its_tau_and_the_methods_without_one_lowest_mean_first():
    summary = [_row("diloco", 16, [1.2, 1.3, 1.25]), _row("eamsgd", 16, [1.1, 1.2, 1.15]),
               _row("eamsgd", 64, [1.0, 1.1, 1.05]), _row("dp_adamw", None, [1.12, 1.22, 1.17]),
               _row("eamsgd", 16, [9.0, 9.0, 9.1], grid="other")]
    panels = ranking.panels(summary, "g")
    assert list(panels) == [16, 64]
    assert [r["method"] for r in panels[16]] == ["eamsgd", "dp_adamw", "diloco"]
    assert [r["method"] for r in panels[64]] == ["eamsgd", "dp_adamw"]


def test_a_consistently_worse_method_is_worse_and_a_noisy_one_tied():
    best = _row("local_sgd", 64, [1.00, 1.10, 1.05, 1.02, 1.08])
    worse = _row("diloco", 64, [1.20, 1.31, 1.24, 1.23, 1.27])  # +0.2 on every seed
    noisy = _row("easgd", 64, [0.90, 1.40, 1.00, 1.30, 1.00])  # mean 1.12, not told apart
    text = ranking.panel_markdown(ranking.panels([worse, noisy, best], "g")[64],
                                  metric_lib.LOSS_GAP)
    lines = text.splitlines()[2:]
    assert lines[0].startswith("| 1 | local_sgd |") and lines[0].endswith("| **best** |")
    assert lines[1].startswith("| 2 | easgd |") and lines[1].endswith("| tied with the best |")
    assert lines[2].startswith("| 3 | diloco |") and lines[2].endswith("| worse |")
    assert "| +0.2000 |" in lines[2]  # diloco - best, in nats


def test_a_pair_names_the_lower_method_only_when_significant():
    summary = [_row("eamsgd", 16, [1.00, 1.10, 1.05, 1.02]),
               _row("diloco", 16, [1.20, 1.31, 1.24, 1.23]),
               _row("eamsgd", 64, [1.30, 1.00, 1.20, 1.10]),
               _row("diloco", 64, [1.10, 1.20, 1.20, 1.00]),
               _row("dp", None, [2.0, 2.15, 2.02, 2.1])]
    (line,) = ranking.pair_lines(summary, "g", [("eamsgd", "diloco")], metric_lib.LOSS_GAP)
    assert "tau 16: eamsgd - diloco = -0.2025" in line and "**eamsgd lower**" in line
    assert "tau 64: eamsgd - diloco = +0.0250" in line and "not told apart" in line
    (line,) = ranking.pair_lines(summary, "g", [("dp", "eamsgd")], metric_lib.LOSS_GAP)
    assert line.startswith("- **dp against eamsgd** (2 settings)")  # dp stands for each tau
    assert line.count("**dp lower**") == 0 and line.count("**eamsgd lower**") == 2
    assert ranking.pair_lines(summary, "g", [("eamsgd", "lsgd")], metric_lib.LOSS_GAP) == []
    (line,) = ranking.pair_lines(summary[:2], "g", [("eamsgd", "diloco")], metric_lib.LOSS_GAP)
    assert line.startswith("- **eamsgd against diloco** (1 setting): tau 16:")


def test_the_ranking_markdown_and_its_spec():
    summary = [_row("eamsgd", 16, [1.0, 1.1]), _row("diloco", 16, [1.2, 1.3])]
    text = ranking.ranking_markdown(summary, "g", [("eamsgd", "diloco")], metric_lib.LOSS_GAP)
    assert text.startswith("# Grid g: methods ranked by mean final loss gap")
    assert "## tau 16" in text and "## Planned pairs" in text
    assert math.isnan(ranking._mean({"mean_final_test_error": None}))
    spec = report_spec({"report": {"ranking": {"grids": ["g"], "pairs": [["a", "b"]]}}})
    assert spec.ranking == RankingSpec(("g",), (("a", "b"),))
    assert report_spec({"report": {"ranking": None}}).ranking is None
    with pytest.raises(ValueError, match="two different methods"):
        RankingSpec(("g",), (("a", "a"),))


def test_the_verdict_reads_the_holm_adjusted_p_not_the_raw_one():
    """Three methods each worse than the best at raw p = 0.022: Holm over the panel's three
    tests gives 0.066 for each, so none is called worse."""
    best = _row("best", 8, [1.0] * 5)
    others = [_row(name, 8, [1.06, 1.01, 1.09, 1.03, 1.07]) for name in ("x", "y", "z")]
    assert ranking.compare(others[0], best).p_value == pytest.approx(0.02195, abs=1e-4)
    text = ranking.panel_markdown(ranking.panels([best] + others, "g")[8], metric_lib.LOSS_GAP)
    for line in text.splitlines()[3:]:
        assert "| 0.066 | tied with the best |" in line
