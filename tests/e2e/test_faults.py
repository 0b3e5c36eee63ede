"""Faults an operator meets (issue 14), synchronous executor: every checkpoint unreadable,
two launches into one workdir, a stale lock, a metrics line cut by a crash. (A stop signal to
one of two processes: test_distributed.py, whose 2-process run it stops; bit flips and garbage
in the latest checkpoint: test_checkpoint.py; the asynchronous executors:
test_async_faults.py.)"""

import json
import logging as std_logging
import os
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SMALL, config_with
from helpers import corrupt as _corrupt
from helpers import small_sync_config as _config
from helpers import without_timing as _without_timing
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from easgd_jax.training import lock as lock_lib
from easgd_jax.training import sync as train
from easgd_jax.training.checkpoint import Checkpointer, CheckpointError, state_checksums
from easgd_jax.training.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def easgd_config(overrides: dict):
    return config_with("easgd", overrides)


@pytest.fixture(scope="module")
def finished_40(tmp_path_factory) -> str:
    """A finished 40-step run of ``_config(num_steps=40, every=20)`` (checkpoints at 20 and
    40), trained once for the module: the tests that start from that run start from a copy
    (its files are those a run in their own workdir writes: no file records the workdir but
    orbax's informational commit_success.txt)."""
    workdir = str(tmp_path_factory.mktemp("finished_40"))
    train.train(_config(num_steps=40, every=20), workdir)
    return workdir


def _copy(finished: str, workdir: str) -> None:
    """The finished run ``finished`` copied into the (empty) ``workdir``."""
    shutil.copytree(finished, workdir, dirs_exist_ok=True)


def _files(workdir) -> dict[str, bytes]:
    out = {}
    for name in ("metrics.jsonl", "config.json", "final_metrics.json"):
        path = os.path.join(workdir, name)
        if os.path.exists(path):
            with open(path, "rb") as f:
                out[name] = f.read()
    return out


@pytest.mark.slow
def test_every_checkpoint_unreadable_is_refused_not_restarted(tmp_path, finished_40):
    workdir = str(tmp_path)
    _copy(finished_40, workdir)
    os.remove(os.path.join(workdir, "final_metrics.json"))
    for step in (20, 40):
        _corrupt(os.path.join(workdir, "checkpoints", str(step)), "bit flip")
    before = _files(workdir)
    for _ in range(2):  # refused again once the damaged checkpoints are set aside
        with pytest.raises(CheckpointError, match="no checkpoint .* can be verified.*"
                                                  "--overwrite"):
            train.train(_config(num_steps=40, every=20), workdir)
        assert _files(workdir) == before  # the metrics history is not rewritten
    assert len(Checkpointer(workdir, 3).set_aside()) == 2
    _, metrics = train.train(_config(num_steps=40, every=20), workdir, overwrite=True)
    assert [r["step"] for r in read_metrics(workdir)] == [20, 40]
    assert np.isfinite(metrics["test_loss"])


