"""Two local processes (2 simulated CPU devices each, gloo collectives) train like one.

The two runs do the same arithmetic except in ONE place: the exchange's all-reduce of the 4
workers' elastic differences, which the 2-process run does across processes (gloo) and the
1-process run inside XLA:CPU, adding the terms in different orders. In float32 the center
then differs by about an ulp after the first exchange, and 40 steps of training at learning
rate 0.5 amplify that machine-dependently (measured when these runs trained the MNIST-1D
CNN: max 1.5e-8 after the first exchange, 8.5e-6 after 40 steps on one CI machine; they now
train test_checkpoint's SMALL run, the embedded digits and a small MLP, which is cheaper and
reasons the same), so no fixed float32 tolerance after 40 steps is sound. The test compares
instead
(a) float32, the default precision, right after the first exchange: the workers bitwise, the
    center within the rounding of a reordered 4-term sum (a few ulps);
(b) float64 after at least 40 steps (4 exchanges), where reordering costs ~1e-16 per
    exchange: the whole state (center, workers, optimizer state) and the metrics at rtol
    1e-10. This run is also the one preempted host: it is stopped by a SIGTERM to process 1
    only, after its checkpoint at step 40; both processes must agree on the stop after the
    same round, save that step and exit (they used to hang), and the state they saved is
    compared with a 1-process run to that step (so resuming it is the 1-process resume that
    test_checkpoint checks bitwise). One 2-process launch holds both properties: a second
    one cost the suite ~25 CPU-s.

The workers' local steps agree bitwise only with intra-op thread pools of the same size:
XLA:CPU's float results depend on it (measured on the MNIST-1D CNN: 4 vs 6 threads change
the workers' params by 1.8e-7 after 10 local steps, before any exchange), and
``use_simulated_cpu_devices`` sizes it (PJRT_NPROC) from the device count and the cores.
The launched processes therefore inherit this process's PJRT_NPROC (conftest's 8 devices),
on any machine.
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from helpers import SMALL
from helpers import free_ports as _free_ports
from helpers import wait_for_checkpoint as _wait_for_checkpoint

import easgd_jax
from easgd_jax.training import sync as train
from easgd_jax.training.checkpoint import Checkpointer
from easgd_jax.training.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import launch  # noqa: E402
from easgd_jax.configs import easgd  # noqa: E402

# test_checkpoint's small run: the embedded digits and a small MLP (the runs' arithmetic is
# what is compared, not the model), a given step time for the simulated clock.
COMMON = {**SMALL, "tensorboard": False, "num_workers": 4, "num_devices": 4}
# (a) float32 up to the second round: the first exchange that moves the center is at step 10
# (the one at step 0 adds zeros: every worker starts at the center).
FIRST_EXCHANGE = {**COMMON, "train.num_steps": 20, "train.eval_every": 20,
                  "checkpoint.every": 10}
# (b) float64, 4 exchanges (steps 0, 10, 20, 30), evaluated at steps 20 and 40.
LONG_FLOAT64 = {**COMMON, "train.num_steps": 40, "train.eval_every": 20,
                "checkpoint.every": 20, "train.param_dtype": "float64"}
# (b) as launched in test_two_processes_match_one_process: until a SIGTERM stops it.
STOPPED_FLOAT64 = {**LONG_FLOAT64, "train.num_steps": 100000}


def _launch_two_processes(workdir, overrides: dict, port: int) -> list[subprocess.Popen]:
    # The same intra-op thread pool as this process (see the module docstring).
    env = {**os.environ, "PJRT_NPROC": os.environ["PJRT_NPROC"]}
    flags = [f"--config.{k}={v}" for k, v in overrides.items()]
    return [
        subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "launch.py"),
             f"--config={os.path.join(ROOT, 'configs', 'easgd.py')}",
             f"--workdir={workdir}", *flags,
             f"--config.distributed.coordinator_address=127.0.0.1:{port}",
             "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        for i in range(2)]


def _wait(processes: list[subprocess.Popen], status: int = 0) -> list[str]:
    """The processes' stderr (their log), once all have exited with ``status``."""
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=600))
    finally:
        for process in processes:
            process.kill()
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == status, stderr[-3000:]
    return [stderr for _, stderr in outputs]


def _config(overrides: dict):
    config = easgd.get_config()
    for key, value in overrides.items():
        *path, leaf = key.split(".")
        node = config
        for part in path:
            node = node[part]
        node[leaf] = value
    return config


def _arrays(tree) -> list[np.ndarray]:
    return [np.asarray(a) for a in jax.tree.leaves(tree)]


def _assert_bitwise_equal(two, one, what: str) -> None:
    for a, b in zip(_arrays(two), _arrays(one), strict=True):
        np.testing.assert_array_equal(
            a, b, err_msg=f"{what}: the workers' own arithmetic differs between the runs; "
            "only the exchange's reduction may (same thread pool size?)")


