"""The threaded parameter server (easgd_jax/parallel/server.py) under stress, its shutdown and
error paths, and its equivalence with the simulated executor for one worker.

Every wait is bounded: ``run_threads`` takes a timeout and joins with one; the helper
threads of these tests are joined with a timeout and asserted dead.
"""

import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from easgd_jax.algorithms import adaptive, distbelief, elastic, leader, outer
from easgd_jax.parallel import schedules, server
from easgd_jax.parallel.executor import WorkerFailedError

KEY = jax.random.PRNGKey(0)


def server_threads_alive():
    return [t.name for t in threading.enumerate()
            if t.name.startswith("ps-worker-") and t.is_alive()]


def wait_for_server_threads(timeout=10.0):
    end = time.monotonic() + timeout
    for t in threading.enumerate():
        if t.name.startswith("ps-worker-"):
            t.join(max(0.0, end - time.monotonic()))
    assert not server_threads_alive()


# --- stress: no update lost ----------------------------------------------------------------

def test_stress_unit_pushes_no_lost_update_and_exact_staleness():
    """8 workers push acc = 1 to every coordinate (DOWNPOUR's exchange), 4 shards. With the
    center starting at 0 and the pushed x = 0, the reply to a shard is x~ after the push, so
    each worker learns the position of its exchange in the shard's order: positions must be
    a permutation (no two exchanges saw the same center) and the server's staleness must be
    the number of exchanges between the worker's consecutive positions."""
    p, exchanges, size, shards = 8, 500, 64, 4
    rule = distbelief.async_downpour(0.1, period=1)
    ps = server.ParameterServer(rule, jnp.zeros(size), p, num_shards=shards)
    positions = [[] for _ in range(p)]
    zeros, ones = np.zeros(size, np.float32), np.ones(size, np.float32)

    def work(index, stop):
        for _ in range(exchanges):
            if stop.is_set():
                return
            (reply,) = ps.exchange(index, (zeros, ones))
            positions[index].append([int(reply[lo]) - 1 for lo, _ in ps.bounds])

    server.run_threads(work, p, timeout_s=120)
    assert not server_threads_alive()
    report = ps.verify(atol=0.0)  # integer arithmetic: exact
    total = p * exchanges
    assert report.exchanges_applied == [total] * shards
    assert report.exchanges_sent == [exchanges] * p
    np.testing.assert_array_equal(ps.center_flat(), total)
    lost = total - int(ps.center_flat().min())
    print(f"stress: {p} workers, {shards} shards, {total} exchanges per shard, sent "
          f"{sum(report.exchanges_sent)}, applied {report.exchanges_applied}, lost {lost}, "
          f"staleness mean {np.mean(ps.staleness):.2f} max {report.staleness_max}")
    assert lost == 0 and report.max_discrepancy == 0.0
    pos = np.array(positions)  # [p, exchanges, shards]
    for s in range(shards):
        assert sorted(pos[:, :, s].ravel().tolist()) == list(range(total))
    stale = np.array(ps.staleness).reshape(p, exchanges, shards)
    previous = np.concatenate([np.full((p, 1, shards), -1), pos[:, :-1]], axis=1)
    np.testing.assert_array_equal(stale, pos - previous - 1)
    assert report.staleness_max == stale.max() and report.staleness_count == total * shards


def test_stress_elastic_exchanges_match_the_ledger():
    """Real EASGD exchanges with random worker points, 3 shards, 8 workers: the center equals
    its start plus every applied delta (float32 rounding only), and the workers' replies are
    exactly minus the center deltas (the symmetric elastic force)."""
    p, exchanges, size, alpha = 8, 150, 50, 0.1
    rule = elastic.async_easgd(0.1, alpha, period=1)
    start = np.linspace(-1, 1, size).astype(np.float32)
    ps = server.ParameterServer(rule, jnp.asarray(start), p, num_shards=3)
    replies = [np.zeros(size) for _ in range(p)]

    def work(index, stop):
        rng = np.random.default_rng(index)
        for _ in range(exchanges):
            if stop.is_set():
                return
            x = rng.normal(size=size).astype(np.float32)
            (reply,) = ps.exchange(index, (x,))
            replies[index] += reply

    server.run_threads(work, p, timeout_s=120)
    report = ps.verify(rtol_per_exchange=1e-6)
    assert report.max_discrepancy < 1e-4
    np.testing.assert_allclose(-np.sum(replies, axis=0), ps.ledger.sum(axis=0), atol=1e-4)
    # A single lost exchange would be far outside the tolerance.
    assert alpha * 0.1 > 1e-6 * p * exchanges * report.center_scale


