"""The config schema (easgd_jax/training/config.py): every field declared once, one validate()
for every executor, older configs completed, and the default round length."""

import os
import sys

import ml_collections
import pytest

from easgd_jax.training import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from easgd_jax.configs import default, easgd, lsgd  # noqa: E402


def test_default_config_is_the_schema_and_validates():
    config = default.get_config()
    assert set(config_lib._fields(config)) == set(config_lib._fields(config_lib.defaults()))
    config_lib.validate(config)


@pytest.mark.parametrize("path", ["train.num_stepz", "asynchrony.shards", "checkpoint.evry"])
def test_an_unknown_field_is_refused_with_its_name(path):
    config = default.get_config()
    section, leaf = path.split(".")
    config[section][leaf] = 1
    with pytest.raises(ValueError, match=f"config.{path} is an unknown field"):
        config_lib.validate(config)


def test_a_missing_field_is_refused_and_complete_fills_it():
    config = default.get_config()
    del config.train["param_dtype"]
    with pytest.raises(ValueError, match="config.train.param_dtype is missing"):
        config_lib.validate(config)
    completed = config_lib.complete(config)
    assert completed.train.param_dtype == "float32"
    assert completed.algorithm.to_dict() == config.algorithm.to_dict()
    config_lib.validate(completed)


def test_free_sections_take_any_field_the_algorithm_or_model_takes():
    config = easgd.get_config()
    config.model.name = "mlp"
    config.model.kwargs = ml_collections.ConfigDict({"hidden": (8,)})
    config_lib.validate(config)
    config.algorithm.momentum = 0.9  # easgd has no momentum: the registry says so
    with pytest.raises(ValueError, match="does not take momentum"):
        config_lib.validate(config)


@pytest.mark.parametrize("make, expected_round, expected_block", [
    (default.get_config, 50, 10),  # tau 10: 5 periods, eval_every 250, checkpoints 1000
    (lsgd.get_config, 40, 4),      # tau 4, eval_every 200: 10 periods
])
def test_the_default_round_is_several_whole_periods(make, expected_round, expected_block):
    config = make()
    assert config.train.steps_per_round == 0
    assert config_lib.steps_per_round(config) == expected_round
    assert config_lib.sampling_block(config) == expected_block
    assert config_lib.round_period(config) == config.algorithm.period


def test_the_default_round_divides_every_boundary():
    config = default.get_config()
    config.train.eval_every = 30
    config.train.num_steps = 90
    config.checkpoint.every = 0
    assert config_lib.steps_per_round(config) == 30
    config.checkpoint.every = 20  # gcd 10: one period
    assert config_lib.steps_per_round(config) == 10
    config.train.steps_per_round = 20  # explicit: itself, also the sampling block
    assert config_lib.steps_per_round(config) == config_lib.sampling_block(config) == 20


# ------------------------------------------- every field checked whatever the executor


@pytest.mark.parametrize("field, value, message", [
    ("schedule", "foo", "config.asynchrony.schedule must be one of"),
    ("num_shards", 0, "config.asynchrony.num_shards must be an integer >= 1"),
    ("on_worker_failure", "ignore", "config.asynchrony.on_worker_failure must be one of"),
    ("timeout_s", -5.0, "config.asynchrony.timeout_s must be a number in"),
    ("clock_jitter", 1.5, "config.asynchrony.clock_jitter must be a number in"),
])
def test_asynchrony_fields_are_checked_when_the_executor_is_sync(field, value, message):
    config = default.get_config()
    assert config.executor == "sync"
    config.asynchrony[field] = value
    with pytest.raises(ValueError, match=message):
        config_lib.validate(config)


def test_asynchrony_fields_set_under_sync_are_warned_about_in_one_warning():
    config = default.get_config()
    config.asynchrony.num_shards = 2
    config.asynchrony.timeout_s = 10.0
    with pytest.warns(UserWarning, match=r"config.asynchrony.num_shards, "
                      r"config.asynchrony.timeout_s set, and executor 'sync' ignores"):
        config_lib.validate(config)


def test_default_asynchrony_fields_under_sync_warn_nothing():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config_lib.validate(default.get_config())


@pytest.mark.parametrize("executor", ["sync", "simulated_async"])
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_a_non_finite_hyperparameter_is_refused(executor, value):
    config = default.get_config()
    config.executor = executor
    config.algorithm.learning_rate = value
    with pytest.raises(ValueError, match="config.algorithm.learning_rate must be a finite"):
        config_lib.validate(config)


def test_a_batch_larger_than_the_training_set_is_warned_about():
    import numpy as np

    from easgd_jax import data

    x, y = np.zeros((10, 3), np.float32), np.zeros(10, np.int32)
    with pytest.warns(UserWarning, match="a batch of 11 examples per worker is larger than "
                      "the training set \\(10 examples\\)"):
        data.WorkerSampler(x, y, 2, 11, seed=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data.WorkerSampler(x, y, 2, 10, seed=0)


# ------------------------------------------------------------------------------ the plan


def test_the_plan_is_the_configs_decisions_computed_once():
    from easgd_jax.training.plan import make_plan

    config = default.get_config()
    config.train.num_steps, config.train.eval_every, config.checkpoint.every = 100, 50, 40
    config.train.steps_per_round = 10
    plan = make_plan(config)
    assert (plan.round_steps, plan.round_period, plan.sampling_block) == (10, 10, 10)
    assert plan.hparams == config_lib.algorithm_hparams(config)
    assert [s for s in range(10, 101, 10) if plan.evaluates(s)] == [50, 100]
    assert [s for s in range(10, 101, 10) if plan.saves(s)] == [40, 80, 100]
    assert plan.models_exchanged_per_step == pytest.approx(1 / config.algorithm.period)
    config.algorithm.learning_rate = -1.0
    with pytest.raises(ValueError, match="config.algorithm"):
        make_plan(config)


def test_a_config_may_state_beta_instead_of_moving_rate():
    config = default.get_config()
    with config.unlocked():
        del config.algorithm["moving_rate"]
        config.algorithm.beta = 0.9
    config.num_workers = 8
    config_lib.validate(config)
    assert config_lib.algorithm_hparams(config)["moving_rate"] == pytest.approx(0.9 / 8)
    config.algorithm.beta = 1.9  # beta >= 2p / (p + 1): refused as moving_rate would be
    with pytest.raises(ValueError, match="diverges"):
        config_lib.validate(config)
