"""Seeded simulated asynchrony (easgd_jax/parallel/schedules.py) and the asynchronous rules.

Against hand-written numpy references: the round-robin EASGD map on a noise-free 1-D
quadratic (also the analysis package's cycle matrix), per-worker clocks applied in event
order, bounded random staleness; and with one worker every asynchronous rule equals its
synchronous optax transformation under ``jax.vmap`` (p = 1).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax
from jax.flatten_util import ravel_pytree

from easgd_jax.algorithms import distbelief, elastic, leader, registry
from easgd_jax.parallel import schedules

KEY = jax.random.PRNGKey(0)


def quadratic(h):
    """f = h x^2 / 2 (elementwise sum), noise-free gradient h x."""
    def grad_fn(params, batch, key):
        del batch, key
        return jax.tree.map(lambda x: h * x, params), 0.5 * h * jnp.sum(params ** 2)

    return grad_fn


def simulate(rule, grad_fn, params, schedule, batches=None, key=KEY):
    run = schedules.make_simulator(rule, grad_fn)
    state = schedules.init_sim_state(rule, params, schedule.num_workers, key)
    if batches is None:
        batches = jnp.zeros((len(schedule),))
    return run(state, schedule.workers, batches)


def easgd_event(state, worker, eta, h, alpha, communicate=True):
    """The active worker's step on s = (x_1..x_p, x~), both right-hand sides OLD values."""
    p = len(state) - 1
    x, c = state[worker], state[p]
    out = state.copy()
    if communicate:
        out[worker] = (1 - eta * h - alpha) * x + alpha * c
        out[p] = alpha * x + (1 - alpha) * c
    else:
        out[worker] = (1 - eta * h) * x
    return out


# --- round robin ---------------------------------------------------------------------------

def test_round_robin_schedule():
    s = schedules.round_robin(3, 8)
    np.testing.assert_array_equal(s.workers, [0, 1, 2, 0, 1, 2, 0, 1])
    np.testing.assert_array_equal(s.local_steps(), [0, 0, 0, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(s.counts(), [3, 3, 2])


def test_round_robin_easgd_equals_hand_iterated_map(p=4):
    eta, h, alpha, cycles = 0.1, 1.0, 0.3, 6
    rule = elastic.async_easgd(eta, alpha, period=1)
    x0 = jnp.array([1.0])
    state, info = simulate(rule, quadratic(h), x0, schedules.round_robin(p, cycles * p))
    s = np.ones(p + 1)
    for _ in range(cycles):
        for worker in range(p):  # one cycle = workers 1..p in order
            s = easgd_event(s, worker, eta, h, alpha)
    got = np.append(np.asarray(state.workers.params[:, 0]), np.asarray(state.master.center))
    np.testing.assert_allclose(got, s, rtol=1e-5)
    assert not np.allclose(s, 1.0)  # the map did move the state
    # Every step exchanges; after the first cycle each exchange saw p - 1 others.
    np.testing.assert_array_equal(np.asarray(info.staleness)[p:], p - 1)
    np.testing.assert_array_equal(np.asarray(info.staleness)[:p], np.arange(p))


def test_a_vmapped_grid_of_rates_equals_the_hand_iterated_map_at_each(p=3):
    """Asynchronous EASGD built inside ``jax.vmap`` over its moving rate (a grid in one
    program, as the analysis's Monte-Carlo runs do): each row equals the hand-iterated
    map at its own alpha (a rate turned into a Python float at build time cannot be traced).
    EAMSGD likewise over its momentum: delta = 0 is EASGD."""
    eta, h, cycles, alphas = 0.1, 1.0, 4, np.array([0.1, 0.3, 0.5])
    x0, sched = jnp.array([1.0]), schedules.round_robin(p, cycles * p)

    def centers(make, values):
        def one(value):
            state, _ = simulate(make(value), quadratic(h), x0, sched)
            return jnp.append(state.workers.params[:, 0], state.master.center)
        return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(values, jnp.float32)))

    got = centers(lambda a: elastic.async_easgd(eta, a, period=1), alphas)
    for row, alpha in zip(got, alphas, strict=True):
        s = np.ones(p + 1)
        for _ in range(cycles):
            for worker in range(p):
                s = easgd_event(s, worker, eta, h, alpha)
        np.testing.assert_allclose(row, s, rtol=1e-5)
    deltas = centers(lambda d: elastic.async_eamsgd(eta, d, 0.3, period=1), [0.0, 0.5])
    np.testing.assert_allclose(deltas[0], got[1], rtol=1e-6)  # delta = 0: EASGD, alpha 0.3
    assert np.abs(deltas[1] - deltas[0]).max() > 1e-3  # the traced momentum acts