def test_verify_detects_a_lost_update_and_a_miscount():
    rule = distbelief.async_downpour(0.1, period=1)
    ps = server.ParameterServer(rule, jnp.zeros(10), 2, num_shards=2)
    for w in range(2):
        ps.exchange(w, (np.zeros(10, np.float32), np.ones(10, np.float32)))
    ps.verify()
    ps.ledger[1, 3] += 1.0  # as if one more delta had been applied but the center missed it
    with pytest.raises(AssertionError, match="lost update"):
        ps.verify()
    ps.ledger[1, 3] -= 1.0
    ps.sent[0] += 1  # a worker sent an exchange that no shard applied
    with pytest.raises(AssertionError, match="exchanges applied"):
        ps.verify()


def test_a_restored_server_continues_every_clock_exactly():
    """Issue 28, item 10: :meth:`ParameterServer.load_state` restores the shards' clocks AND
    each worker's read clocks (a restore that skipped the read clocks measured the first
    exchanges after a resume as stale by every update since the start). The same exchanges
    after a state()/load_state() round trip give the same staleness, center and ledger as
    without it."""
    rule = distbelief.async_downpour(0.1, period=1)
    one = server.ParameterServer(rule, jnp.zeros(10), 3, num_shards=2)
    message = (np.zeros(10, np.float32), np.ones(10, np.float32))
    for w in (0, 1, 1, 2, 0, 1):
        one.exchange(w, message)
    arrays, meta = one.state()
    two = server.ParameterServer(rule, jnp.zeros(10), 3, num_shards=2)
    two.load_state(arrays, meta)
    for ps in (one, two):
        for w in (2, 0, 1):
            ps.exchange(w, message)
    assert two.staleness == one.staleness and two.staleness[2][-2:] == [2, 2]
    assert two.state()[1] == one.state()[1] and two.total == one.total
    np.testing.assert_array_equal(two.center_flat(), one.center_flat())
    np.testing.assert_array_equal(two.ledger, one.ledger)


def test_shards_and_their_errors():
    assert server.shard_bounds(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert server.shard_bounds(5, 1) == [(0, 5)]
    with pytest.raises(ValueError, match="num_shards"):
        server.shard_bounds(5, 6)
    lsgd = leader.async_lsgd_nesterov(0.1, 0.9, 0.1, 4, num_workers=2)
    with pytest.raises(ValueError, match="one shard"):
        server.ParameterServer(lsgd, jnp.zeros(4), 2, num_shards=2)


# --- shutdown and errors -------------------------------------------------------------------

def test_worker_exception_stops_the_run_and_is_raised_typed_with_its_index():
    progress = [0] * 4

    def work(index, stop):
        for step in range(100_000):
            if stop.is_set():
                return
            if index == 2 and step == 20:
                raise ValueError("worker blew up")
            progress[index] = step
            time.sleep(0.001)

    with pytest.raises(WorkerFailedError, match=r"worker 2 failed at its local step \? "
                                                r"\(ValueError: worker blew up\)") as info:
        server.run_threads(work, 4, timeout_s=60)
    assert info.value.worker == 2 and info.value.step is None
    assert isinstance(info.value.cause, ValueError) and info.value.__cause__ is info.value.cause
    assert not server_threads_alive()  # everyone stopped, joined
    assert max(progress) < 10_000  # the others did not run to the end


def test_worker_exception_in_training_is_reraised():
    rule = elastic.async_easgd(0.1, 0.1, period=2)

    def grad_fn(params, batch, key):
        return params, jnp.sum(params)

    def boom(worker, step):
        if worker == 1 and step == 7:
            raise RuntimeError("data loader failed")

    ps = server.ParameterServer(rule, jnp.ones(3), 3)
    with pytest.raises(WorkerFailedError, match="data loader failed") as info:
        server.train_threads(rule, grad_fn, jnp.ones(3), ps, 10_000,
                             lambda w, s, n: np.zeros(n), KEY, timeout_s=60, stop_when=boom)
    # The typed failure's fields: the worker, its local step, the cause, its progress.
    assert info.value.worker == 1 and info.value.step == 7
    assert isinstance(info.value.cause, RuntimeError)
    assert info.value.progress.steps == 7 and len(info.value.progress.losses) == 7
    assert not server_threads_alive()
    assert ps.total < 3 * 10_000


def test_timeout_stops_the_workers():
    def work(index, stop):
        while not stop.is_set():
            time.sleep(0.005)

    begin = time.monotonic()
    with pytest.raises(TimeoutError):
        server.run_threads(work, 3, timeout_s=0.3)
    assert time.monotonic() - begin < 10
    assert not server_threads_alive()


def test_a_thread_that_ignores_stop_is_reported():
    release = threading.Event()

    def work(index, stop):
        if index == 0:
            release.wait(60.0)  # ignores stop until the test releases it

    try:
        with pytest.raises(RuntimeError, match="still alive"):
            server.run_threads(work, 2, timeout_s=0.1, join_timeout_s=0.1)
    finally:
        release.set()
    wait_for_server_threads()


def test_poll_errors_stop_the_run():
    def work(index, stop):
        while not stop.is_set():
            time.sleep(0.005)

    def poll():
        raise KeyError("evaluation failed")

    with pytest.raises(KeyError, match="evaluation failed"):
        server.run_threads(work, 2, timeout_s=30, on_poll=poll)
    assert not server_threads_alive()


# --- threads == simulation for one worker; many workers train ------------------------------

X0 = {"a": np.array([0.5, -1.0], np.float32),
      "b": np.array([[0.3, -0.2, 0.9], [-0.7, 0.1, 0.4]], np.float32)}
STEPS = 12


def linear_problem(seed=0, steps=STEPS):
    rng = np.random.default_rng(seed)
    _, unravel = ravel_pytree(X0)
    noise = rng.normal(size=(steps, ravel_pytree(X0)[0].size)).astype(np.float32)

    def grad_fn(params, n, key):
        del key
        x = ravel_pytree(params)[0]
        return unravel(1.2 * x + n), 0.6 * jnp.sum(x * x) + jnp.sum(n * x)

    return grad_fn, noise


RULES = {
    # (EASGD = EAMSGD with delta = 0; its sharded exchange is the stress test's)
    "eamsgd": lambda: elastic.async_eamsgd(0.05, 0.9, 0.3, period=2),
    # (plain DOWNPOUR's exchange is the stress tests' and the simulation's)
    "downpour_adagrad": lambda: distbelief.async_downpour(0.1, period=2, server_adagrad=True,
                                                            adagrad_rate=0.05),
    "lsgd": lambda: leader.async_lsgd_nesterov(0.05, 0.9, 0.2, 2, num_workers=1),
    "apam": lambda: adaptive.apam(0.05, form="authors"),
    # (the only rule whose ``before`` changes the params: the inner step; issue 28 item 10)
    "diloco": lambda: outer.async_diloco(0.05, 0.5, 3, outer_learning_rate=0.7,
                                         outer_momentum=0.9),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RULES))
