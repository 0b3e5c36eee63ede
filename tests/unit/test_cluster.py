"""The simulated cluster clock (parallel/cluster.py, training/simulated_time.py): its formulas
on hand-computed numbers, the bytes it reads from the lowered program against the compiled
HLO of the same algorithm on 4 devices, and the times a run records."""

from __future__ import annotations

import sys
from pathlib import Path

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import hlo  # noqa: E402
from easgd_jax import models, parallel  # noqa: E402
from easgd_jax.algorithms import registry  # noqa: E402
from easgd_jax.configs import default  # noqa: E402
from easgd_jax.parallel import cluster  # noqa: E402
from easgd_jax.training import simulated_time  # noqa: E402

P = 1027  # parameters of the quadratic-sized vector below


def test_ring_and_parameter_server_times_by_hand():
    c = cluster.Cluster(compute_s=0.01, bandwidth_bytes_per_s=1e6, latency_s=1e-3)
    # Ring, p = 4, 4000 bytes: 2 (p - 1) messages of 1000 bytes: 6 (1e-3 + 1e-3).
    assert c.ring_allreduce_s(4000, 4) == pytest.approx(0.012)
    assert c.ring_allreduce_s(4000, 1) == 0.0
    assert c.exchange_s(4000, 4) == pytest.approx(0.012)
    ps = cluster.Cluster(0.01, 1e6, 1e-3, topology="parameter_server")
    # One worker: push and pull of 4000 bytes, 2 (1e-3 + 4e-3); p = 4 wait in line: 4x.
    assert ps.server_exchange_s(4000) == pytest.approx(0.010)
    assert ps.exchange_s(4000, 4) == pytest.approx(0.040)


@pytest.mark.parametrize("steps, period, where, fragments, expected", [
    (10, 4, "first", 1, 3),  # t = 0, 4, 8
    (10, 4, "last", 1, 2),  # t = 3, 7
    (8, 4, "last", 1, 2),  # t = 3, 7
    (10, 4, "first", 2, 5),  # every 2 steps: t = 0, 2, 4, 6, 8
    (10, None, "first", 1, 10),  # no period: every step
])
def test_exchange_steps(steps, period, where, fragments, expected):
    assert cluster.exchange_steps(steps, period, where, fragments) == expected


def test_sync_time_adds_compute_and_exchanges():
    c = cluster.Cluster(compute_s=0.01, bandwidth_bytes_per_s=1e6, latency_s=1e-3)
    # 10 steps, tau = 4, exchanges at t = 0, 4, 8 of 4000 bytes (0.012 s each), local
    # steps exchange 40 bytes (LSGD-like): 7 x 6 (1e-3 + 1e-5).
    expected = 10 * 0.01 + 3 * 0.012 + 7 * 6 * (1e-3 + 10 / 1e6)
    assert cluster.sync_time_s(c, 10, 4, 4, 4000, 40) == pytest.approx(expected)


def test_cluster_schedule_queues_the_exchanges_on_the_servers_link():
    # compute 1 s, T_ps = 2 (0 + 0.25 / 1) = 0.5 s; exchange at local steps 0, 2, 4, ...
    c = cluster.Cluster(compute_s=1.0, bandwidth_bytes_per_s=1.0, latency_s=0.0)
    s = cluster.cluster_schedule(c, num_workers=2, num_ticks=6, period=2, exchange_bytes=0.25,
                                 seed=0, spread=0.0)
    # Both computes end at 1.0; worker 0 holds the link 1.0-1.5, worker 1 waits: 1.5-2.0.
    # Local steps end at 2.5 and 3.0; the next exchanges: computes end at 3.5 and 4.0, no
    # wait: 4.0 and 4.5.
    assert s.workers.tolist() == [0, 1, 0, 1, 0, 1]
    np.testing.assert_allclose(s.times, [1.5, 2.0, 2.5, 3.0, 4.0, 4.5])
    last = cluster.cluster_schedule(c, 2, 2, 2, 0.25, 0, 0.0, exchange_step="last")
    np.testing.assert_allclose(last.times, [1.0, 1.0])  # step 0 of a "last" rule is local


def _quadratic_tx_bytes(name: str, **hparams) -> tuple[int, int]:
    """(lowered bytes of one exchange step on 4 abstract devices, compiled bytes per period
    on 4 simulated devices) of ``name`` on a P-vector."""
    params = {"w": jnp.zeros((P,), jnp.float32)}
    period = hparams["period"]

    def step_with(tx):
        import optax

        def step(carry, batch, communicate=None):
            p, s = carry
            u, s = tx.update(jax.tree.map(lambda a: a * batch, p), s, p,
                             communicate=communicate)
            return (optax.apply_updates(p, u), s), ()
        return step

    tx = registry.get_algorithm(name, axis_name="cw", **hparams)
    lowered = cluster.lowered_step_bytes(step_with(tx), (params, tx.init(params)),
                                         jnp.float32(1.0), (4,), ("cw",), True)
    layout = parallel.make_worker_layout(4, 4)
    tx = registry.get_algorithm(name, axis_name=layout.axis_name, **hparams)
    stacked = jax.tree.map(lambda a: jnp.broadcast_to(a, (4, *a.shape)), params)
    round_fn = parallel.make_round(step_with(tx), layout, donate=False, period=period,
                                   exchange_step=registry.get_spec(name).exchange_step)
    text = hlo.compiled_text(round_fn, (stacked, jax.vmap(tx.init)(stacked)),
                             jnp.ones((4, period), jnp.float32))
    compiled = sum(c.bytes * (c.trip_count or 1) for c in hlo.parse_collectives(text))
    return lowered, compiled


