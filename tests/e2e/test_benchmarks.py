"""The benchmark scripts run end to end on a tiny MLP (their code is covered by CI; their
timings are not checked here: speed lives in benchmarks/RESULTS.md)."""

import importlib.util
import re
import sys

import numpy as np
import pytest

from benchmarks import comm_volume, step_cost, vs_pytorch

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


def test_vs_pytorch_without_torch_names_the_bench_extra(monkeypatch):
    """With torch not importable the script stops at once with one line naming the extra."""
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    with pytest.raises(SystemExit) as stop:
        vs_pytorch.main(["--steps", "20", "--skip", "10", "--reps", "1"])
    message = str(stop.value.code)
    assert message == vs_pytorch.MISSING_TORCH
    assert 'pip install -e ".[bench]"' in message and "\n" not in message


@pytest.mark.slow
def test_vs_pytorch_prints_both_sides_or_names_the_bench_extra(capsys):
    """torch is in the optional bench extra, not the test extra: where it is installed the
    tiny comparison runs and prints positive examples/s for both sides and equal parameter
    counts; where it is not, the same command must stop with the one-line error (no skip)."""
    argv = ["--steps", "20", "--skip", "10", "--reps", "1", "--layouts", "devices",
            "--alone_threads", "1"]
    if importlib.util.find_spec("torch") is None:
        with pytest.raises(SystemExit) as stop:
            vs_pytorch.main(argv)
        assert 'pip install -e ".[bench]"' in str(stop.value.code)
        return
    rows = vs_pytorch.main(argv)
    assert [(r["rep"], r["layout"]) for r in rows] == [(1, "4 devices")]
    row = rows[0]
    assert row["jax"] > 0 and row["torch"] > 0
    assert row["ratio"] == pytest.approx(row["jax"] / row["torch"])
    assert all(np.isfinite([row["jax_loss"], row["torch_loss"]]))
    out = capsys.readouterr().out
    counts = re.search(r"cnn1d parameters: JAX (\d+), PyTorch (\d+)", out)
    assert counts and counts[1] == counts[2] and int(counts[1]) > 0
    assert "| JAX examples/s | PyTorch examples/s | ratio |" in out
    assert re.search(r"^\| 1 \| 4 devices \| [\d,]+ \| [\d,]+ \| \d+\.\d\d \|", out, re.M)
    alone = re.search(r"PyTorch alone, 1 process x 1 thread\(s\), no averaging: ([\d.]+) ms/step",
                      out)
    assert alone and float(alone[1]) > 0


def test_vs_pytorch_jax_side_runs_in_a_process_of_its_layout_from_the_same_state():
    """The JAX side of a layout runs in a process of its own, set up for that layout's
    devices (1 here, while this process has 8), and each repetition is a run from the
    initial parameters: a second run gives the first run's loss bit for bit (the round
    donates its state, so the initial state must not be one of the donated buffers). A
    failure there is raised here with its traceback."""
    from easgd_jax.training.common import load_data_and_model

    config = vs_pytorch.main_config(1, 20, 10)
    dataset, model = load_data_and_model(config)
    params = vs_pytorch.initial_params(model, dataset.example_shape, config.seed)
    with vs_pytorch.JaxProcess(1, 20, 10, params) as run:
        assert run.facts["devices"] == 1 and run.facts["rounds"] == 10
        assert "1 devices" in run.facts["machine"]
        first, second = run(20, 10), run(20, 10)
    assert np.isfinite(first[1]) and first[1] == second[1] and first[0] > 0
    with pytest.raises(RuntimeError, match=r"(?s)jax-0-devices failed:.*Traceback.*"
                                           r"num_devices must be >= 1, got 0"):
        vs_pytorch.JaxProcess(0, 20, 10, params)


@pytest.mark.slow
def test_profile_step_names_the_hlo_instructions_of_the_traced_round(capsys):
    """profile_step reads the trace back: every row is an instruction of the compiled round
    (a known shape and kind), the shares add up to 1, and the table is printed."""
    from benchmarks import profile_step

    rows = profile_step.main(["--devices", "1", "--steps", "20", "--top", "3"])
    assert len(rows) > 10
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    assert all(r["shape"] and r["opcode"] for r in rows)
    assert any("dot_general" in r["op"] for r in rows)  # the model's products are there
    out = capsys.readouterr().out
    assert out.count("\n| ") == 3 + 1  # the header and the top 3