def test_round_robin_easgd_equals_analysis_cycle_matrix():
    from analysis import roundrobin  # the repository's analysis package: must import

    p, eta, h, alpha, cycles = 3, 0.05, 1.0, 0.2, 5
    rule = elastic.async_easgd(eta, alpha, period=1)
    start = np.array([1.0, -0.5, 2.0, 0.7])  # (x_1, x_2, x_3, x~): distinct workers
    # Workers start where the analysis state says: put them in via a 1-element pytree per
    # worker by running the cycle on a state built by hand.
    run = schedules.make_simulator(rule, quadratic(h))
    state = schedules.init_sim_state(rule, jnp.zeros(1), p, KEY)
    state = state._replace(
        workers=state.workers._replace(params=jnp.asarray(start[:p, None], jnp.float32)),
        master=state.master._replace(center=jnp.asarray(start[p:], jnp.float32)))
    sched = schedules.round_robin(p, cycles * p)
    state, _ = run(state, sched.workers, jnp.zeros(len(sched)))
    cycle = roundrobin.easgd_cycle_map(p, eta, h, alpha)
    expected = np.linalg.matrix_power(cycle, cycles) @ start
    got = np.append(np.asarray(state.workers.params[:, 0]), np.asarray(state.master.center))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


# --- per-worker clocks ---------------------------------------------------------------------

def test_clock_schedule_orders_events_by_time():
    sched = schedules.worker_clocks(4, 400, seed=3, spread=2.0)
    assert np.all(np.diff(sched.times) >= 0)
    durations, phases = schedules.clock_speeds(4, 3, 2.0)
    counts = sched.counts()
    # Worker i's k-th step ends at phi_i + (k + 1) d_i: counts follow the speeds.
    horizon = sched.times[-1]
    np.testing.assert_allclose(counts, np.floor((horizon - phases) / durations), atol=1)
    assert counts[np.argmin(durations)] > counts[np.argmax(durations)]
    for w in range(4):  # each worker's events, in order, are its own clock
        own = sched.times[sched.workers == w]
        np.testing.assert_allclose(own, phases[w] + durations[w] * np.arange(1, len(own) + 1))


def test_clock_schedule_without_spread_is_a_fixed_cycle():
    sched = schedules.worker_clocks(3, 30, seed=1, spread=0.0)
    assert np.ptp(sched.counts()) <= 1
    np.testing.assert_array_equal(sched.workers[3:], sched.workers[:-3])


def test_clock_schedule_seeds():
    a = schedules.worker_clocks(4, 200, seed=5, spread=1.0, jitter=0.3)
    b = schedules.worker_clocks(4, 200, seed=5, spread=1.0, jitter=0.3)
    c = schedules.worker_clocks(4, 200, seed=6, spread=1.0, jitter=0.3)
    np.testing.assert_array_equal(a.workers, b.workers)
    np.testing.assert_array_equal(a.times, b.times)
    assert not np.array_equal(a.workers, c.workers)


def test_clock_speeds_follow_the_seed():
    """Without jitter the schedule is the speeds' (and phases') alone: another seed, other
    speeds, another schedule (the jitter stream is not involved)."""
    durations, phases = schedules.clock_speeds(4, 5, 1.0)
    other_durations, other_phases = schedules.clock_speeds(4, 6, 1.0)
    assert not np.allclose(durations, other_durations)
    assert not np.allclose(phases, other_phases)
    a = schedules.worker_clocks(4, 200, seed=5, spread=1.0)
    b = schedules.worker_clocks(4, 200, seed=6, spread=1.0)
    assert not np.array_equal(a.times, b.times)
    assert not np.array_equal(a.counts(), b.counts())


def _jitter_draws(seed, jitter=0.5, p=3):
    """Each worker's per-step noise u in [-1, 1], read off its event times: step k of worker
    w lasts d_w (1 + jitter u_k), d_w and the phase from :func:`schedules.clock_speeds`."""
    sched = schedules.worker_clocks(p, 300, seed=seed, spread=1.0, jitter=jitter)
    durations, phases = schedules.clock_speeds(p, seed, 1.0)
    draws = []
    for w in range(p):
        ends = np.concatenate([[phases[w]], sched.times[sched.workers == w]])
        draws.append((np.diff(ends) / durations[w] - 1.0) / jitter)
    return draws