_HOLD = """
import sys, time
from easgd_jax.training.lock import workdir_lock
with workdir_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_run_into_a_busy_workdir_is_refused_at_once(tmp_path):
    workdir = str(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, workdir], stdout=subprocess.PIPE,
                              text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(lock_lib.WorkdirBusyError,
                           match=rf"in use by pid {holder.pid} on host .*another workdir"):
            train.train(_config(num_steps=20), workdir)
        assert sorted(os.listdir(workdir)) == [".lock"]  # nothing written, nothing removed
    finally:
        holder.kill()
        holder.wait()
    # The holder died (kill -9): its lock is free and the next run takes it over.
    train.train(_config(num_steps=20, every=20), workdir)
    assert [r["step"] for r in read_metrics(workdir)] == [20]


def test_a_stale_lock_is_taken_over_and_said(tmp_path, caplog):
    with open(tmp_path / ".lock", "w") as f:
        json.dump({"pid": 4194999, "host": "gone-host", "started": 0}, f)
    with caplog.at_level("WARNING"), lock_lib.workdir_lock(str(tmp_path)) as path:
        with open(path) as f:
            assert json.load(f)["pid"] == os.getpid()
    assert "took over the lock of pid 4194999 on host gone-host" in caplog.text
    assert open(tmp_path / ".lock").read() == ""  # released cleanly


@pytest.mark.slow
def test_a_cut_last_metrics_line_is_dropped_and_the_run_resumes(tmp_path, caplog,
                                                               finished_40):
    workdir = str(tmp_path)
    _copy(finished_40, workdir)
    straight = read_metrics(workdir)
    # A power loss during the evaluation at 40: its line half written, no checkpoint at 40.
    os.remove(os.path.join(workdir, "final_metrics.json"))
    Checkpointer(workdir, 3).manager.delete(40)
    path = os.path.join(workdir, "metrics.jsonl")
    text = open(path).read()
    open(path, "w").write(text[:len(text) - len(text.splitlines()[-1]) // 2 - 1])
    with caplog.at_level("WARNING"):
        assert [r["step"] for r in read_metrics(workdir)] == [20]
        train.train(_config(num_steps=40, every=20), workdir)
    assert f"{path}: the last line (2) is cut" in caplog.text
    assert _without_timing(read_metrics(workdir)) == _without_timing(straight)


def test_a_bad_metrics_line_before_the_last_is_refused(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 10}\n{"step": 2\n{"step": 30}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2, is not a metrics record"):
        read_metrics(str(tmp_path))


def test_checksums_see_one_flipped_bit_and_not_the_layout():
    x = np.random.RandomState(0).randn(8, 5).astype(np.float32)
    base = state_checksums({"x": jnp.asarray(x)})
    sharded = jax.device_put(x, NamedSharding(Mesh(np.array(jax.devices()[:8]), ("w",)),
                                              PartitionSpec("w")))
    assert state_checksums({"x": sharded}) == base  # any layout, any summation order
    for index in range(0, x.size, 7):
        for bit in (0, 17, 31):
            y = x.copy()
            y.reshape(-1).view(np.uint32)[index] ^= np.uint32(1 << bit)
            assert state_checksums({"x": jnp.asarray(y)}) != base, (index, bit)
    swapped = x.copy().reshape(-1)
    swapped[[3, 4]] = swapped[[4, 3]]
    assert state_checksums({"x": jnp.asarray(swapped.reshape(x.shape))}) != base
    keys = {"bf16": jnp.ones(3, jnp.bfloat16), "flag": jnp.array(True),
            "key": jax.random.PRNGKey(3), "int": jnp.arange(4)}
    assert set(state_checksums(keys)) == {"['bf16']", "['flag']", "['int']", "['key']"}


# A stop signal to one of two processes (one preempted host: both stop after the same round,
# save that step and exit; the state matches a 1-process run): the 2-process float64 run of
# tests/e2e/test_distributed.py::test_two_processes_match_one_process is stopped that way, so
# one 2-process launch checks both.


def test_a_dead_peer_s_survivors_exit_134_in_one_line(tmp_path, monkeypatch, capsys):
    """kill -9 of one of two processes: a survivor whose collective breaks (gloo: the
    connection reset) says so in one line and exits 134 (it printed a traceback, then JAX's
    shutdown barrier aborted it, 90 lines); one that JAX's runtime aborts first, after
    distributed.heartbeat_timeout_s (SIGABRT), exits 134 too: the README's table and
    launch.py's docstring name that status and what to do (they named none). (A 2-process
    run costs the suite ~40 s: issue 28's note shows both, from the command line.)"""
    import jax

    import launch
    from easgd_jax import training

    def broken(config, workdir, overwrite, plan_):
        raise jax.errors.JaxRuntimeError(
            "UNKNOWN: Gloo all-reduce failed: [external/gloo/gloo/transport/tcp/pair.cc:538] "
            "Read error [127.0.0.1]:15269: Connection reset by peer")

    monkeypatch.setattr(training, "train_and_evaluate", broken)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(launch, "_exit_at_once", False)
    assert launch.main(_launch_args(str(tmp_path))) == 134 and launch._exit_at_once
    assert capsys.readouterr().err == (
        "launch.py: error: another process of this run died (JaxRuntimeError: UNKNOWN: Gloo "
        "all-reduce failed: [external/gloo/gloo/transport/tcp/pair.cc:538] Read error "
        "[127.0.0.1]:15269: Connection reset by peer); its last checkpoint is kept: run the "
        "same command on every process to resume (exit status 134).\n")
    monkeypatch.setattr(jax, "process_count", lambda: 1)  # one process: not a peer's death
    with pytest.raises(jax.errors.JaxRuntimeError):
        launch.main(_launch_args(str(tmp_path)))
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert "| 134 | several processes: a peer process died; the others say so in one line" \
        in readme
    assert "134 on several processes, a peer process died" in launch.__doc__


