"""Two local processes (2 simulated CPU devices each, gloo collectives) train like one."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import easgd_jax
from easgd_jax import train
from easgd_jax.checkpoint import Checkpointer
from easgd_jax.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import easgd  # noqa: E402

OVERRIDES = {"train.num_steps": 40, "train.eval_every": 20, "checkpoint.every": 20,
             "tensorboard": False, "num_workers": 4, "num_devices": 4}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    port = _free_port()
    flags = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
    processes = [
        subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "launch.py"),
             f"--config={os.path.join(ROOT, 'configs', 'easgd.py')}",
             f"--workdir={tmp_path / 'two'}", *flags,
             f"--config.distributed.coordinator_address=127.0.0.1:{port}",
             "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        for i in range(2)]
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=300))
    finally:
        for process in processes:
            process.kill()
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    assert "process 1 of 2; 2 local and 4 global devices" in outputs[1][1]

    config = easgd.get_config()
    for key, value in OVERRIDES.items():
        *path, leaf = key.split(".")
        node = config
        for part in path:
            node = node[part]
        node[leaf] = value
    state, _ = train.train(config, str(tmp_path / "one"))  # 4 of this process's 8 devices

    restored = Checkpointer(str(tmp_path / "two"), 3).restore_latest(state)
    assert restored is not None and restored[0] == 40
    two_center = easgd_jax.center(restored[1].opt_state)
    one_center = easgd_jax.center(state.opt_state)
    for a, b in zip(jax.tree.leaves(two_center), jax.tree.leaves(one_center), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    two, one = read_metrics(str(tmp_path / "two")), read_metrics(str(tmp_path / "one"))
    assert [r["step"] for r in two] == [r["step"] for r in one] == [20, 40]
    for a, b in zip(two, one, strict=True):
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-5)
        assert a["test_accuracy"] == b["test_accuracy"]
    saved = json.loads((tmp_path / "two" / "config.json").read_text())
    assert saved["distributed"]["num_processes"] == 2
    print(f"2 processes: {two[-1]}\n1 process:   {one[-1]}")