def test_clock_jitter_follows_the_seed():
    """The jitter stream alone: the noise relative to each worker's own speed differs
    between seeds (the speeds' stream changes too, and is divided out here)."""
    first, again, other = _jitter_draws(5), _jitter_draws(5), _jitter_draws(6)
    for w in range(3):
        assert np.all(np.abs(first[w]) <= 1 + 1e-9) and np.std(first[w]) > 0.3
        np.testing.assert_array_equal(first[w], again[w])
        n = min(len(first[w]), len(other[w]))
        assert not np.allclose(first[w][:n], other[w][:n], atol=1e-6), w


@pytest.mark.parametrize("period", [1, 3])
def test_clock_schedule_easgd_equals_hand_loop_in_event_order(period):
    """The master applies exchanges one worker at a time, in arrival order; worker i
    exchanges when tau divides its own clock t_i."""
    p, eta, h, alpha = 3, 0.1, 1.0, 0.25
    sched = schedules.worker_clocks(p, 40, seed=2, spread=1.5)
    rule = elastic.async_easgd(eta, alpha, period)
    state, info = simulate(rule, quadratic(h), jnp.array([1.0]), sched)
    s, clocks = np.ones(p + 1), np.zeros(p, int)
    for w in sched.workers:
        s = easgd_event(s, w, eta, h, alpha, communicate=clocks[w] % period == 0)
        clocks[w] += 1
    got = np.append(np.asarray(state.workers.params[:, 0]), np.asarray(state.master.center))
    np.testing.assert_allclose(got, s, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(state.workers.count), clocks)
    np.testing.assert_array_equal(np.asarray(info.communicated),
                                  sched.local_steps() % period == 0)


def test_simulation_same_seed_same_bits_different_seed_differs():
    rule = elastic.async_eamsgd(0.05, 0.9, 0.2, period=2)
    x0 = {"a": jnp.array([1.0, -2.0]), "b": jnp.array([[0.5], [3.0]])}

    def noisy(params, batch, key):
        grad = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(key, x.shape), params)
        return grad, jnp.zeros([])

    simulator = schedules.make_simulator(rule, noisy)  # compiled once, for every seed

    def run(seed):
        sched = schedules.worker_clocks(3, 60, seed=seed, spread=1.0)
        state = schedules.init_sim_state(rule, x0, 3, jax.random.PRNGKey(seed))
        state, _ = simulator(state, sched.workers, jnp.zeros(len(sched)))
        return np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(state)])

    first, again, other = run(0), run(0), run(1)
    assert first.tobytes() == again.tobytes()
    assert not np.array_equal(first, other)


# --- bounded random staleness --------------------------------------------------------------

def test_random_delays_are_bounded_and_seeded():
    d = schedules.random_delays(500, 4, seed=0)
    assert d.max() <= 4 and d.min() >= 0
    assert np.all(d <= np.arange(500))  # never older than the run
    assert set(np.unique(d[10:])) == {0, 1, 2, 3, 4}  # the whole range is drawn
    np.testing.assert_array_equal(d, schedules.random_delays(500, 4, seed=0))
    assert not np.array_equal(d, schedules.random_delays(500, 4, seed=1))
    np.testing.assert_array_equal(schedules.random_delays(50, 0, seed=0), 0)


@pytest.mark.parametrize("max_staleness", [0, 3])
def test_delay_simulator_takes_gradients_at_stale_iterates(max_staleness):
    """Asynchronous SGD (DOWNPOUR, tau = 1) on f = h x^2 / 2 with delays s_t:
    x_{t+1} = x_t - eta h x_{t - s_t}, the staleness measured equals s_t <= D."""
    eta, h, ticks = 0.3, 1.0, 40
    rule = distbelief.async_downpour(eta, period=1)
    delays = schedules.random_delays(ticks, max_staleness, seed=7)
    run = schedules.make_delay_simulator(rule, quadratic(h))
    state = schedules.init_delay_state(rule, jnp.array([1.0]), max_staleness, KEY)
    zeros = np.zeros(ticks, np.int32)
    state, info = run(state, delays, zeros, np.arange(ticks), jnp.zeros(ticks))
    xs = [1.0]
    for t in range(ticks):
        xs.append(xs[t] - eta * h * xs[t - delays[t]])
    np.testing.assert_allclose(float(state.master.center[0]), xs[-1], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(info.staleness), delays)
    assert np.asarray(info.staleness).max() <= max_staleness
    if max_staleness:
        assert delays.max() == max_staleness  # stale gradients did happen