def test_the_lock_refuses_a_second_run_from_the_same_process(tmp_path):
    """Not re-entrant: a second run into the workdir from this process (another thread, a
    nested call) is refused like one from another process."""
    with lock_lib.workdir_lock(str(tmp_path)):
        with pytest.raises(lock_lib.WorkdirBusyError, match=rf"in use by pid {os.getpid()}"):
            with lock_lib.workdir_lock(str(tmp_path)):
                pass


# ------------------------------------- issue 28: results after the last checkpoint, JSON


def _finished(workdir: str, finished_40: str) -> dict:
    """A finished 40-step run (checkpoints at 20 and 40) in ``workdir`` (a copy of the
    fixture's); its final record."""
    _copy(finished_40, workdir)
    with open(os.path.join(workdir, "final_metrics.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_final_metrics_lost_after_the_last_checkpoint_are_rebuilt(tmp_path, caplog, damage,
                                                                  finished_40):
    """A crash after the last checkpoint (final_metrics.json never written), or a damaged
    file: the re-run rebuilds the results from the last evaluation, equal to what the run
    reported, instead of a record that says nothing; a damaged file is kept aside."""
    workdir = str(tmp_path)
    first = _finished(workdir, finished_40)
    path = os.path.join(workdir, "final_metrics.json")
    if damage == "deleted":
        os.remove(path)
    else:
        with open(path, "r+") as f:
            f.truncate(40)
    with caplog.at_level("WARNING"):
        _, metrics = train.train(_config(num_steps=40, every=20), workdir)
    assert "rebuilt from its evaluation at step 40" in caplog.text
    with open(path) as f:
        rebuilt = json.load(f)
    keep = [k for k in first if k not in ("wall_time_s", "steps_per_second", "cluster",
                                          "simulated_time_s")]
    assert {k: rebuilt[k] for k in keep} == {k: first[k] for k in keep}
    assert metrics["test_accuracy"] == first["test_accuracy"]
    assert [r["step"] for r in read_metrics(workdir)] == [20, 40]
    aside = [n for n in os.listdir(workdir) if n.startswith("final_metrics.json.damaged-")]
    assert len(aside) == (damage == "truncated")


def test_a_finished_run_whose_checkpoints_are_gone_is_not_trained_again(tmp_path, caplog,
                                                                         finished_40):
    workdir = str(tmp_path)
    first = _finished(workdir, finished_40)
    shutil.rmtree(os.path.join(workdir, "checkpoints"))
    before = _files(workdir)
    with caplog.at_level("WARNING"):
        _, metrics = train.train(_config(num_steps=40, every=20), workdir)
    assert "nothing is trained again" in caplog.text and "no checkpoint" in caplog.text
    assert metrics == first
    assert _files(workdir) == before  # metrics.jsonl and final_metrics.json untouched


def test_a_damaged_config_json_is_one_line_naming_the_file(tmp_path, finished_40):
    workdir = str(tmp_path)
    _finished(workdir, finished_40)
    with open(os.path.join(workdir, "config.json"), "r+") as f:
        f.truncate(30)
    from easgd_jax.training.common import WorkdirConfigError

    with pytest.raises(WorkdirConfigError, match="config.json does not parse .*--overwrite"):
        train.train(_config(num_steps=40, every=20), workdir)


def test_a_checkpoint_of_another_structure_is_refused_and_nothing_is_moved(tmp_path,
                                                                            finished_40):
    """Another algorithm's state (what a code update that changes a state also gives) is not
    damage: one error naming the difference, every checkpoint left where it was, and the
    original command still resumes."""
    workdir = str(tmp_path)
    config = _config(num_steps=40, every=20)
    _copy(finished_40, workdir)  # a run of config
    os.remove(os.path.join(workdir, "final_metrics.json"))  # unfinished: it would resume
    other = _config(num_steps=40, every=20)
    other.algorithm = config_with("easgd", {}).algorithm  # EASGD: no velocity in the state
    with open(os.path.join(workdir, "config.json"), "w") as f:  # (the config check aside)
        f.write(other.to_json_best_effort(indent=2, sort_keys=True))
    before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
    # The checkpoints' own config records refuse it first (item 3); without them (a code
    # update that changes the state under the same config), the structure check does.
    from easgd_jax.training import common

    with pytest.raises(common.WorkdirConfigError, match="written under a different config .*"
                       "algorithm.name: 'eamsgd' in the workdir, 'easgd' now"):
        train.train(other, workdir)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(common, "_check_checkpointed_config", lambda config, workdir: None)
        patch.setattr(Checkpointer, "_check_config", lambda self, step: None)
        with pytest.raises(CheckpointError, match="holds another state than this run's .*"
                           "Nothing was moved"):
            train.train(other, workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before
    assert Checkpointer(workdir, 3).set_aside() == []
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    _, metrics = train.train(config, workdir)  # the original command: rebuilt, not refused
    assert np.isfinite(metrics["test_loss"])


# ---------------------------------------------- issue 28, item 3: checkpoints carry their config


def test_each_checkpoint_records_its_config_and_a_launch_is_compared_with_it(tmp_path,
                                                                             finished_40):
    """Every checkpoint records the resolved config it was written under (and its hash): a
    launch of another learning rate and seed is refused in one line naming the fields, with
    config.json or without it (it used to say 'already finished' with the old results and
    rewrite config.json), and nothing changes; a checkpoint whose config differs from this
    launch's refuses its restore too (config.json edited); a lower num_steps into the
    finished run returns its results and leaves config.json as it was."""
    from easgd_jax.training.checkpoint import (
        CheckpointConfigError,
        config_record,
        meta_checksum,
    )
    from easgd_jax.training.common import WorkdirConfigError

    workdir = str(tmp_path)
    config = _config(num_steps=40, every=20)
    first = _finished(workdir, finished_40)
    with open(os.path.join(workdir, "checkpoints", "40", "meta", "metadata")) as f:
        meta = json.load(f)
    assert meta["config"] == config_record(config) and "launch" not in meta["config"]
    assert meta["config"]["algorithm"]["learning_rate"] == config.algorithm.learning_rate
    assert meta["config_sha256"] == meta_checksum(meta["config"])
    other = _config(num_steps=40, every=20)
    other.algorithm.learning_rate, other.seed = 0.5 * config.algorithm.learning_rate, 7
    config_json = os.path.join(workdir, "config.json")
    saved_config = open(config_json, "rb").read()
    os.remove(config_json)
    before = _files(workdir)
    with pytest.raises(WorkdirConfigError, match=r"checkpoint at step 40 was written under a "
                       r"different config \(algorithm.learning_rate: .* in the workdir, .* "
                       r"now; seed: 0 in the workdir, 7 now\)"):
        train.train(other, workdir)
    assert _files(workdir) == before  # no config.json written, the results untouched
    # config.json edited to the other config, the run unfinished: its checkpoints refuse.
    with open(config_json, "w") as f:
        f.write(other.to_json_best_effort(indent=2, sort_keys=True))
    os.remove(os.path.join(workdir, "final_metrics.json"))
    with pytest.raises(WorkdirConfigError, match="checkpoint at step 40 was written under"):
        train.train(other, workdir)
    with pytest.raises(CheckpointConfigError, match="at step 40 .* was written under another "
                                                    "config .*Nothing was moved"):
        Checkpointer(workdir, 3, other).restore_latest(None)  # (refused before any restore)
    assert Checkpointer(workdir, 3).steps() == [20, 40]
    assert Checkpointer(workdir, 3).set_aside() == []
    # The original command: config.json back, the results rebuilt; then a lower num_steps.
    open(config_json, "wb").write(saved_config)
    train.train(config, workdir)
    _, metrics = train.train(_config(num_steps=20, every=20), workdir)
    assert metrics["step"] == 40 and metrics["test_accuracy"] == first["test_accuracy"]
    assert open(config_json, "rb").read() == saved_config  # still the run's 40 steps


# --------------------- issue 28, items 7 and 9: every exit status, from the first second


def _launch_args(workdir, num_steps=40):
    """launch.py's command line for the small sync run (40 steps, checkpoints every 20)."""
    overrides = {**SMALL, "tensorboard": False, "num_workers": 4, "num_devices": 4,
                 "train.eval_every": 20, "checkpoint.every": 20, "train.num_steps": num_steps}
    return ["launch.py", f"--config={os.path.join(ROOT, 'configs', 'easgd.py')}",
            f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in overrides.items())]


def _signal_in(monkeypatch, module, name, signum, when=lambda calls: True):
    """``module.name`` sends this process ``signum`` (on the calls ``when`` picks), then
    runs: the signal arrives exactly there."""
    original, calls = getattr(module, name), []

    def sending(*args, **kwargs):
        calls.append(1)
        if when(len(calls)):
            os.kill(os.getpid(), signum)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, sending)


