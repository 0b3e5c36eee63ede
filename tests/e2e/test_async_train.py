"""``train_and_evaluate_async`` end to end on embedded data (scikit-learn's digits, which load
at once, and a small MLP; a few steps), its configs, and its config errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import load_config
from helpers import small_async_config as small

from easgd_jax import data, models
from easgd_jax.algorithms import adaptive, registry
from easgd_jax.training import asynchronous as async_train
from easgd_jax.training import config as validation
from easgd_jax.training import sync as train
from easgd_jax.training.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ASYNC_CONFIGS = ("async_easgd", "async_eamsgd", "async_downpour", "async_lsgd", "apam")


def check_run(workdir, final, config):
    records = read_metrics(str(workdir))
    assert [r["step"] for r in records] == [20, 40]
    for key in ("test_loss", "test_accuracy", "staleness_mean", "staleness_max",
                "steps_per_second"):
        assert np.isfinite(records[-1][key]), key
    assert final["test_accuracy"] == records[-1]["test_accuracy"]
    assert final["test_accuracy"] > 0.25  # 10 classes: far above chance after 120 steps
    for key in ("wall_time_s", "compile_time_s", "staleness_mean", "staleness_max",
                "exchanges", "train_loss"):
        assert np.isfinite(final[key]), key
    saved = json.loads((workdir / "final_metrics.json").read_text())
    assert saved["executor"] == config.executor
    return saved


@pytest.mark.slow
def test_simulated_async_eamsgd_on_clocks(tmp_path):
    config = small("async_eamsgd", schedule="clocks", clock_spread=2.0)
    final = async_train.train_and_evaluate(config, str(tmp_path))
    saved = check_run(tmp_path, final, config)
    steps = saved["worker_steps"]
    assert sum(steps) == 3 * 40 and len(set(steps)) > 1  # workers at different speeds
    # tau = 10 on each worker's own clock: ceil(t_i / 10) exchanges per worker.
    assert final["exchanges"] == sum(-(-s // 10) for s in steps)
    assert 0 < final["staleness_max"] <= final["exchanges"]


@pytest.mark.slow
def test_threads_apam_with_shards(tmp_path):
    config = small("apam", num_shards=3, timeout_s=300.0)
    config.executor = "threads"
    config.algorithm.learning_rate = 3e-3
    final = async_train.train_and_evaluate(config, str(tmp_path))
    saved = check_run(tmp_path, final, config)
    assert saved["worker_steps"] == [40, 40, 40]
    assert final["exchanges"] == 3 * 40  # every step pushes a gradient
    assert final["ledger_discrepancy"] <= 1e-3


@pytest.mark.slow
def test_evaluation_is_on_the_test_split(tmp_path):
    """With moving_rate = 0 the master's center stays the initial model: the reported test
    loss and accuracy are that model's on dataset.test_x/test_y, to the last digits (on the
    training split they differ in the third)."""
    config = small("async_eamsgd", schedule="round_robin")
    config.algorithm.moving_rate = 0.0
    config.train.num_steps = config.train.eval_every = 10
    final = async_train.train_and_evaluate(config, str(tmp_path))
    dataset = data.load_dataset("digits")
    model = models.get_model("mlp", dataset.num_classes, hidden=(32,))
    init_rng, _ = jax.random.split(jax.random.PRNGKey(config.seed))
    sample = jnp.zeros((1, *dataset.example_shape), jnp.float32)
    params = jax.jit(lambda rng: model.init(rng, sample, train=False))(init_rng)["params"]
    evaluate = train.make_evaluator(model)
    test_loss, test_accuracy = evaluate(params, dataset.test_x, dataset.test_y)
    train_loss, _ = evaluate(params, dataset.train_x, dataset.train_y)
    assert abs(test_loss - train_loss) > 1e-3  # the check below can tell the splits apart
    assert final["test_loss"] == pytest.approx(test_loss, rel=1e-6)
    assert final["test_accuracy"] == pytest.approx(test_accuracy, abs=1e-9)
    assert final["train_loss"] < test_loss  # while the workers, unpulled, did train


def test_async_eamsgd_config_takes_moving_rate_in_0_1():
    config = load_config("async_eamsgd")
    for bad in (1.5, -0.1):
        config.algorithm.moving_rate = bad
        with pytest.raises(ValueError, match=r"config.algorithm: moving_rate must be in"):
            async_train.validate(config)


def test_simulated_random_delay_downpour(tmp_path):
    config = small("async_downpour", schedule="random_delay", max_staleness=5)
    final = async_train.train_and_evaluate(config, str(tmp_path))
    check_run(tmp_path, final, config)
    assert final["staleness_max"] == 5 and final["exchanges"] == 120


@pytest.mark.parametrize("name", ASYNC_CONFIGS)
def test_async_configs_validate(name):
    config = load_config(name)
    rule = async_train.validate(config)
    assert config.executor == "simulated_async"
    assert rule.name == config.algorithm.name.replace("_nesterov", "")


def test_amsgrad_sync_config_builds_the_baseline():
    config = load_config("amsgrad_sync")
    assert config.executor == "sync"
    hparams = config.algorithm.to_dict()
    assert hparams.pop("name") == "amsgrad_sync"
    adaptive.amsgrad_sync(**hparams, axis_name="workers")
    assert "amsgrad_sync" in registry.algorithm_names()
    validation.validate(config)  # the sync loop's checks


@pytest.mark.parametrize("change, match", [
    ({"executor": "mpi"}, "config.executor"),
    ({"executor": "sync"}, "config.executor"),
    ({"algorithm.name": "mdownpour"}, "has none"),
    ({"asynchrony.schedule": "lottery"}, "schedule"),
    ({"asynchrony.num_shards": 2}, "num_shards applies to executor 'threads'"),
    ({"asynchrony.clock_jitter": 1.0}, "clock_jitter"),
    ({"asynchrony.max_staleness": -1}, "max_staleness"),
    ({"train.eval_every": 300}, "multiple"),
    ({"algorithm.moving_rate": 2.0}, "moving_rate"),
    ({"asynchrony.shards": 2}, "unknown field"),
])
def test_invalid_async_configs_raise(change, match):
    config = load_config("async_easgd")
    for path, value in change.items():
        node = config
        *parents, leaf = path.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    with pytest.raises(ValueError, match=match):
        async_train.validate(config)


def test_invalid_combinations_raise():
    config = load_config("async_easgd")
    config.asynchrony.schedule = "random_delay"
    with pytest.raises(ValueError, match="gradient-based"):
        async_train.validate(config)
    config = load_config("apam")
    config.executor = "threads"
    config.asynchrony.schedule = "random_delay"
    with pytest.raises(ValueError, match="simulated"):
        async_train.validate(config)
    config = load_config("async_lsgd")
    config.executor = "threads"
    config.asynchrony.num_shards = 2
    with pytest.raises(ValueError, match="not elementwise"):
        async_train.validate(config)
    config = load_config("async_downpour")
    config.executor = "threads"
    config.algorithm.name = "data_parallel_sgd"
    with pytest.raises(ValueError, match="has none"):
        async_train.validate(config)
