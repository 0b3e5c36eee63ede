"""Smoke test of `python -m analysis` on a small grid, and the package's import footprint."""

import subprocess
import sys

import pytest

from analysis.__main__ import main

FIGURES = {
    "admm_radius.png",
    "easgd_radius.png",
    "easgd_condition.png",
    "trajectories.png",
    "sync_stability.png",
    "sync_variance.png",
}


@pytest.mark.slow
def test_command_writes_every_figure(tmp_path, capsys):
    # the paper's figures; analysis.linearized's (about 35 s of compiling) are covered by
    # tests/unit/test_linearized*.py
    assert main(["--out", str(tmp_path), "--grid", "24", "--no-monte-carlo",
                 "--no-linearized"]) == 0
    assert {f.name for f in tmp_path.iterdir()} == FIGURES
    assert all((tmp_path / f).stat().st_size > 10_000 for f in FIGURES)
    out = capsys.readouterr().out
    assert "1.000974" in out and "0.999270" in out  # p = 3, eta = 0.001, rho = 2.5
    assert "run time" in out and "ADMM is unstable" in out


def test_import_does_not_pull_jax_or_matplotlib():
    code = (
        "import sys, analysis, analysis.montecarlo; "
        "bad = [m for m in ('jax', 'matplotlib', 'easgd_jax') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