def test_sigint_during_init_is_75_in_one_line_without_a_traceback(tmp_path):
    """SIGINT while the run starts (here: as the distributed runtime would start) used to
    print a KeyboardInterrupt traceback (once a segfault); SIGTERM there exited -15 without a
    word. Now: one line, status 75, nothing left in the workdir (a subprocess: the real
    handlers and the interpreter's exit)."""
    script = ("import os, signal, sys; sys.argv = sys.argv[1:]; import launch; "
              "from easgd_jax.parallel import distributed; "
              "distributed.initialize = lambda c: os.kill(os.getpid(), signal.SIGINT); "
              "launch.run_main()")
    done = subprocess.run([sys.executable, "-c", script, *_launch_args(str(tmp_path / "w"))],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 75, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("launch.py: stopped by SIGINT outside the training loop")
    assert "Traceback" not in done.stderr and "Fatal Python error" not in done.stderr
    assert not os.path.exists(tmp_path / "w")  # not started: nothing written


def test_a_stop_signal_dropped_in_a_gc_callback_is_delivered_again(monkeypatch):
    """A signal handled inside a garbage-collector callback (JAX registers one) or a
    __del__: Python prints the StopSignal raised there and drops it, and the run went on
    (SIGTERM 1.5 s after a launch's start: a traceback, then exit 0 at the end). It is
    delivered again from another thread and raised in the main flow."""
    import threading

    import launch

    started = []

    class Noted(threading.Thread):
        def start(self):
            started.append(self)
            super().start()

    class Dropping:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)  # handled at this method's next line
            started.append(None)

    monkeypatch.setattr(launch.threading, "Thread", Noted)
    monkeypatch.setattr(launch, "SWALLOWED_AFTER_S", 600.0)  # (only the drop's own path)
    with pytest.raises(launch.StopSignal):
        with launch.stop_signals_raise():
            Dropping()  # collected at once: the StopSignal raised in __del__ is dropped
            assert len(started) == 1  # the watchdog (__del__ did not get past the signal)
            started[0].join(60)  # (the re-delivery thread ends when it propagates: the
            #                      signal sent again is raised in this join)
    started[0].join(10)
    assert not started[0].is_alive()
    # Caught on the way by a library's bare except: sent again after SWALLOWED_AFTER_S.
    monkeypatch.setattr(launch, "SWALLOWED_AFTER_S", 0.1)
    started.clear()
    with pytest.raises(launch.StopSignal):
        with launch.stop_signals_raise():
            try:
                os.kill(os.getpid(), signal.SIGINT)
                started.append(None)
            except BaseException:  # noqa: BLE001 - as a library's bare except
                pass
            assert started == [started[0]]  # (the watchdog only: raised at the append)
            started[0].join(60)