def test_delay_simulator_rejects_stateful_workers():
    with pytest.raises(ValueError, match="gradient-based"):
        schedules.make_delay_simulator(elastic.async_easgd(0.1, 0.1, 1), quadratic(1.0))
    with pytest.raises(ValueError, match="gradient-based"):
        schedules.make_delay_simulator(distbelief.async_downpour(0.1, period=2), quadratic(1.0))


# --- one worker: asynchronous == synchronous -------------------------------------------------

X0 = {"a": np.array([0.5, -1.0], np.float32),
      "b": np.array([[0.3, -0.2, 0.9], [-0.7, 0.1, 0.4]], np.float32)}
STEPS = 12


def noise_problem(seed=0):
    """g(x) = c x + n_t with per-step noise n_t shaped like the params; loss likewise."""
    rng = np.random.default_rng(seed)
    flat, unravel = ravel_pytree(X0)
    noise = rng.normal(size=(STEPS, flat.size)).astype(np.float32)
    c = 1.3

    def grad_loss(params, n):
        x, _ = ravel_pytree(params)
        return unravel(c * x + n), 0.5 * c * jnp.sum(x * x) + jnp.sum(n * x)

    return grad_loss, noise


def run_sync(tx, grad_loss, noise, extra_loss=False):
    """One worker under jax.vmap(axis_name="workers"), T steps of tx."""
    def step(carry, n):
        params, state = carry
        grads, loss = grad_loss(params, n)
        kwargs = {"loss": loss} if extra_loss else {}
        updates, state = tx.update(grads, state, params, **kwargs)
        return (optax.apply_updates(params, updates), state), None

    def worker(x0, noise):
        return lax.scan(step, (x0, tx.init(x0)), noise)[0]

    stacked = jax.tree.map(lambda a: jnp.asarray(a)[None], X0)
    params, state = jax.jit(jax.vmap(worker, axis_name="workers"))(stacked, noise[None])
    return jax.tree.map(lambda a: a[0], (params, state))


def run_async(rule, grad_loss, noise):
    def grad_fn(params, n, key):
        del key
        return grad_loss(params, n)

    state, _ = simulate(rule, grad_fn, X0, schedules.round_robin(1, STEPS), jnp.asarray(noise))
    return jax.tree.map(lambda a: a[0], state.workers), state.master


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def test_one_worker_async_easgd_equals_sync(period=4):
    grad_loss, noise = noise_problem(1)
    params, state = run_sync(elastic.easgd(0.1, 0.3, period), grad_loss, noise)
    worker, master = run_async(elastic.async_easgd(0.1, 0.3, period), grad_loss, noise)
    assert_trees_close(worker.params, params)
    assert_trees_close(master.center, state.center)
    assert int(worker.count) == STEPS


def test_one_worker_async_eamsgd_equals_sync(period=3):
    grad_loss, noise = noise_problem(2)
    params, state = run_sync(elastic.eamsgd(0.05, 0.9, 0.3, period), grad_loss, noise)
    rule = elastic.async_eamsgd(0.05, 0.9, 0.3, period)
    worker, master = run_async(rule, grad_loss, noise)
    # Synchronous EAMSGD's params are the look-ahead point x + delta v.
    assert_trees_close(rule.gradient_point(worker), params)
    assert_trees_close(master.center, state.center)


def test_one_worker_async_downpour_equals_sync(period=3):
    grad_loss, noise = noise_problem(3)
    params, state = run_sync(distbelief.downpour(0.1, period), grad_loss, noise)
    worker, master = run_async(distbelief.async_downpour(0.1, period), grad_loss, noise)
    assert_trees_close(worker.params, params)
    assert_trees_close(master.center, state.center)
    assert_trees_close(worker.extra, state.accumulator)


