"""The Ray executor (easgd_jax/parallel/ray_server.py): asynchronous EASGD on Ray actors, no
lost update, exchange counts, clean shutdown and worker errors. Ray is a test dependency
(``pip install -e ".[test]"``): without it these tests fail, they do not skip."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import ray

from easgd_jax.algorithms import elastic
from easgd_jax.parallel import ray_server
from easgd_jax.parallel.executor import WorkerFailedError

P, STEPS, SIZE = 3, 40, 16


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": ray_server.ACTOR_ENV})
    yield
    ray.shutdown()
    assert not ray.is_initialized()


def _alive_actors() -> list:
    from ray._private import state  # the GCS's actor table (no dashboard needed)

    return [a for a in state.actors().values() if a["State"] != "DEAD"]


def _quadratic_problem():
    """f_w(x) = |x - c_w|^2 / 2 with a worker-specific target c_w (the batch)."""

    def grad_fn(params, batch, key):
        del key
        diff = params - batch
        return diff, 0.5 * jnp.sum(diff**2)

    def batch_fn(worker, start, steps):
        del start
        return np.full((steps, SIZE), float(worker + 1), np.float32)

    return grad_fn, batch_fn


def _run(**kwargs):
    grad_fn, batch_fn = _quadratic_problem()
    rule = elastic.async_easgd(0.05, moving_rate=0.9 / P, period=4)
    return ray_server.train_ray(rule, grad_fn, jnp.zeros(SIZE), P, STEPS, batch_fn,
                                jax.random.PRNGKey(0), chunk_steps=16, timeout_s=120, **kwargs)


@pytest.mark.slow
def test_easgd_on_ray_loses_no_update_and_shuts_down(ray_cluster):
    polls = []
    run = _run(num_shards=2, on_poll=lambda remote: polls.append(remote.total))
    assert run.steps == [STEPS] * P
    # tau = 4: steps 0, 4, ..., 36 exchange, as the workers counted.
    assert run.worker_exchanges == [STEPS // 4] * P
    assert run.report.exchanges_sent == run.worker_exchanges
    assert run.report.exchanges_applied == [sum(run.worker_exchanges)] * 2
    np.testing.assert_allclose(run.center_flat, run.start_flat + run.ledger.sum(axis=0),
                               rtol=0, atol=1e-5)
    assert run.report.staleness_count == sum(run.worker_exchanges) * 2
    # The center moved toward the targets 1..P, and the driver polled while workers ran.
    assert 0.0 < float(np.mean(run.center_flat)) < P
    assert polls and max(polls) <= P * STEPS
    assert not _alive_actors()


@pytest.mark.slow
def test_a_worker_exception_surfaces_in_the_driver_with_its_index(ray_cluster):
    def stop_when(worker, step):
        if worker == 1 and step == 5:
            raise ValueError("worker boom")

    with pytest.raises(WorkerFailedError, match="worker boom") as info:
        _run(stop_when=stop_when)
    # The typed failure crossed the actor boundary with its fields.
    assert info.value.worker == 1 and info.value.step == 5
    assert isinstance(info.value.cause, ValueError)
    assert info.value.progress is not None and info.value.progress.steps == 5
    assert not _alive_actors()


def test_missing_ray_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("no ray")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"easgd-jax\[ray\]"):
        ray_server.import_ray()