def test_sigterm_in_the_step_time_measurement_and_final_evaluation_is_75(
        tmp_path, monkeypatch, capsys):
    """SIGTERM during the step-time measurement (before the loop) stops in one line with
    75; during the final evaluation (the loop's last look is behind it) it used to be
    ignored (exit 0): now 75 too, the run's results saved; the same command then says it
    finished (0)."""
    import launch
    from easgd_jax.training import simulated_time

    workdir = str(tmp_path)
    with monkeypatch.context() as patch:
        _signal_in(patch, simulated_time, "sync_clock", signal.SIGTERM)
        assert launch.main(_launch_args(workdir)) == 75
    err = capsys.readouterr().err
    assert err.startswith("launch.py: stopped by SIGTERM outside the training loop")
    assert len(err.strip().splitlines()) == 1
    assert not os.path.exists(os.path.join(workdir, "metrics.jsonl"))
    with monkeypatch.context() as patch:
        _signal_in(patch, train, "read_evaluation", signal.SIGTERM, when=lambda n: n == 2)
        assert launch.main(_launch_args(workdir)) == 75
    assert [r["step"] for r in read_metrics(workdir)] == [20, 40]
    assert os.path.exists(os.path.join(workdir, "final_metrics.json"))
    before = _files(workdir)
    assert launch.main(_launch_args(workdir)) == 0 and _files(workdir) == before


