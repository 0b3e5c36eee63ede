"""A language-model run end to end (the LM configs' setup, shrunk): every evaluation of the
synchronous and the asynchronous executors writes test_loss, optimal_loss and loss_gap
(nats per token) to metrics.jsonl and final_metrics.json."""

import json

import helpers
import pytest

from easgd_jax import data, training
from easgd_jax.training.metrics import read_metrics

TINY = {"data.kwargs.context": 16, "data.kwargs.train_tokens": 65_536,
        "data.kwargs.test_tokens": 2048, "data.kwargs.num_states": 32,
        "model.kwargs.width": 16, "model.kwargs.depth": 1, "model.kwargs.num_heads": 2,
        "train.num_steps": 40, "train.eval_every": 20, "train.batch_size": 8,
        "tensorboard": False, "cluster.compute_s_per_step": 1e-3}


@pytest.mark.slow
@pytest.mark.parametrize("name, executor", [("lm_data_parallel", "sync"),
                                            ("lm_eamsgd", "simulated_async")])
def test_every_lm_evaluation_reports_the_gap_to_the_optimum(tmp_path, name, executor):
    config = helpers.config_with(name, {**TINY, "executor": executor})
    if name == "lm_data_parallel":
        config.algorithm.update(warmup_steps=10, decay_steps=40)
    final = training.train_and_evaluate(config, str(tmp_path))
    optimum = data.load_dataset("synthetic_lm", **config.data.kwargs).optimal_test_loss
    records = read_metrics(str(tmp_path))
    saved = json.loads((tmp_path / "final_metrics.json").read_text())
    assert [r["step"] for r in records] == [20, 40]
    for record in (*records, final, saved):
        assert record["optimal_loss"] == pytest.approx(optimum, abs=1e-12)
        assert record["loss_gap"] == pytest.approx(record["test_loss"] - optimum, abs=1e-9)
        assert record["loss_gap"] > 0
    assert saved["loss_gap"] == pytest.approx(records[-1]["loss_gap"])
    assert records[-1]["test_loss"] < 5.0  # below the 256-way uniform, log 256 = 5.55
