"""Checkpoints, exact resume, faults (signals, kill -9, corruption, NaN) and workdir checks."""

import glob
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from helpers import SMALL
from helpers import corrupt as _corrupt
from helpers import small_sync_config as _config
from helpers import wait_for_checkpoint as _wait_for_checkpoint
from helpers import without_timing as _without_timing

from easgd_jax.algorithms import registry
from easgd_jax.algorithms.base import Spec
from easgd_jax.experiments.sweep import load_config_file
from easgd_jax.training import sync as train
from easgd_jax.training.checkpoint import Checkpointer
from easgd_jax.training.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))



def _assert_states_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # bitwise on CPU


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """The reference: 60 steps in one go (its workdir: copied by the tests that start from
    that finished run)."""
    workdir = str(tmp_path_factory.mktemp("straight"))
    state, _ = train.train(_config(), workdir)
    return jax.device_get(state), read_metrics(workdir), workdir


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path, straight_run):
    ref_state, ref_metrics, _ = straight_run
    workdir = str(tmp_path)
    train.train(_config(num_steps=40), workdir)  # stop at 40 ...
    assert Checkpointer(workdir, 3).steps() == [20, 40]
    state, _ = train.train(_config(num_steps=60), workdir)  # ... and resume to 60
    _assert_states_equal(state, ref_state)
    assert _without_timing(read_metrics(workdir)) == _without_timing(ref_metrics)


def test_evaluations_between_checkpoints_read_the_state_of_their_step(tmp_path, straight_run):
    """Without a checkpoint at 20 and 40 the loop enqueues the evaluation of those steps,
    dispatches the next round (which donates the state) and reads the evaluation after: the
    lines are those of the reference, which checkpoints, and so evaluates, in place."""
    ref_state, ref_metrics, _ = straight_run
    state, _ = train.train(_config(num_steps=60, every=60), str(tmp_path))
    _assert_states_equal(state, ref_state)
    assert [r["step"] for r in ref_metrics] == [20, 40, 60]
    assert _without_timing(read_metrics(str(tmp_path))) == _without_timing(ref_metrics)


@pytest.mark.slow
def test_checkpoints_keep_the_last_k(tmp_path):
    config = _config(num_steps=100)
    config.checkpoint.max_to_keep = 2
    train.train(config, str(tmp_path))
    assert Checkpointer(str(tmp_path), 2).steps() == [80, 100]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["garbage", "bit flip"])
def test_corrupted_latest_checkpoint_falls_back_to_the_previous(tmp_path, straight_run, how,
                                                                caplog):
    ref_state, ref_metrics, straight_dir = straight_run
    workdir = str(tmp_path)
    shutil.copytree(straight_dir, workdir, dirs_exist_ok=True)  # train(_config(60), workdir)
    # Unfinished (killed after its last checkpoint, before its final metrics): a finished run
    # is never trained again (tests/e2e/test_faults.py).
    os.remove(os.path.join(workdir, "final_metrics.json"))
    _corrupt(os.path.join(workdir, "checkpoints", "60"), how)
    # A partial write (an uncommitted temporary directory) is never taken for a checkpoint.
    os.makedirs(os.path.join(workdir, "checkpoints", "80.orbax-checkpoint-tmp-1"))
    with caplog.at_level("WARNING"):
        state, _ = train.train(_config(num_steps=60), workdir)  # resumes from 40, redoes 60
    assert "checkpoint at step 60 cannot be used" in caplog.text
    _assert_states_equal(state, ref_state)
    assert _without_timing(read_metrics(workdir)) == _without_timing(ref_metrics)
    assert [os.path.basename(d).split("-")[2]
            for d in Checkpointer(workdir, 3).set_aside()] == ["60"]  # kept, renamed


def test_nan_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    config = _config(num_steps=200, every=10)
    config.algorithm.learning_rate = 1e4  # diverges within a few steps
    with pytest.raises(train.NonFiniteError, match=r"at step \d+") as info:
        train.train(config, str(tmp_path))
    steps = Checkpointer(str(tmp_path), 3).steps()
    assert "last good checkpoint is step" in str(info.value)
    assert str(steps[-1] if steps else "none") in str(info.value)
    # Every kept checkpoint holds finite numbers.
    if steps:
        target, _ = train.train(_config(num_steps=10, every=10), str(tmp_path / "shape"))
        restored = Checkpointer(str(tmp_path), 3).restore_latest(target)
        assert restored is not None and restored[0] == steps[-1]
        assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(restored[1]))


def _lsgd_config(num_steps=40):
    """LSGD (it reports its leader every round) on digits with a small MLP; rounds of 2
    steps, evaluation every 20, checkpoints every 10: a checkpoint between evaluations holds
    the losses and leaders of the rounds since the last one."""
    config = load_config_file("lsgd")
    config.data.name, config.model.name = "digits", "mlp"
    config.model.kwargs.hidden = (32,)
    config.algorithm.period = 2
    config.train.update(num_steps=num_steps, eval_every=20, batch_size=32)
    config.checkpoint.update(every=10, max_to_keep=5)
    config.tensorboard = False
    return config