def test_a_full_disk_is_one_line_and_74(tmp_path, monkeypatch, capsys):
    """A checkpoint write on a full disk (Orbax's array store reports it as below) used to
    be a 267-line log with three tracebacks and exit 1: one line naming the file, 74."""
    import launch

    path = os.path.join(str(tmp_path), "checkpoints", "20.orbax-checkpoint-tmp", "d", "ab")

    def full(self, target):  # (as a save at the first checkpoint raises it, sooner)
        raise ValueError(f'RESOURCE_EXHAUSTED: Error writing "x" in OCDBT database: Failed '
                         f'writing: "{path}": Failed to write 1701509 bytes to file 18: No '
                         "space left on device [os_error_code='28']")

    monkeypatch.setattr(Checkpointer, "restore_latest", full)
    assert launch.main(_launch_args(str(tmp_path))) == 74
    assert capsys.readouterr().err == (
        f"launch.py: error: cannot write the workdir: No space left on device ({path}). Free "
        "space or fix its permissions, then run the same command: it resumes from the last "
        "checkpoint (exit status 74).\n")
    assert launch.write_failure(RuntimeError("x")) is None
    # Orbax's threads log that error with its traceback before the save raises it: not shown.
    from easgd_jax.training.logs import QuietLibraries

    try:
        raise ValueError("RESOURCE_EXHAUSTED")
    except ValueError:
        record = std_logging.LogRecord("absl", std_logging.ERROR, "/o/orbax/future.py", 1,
                                       "raised an exception", None, sys.exc_info())
    from absl import logging as absl_logging

    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)  # (another test may have left DEBUG)
    try:
        assert not QuietLibraries().filter(record)
        record.exc_info = None
        assert QuietLibraries().filter(record)  # its errors without a traceback still show
    finally:
        absl_logging.set_verbosity(verbosity)
    error = OSError(30, "Read-only file system", "/w/config.json.tmp")
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = error
    assert launch.write_failure(wrapped) == "Read-only file system (/w/config.json.tmp)"


def test_a_worker_failure_under_stop_is_one_line_and_75(tmp_path, monkeypatch, capsys):
    """on_worker_failure='stop' (threads, Ray) saves where the workers stood and raises
    WorkerFailedError, whose message says what was saved and how to resume: launch.py
    printed its traceback and exited 1; now that message alone, status 75 (resumable)."""
    import launch
    from easgd_jax import training
    from easgd_jax.parallel.executor import WorkerFailedError

    error = WorkerFailedError(1, 138, RuntimeError("Ray worker actor 1 died"), message=(
        "worker 1 of 4 failed at its local step 138 (...); on_worker_failure='stop': saved "
        "a checkpoint at step 115 in W; run again with the same workdir to resume."))

    def failing(config, workdir, overwrite, plan_):
        raise error

    monkeypatch.setattr(training, "train_and_evaluate", failing)
    assert launch.main(_launch_args(str(tmp_path))) == 75
    assert capsys.readouterr().err == f"launch.py: {error} (exit status 75)\n"


def test_a_read_only_finished_run_is_0_and_a_failed_lock_write_leaves_no_workdir(
        tmp_path, monkeypatch):
    """A finished run in a workdir that cannot be written (its lock cannot be opened: a
    read-only file system) is reported, status 0 (it was a PermissionError, exit 1); a lock
    whose write fails (a full disk) leaves no workdir holding only .lock behind."""
    import errno

    import launch

    workdir = str(tmp_path / "run")
    assert launch.main(_launch_args(workdir)) == 0
    before = _files(workdir)
    real_open = lock_lib.os.open

    def read_only(path, *args, **kwargs):
        if path.endswith(".lock"):
            raise OSError(errno.EROFS, "Read-only file system", path)
        return real_open(path, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(lock_lib.os, "open", read_only)
        assert launch.main(_launch_args(workdir)) == 0
    assert _files(workdir) == before

    def no_space(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lock_lib.os, "write", no_space)
    fresh = str(tmp_path / "fresh")
    with pytest.raises(OSError, match="No space left"):
        with lock_lib.workdir_lock(fresh):
            pass
    assert not os.path.exists(fresh)