DILOCO = dict(learning_rate=0.1, momentum=0.9, outer_learning_rate=0.7, outer_momentum=0.9,
              period=4)


@pytest.mark.parametrize("name, hparams, expected, widened", [
    ("easgd", dict(learning_rate=0.1, moving_rate=0.2, period=4), 4 * P + 2 * 4 * 4, 1),
    ("diloco", DILOCO, 4 * P + 2 * 4 * 4, 1),
    # bfloat16 on the wire, the 2 p float32 checksums as 8 p exact bfloat16 words; XLA:CPU
    # widens a bfloat16 all-reduce to float32 when it compiles it (tests/unit/test_exchange.py).
    ("diloco", {**DILOCO, "exchange_dtype": "bfloat16"}, 2 * P + 2 * 8 * 4, 2),
])
def test_lowered_exchange_bytes_equal_the_compiled_programs(name, hparams, expected, widened):
    lowered, compiled = _quadratic_tx_bytes(name, **hparams)
    assert lowered == expected
    assert compiled == widened * lowered  # one exchange per period in the compiled round


def test_fragments_and_model_bytes_scale_the_exchange():
    """F fragments: one of F branches runs per exchange (a 1 / F of the bytes, plus the
    checksums); ``cluster.model_bytes``: the lowered bytes scaled to another model's size."""
    model = models.get_model("mlp", 10)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))["params"]
    size = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    spec = registry.get_spec("diloco")

    def bytes_of(**overrides):
        config = helpers.tiny_cluster_config(None, **overrides)
        config.algorithm = default.tuned.algorithm("diloco", 4)
        config.algorithm.period = 8
        for key, value in overrides.items():
            if key.startswith("algorithm."):
                config.algorithm[key.split(".")[1]] = value
        return simulated_time.exchange_bytes(config, spec, model, params, (8, 8, 1))

    checks = 2 * 4 * 4
    assert bytes_of() == (4 * size + checks, 0.0)
    fragment, _ = bytes_of(**{"algorithm.num_fragments": 4})
    assert abs(fragment - checks - size) <= 4  # a quarter of the parameters' 4 size bytes
    doubled, _ = bytes_of(**{"cluster.model_bytes": 2 * 4 * size})
    assert doubled == pytest.approx(2 * (4 * size + checks))


def test_the_step_is_measured_once_per_model_data_batch_and_dtype(monkeypatch):
    """``compute_seconds`` measures again only when what a step costs can change (the model,
    the data, the batch, the weight decay, the dtype), not for another run length, evaluation
    interval or learning rate: tests, sweeps and resumes in one process measure once."""
    calls = []

    def measure(model, params, example_shape, batch_size, weight_decay):
        calls.append(batch_size)
        return 1e-3 * len(calls)

    monkeypatch.setattr(simulated_time, "_measure_step", measure)
    monkeypatch.setattr(simulated_time, "_CACHE", {})
    config = default.get_config()
    config.cluster.compute_s_per_step = 0.0

    def seconds(**changes):
        c = config.copy_and_resolve_references()
        for name, value in changes.items():
            section, field = name.split("__")
            c[section][field] = value
        return simulated_time.compute_seconds(c, None, None, (40,))

    first = seconds()
    assert seconds(train__num_steps=7, train__eval_every=7, algorithm__learning_rate=0.5) \
        == first
    assert len(calls) == 1
    for i, change in enumerate([{"train__batch_size": 16}, {"train__weight_decay": 0.0},
                                {"train__param_dtype": "float64"}, {"model__name": "mlp"}],
                               start=2):
        assert seconds(**change) == pytest.approx(1e-3 * i)
        assert len(calls) == i


def test_the_fast_tier_inside_a_worker_counts_fsdp_gathers_and_the_data_all_reduce():
    """b = 8 MB of params, 100 GB/s, 2 us: FSDP over 4 devices moves 3 x 3 ring messages of
    b / 4 per step (all-gathers for the forward and backward pass, a reduce-scatter), the
    data all-reduce over 2 devices 2 x 1 messages of b / 8; nothing on one device."""
    b, bw, lat = 8e6, 1e11, 2e-6
    assert parallel.cluster.intra_worker_step_s(b, 1, 1, bw, lat) == 0.0
    assert parallel.cluster.intra_worker_step_s(b, 1, 4, bw, lat) == pytest.approx(
        9 * (lat + 2e6 / bw))
    assert parallel.cluster.intra_worker_step_s(b, 2, 4, bw, lat) == pytest.approx(
        9 * (lat + 2e6 / bw) + 2 * (lat + 1e6 / bw))
    assert parallel.cluster.intra_worker_step_s(b, 2, 1, bw, lat) == pytest.approx(
        2 * (lat + 4e6 / bw))
