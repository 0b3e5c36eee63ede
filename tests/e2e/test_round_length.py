"""How the steps are grouped into compiled rounds changes nothing: the data stream is drawn in
blocks of one sampling block (``WorkerSampler(block=...)``), and the loop that dispatches a
round before reading the previous one's summary gives the same run for rounds of one period
and of several. Compared in float64, where only a real difference shows."""

import os
import sys

import jax
import numpy as np
import pytest

from easgd_jax import data
from easgd_jax.training import config as config_lib
from easgd_jax.training import sync
from easgd_jax.training.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from easgd_jax.configs import lsgd  # noqa: E402


def test_the_blocked_stream_does_not_depend_on_the_grouping():
    x, y = np.arange(50.0)[:, None], np.arange(50)
    sampler = data.WorkerSampler(x, y, 2, 3, seed=7, block=4)
    whole = sampler.worker_round(1, 0, 24)[1]
    pieces = [sampler.worker_round(1, s, 4)[1] for s in range(0, 24, 4)]
    np.testing.assert_array_equal(whole, np.concatenate(pieces))
    np.testing.assert_array_equal(sampler.worker_round(1, 6, 5)[1], whole[6:11])  # any span
    assert not np.array_equal(whole, sampler.worker_round(0, 0, 24)[1])  # workers differ
    unblocked = data.WorkerSampler(x, y, 2, 3, seed=7)  # the asynchronous executors' stream
    np.testing.assert_array_equal(unblocked.worker_round(1, 0, 4)[1], whole[:4])


@pytest.mark.slow
def test_rounds_of_one_period_and_of_several_give_the_same_run(tmp_path):
    """LSGD (it reports its leader every period): 80 steps in rounds of 4 and of 40."""
    runs = {}
    with jax.enable_x64(True):
        for steps_per_round in (4, 0):
            config = lsgd.get_config()
            config.num_workers = config.num_devices = 2
            config.data.name = "digits"
            config.model.name = "mlp"
            config.model.kwargs.hidden = (16,)
            config.train.batch_size = 16
            config.train.num_steps = 80
            config.train.eval_every = 40
            config.checkpoint.every = 0
            config.tensorboard = False
            config.train.param_dtype = "float64"
            if steps_per_round:
                config.train.steps_per_round = steps_per_round
            # rounds of one period; the default: 40 steps (10 periods)
            assert config_lib.steps_per_round(config) == (steps_per_round or 40)
            workdir = str(tmp_path / f"round{steps_per_round}")
            state, _ = sync.train(config, workdir)
            runs[steps_per_round] = state, read_metrics(workdir)
    (one, one_records), (several, several_records) = runs[4], runs[0]
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(several), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)
    for a, b in zip(one_records, several_records, strict=True):
        assert a["leader_per_round"] == b["leader_per_round"]  # every period, both ways
        assert len(a["leader_per_round"]) == 10
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-12)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-12)