def test_one_worker_threads_equal_simulation(name):
    rule = RULES[name]()
    grad_fn, noise = linear_problem(1)
    sim = schedules.make_simulator(rule, grad_fn)
    state = schedules.init_sim_state(rule, X0, 1, KEY)
    state, _ = sim(state, np.zeros(STEPS, np.int32), jnp.asarray(noise))
    ps = server.ParameterServer(rule, X0, 1, num_shards=1 if name == "lsgd" else 2)
    run = server.train_threads(rule, grad_fn, X0, ps, STEPS, lambda w, s, n: noise[s:s + n],
                               KEY, timeout_s=120, chunk_steps=5)
    ps.verify(rtol_per_exchange=1e-6)
    np.testing.assert_allclose(ravel_pytree(run.workers[0].params)[0],
                               ravel_pytree(jax.tree.map(lambda a: a[0],
                                                         state.workers.params))[0],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ravel_pytree(ps.center())[0],
                               ravel_pytree(state.master.center)[0], rtol=1e-5, atol=1e-6)
    assert run.steps == [STEPS]


def test_many_workers_train_a_quadratic_with_sharded_apam():
    """p = 4 threads, 3 shards: exchanges counted per shard, the center descends, staleness
    is measured (at most the other workers' exchanges), every shard's moments count them."""
    p, steps, size = 4, 60, 30
    rng = np.random.default_rng(0)
    target = rng.normal(size=size).astype(np.float32)

    def grad_fn(params, batch, key):
        noise = 0.1 * jax.random.normal(key, params.shape)
        return params - target + noise, 0.5 * jnp.sum((params - target) ** 2)

    rule = adaptive.apam(0.05, form="authors")
    ps = server.ParameterServer(rule, jnp.zeros(size), p, num_shards=3)
    run = server.train_threads(rule, grad_fn, jnp.zeros(size), ps, steps,
                               lambda w, s, n: np.zeros(n), KEY, timeout_s=120)
    report = ps.verify(rtol_per_exchange=1e-6)
    assert report.exchanges_sent == [steps] * p  # every step pushes its gradient
    assert report.exchanges_applied == [steps * p] * 3
    assert run.steps == [steps] * p and ps.total == p * steps
    assert np.linalg.norm(ps.center_flat() - target) < 0.7 * np.linalg.norm(target)
    assert 0 <= report.staleness_max <= (p - 1) * steps
    assert report.staleness_count == 3 * p * steps
    for shard in ps.master_shards():
        assert int(shard.moments.count) == steps * p