@pytest.mark.slow
def test_resume_between_evaluations_keeps_the_pending_losses_and_history(tmp_path):
    """Resumed from step 30 (the checkpoint at 40 lost, as after a kill), the evaluation at 40
    still averages the training losses of the rounds 20..40 and lists the leaders of all ten
    rounds since step 20: those of 20..30 come from the checkpoint's meta."""
    workdir = str(tmp_path)
    straight_state, _ = train.train(_lsgd_config(), workdir)
    straight = read_metrics(workdir)
    assert [r["step"] for r in straight] == [20, 40]
    assert len(straight[-1]["leader_per_round"]) == 10  # rounds of 2 steps since step 20
    checkpoints = Checkpointer(workdir, 5)
    assert checkpoints.steps() == [10, 20, 30, 40]
    checkpoints.close()
    shutil.rmtree(os.path.join(workdir, "checkpoints", "40"))
    os.remove(os.path.join(workdir, "final_metrics.json"))
    state, _ = train.train(_lsgd_config(), workdir)  # resumes from 30
    _assert_states_equal(state, straight_state)
    resumed = read_metrics(workdir)
    assert [r["step"] for r in resumed] == [20, 40]
    assert resumed[-1]["train_loss"] == straight[-1]["train_loss"]
    assert resumed[-1]["leader_per_round"] == straight[-1]["leader_per_round"]
    assert _without_timing(resumed) == _without_timing(straight)


class _PoisonedCenterState(NamedTuple):
    count: jax.Array
    center: optax.Params  # the evaluation point (its Spec says "center")


def _poisoned_center(learning_rate, poison_at, axis_name="workers"):
    """SGD whose state carries a ``center`` (the evaluation point) that becomes Inf after
    step ``poison_at``, while the workers' parameters, and so their losses, stay finite."""
    del axis_name

    def init(params):
        return _PoisonedCenterState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.copy, params))

    def update(updates, state, params=None):
        center = jax.tree.map(lambda x: jnp.where(state.count >= poison_at, jnp.inf, x), params)
        return (jax.tree.map(lambda g: -learning_rate * g, updates),
                _PoisonedCenterState(state.count + 1, center))

    return optax.GradientTransformation(init, update)


@pytest.mark.slow
def test_non_finite_evaluation_point_stops_the_run_while_the_losses_are_finite(
        tmp_path, monkeypatch):
    monkeypatch.setitem(registry._SPECS, "poisoned_center",
                        Spec("poisoned_center", _poisoned_center, None, evaluation="center"))
    config = _config(num_steps=30, every=5)
    config.data.name, config.model.name = "digits", "mlp"
    config.model.kwargs.hidden = (16,)
    config.algorithm = ml_collections.ConfigDict(
        {"name": "poisoned_center", "learning_rate": 0.05, "poison_at": 12})
    config.train.update(steps_per_round=5, eval_every=10, batch_size=16)
    # Rounds of 5 steps: the center turns Inf at step 12, inside the round 10..15.
    with pytest.raises(train.NonFiniteError,
                       match=r"in the evaluation point after step 15; stopping\. The last "
                             r"good checkpoint is step 10"):
        train.train(config, str(tmp_path))
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [10]
    assert all(np.isfinite(r["train_loss"]) for r in read_metrics(str(tmp_path)))
    assert Checkpointer(str(tmp_path), 3).steps() == [5, 10]


@pytest.mark.slow
def test_workdir_with_a_different_config_is_refused_unless_overwritten(tmp_path):
    train.train(_config(num_steps=20), str(tmp_path))
    other = _config(num_steps=20)
    other.algorithm.period = 5
    with pytest.raises(ValueError, match="algorithm.period: 10 in the workdir, 5 now"):
        train.train(other, str(tmp_path))
    _, metrics = train.train(other, str(tmp_path), overwrite=True)
    assert read_metrics(str(tmp_path))[-1]["step"] == 20
    assert np.isfinite(metrics["test_loss"])


def _read_scalar_tags(path):
    """Tags of the scalar summaries in a TensorBoard event file (TFRecord of Event protos)."""
    from tensorboardX.proto import event_pb2

    tags = set()
    with open(path, "rb") as f:
        while header := f.read(12):
            (length,) = struct.unpack("<Q", header[:8])
            event = event_pb2.Event.FromString(f.read(length))
            f.read(4)
            tags.update(v.tag for v in event.summary.value)
    return tags


@pytest.mark.slow
def test_tensorboard_event_files_hold_the_metrics(tmp_path):
    config = _config(num_steps=20, every=0)
    config.tensorboard = True
    train.train(config, str(tmp_path))
    events = glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
    assert len(events) == 1
    tags = _read_scalar_tags(events[0])
    assert {"test_accuracy", "test_loss", "train_loss", "worker_center_distance",
            "worker_spread", "steps_per_second", "simulated_time_s"} <= tags


