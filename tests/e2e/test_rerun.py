"""Running a finished run again changes no file: it says "already finished at step N" and
returns the saved final metrics (it used to overwrite final_metrics.json with only the step
and wall time, losing the accuracy)."""

import hashlib
import logging
import os
import shutil

import pytest

from easgd_jax.experiments.sweep import load_config_file
from easgd_jax.training import asynchronous as async_train
from easgd_jax.training import sync as train
from easgd_jax.training.metrics import (
    FINAL_METRICS,
    finished_run,
    read_metrics,
    write_final_metrics,
)


def _config(name: str):
    config = load_config_file(name)
    config.num_workers = config.num_devices = 2
    config.data.name = "digits"
    config.model.name = "mlp"
    config.model.kwargs.hidden = (16,)
    config.train.num_steps = 20
    config.train.eval_every = 10
    config.train.batch_size = 16
    config.checkpoint.every = 10
    return config


def _checksums(workdir) -> dict[str, str]:
    """sha256 and mtime of every file under ``workdir``, except the workdir's lock (a
    runtime file, not a result: each run writes its pid into it and empties it at the end;
    test_faults.py checks it)."""
    out = {}
    for root, _, files in os.walk(workdir):
        for name in files:
            if root == str(workdir) and name.startswith(".lock"):
                continue
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(path, workdir)] = f"{digest} {os.stat(path).st_mtime_ns}"
    return out


@pytest.fixture(scope="module")
def finished_easgd(tmp_path_factory) -> tuple[str, dict]:
    """The synchronous run of ``_config("easgd")``, trained once for the module:
    ``(workdir, the final metrics it returned)``; the tests start from copies of it."""
    workdir = str(tmp_path_factory.mktemp("finished_easgd"))
    return workdir, train.train_and_evaluate(_config("easgd"), workdir)


@pytest.mark.slow
@pytest.mark.parametrize("name,run", [("easgd", train.train_and_evaluate),
                                      ("async_easgd", async_train.train_and_evaluate)])
def test_rerunning_a_finished_run_changes_no_file(tmp_path, caplog, name, run, request):
    config = _config(name)
    if name == "easgd":  # the module's run, copied
        finished, first = request.getfixturevalue("finished_easgd")
        shutil.copytree(finished, tmp_path, dirs_exist_ok=True)
    else:
        first = run(config, str(tmp_path))
    assert 0.0 < first["test_accuracy"] <= 1.0
    before = _checksums(tmp_path)
    assert FINAL_METRICS in before and "config.json" in before

    # (the absl logger's own level too: a test run before in this process may have left it
    # above INFO, and its INFO line would then never reach the root logger)
    with caplog.at_level(logging.INFO), caplog.at_level(logging.INFO, logger="absl"):
        again = run(config, str(tmp_path))
    assert "already finished at step 20" in caplog.text
    assert again["test_accuracy"] == first["test_accuracy"]
    assert again["step"] == 20
    assert _checksums(tmp_path) == before


@pytest.mark.slow
def test_a_raised_num_steps_continues_a_finished_run(tmp_path, finished_easgd):
    config = _config("easgd")
    shutil.copytree(finished_easgd[0], tmp_path, dirs_exist_ok=True)  # finished at 20
    config.train.num_steps = 30
    train.train_and_evaluate(config, str(tmp_path))
    assert finished_run(str(tmp_path), 30)["step"] == 30
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [10, 20, 30]


def test_final_metrics_are_written_atomically(tmp_path):
    write_final_metrics(str(tmp_path), {"step": 5, "test_accuracy": 0.5})
    assert sorted(os.listdir(tmp_path)) == [FINAL_METRICS]  # no temporary file left
    assert finished_run(str(tmp_path), 5) == {"step": 5, "test_accuracy": 0.5}
    assert finished_run(str(tmp_path), 6) is None  # not finished for a longer run
    assert finished_run(str(tmp_path / "absent"), 1) is None
