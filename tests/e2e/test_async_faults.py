"""Asynchronous runs under faults (issue 14, items 5 and 6): checkpoints and exact resumption
of ``simulated_async``, consistent cuts of ``threads`` (no applied update lost across a
restart), the NaN stop, SIGTERM, and ``asynchrony.on_worker_failure``. Digits and a small
MLP, p = 3, a few tens of steps."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest
from helpers import small_async_config as small

from easgd_jax.parallel import ray_server, server
from easgd_jax.parallel.executor import Capabilities, WorkerFailedError
from easgd_jax.training import asynchronous as async_train
from easgd_jax.training.checkpoint import Checkpointer
from easgd_jax.training.common import NonFiniteError
from easgd_jax.training.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMING = ("steps_per_second", "wall_time_s", "compile_time_s")


class Killed(BaseException):
    """Stands for kill -9: nothing in the run catches it, nothing is saved after it."""


def _without_timing(record):
    return {k: v for k, v in record.items() if k not in TIMING}


def _simulated(num_steps=40):
    config = small("async_eamsgd", schedule="clocks", clock_spread=2.0)
    config.train.num_steps, config.train.eval_every = num_steps, 10
    config.checkpoint.every = 20
    return config


def _saved_state(workdir, step):
    """The arrays of the checkpoint at ``step``, read back by Orbax without a target."""
    path = os.path.join(workdir, "checkpoints", str(step), "state")
    return ocp.PyTreeCheckpointer().restore(path)


def _meta(workdir, step):
    """The JSON meta of the checkpoint at ``step``."""
    with open(os.path.join(workdir, "checkpoints", str(step), "meta", "metadata")) as f:
        return json.load(f)


def _assert_trees_equal(a, b):
    import jax

    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def straight_simulated(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("straight_sim"))
    final = async_train.train_and_evaluate(_simulated(), workdir)
    return workdir, final


def _kill_at_save(monkeypatch, step):
    """The checkpoint at ``step`` is never written: the run dies there (after writing the
    metrics of the steps since the previous checkpoint)."""
    save = Checkpointer.save

    def dying_save(self, at_step, state, meta):
        if at_step == step:
            raise Killed(f"killed before saving step {at_step}")
        save(self, at_step, state, meta)

    monkeypatch.setattr(Checkpointer, "save", dying_save)


def test_simulated_async_killed_after_a_checkpoint_resumes_bitwise(
        tmp_path, monkeypatch, straight_simulated):
    ref_dir, ref_final = straight_simulated
    workdir = str(tmp_path)
    _kill_at_save(monkeypatch, 40)
    with pytest.raises(Killed):
        async_train.train_and_evaluate(_simulated(), workdir)
    assert [r["step"] for r in read_metrics(workdir)] == [10, 20, 30, 40]  # 30, 40: lost
    assert Checkpointer(workdir, 3).steps() == [20]
    monkeypatch.undo()
    final = async_train.train_and_evaluate(_simulated(), workdir)  # resumes from 20
    assert _without_timing(final) == _without_timing(ref_final)
    assert ([_without_timing(r) for r in read_metrics(workdir)]
            == [_without_timing(r) for r in read_metrics(ref_dir)])
    _assert_trees_equal(_saved_state(workdir, 40), _saved_state(ref_dir, 40))
    saved = json.loads(open(os.path.join(workdir, "final_metrics.json")).read())
    assert saved["worker_steps"] == json.loads(
        open(os.path.join(ref_dir, "final_metrics.json")).read())["worker_steps"]


def test_simulated_async_sigterm_saves_stops_and_resumes_bitwise(
        tmp_path, monkeypatch, straight_simulated):
    ref_dir, ref_final = straight_simulated
    workdir = str(tmp_path)
    batches, calls = async_train._chunk_batches, []

    def signalled(*args):
        calls.append(1)
        if len(calls) == 3:  # during the chunk 20..30 (no checkpoint due at 30)
            os.kill(os.getpid(), signal.SIGTERM)
        return batches(*args)

    monkeypatch.setattr(async_train, "_chunk_batches", signalled)
    metrics = async_train.train_and_evaluate(_simulated(), workdir)
    assert metrics["stopped_at_step"] == 30
    assert Checkpointer(workdir, 3).steps() == [20, 30]
    assert not os.path.exists(os.path.join(workdir, "final_metrics.json"))
    monkeypatch.undo()
    final = async_train.train_and_evaluate(_simulated(), workdir)
    assert _without_timing(final) == _without_timing(ref_final)
    _assert_trees_equal(_saved_state(workdir, 40), _saved_state(ref_dir, 40))


def test_simulated_async_nan_stops_naming_the_step_and_the_last_good_checkpoint(tmp_path):
    config = _simulated(num_steps=20)
    config.algorithm.learning_rate = 1e30  # overflows at once
    with pytest.raises(NonFiniteError, match=r"at step 0 of 20\); stopping\. The last "
                                             r"good checkpoint is step none"):
        async_train.train_and_evaluate(config, str(tmp_path))
    assert not os.path.exists(os.path.join(str(tmp_path), "final_metrics.json"))


def _threads(name="async_easgd", num_steps=40, failure="stop"):
    config = small(name, timeout_s=120.0, on_worker_failure=failure)
    config.executor = "threads"
    config.train.num_steps, config.train.eval_every = num_steps, 10
    config.checkpoint.every = 20
    return config


def _hook(monkeypatch, worker, step, action):
    def hook(index, t):
        if index == worker and t == step:
            action()

    monkeypatch.setattr(async_train, "worker_hook", hook)


def test_threads_killed_and_resumed_loses_no_applied_update(tmp_path, monkeypatch):
    """kill -9 (in process) of the first worker to reach a step after the checkpoint at step
    20 (the threads race: which worker and which local step depend on the scheduling; some
    worker always has steps left there, as the cut's 60 steps are shared by 3 workers of
    40): the run dies without saving; the re-run resumes from the cut at step 20 and every
    exchange of the whole run is in the center and the ledger (verified at the end: applied
    per shard == sent, center == start + all deltas)."""
    workdir = str(tmp_path)

    def hook(index, t):
        del index, t
        if os.path.isdir(os.path.join(workdir, "checkpoints", "20")):
            raise Killed("kill -9")

    monkeypatch.setattr(async_train, "worker_hook", hook)
    with pytest.raises(Killed):
        async_train.train_and_evaluate(_threads(), workdir)
    assert Checkpointer(workdir, 3).steps() == [20]
    monkeypatch.undo()
    final = async_train.train_and_evaluate(_threads(), workdir)
    saved = json.loads(open(os.path.join(workdir, "final_metrics.json")).read())
    assert saved["worker_steps"] == [40, 40, 40]
    assert final["exchanges"] == 3 * 4  # tau = 10: 4 per worker, across the restart
    assert final["ledger_discrepancy"] <= 1e-5
    # Every evaluation is a cut taken with exactly step * p local steps done, labelled by
    # that step; so is every checkpoint (T = step * p, the workers' steps adding up).
    records = read_metrics(workdir)
    assert [r["step"] for r in records] == [10, 20, 30, 40]
    assert records[-1]["test_accuracy"] == final["test_accuracy"] > 0.4
    for step in (20, 40):
        meta = _meta(workdir, step)
        assert meta["server"]["total"] == 3 * step == sum(meta["steps"])
        # tau = 10 on each worker's clock: worker i exchanged at 0, 10, ... < its steps.
        assert meta["server"]["sent"] == [-(-s // 10) for s in meta["steps"]]


def test_threads_sigterm_saves_a_cut_and_returns_stopped_at_step(tmp_path, monkeypatch):
    """SIGTERM sent by worker 1 at its step 15, which then waits until the caller's poll has
    seen the signal (else the workers may finish all 40 steps before the next poll, 50 ms
    later: a stop at the end, as CI once showed): the run stops before the end, saves where
    the workers are, and a re-run finishes with no exchange lost."""
    workdir = str(tmp_path)
    seen = threading.Event()
    run_threads = server.run_threads

    def noting_run_threads(fn, num_workers, timeout_s, *, on_poll, **kwargs):
        def poll():
            try:
                on_poll()
            except BaseException:
                seen.set()
                raise
        return run_threads(fn, num_workers, timeout_s, on_poll=poll, **kwargs)

    def signal_and_wait():
        os.kill(os.getpid(), signal.SIGTERM)
        seen.wait(60.0)

    monkeypatch.setattr(server, "run_threads", noting_run_threads)
    _hook(monkeypatch, 1, 15, signal_and_wait)
    metrics = async_train.train_and_evaluate(_threads(), workdir)
    step = metrics["stopped_at_step"]
    assert seen.is_set()
    assert 5 <= step < 40 and Checkpointer(workdir, 3).steps()[-1] == step
    assert not os.path.exists(os.path.join(workdir, "final_metrics.json"))
    monkeypatch.undo()
    final = async_train.train_and_evaluate(_threads(), workdir)
    assert final["exchanges"] == 3 * 4 and final["ledger_discrepancy"] <= 1e-5
    assert [r["step"] for r in read_metrics(workdir)] == [10, 20, 30, 40]


def test_threads_worker_failure_continue_finishes_without_it(tmp_path, monkeypatch):
    workdir = str(tmp_path)

    def boom():
        raise ValueError("worker boom")

    _hook(monkeypatch, 1, 7, boom)
    final = async_train.train_and_evaluate(_threads(failure="continue"), workdir)
    saved = json.loads(open(os.path.join(workdir, "final_metrics.json")).read())
    assert saved["worker_steps"] == [40, 7, 40]
    assert saved["lost_workers"] == {"1": "ValueError: worker boom"}
    assert final["workers_lost"] == 1
    assert final["exchanges"] == 4 + 1 + 4  # worker 1 exchanged at its step 0 only
    assert final["test_accuracy"] > 0.4 and final["ledger_discrepancy"] <= 1e-5


def test_threads_worker_failure_stop_checkpoints_and_names_the_worker(tmp_path, monkeypatch):
    """Worker 2 fails at its local step 27: the stop saves every worker where it is. Once the
    checkpoint at step 20 (T = 60 local steps in all) exists, worker 2 waits before failing
    until T >= 63 (the others can always get there): a stop at T = 60-62 is labelled step
    20, whose cut is then kept, with worker 2 at 26 steps or fewer."""
    workdir = str(tmp_path)
    servers = []

    class Noted(server.ParameterServer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            servers.append(self)

    def boom():
        deadline = time.monotonic() + 60.0
        while (os.path.isdir(os.path.join(workdir, "checkpoints", "20"))
               and servers[-1].total < 63 and time.monotonic() < deadline):
            time.sleep(0.005)
        raise ValueError("worker boom")

    monkeypatch.setattr(server, "ParameterServer", Noted)

    _hook(monkeypatch, 2, 27, boom)
    with pytest.raises(async_train.WorkerFailedError,
                       match=r"worker 2 of 3 failed at its local step 27 \(ValueError: worker "
                             r"boom\); on_worker_failure='stop': saved a checkpoint at step"
                       ) as info:
        async_train.train_and_evaluate(_threads(), workdir)
    # The typed failure's fields reach the caller: the worker, its local step, the cause.
    assert info.value.worker == 2 and info.value.step == 27
    assert isinstance(info.value.cause, ValueError) and str(info.value.cause) == "worker boom"
    assert info.value.__cause__ is info.value.cause
    meta = _meta(workdir, Checkpointer(workdir, 3).steps()[-1])
    assert meta["steps"][2] == 27 and meta["server"]["total"] == sum(meta["steps"])
    monkeypatch.undo()
    final = async_train.train_and_evaluate(_threads(), workdir)  # the worker is back
    assert final["exchanges"] == 3 * 4 and final["workers_lost"] == 0
    assert [r["step"] for r in read_metrics(workdir)] == [10, 20, 30, 40]


def test_threads_resumed_runs_report_every_exchange_and_every_step_once(tmp_path,
                                                                         monkeypatch):
    """A stop that finds the workers exactly at the cut just taken (as when a worker fails
    while the others are held there: they are released into the stop) saves a checkpoint
    marked as taken at a cut, so the resumed run does not evaluate that step again (it once
    wrote the line of step 10 twice). Made deterministic: the stop is raised in the driver
    at the end of the cut at T = 30, the workers still held.

    Issue 28, items 8 and 10: that run, resumed, reports every exchange's staleness in
    exactly one evaluation window (a resume that did not restore the values already
    ``seen`` reported them again); and a run whose final metrics were lost after its last
    checkpoint, resumed at that final checkpoint, rebuilds them without writing the last
    metrics line twice (it wrote [..., 40, 40])."""
    workdir = str(tmp_path)
    on_cut, call = async_train._ServerDriver.on_cut, async_train._Evaluator.__call__
    windows = []

    def stopping_on_cut(self, view, total, results):
        on_cut(self, view, total, results)
        if total == 30:
            self.run.stop.append(signal.SIGTERM)
            raise async_train._Stopped()

    def counting_call(self, step, center, staleness, seconds=None):
        windows.append(len(staleness))
        call(self, step, center, staleness, seconds)

    monkeypatch.setattr(async_train._Evaluator, "__call__", counting_call)
    with monkeypatch.context() as patch:
        patch.setattr(async_train._ServerDriver, "on_cut", stopping_on_cut)
        assert async_train.train_and_evaluate(_threads(), workdir)["stopped_at_step"] == 10
    meta = _meta(workdir, 10)
    assert meta["server"]["total"] == 30 and meta["cut"] is True
    final = async_train.train_and_evaluate(_threads(), workdir)
    assert [r["step"] for r in read_metrics(workdir)] == [10, 20, 30, 40]
    assert final["exchanges"] == 3 * 4 and final["ledger_discrepancy"] <= 1e-5
    assert len(windows) == 4 and sum(windows) == final["exchanges"] == 3 * 4  # one shard
    path = os.path.join(workdir, "final_metrics.json")
    saved = json.loads(open(path).read())
    os.remove(path)
    rebuilt = async_train.train_and_evaluate(_threads(), workdir)
    assert [r["step"] for r in read_metrics(workdir)] == [10, 20, 30, 40]
    assert rebuilt["test_accuracy"] == final["test_accuracy"]
    assert json.loads(open(path).read())["worker_steps"] == saved["worker_steps"]


def test_a_stop_checkpoint_is_labelled_by_the_whole_steps_done(tmp_path):
    """Issue 28, item 10: a stop between two cuts, T = 7 local steps of all 3 workers, is
    saved as step T // p = 2 (a label ceil(T / p) = 3 would name steps not all taken, and a
    resumed run would skip the cut at T = 9); the checkpoint keeps T itself."""
    import types

    import jax.numpy as jnp

    config = _threads()
    rule = async_train.validate(config)
    params = {"w": jnp.zeros(4)}
    run = async_train._Run(config, str(tmp_path), rule, None, params, None, None, None, None,
                           Checkpointer(str(tmp_path), 3), [])
    driver = async_train._ServerDriver(run, executor=None)
    driver.evaluator = types.SimpleNamespace(metrics={})
    master = server.ParameterServer(rule, params, 3)
    for _ in range(7):
        master.tick()
    assert driver.save([driver.fresh] * 3, master.state(), cut=False) == 2
    assert run.checkpoints.steps() == [2] and _meta(str(tmp_path), 2)["server"]["total"] == 7
    run.checkpoints.close()


def test_threads_nan_is_a_non_finite_error_not_a_lost_update(tmp_path):
    config = _threads(num_steps=20)
    config.algorithm.learning_rate = 1e30  # overflows at once
    with pytest.raises(NonFiniteError, match=r"non-finite value \(NaN or Inf\) in a loss of "
                                             r"worker \d at its local step \d+ \(checked at "
                                             r"step 10\); stopping\. The last good checkpoint "
                                             r"is step none"):
        async_train.train_and_evaluate(config, str(tmp_path))


def test_the_executors_declare_their_failure_policies():
    """Both real executors support what the config accepts; only Ray restarts a worker."""
    for executor in (server.ThreadExecutor, ray_server.RayExecutor):
        assert executor.capabilities.failure_policies == {"stop", "continue"}
    assert not server.ThreadExecutor.capabilities.restarts_failed_workers
    assert ray_server.RayExecutor.capabilities.restarts_failed_workers


def test_a_policy_the_executor_lacks_is_refused_in_one_line_before_anything_starts(
        tmp_path, monkeypatch):
    """An executor that declares "stop" only is refused "continue" at validation: one line,
    no worker started, no server built, nothing written in the workdir."""
    started = []

    def refuse(*args, **kwargs):
        raise AssertionError("a ParameterServer was built")

    monkeypatch.setattr(server.ThreadExecutor, "capabilities",
                        Capabilities(frozenset({"stop"}), restarts_failed_workers=False))
    monkeypatch.setattr(server.ParameterServer, "__init__", refuse)
    monkeypatch.setattr(async_train, "worker_hook", lambda index, t: started.append(index))
    workdir = tmp_path / "run"
    with pytest.raises(ValueError) as info:
        async_train.train_and_evaluate(_threads(failure="continue"), str(workdir))
    assert str(info.value) == ("config.asynchrony.on_worker_failure='continue' is not "
                               "supported by executor 'threads' (it supports: stop).")
    assert not started and not workdir.exists()
    async_train.validate(_threads(failure="stop"))  # what it declares passes


def test_the_ray_driver_restores_into_abstract_shapes_without_a_parameter_server(
        tmp_path, monkeypatch):
    """The driver restores a checkpoint into the Ray executor's ``state_shapes``
    (``jax.eval_shape``), with ``ParameterServer.__init__`` refusing: no server (and no
    p x P ledger) is built on the driver for shapes. A threads run writes the checkpoint; the
    re-run's executor is Ray's, stopped where it would start its actors."""
    workdir = str(tmp_path)
    config = _threads(num_steps=20)
    config.asynchrony.num_shards = 2
    async_train.train_and_evaluate(config, workdir)
    reached = []

    class Reached(Exception):
        pass

    def refuse(*args, **kwargs):
        raise AssertionError("a ParameterServer was built")

    def ray_shaped(run):
        return ray_server.RayExecutor(make(run).setup)

    def run(self, hooks, start=None, server_state=None, cuts=()):
        reached.append((start, server_state, list(cuts)))
        raise Reached()

    make = async_train._make_executor
    monkeypatch.setattr(async_train, "_make_executor", ray_shaped)
    monkeypatch.setattr(ray_server.RayExecutor, "run", run)
    monkeypatch.setattr(server.ParameterServer, "__init__", refuse)
    config.train.num_steps = 40
    with pytest.raises(Reached):
        async_train.train_and_evaluate(config, workdir)
    (start, (arrays, meta), cuts), = reached
    assert [r.steps for r in start] == [20, 20, 20] and meta["total"] == 60
    assert cuts == [90]  # the evaluation at step 30 (the checkpoint at 40 is the end's)
    saved = _saved_state(workdir, 20)["server"]
    assert len(arrays["masters"]) == 2
    _assert_trees_equal(arrays, saved)


def test_a_worker_failure_pickles_with_its_fields():
    """(Ray ships it from the worker actor to the driver.)"""
    import pickle

    error = WorkerFailedError(1, 5, ValueError("boom"))
    again = pickle.loads(pickle.dumps(error))
    assert (again.worker, again.step, str(again.cause), str(again)) == (
        1, 5, "boom", "worker 1 failed at its local step 5 (ValueError: boom)")


def test_on_worker_failure_is_validated():
    config = _threads(failure="restart")
    with pytest.raises(ValueError, match=r"config.asynchrony.on_worker_failure must be one of "
                                         r"stop, continue; got 'restart'"):
        async_train.validate(config)


@pytest.mark.slow
def test_simulated_async_kill_9_of_launch_resumes_bitwise(tmp_path):
    """A real kill -9 of ``launch.py`` between two checkpoints; resumed in the same workdir
    (to a later end: num_steps may change), equal bit for bit to a straight run."""
    killed, straight = str(tmp_path / "killed"), str(tmp_path / "straight")
    config = _simulated()
    config.model.kwargs = type(config.model.kwargs)()  # (not settable by flags)
    flags = [f"--config.{k}={v}" for k, v in (
        ("data.name", "digits"), ("model.name", "mlp"), ("num_workers", 3),
        ("algorithm.moving_rate", config.algorithm.moving_rate),
        ("asynchrony.clock_spread", 2.0), ("train.batch_size", 32),
        ("train.eval_every", 10), ("checkpoint.every", 20), ("tensorboard", False),
        ("cluster.compute_s_per_step", config.cluster.compute_s_per_step))]
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "launch.py"), "--config",
         os.path.join(ROOT, "configs", "async_eamsgd.py"), f"--workdir={killed}",
         "--config.train.num_steps=100000", *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            path = os.path.join(killed, "metrics.jsonl")
            if os.path.exists(path) and read_metrics(killed) and \
                    read_metrics(killed)[-1]["step"] >= 50:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL
    last = Checkpointer(killed, 3).steps()[-1]
    reached = read_metrics(killed)[-1]["step"]
    print(f"kill -9 after step {reached}; last checkpoint {last}; lost {reached - last} steps")
    assert 0 <= reached - last <= 20
    config.train.num_steps = end = last + 20
    finals = [async_train.train_and_evaluate(config, w) for w in (killed, straight)]
    assert _without_timing(finals[0]) == _without_timing(finals[1])
    assert ([_without_timing(r) for r in read_metrics(killed)]
            == [_without_timing(r) for r in read_metrics(straight)])
    _assert_trees_equal(_saved_state(killed, end), _saved_state(straight, end))


@pytest.mark.slow
def test_ray_worker_failure_continue_restarts_it_from_the_center(tmp_path, caplog):
    """Ray, "continue": a worker that raises is restarted from the center at its step (a
    Ray-only path); one whose process is killed (-9, at its step 35) resumes in a new actor
    from its last cut, its own state and steps there (issue 28, item 1: it restarted at step
    0), saying which; every worker takes all its steps and T stays the sum of their steps,
    no applied update lost. ("stop" of a raising worker takes the threads executor's path,
    tested above.)"""
    import ray

    from easgd_jax.parallel import ray_server

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": ray_server.ACTOR_ENV})
    try:
        marker, killed = str(tmp_path / "fired"), str(tmp_path / "killed")

        def hook(index, t):
            """Raises in worker 1 at its step 7 and kills worker 2's process at its step 35,
            once each (the restarted workers go on)."""
            if index == 1 and t == 7 and not os.path.exists(marker):
                open(marker, "w").close()
                raise ValueError("worker boom")
            if index == 2 and t == 35 and not os.path.exists(killed):
                open(killed, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)

        config = _threads(failure="continue")
        config.executor = "ray"
        async_train.worker_hook = hook
        workdir = str(tmp_path / "continue")
        final = async_train.train_and_evaluate(config, workdir)
        saved = json.loads((tmp_path / "continue" / "final_metrics.json").read_text())
        assert saved["worker_steps"] == [40, 40, 40] and final["workers_restarted"] == 2
        assert "worker 1: restarted from the center at its local step 7" in caplog.text
        assert re.search(r"worker 2: its Ray actor died at its local step 35; it resumes from "
                         r"its last cut, at local step [1-9]\d*", caplog.text), caplog.text
        assert _meta(workdir, 40)["server"]["total"] == 3 * 40
        assert final["test_accuracy"] > 0.4 and final["ledger_discrepancy"] <= 1e-5
    finally:
        async_train.worker_hook = None
        ray.shutdown()


@pytest.mark.slow
def test_a_ray_worker_killed_resumes_from_its_last_cut_with_its_steps(tmp_path, caplog):
    """Issue 28, item 1: kill -9 of worker 1's Ray process at its local step 35 (the cut of
    T = 30 is behind it: it had to reach it), under "stop" then the re-run. The failure
    names the step it died at (it said 'step 0' or '?'), and the checkpoint holds worker 1
    at its last cut, its own state and steps, with T = the sum of the workers' steps (the
    steps it lost leave T); the re-run resumes it there (it restarted from the initial
    weights) and every worker ends at 40 steps, no applied update lost."""
    import ray

    from easgd_jax.parallel import ray_server

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": ray_server.ACTOR_ENV})
    workdir, marker = str(tmp_path / "run"), str(tmp_path / "killed")
    cut_steps = []
    on_cut = async_train._ServerDriver.on_cut

    def noting_on_cut(self, view, total, results):
        cut_steps.append(results[1].steps)
        on_cut(self, view, total, results)

    def hook(index, t):
        """kill -9 of worker 1's own process at its step 35, once."""
        if index == 1 and t == 35 and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)

    config = _threads()
    config.executor = "ray"
    try:
        async_train.worker_hook = hook
        async_train._ServerDriver.on_cut = noting_on_cut
        with pytest.raises(async_train.WorkerFailedError,
                           match=r"worker 1 of 3 failed at its local step 35 \(RuntimeError: "
                                 r"Ray worker actor 1 died: The actor died unexpectedly before "
                                 r"finishing this task.\); .* where it resumes from its last cut,"
                                 r" at its local step (\d+);") as info:
            async_train.train_and_evaluate(config, workdir)
        assert 0 < cut_steps[-1] < 35 and info.value.progress.steps == cut_steps[-1]
        meta = _meta(workdir, Checkpointer(workdir, 3).steps()[-1])
        assert meta["steps"][1] == cut_steps[-1]
        assert meta["server"]["total"] == sum(meta["steps"])
        assert f"resumes from its last cut, at local step {cut_steps[-1]}" in caplog.text
        with caplog.at_level("INFO"):
            final = async_train.train_and_evaluate(config, workdir)
        assert f"{meta['steps']}" in caplog.text  # resumed at those steps
        saved = json.loads(open(os.path.join(workdir, "final_metrics.json")).read())
        assert saved["worker_steps"] == [40, 40, 40] and final["workers_restarted"] == 0
        assert final["ledger_discrepancy"] <= 1e-5 and final["test_accuracy"] > 0.4
        assert [r["step"] for r in read_metrics(workdir)][-1] == 40
    finally:
        async_train.worker_hook = None
        async_train._ServerDriver.on_cut = on_cut
        ray.shutdown()


def test_a_resumed_run_still_takes_the_cut_at_its_own_T():
    """A run stopped (signal, failure) with T exactly at a mark never took that cut: the
    resumed schedule starts there (the executor leaves out marks whose cut was taken)."""
    from easgd_jax.parallel import server

    holds, parked = [], {}

    def hold(at):  # as the server's: moving the hold releases the parked workers
        holds.append(at)
        parked.clear()

    schedule = server.CutSchedule([30, 60, 90], 60, hold)
    assert schedule.pending == [60, 90] and holds == [60]
    parked.update({0: "w0", 1: "w1"})
    cuts = []
    schedule.poll(lambda: parked, lambda: (["running", "running", "done"], [None, None, "w2"]),
                  lambda: 60, lambda total, here: cuts.append((total, here)))
    assert cuts == [(60, ["w0", "w1", "w2"])] and holds == [60, 90]
