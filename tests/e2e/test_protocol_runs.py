"""Issue 33's protocol end to end: a training run records its validation split, and the
declared sweeps of the third pass plan with the protocol (slow: a run compiles; the plans
load and validate 1440 configs)."""

from __future__ import annotations

import json

import pytest

from tests import helpers

pytestmark = pytest.mark.slow


def test_the_loop_records_the_validation_split(tmp_path):
    from easgd_jax import training

    config = helpers.small_sync_config(num_steps=20, every=20)
    config.num_workers, config.num_devices = 2, 1
    config.algorithm.moving_rate = 0.45
    config.data.kwargs = {"validation_size": 100}
    training.train_and_evaluate(config, str(tmp_path))
    with open(tmp_path / "metrics.jsonl") as f:
        record = json.loads(f.readline())
    assert 0 <= record["val_accuracy"] <= 1 and record["val_loss"] > 0
    assert record["val_accuracy"] != record["test_accuracy"]  # another split


def test_the_declared_sweeps_plan_with_the_protocol():
    """The contested cells and the asynchronous grids plan (every run's config validated)
    with 8 seeds, a validation split choosing the rates, 25-step evaluations; the 40k grid
    has its data and length; every asynchronous method runs on the parameter server."""
    from easgd_jax.experiments import sweep

    contested = sweep.load_config_file("sweeps/contested")
    planned = sweep.plan(contested)
    assert len(planned) == 936 and contested.select_on == "validation"
    assert {r.seed for r in planned} == set(range(8))
    assert all(r.config.data.kwargs.validation_size > 0 and r.config.train.eval_every == 25
               for r in planned)
    large = [r for r in planned if r.tag == "n40k"]
    assert len(large) == 256 and all(r.config.data.kwargs.num_train == 40000
                                     and r.config.train.num_steps == 5000
                                     and r.selections == ["first_seed_checked"]
                                     for r in large)
    assert {r.selections[0] for r in planned if r.tag != "n40k"} == {"all_seeds"}
    asynchronous = sweep.plan(sweep.load_config_file("sweeps/paper_async"))
    assert len(asynchronous) == 672
    for r in asynchronous:
        assert r.config.cluster.topology == "parameter_server"
        assert (r.config.executor == "simulated_async") == (r.method != "msgd")
        # the cluster schedule on the asynchronous runs only (a sync run warns of its use)
        assert (r.config.asynchrony.schedule == "cluster") == (r.method != "msgd")