def test_one_worker_async_downpour_with_server_adagrad_equals_sync():
    grad_loss, noise = noise_problem(5)
    kwargs = {"server_adagrad": True, "adagrad_rate": 0.05, "adagrad_eps": 1e-6}
    params, state = run_sync(distbelief.downpour(0.1, 2, **kwargs), grad_loss, noise)
    worker, master = run_async(distbelief.async_downpour(0.1, 2, **kwargs), grad_loss, noise)
    assert_trees_close(worker.params, params)
    assert_trees_close(master.center, state.center)
    assert_trees_close(master.adagrad_sum, state.adagrad_sum)


def test_one_worker_async_lsgd_equals_sync():
    grad_loss, noise = noise_problem(4)
    tx = leader.lsgd_nesterov(0.05, 0.9, pull=0.2, period=3, loss_window=4)
    params, state = run_sync(tx, grad_loss, noise, extra_loss=True)
    rule = leader.async_lsgd_nesterov(0.05, 0.9, pull=0.2, period=3, num_workers=1,
                                   loss_window=4)
    worker, master = run_async(rule, grad_loss, noise)
    assert_trees_close(worker.params, params)
    np.testing.assert_allclose(worker.extra[2], state.loss_mean, rtol=1e-6)
    assert int(master.leader) == 0


def test_async_lsgd_follows_the_total_iteration_clock_and_the_best_worker():
    """p = 2, tau = 2: steps communicate when T mod 4 < 2; the worker with the lower
    running loss leads and the other is pulled toward it."""
    p, pull = 2, 0.5
    rule = leader.async_lsgd(optax.sgd(0.0), pull, period=2, num_workers=p, loss_window=1)

    def grad_fn(params, batch, key):  # loss = x: the lower x leads
        return jax.tree.map(jnp.zeros_like, params), params[0]

    run = schedules.make_simulator(rule, grad_fn)
    state = schedules.init_sim_state(rule, jnp.zeros(1), p, KEY)
    state = state._replace(workers=state.workers._replace(params=jnp.array([[3.0], [1.0]])))
    sched = schedules.round_robin(p, 8)
    state, info = run(state, sched.workers, jnp.zeros(8))
    np.testing.assert_array_equal(np.asarray(info.communicated), np.arange(8) % 4 < 2)
    # T=0: worker 0 (x=3) reports first and leads; T=1: worker 1 (x=1) takes the lead.
    # T=4: worker 0 is pulled to 3 - 0.5 (3 - 1) = 2; T=5: worker 1 leads, stays at 1.
    assert int(state.master.leader) == 1
    np.testing.assert_allclose(np.asarray(state.workers.params[:, 0]), [2.0, 1.0])
    np.testing.assert_allclose(np.asarray(state.master.center), [1.0])


def test_get_async_rule_by_name_and_errors():
    rule = registry.get_async_rule("eamsgd", 4, learning_rate=0.1, momentum=0.9, moving_rate=0.2,
                              period=10)
    assert rule.name == "eamsgd"
    assert registry.get_async_rule("lsgd_nesterov", 4, learning_rate=0.1, momentum=0.9, pull=0.1,
                              period=4).name == "lsgd"
    with pytest.raises(ValueError, match="no asynchronous rule"):
        registry.get_async_rule("mdownpour", 4, learning_rate=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="moving_rat"):
        registry.get_async_rule("easgd", 4, learning_rate=0.1, moving_rat=0.2)
    with pytest.raises(ValueError, match="moving_rate"):
        registry.get_async_rule("easgd", 4, learning_rate=0.1, moving_rate=1.5)


@pytest.mark.parametrize("moving_rate", [1.5, -0.1])
@pytest.mark.parametrize("name, momentum", [("easgd", None), ("eamsgd", 0.9)])
def test_async_elastic_rules_take_moving_rate_in_0_1(name, momentum, moving_rate):
    extra = {} if momentum is None else {"momentum": momentum}
    with pytest.raises(ValueError, match=r"moving_rate must be in \[0.0, 1.0\]"):
        registry.get_async_rule(name, 4, learning_rate=0.1, moving_rate=moving_rate, **extra)
    constructor = {"easgd": elastic.async_easgd, "eamsgd": elastic.async_eamsgd}[name]
    with pytest.raises(ValueError, match="moving_rate"):
        constructor(learning_rate=0.1, moving_rate=moving_rate, **extra)
    assert constructor(learning_rate=0.1, moving_rate=1.0, **extra).name == name  # bound: ok
