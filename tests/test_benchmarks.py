"""The benchmark scripts run end to end on a tiny MLP (their code is covered by CI; their
timings are not checked here: speed lives in benchmarks/RESULTS.md)."""

import numpy as np
import pytest

from benchmarks import comm_volume, step_cost

TINY = ["--hidden", "8", "--workers", "2"]


@pytest.mark.slow
def test_step_cost_runs_every_method_and_reports_ratios(capsys):
    summaries = step_cost.main([
        "--model", "mlp", *TINY, "--periods", "1", "2", "10", "--steps", "20",
        "--repetitions", "2", "--warmup", "0", "--batch-size", "4"])
    assert set(summaries) == {"floor", "eamsgd:1", "eamsgd:2", "eamsgd:10", "dp",
                              "eamsgd-nocomm:10", "eamsgd-cond:10"}
    assert all(np.isfinite(s.median) and s.median > 0 for s in summaries.values())
    out = capsys.readouterr().out
    assert "| eamsgd:10 |" in out and "Target (EAMSGD period 10" in out


@pytest.mark.slow
def test_comm_volume_hlo_bytes_agree_with_the_formulas():
    rows = comm_volume.main(["--models", "mlp", *TINY, "--periods", "1", "2", "10",
                             "--lsgd-period", "2"])
    agrees = {(r[0], r[1]): r[6] for r in rows}
    # One worker per device: every method's HLO bytes equal its formula.
    assert all(v == "yes" for (method, layout), v in agrees.items() if "1/device" in layout)
    # Two vmapped workers on one device: rounds of whole periods keep the formula; the
    # per-step conditional turns into a select that all-reduces every step (x tau).
    assert agrees[("eamsgd:10", "2/device (vmap), d=1")] == "yes"
    assert agrees[("eamsgd-cond:10", "2/device (vmap), d=1")] == "no (x10.00)"