def _check_first_exchange(two_dir, one_dir, state, alpha: float) -> None:
    """(a), float32: checkpoints at step 10 (before the first exchange that moves the
    center) and 20 (after it; the workers have used only the old center).

    The workers agree bitwise at both steps. The center at 20 is fl(c + fl(sum_i d_i)), d_i =
    alpha (x_i - c) from the step-10 state. Two summation orders of 4 float32 terms differ by
    at most 6u sum_i |d_i| (u = eps / 2, the unit roundoff), and the two roundings of
    c + sum by u |c_new| each: to first order, eps (3 sum_i |d_i| + |c_new|), i.e. a few
    ulps of the center's entries. Each entry must lie within TWICE that (room for the
    second-order terms and for d_i's own float32 rounding) of the 1-process run's; a
    one-ulp flip of c_new just above a power of two reaches ~1x (measured: 0.95x).
    """
    two, one = Checkpointer(str(two_dir), 3), Checkpointer(str(one_dir), 3)
    assert two.steps() == one.steps() == [10, 20]
    two10, _ = two.restore(10, state)
    one10, _ = one.restore(10, state)
    two20, _ = two.restore(20, state)
    one20, _ = one.restore(20, state)
    _assert_bitwise_equal(two10, one10, "step 10 (no exchange has moved anything yet)")
    _assert_bitwise_equal(two20.params, one20.params, "step 20, the workers")

    eps = np.finfo(np.float32).eps
    workers10, center10 = _arrays(one10.params), _arrays(easgd_jax.center(one10.opt_state))
    one_center, two_center = (_arrays(easgd_jax.center(s.opt_state)) for s in (one20, two20))
    assert any(np.any(a != b) for a, b in zip(one_center, center10, strict=True)), \
        "the exchange at step 10 did not move the center: nothing compared"
    worst = 0.0
    for x, c, a, b in zip(workers10, center10, two_center, one_center, strict=True):
        assert a.dtype == b.dtype == np.float32
        x, c, a, b = (v.astype(np.float64) for v in (x, c, a, b))
        # sum_i |d_i| over the leading worker axis; every worker's replica of the center
        # ([workers, ...] like the params) is held to the bound.
        terms = np.abs(alpha * (x - c)).sum(axis=0)
        bound = 2 * eps * (3 * terms + np.abs(b)) + np.finfo(np.float32).smallest_subnormal
        excess = np.abs(a - b) - bound
        assert np.all(excess <= 0), (
            f"center after the first exchange: {int(np.sum(excess > 0))} entries beyond the "
            f"rounding of a reordered 4-term float32 sum; max |difference| "
            f"{np.max(np.abs(a - b)):.3g}")
        worst = max(worst, float(np.max(np.abs(a - b) / bound)))
    print(f"float32, first exchange: |difference| <= {worst:.2f} x the allowed rounding")


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    ports = _free_ports(2)
    launched = {"32": _launch_two_processes(tmp_path / "two32", FIRST_EXCHANGE, ports[0]),
                "64": _launch_two_processes(tmp_path / "two64", STOPPED_FLOAT64, ports[1])}
    two64_dir = str(tmp_path / "two64")
    try:
        # The 1-process float32 run, here on 4 of this process's 8 devices, while those run.
        state32, _ = train.train(_config(FIRST_EXCHANGE), str(tmp_path / "one32"))
        try:
            _wait_for_checkpoint(two64_dir, 40, timeout=600)  # (CI under load)
        except TimeoutError:
            launched["64"][0].kill()
            raise AssertionError(launched["64"][0].communicate()[1][-3000:]) from None
        launched["64"][1].send_signal(signal.SIGTERM)  # one preempted host
        sent = time.time()
        logs = {"64": _wait(launched["64"], launch.EXIT_STOPPED)}  # both exit (they hung)
        print(f"both processes exited {time.time() - sent:.1f} s after the SIGTERM")
        logs["32"] = _wait(launched["32"])
    finally:
        for processes in launched.values():
            for process in processes:
                process.kill()
    for log in logs.values():
        assert "process 1 of 2; 2 local and 4 global devices" in log[1]

    _check_first_exchange(tmp_path / "two32", tmp_path / "one32", state32,
                          _config(FIRST_EXCHANGE).algorithm.moving_rate)

    # The stop: both processes stop after the same round and save that step.
    stopped = []
    for log in logs["64"]:
        assert "saved a checkpoint at step" in log, log[-3000:]
        stopped.append(int(log.split("saved a checkpoint at step ")[1].split()[0]))
    assert "signal 15 received" in logs["64"][1]
    assert "another process received a stop signal" in logs["64"][0]
    assert stopped[0] == stopped[1] == Checkpointer(two64_dir, 3).steps()[-1]
    end = stopped[0]
    assert end >= 40  # at least 4 exchanges (steps 0, 10, 20, 30)

    # (b), float64, after `end` >= 40 steps: reordering the reduction costs ~1e-16 per
    # exchange, which 40 steps grow to ~1e-15 (measured); 1e-10 leaves orders of magnitude to
    # that, and none to a float32 rounding (~1e-7) or any real difference between the runs.
    with jax.enable_x64(True):
        state64, _ = train.train(_config({**LONG_FLOAT64, "train.num_steps": end}),
                                 str(tmp_path / "one64"))
        two64, _ = Checkpointer(two64_dir, 3).restore(end, state64)
    for what, two, one in (("center", easgd_jax.center(two64.opt_state),
                            easgd_jax.center(state64.opt_state)),
                           ("workers", two64.params, state64.params),
                           ("the whole state", two64, state64)):
        for a, b in zip(_arrays(two), _arrays(one), strict=True):
            if what != "the whole state":
                assert a.dtype == b.dtype == np.float64
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12,
                                       err_msg=f"float64, step {end}, {what}")
    two, one = read_metrics(two64_dir), read_metrics(str(tmp_path / "one64"))
    # The stopped run evaluated at 20, 40, ... up to its stop; the 1-process run the same
    # steps (and its final step, where the stopped run did not finish).
    assert [r["step"] for r in two][:2] == [20, 40] and two[-1]["step"] <= end
    assert [r["step"] for r in two] == [r["step"] for r in one][:len(two)]
    for a, b in zip(two, one[:len(two)], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-10)
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-10)
        assert a["test_accuracy"] == b["test_accuracy"]
    saved = json.loads((tmp_path / "two64" / "config.json").read_text())
    assert saved["distributed"]["num_processes"] == 2
    assert saved["train"]["param_dtype"] == "float64"
    print(f"2 processes: {two[-1]}\n1 process:   {one[len(two) - 1]}")