def _launch(workdir, every=20):
    return subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "launch.py"), "--config",
         os.path.join(ROOT, "configs", "default.py"), f"--workdir={workdir}",
         "--config.train.eval_every=20", f"--config.checkpoint.every={every}",
         "--config.train.num_steps=100000", "--config.tensorboard=False",
         *(f"--config.{field}={value}" for field, value in SMALL.items())],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _wait_for_metrics(workdir, at_least, timeout=180):
    deadline = time.time() + timeout
    path = os.path.join(workdir, "metrics.jsonl")
    while time.time() < deadline:
        if os.path.exists(path) and read_metrics(workdir) and \
                read_metrics(workdir)[-1]["step"] >= at_least:
            return
        time.sleep(0.1)
    raise TimeoutError(f"no metrics at step >= {at_least} within {timeout} s")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_and_exits_75(tmp_path, sig):
    process = _launch(tmp_path)
    try:
        _wait_for_checkpoint(str(tmp_path), 40)
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 75, stderr[-3000:]  # EX_TEMPFAIL: stopped, resumable
    assert "saved a checkpoint at step" in stderr
    stopped_at = int(stderr.split("saved a checkpoint at step ")[1].split()[0])
    assert Checkpointer(str(tmp_path), 3).steps()[-1] == stopped_at
    assert stopped_at >= 40


@pytest.mark.slow
def test_kill_9_loses_at_most_the_steps_since_the_last_checkpoint(tmp_path):
    every = 40
    process = _launch(tmp_path / "killed", every=every)
    try:
        # Past the checkpoint at 40: the kill lands between two checkpoints.
        _wait_for_metrics(str(tmp_path / "killed"), 60)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
    killed = str(tmp_path / "killed")
    reached = read_metrics(killed)[-1]["step"]
    last_checkpoint = Checkpointer(killed, 3).steps()[-1]
    lost = reached - last_checkpoint
    print(f"kill -9 after step {reached}; last checkpoint {last_checkpoint}; lost {lost} steps")
    assert 0 <= lost <= every
    # Resumed in the same workdir (changing num_steps is allowed), the run matches a
    # straight run of the same length, bit for bit.
    end = last_checkpoint + every
    resumed, _ = train.train(_config(num_steps=end, every=every), killed)
    straight, _ = train.train(_config(num_steps=end, every=every), str(tmp_path / "straight"))
    _assert_states_equal(resumed, straight)
    assert (_without_timing(read_metrics(killed))
            == _without_timing(read_metrics(str(tmp_path / "straight"))))


def test_per_process_fields_do_not_make_a_different_run(tmp_path):
    """Process 1 of a multi-process run finds the config.json of process 0 (another
    process_id) and must accept it; a real difference is still refused."""
    config = _config(num_steps=20)
    train.prepare_workdir(config, str(tmp_path), overwrite=False)
    other_process = _config(num_steps=20)
    other_process.distributed.process_id = 1
    other_process.distributed.coordinator_address = "127.0.0.1:1234"
    train.prepare_workdir(other_process, str(tmp_path), overwrite=False)  # accepted
    other_run = _config(num_steps=20)
    other_run.distributed.num_processes = 2
    with pytest.raises(ValueError, match="distributed.num_processes: 1 in the workdir, 2 now"):
        train.prepare_workdir(other_run, str(tmp_path), overwrite=False)


@pytest.mark.slow
def test_diloco_resumed_between_outer_steps_equals_a_straight_run(tmp_path):
    """A checkpoint in the middle of a block (step 15, H = 10) holds the outer momentum, the
    per-fragment outer states and the error-feedback residuals: resumed from it, the run
    equals a straight one bit for bit (issue 17)."""
    small_config = _config

    from easgd_jax.training import sync

    def config(num_steps):
        c = small_config(num_steps=num_steps, every=5)
        c.algorithm = ml_collections.ConfigDict(dict(
            name="diloco", learning_rate=0.05, momentum=0.9, period=10,
            outer_learning_rate=0.7, outer_momentum=0.9, num_fragments=2,
            exchange_dtype="bfloat16", error_feedback=True))
        c.train.eval_every = c.train.steps_per_round = 5  # rounds of H / F steps
        c.model.kwargs.hidden = (32,)
        return c

    straight, _ = sync.train(config(20), str(tmp_path / "straight"))
    workdir = str(tmp_path / "resumed")
    sync.train(config(15), workdir)  # stops mid-block, after the fragment exchange at 15
    resumed, _ = sync.train(config(20), workdir)  # the exchange at 20 uses the restored state
    _assert_states_equal(resumed, straight)
    assert np.any(np.asarray(jax.tree.leaves(straight.opt_state.outer_state)[0]) != 0)
