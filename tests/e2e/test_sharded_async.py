"""Workers that span devices under executor ``simulated_async``: the workers take turns on
one slot of data x fsdp devices, their state and the master's sharded over fsdp, each
tick's batch split over data. In float64 the simulation equals the one-device simulation;
a checkpoint restores onto the sharded layout, also across a changed fsdp; a misfit is one
line.

In-process (the simulated CPU devices of conftest), on digits with a small MLP whose kernels
divide by 2 and 4.
"""

from __future__ import annotations

import json
import os

import helpers
import jax
import numpy as np
import pytest

from easgd_jax.training import asynchronous
from easgd_jax.training import config as config_lib
from easgd_jax.training.checkpoint import Checkpointer

STEPS = 8


def _config(data: int, fsdp: int, steps: int = STEPS, name: str = "async_eamsgd",
            schedule: str = "cluster"):
    config = helpers.small_async_config(name, schedule=schedule)
    config.num_workers = 2
    config.train.param_dtype = "float64"
    config.train.num_steps, config.train.eval_every, config.checkpoint.every = steps, 4, 4
    config.worker_devices.data, config.worker_devices.fsdp = data, fsdp
    config.num_devices = data * fsdp
    return config


def _simulate(config, workdir: str):
    with jax.enable_x64(True):
        return asynchronous.simulate(config, workdir)


def _close(a_state, b_state) -> None:
    """Every float64 array of two carries to 1e-10 of its largest value (sums over a batch
    and parameters split over devices add in another order); the rest (clocks, key) equal."""
    for a, b in zip(jax.tree.leaves(a_state), jax.tree.leaves(b_state), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype
        if a.dtype == np.float64:
            scale = max(float(np.max(np.abs(a), initial=0.0)), 1e-300)
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-10 * scale)
        else:
            np.testing.assert_array_equal(a, b)


def _split(array: jax.Array, ways: int, devices: int) -> None:
    """``array`` lies on ``devices`` devices, each holding 1 / ``ways`` of it (FSDP)."""
    shards = array.addressable_shards
    assert len(shards) == devices
    assert "fsdp" in tuple(array.sharding.spec)
    assert {s.data.size for s in shards} == {array.size // ways}


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    """``(carry, final metrics)`` of the one-device simulation (``_config(1, 1)``), run once
    for the module: the reference of the two tests below."""
    return _simulate(_config(1, 1), str(tmp_path_factory.mktemp("one_device")))


def test_workers_spanning_2_data_x_2_fsdp_devices_equal_the_one_device_simulation(tmp_path,
                                                                                   one_device):
    """EAMSGD on the cluster schedule: the whole carry (both workers' params and momenta,
    the master's center, clocks, key) after 8 steps of 2 workers equals the one-device
    simulation's; the batch is split over the data devices (a gradient of each device's
    half alone, or their sum, would differ) and the state is split over fsdp."""
    base, base_metrics = one_device
    state, metrics = _simulate(_config(2, 2), str(tmp_path / "2x2"))
    _close(state, base)
    assert metrics["test_loss"] == pytest.approx(base_metrics["test_loss"], rel=1e-12)
    assert metrics["simulated_time_s"] == base_metrics["simulated_time_s"]  # the same schedule
    assert np.asarray(base.master.center["Dense_0"]["kernel"]).dtype == np.float64
    _split(state.master.center["Dense_0"]["kernel"], 2, 4)  # [64, 32]
    _split(state.workers.params["Dense_0"]["kernel"], 2, 4)  # [2 workers, 64, 32]
    momenta = [a for a in jax.tree.leaves(state.workers.extra) if a.shape == (2, 64, 32)]
    assert momenta  # the Nesterov velocity of the first kernel, sharded like it
    for velocity in momenta:
        _split(velocity, 2, 4)


def test_a_checkpoint_restores_onto_the_sharded_slot_and_across_a_changed_fsdp(
        tmp_path, monkeypatch, one_device):
    """4 steps with fsdp 2, resumed with fsdp 4 to step 8 (the saved state restored onto the
    new slot, a quarter of each kernel per device) ends where the straight one-device run
    ends; the metrics go on from the checkpoint."""
    restored = []
    restore_latest = Checkpointer.restore_latest

    def recording(self, target):
        out = restore_latest(self, target)
        if out is not None:
            restored.append(out[1])
        return out

    monkeypatch.setattr(Checkpointer, "restore_latest", recording)
    base, _ = one_device
    workdir = str(tmp_path / "resharded")
    _simulate(_config(1, 2, steps=4), workdir)
    assert not restored
    resumed, _ = _simulate(_config(1, 4), workdir)
    (at_restore,) = restored
    _split(at_restore.master.center["Dense_0"]["kernel"], 4, 4)
    _split(at_restore.workers.params["Dense_0"]["kernel"], 4, 4)
    _close(resumed, base)
    _split(resumed.master.center["Dense_0"]["kernel"], 4, 4)
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        assert [json.loads(line)["step"] for line in f] == [4, 8]


@pytest.mark.parametrize("change, match", [
    ({"num_devices": 8}, r"config.num_devices \(8\) must be worker_devices.data x "
                         r"worker_devices.fsdp = 2 x 2 = 4 \(or 0: that many\): executor "
                         r"'simulated_async' runs its workers in turn on one slot"),
    ({"executor": "threads"}, r"executor 'threads' runs each worker as one thread or actor "
                              r"process on one device; workers that span devices run on "
                              r"executors 'sync' and 'simulated_async'"),
    ({"executor": "ray"}, r"executor 'ray' runs each worker as one thread or actor process"),
    ({"distributed.num_processes": 2}, r"num_processes \(2\) must be 1 for executor "
                                       r"'simulated_async' on workers that span devices"),
    ({"train.batch_size": 33}, r"batch_size \(33, per worker\) must be divisible by "
                               r"config.worker_devices.data \(2\)"),
])
def test_a_misfit_is_one_line(change, match):
    config = _config(2, 2)
    config.train.param_dtype = "float32"
    helpers.set_fields(config, change)
    with pytest.raises(ValueError, match=match) as raised:
        config_lib.validate(config)
    assert "\n" not in str(raised.value)
    fitting = _config(2, 2, name="apam", schedule="random_delay")
    fitting.train.param_dtype = "float32"
    config_lib.validate(fitting)