def _distributed(**fields):
    import ml_collections

    config = ml_collections.ConfigDict(
        {"coordinator_address": "", "num_processes": 1, "process_id": 0})
    config.update(fields)
    return config


@pytest.mark.parametrize("env, expected_wanted, expected_processes", [
    ({}, False, 1),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, False, 1),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, True, 4),
    ({"OMPI_COMM_WORLD_SIZE": "3"}, True, 3),
    ({"OMPI_COMM_WORLD_SIZE": "1"}, False, 1),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, True, 1),
])
def test_the_cluster_environment_decides_whether_the_run_spans_processes(
        monkeypatch, env, expected_wanted, expected_processes):
    from easgd_jax.parallel import distributed

    for name in ("SLURM_JOB_ID", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
                 "JAX_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert distributed.wanted(_distributed()) is expected_wanted
    assert distributed.num_processes(_distributed()) == expected_processes
    # A coordinator in the config wins over the environment.
    named = _distributed(coordinator_address="127.0.0.1:1", num_processes=2)
    assert distributed.wanted(named) and distributed.num_processes(named) == 2
    if not expected_wanted:
        distributed.initialize(_distributed())  # a single process: nothing starts
        assert jax.process_count() == 1


def test_the_heartbeat_timeout_reaches_the_runtime(monkeypatch):
    """A killed peer is detected after ``distributed.heartbeat_timeout_s``, not JAX's 100 s."""
    from easgd_jax.parallel import distributed

    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.setattr(jax.config, "update", lambda *args: None)
    distributed.initialize(_distributed(coordinator_address="127.0.0.1:1", num_processes=2,
                                        heartbeat_timeout_s=12))
    assert calls == [{"heartbeat_timeout_seconds": 12, "coordinator_address": "127.0.0.1:1",
                      "num_processes": 2, "process_id": 0}]


@pytest.mark.slow
def test_one_worker_per_process_spanning_its_devices_matches_one_process(tmp_path):
    """2 processes x 2 devices as 2 workers of 2-way FSDP (each worker on its own process's
    devices: the exchange crosses processes, the FSDP gathers do not) against 2 workers on
    2 devices of one process, float64, 40 steps: the workers and the center at rtol 1e-10."""
    spanning = {**LONG_FLOAT64, "num_workers": 2, "num_devices": 4, "worker_devices.fsdp": 2}
    processes = _launch_two_processes(tmp_path / "two", spanning, _free_ports(1)[0])
    try:
        with jax.enable_x64(True):
            config = _config({**LONG_FLOAT64, "num_workers": 2, "num_devices": 2})
            one, _ = train.train(config, str(tmp_path / "one"))
            logs = _wait(processes)
            two, _ = Checkpointer(str(tmp_path / "two"), 3).restore(40, one)
    finally:
        for process in processes:
            process.kill()
    assert "each on 1 data x 2 fsdp devices, 2 process(es)" in logs[0]
    for a, b in zip(_arrays(two), _arrays(one), strict=True):
        if a.dtype == np.float64:
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        else:
            np.testing.assert_array_equal(a, b)
