"""The simulated cluster's clock in whole runs: a synchronous run records its time, a
simulated asynchronous run takes its event times from the cluster, and a resumed run keeps
the step time it measured (the clock's arithmetic is tests/unit/test_cluster.py's)."""


import sys
from pathlib import Path

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from easgd_jax import models  # noqa: E402
from easgd_jax.algorithms import registry  # noqa: E402
from easgd_jax.configs import async_easgd  # noqa: E402
from easgd_jax.parallel import cluster  # noqa: E402
from easgd_jax.training import asynchronous, simulated_time, sync  # noqa: E402
from easgd_jax.training.metrics import read_metrics  # noqa: E402


def test_a_sync_run_records_the_clusters_time(tmp_path):
    config = helpers.tiny_cluster_config(tmp_path)
    sync.train_and_evaluate(config, str(tmp_path))
    records = read_metrics(str(tmp_path))
    spec = registry.get_spec("eamsgd")
    dataset_shape = (8, 8, 1)
    model = models.get_model("mlp", 10)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, *dataset_shape)))["params"]
    size = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    exchange = 4 * size + 2 * 4 * 4  # the center's difference and the 2 p checksums
    c = cluster.Cluster(2e-3, 10e9 / 8, 10e-6)
    for r in records:  # tau = 10: exchanges at t = 0 and 10
        n = -(-r["step"] // 10)
        assert r["simulated_time_s"] == pytest.approx(
            r["step"] * 2e-3 + n * c.ring_allreduce_s(exchange, 4))
        assert r["exchange_bytes_per_step"] == pytest.approx(exchange / 10)
    assert spec.topology == "ring" and registry.get_spec("downpour").topology == \
        "parameter_server"


def test_a_simulated_async_run_takes_its_times_from_the_cluster(tmp_path):
    config = helpers.tiny_cluster_config(
        tmp_path, **{"executor": "simulated_async", "asynchrony.schedule": "cluster",
                     "asynchrony.clock_spread": 0.5})
    config.algorithm = async_easgd.get_config().algorithm
    asynchronous.train_and_evaluate(config, str(tmp_path))
    records = read_metrics(str(tmp_path))
    model = models.get_model("mlp", 10)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))["params"]
    nbytes = simulated_time.async_exchange_bytes(config, registry.get_spec("easgd"), model,
                                                 params, (8, 8, 1))
    schedule = cluster.cluster_schedule(
        cluster.Cluster(2e-3, 10e9 / 8, 10e-6, "parameter_server"), 4, 80, 10, nbytes, 0, 0.5)
    assert [r["simulated_time_s"] for r in records] == pytest.approx(
        [schedule.times[39], schedule.times[79]])
    assert len(set(schedule.workers[:80].tolist())) == 4


@pytest.mark.parametrize("executor", ["sync", "simulated_async"])
def test_a_resumed_run_keeps_its_measured_step_time(tmp_path, monkeypatch, executor):
    """With a measured step time (cluster.compute_s_per_step = 0) a resumed run takes the one
    its checkpoint saved, not a new measurement: its simulated clock (and, for the cluster
    schedule, its worker order) goes on as if it had not stopped."""
    overrides = {"cluster.compute_s_per_step": 0.0, "checkpoint.every": 10}
    if executor != "sync":
        overrides.update({"executor": "simulated_async", "asynchrony.schedule": "cluster"})
    config = helpers.tiny_cluster_config(tmp_path, **overrides)
    if executor != "sync":
        config.algorithm = async_easgd.get_config().algorithm
    calls = []  # the first measurement says 2 ms a step, any later one 7 ms

    def measure(*args, **kwargs):
        calls.append(1)
        return 2e-3 if len(calls) == 1 else 7e-3

    monkeypatch.setattr(simulated_time, "_measure_step", measure)
    monkeypatch.setattr(simulated_time, "_CACHE", {})
    train = sync.train_and_evaluate if executor == "sync" else asynchronous.train_and_evaluate
    config.train.num_steps = 10
    train(config, str(tmp_path / "run"))
    simulated_time._CACHE.clear()  # a new process would measure again
    config.train.num_steps = 20
    train(config, str(tmp_path / "run"))
    first, second = (r["simulated_time_s"] for r in read_metrics(str(tmp_path / "run")))
    # Both halves at 2 ms a step: the second ends at about twice the first, not 2 + 7 ms.
    assert second == pytest.approx(2 * first, rel=0.2)
    assert len(calls) == 1  # measured once, never again on the resume
