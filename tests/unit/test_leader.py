"""LSGD (single and multi-leader) against hand-written references, equivalences and a quadratic."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from easgd_jax.algorithms import leader
from easgd_jax.algorithms.registry import get_spec
from easgd_jax.parallel import make_round, make_worker_layout

P = 4  # workers
SHAPES = {"a": (2,), "b": (2, 3)}


def _tree(rng, leading=()):
    return {k: rng.normal(size=(*leading, *s)).astype(np.float32) for k, s in SHAPES.items()}


def _spread_start(seed=0, p=P):
    """Different starting points, so that every pull moves something."""
    return _tree(np.random.default_rng(seed), (p,))


def _batches(steps, seed=1, p=P):
    """Random gradients [p, steps, ...] and losses [p, steps], independent of the params."""
    rng = np.random.default_rng(seed)
    grads = _tree(rng, (p, steps))
    losses = rng.uniform(0.0, 2.0, size=(p, steps)).astype(np.float32)
    return grads, losses


def _step(tx):
    def step(carry, batch):
        params, state = carry
        grads, loss = batch
        updates, state = tx.update(grads, state, params, loss=loss)
        params = optax.apply_updates(params, updates)
        return (params, state), (params, state)

    return step


def _run(tx, x0, grads, losses, axis_name="workers"):
    """P vmapped workers, a scan over the steps; returns per step [p, steps, ...] histories."""
    def worker(carry, batches):
        return jax.lax.scan(_step(tx), carry, batches)

    state = jax.vmap(tx.init)(x0)
    _, history = jax.jit(jax.vmap(worker, axis_name=axis_name))((x0, state), (grads, losses))
    return history


def _at(tree, t):
    return jax.tree.map(lambda a: np.asarray(a[:, t]), tree)


def _assert_tree_close(actual, expected, atol=1e-5, rtol=1e-5):
    for k in expected:
        np.testing.assert_allclose(np.asarray(actual[k]), expected[k], rtol=rtol, atol=atol,
                                   err_msg=k)


def _running_means(losses, window):
    """[p, steps]: mean of the last min(t + 1, window) losses, in float64."""
    losses = np.asarray(losses, np.float64)
    out = np.zeros_like(losses)
    for t in range(losses.shape[1]):
        out[:, t] = losses[:, max(0, t - window + 1): t + 1].mean(axis=1)
    return out


def _reference_lsgd(x0, grads, losses, eta, c, tau, window, momentum=None):
    """Single-leader LSGD by hand, float64: x <- x + inner(g) - c (x - x_L) [tau | t].

    ``momentum=None``: plain SGD; otherwise torch's Nesterov b <- mu b + g,
    u = -eta (g + mu b). Returns per step (params, momentum buffers, leader).
    """
    x = {k: np.asarray(v, np.float64) for k, v in x0.items()}
    buf = {k: np.zeros_like(v) for k, v in x.items()}
    means = _running_means(losses, window)
    lead = -1
    out = []
    for t in range(losses.shape[1]):
        if t % tau == 0:
            lead = int(np.argmin(means[:, t]))
        for k in x:
            g = np.asarray(grads[k][:, t], np.float64)
            if momentum is None:
                u = -eta * g
            else:
                buf[k] = momentum * buf[k] + g
                u = -eta * (g + momentum * buf[k])
            pull = -c * (x[k] - x[k][lead]) if t % tau == 0 else 0.0
            x[k] = x[k] + u + pull
        out.append(({k: v.copy() for k, v in x.items()}, {k: v.copy() for k, v in buf.items()},
                    lead))
    return out


def _reference_multi(x0, grads, losses, eta, c, c_g, tau, tau_g, window, groups):
    """Multi-leader LSGD by hand on flat workers f = g * l + k, all on the old values."""
    p = losses.shape[0]
    size = p // groups
    x = {k: np.asarray(v, np.float64) for k, v in x0.items()}
    means = _running_means(losses, window)
    local, glob = np.full(p, -1), -1
    out = []
    for t in range(losses.shape[1]):
        if t % tau == 0:
            for g in range(groups):
                local[g * size:(g + 1) * size] = np.argmin(means[g * size:(g + 1) * size, t])
        if t % tau_g == 0:
            glob = int(np.argmin(means[:, t]))
        for k in x:
            old = x[k].copy()
            new = old - eta * np.asarray(grads[k][:, t], np.float64)
            for f in range(p):
                if t % tau == 0:
                    new[f] -= c * (old[f] - old[(f // size) * size + local[f]])
                if t % tau_g == 0:
                    new[f] -= c_g * (old[f] - old[glob])
            x[k] = new
        out.append(({k: v.copy() for k, v in x.items()}, local.copy(), glob))
    return out


@pytest.mark.parametrize("tau,window", [(1, 3), (3, 2)])
def test_lsgd_sgd_matches_reference(tau, window):
    steps, eta, c = 8, 0.1, 0.3
    x0 = _spread_start()
    grads, losses = _batches(steps)
    params, states = _run(leader.lsgd(optax.sgd(eta), c, tau, window), x0, grads, losses)
    ref = _reference_lsgd(x0, grads, losses, eta, c, tau, window)
    means = _running_means(losses, window)
    for t in range(steps):
        ref_x, _, ref_leader = ref[t]
        _assert_tree_close(_at(params, t), ref_x)
        np.testing.assert_array_equal(np.asarray(states.leader[:, t]), ref_leader)
        np.testing.assert_allclose(np.asarray(states.loss_mean[:, t]), means[:, t], rtol=1e-6)
    assert states.count.dtype == jnp.int32 and states.leader.dtype == jnp.int32


def test_lsgd_nesterov_matches_reference():
    steps, eta, mu, c, tau, window = 9, 0.05, 0.9, 0.2, 2, 3
    x0 = _spread_start(2)
    grads, losses = _batches(steps, seed=3)
    tx = leader.lsgd_nesterov(eta, mu, c, tau, window)
    params, states = _run(tx, x0, grads, losses)
    ref = _reference_lsgd(x0, grads, losses, eta, c, tau, window, momentum=mu)
    for t in range(steps):
        ref_x, ref_buf, ref_leader = ref[t]
        _assert_tree_close(_at(params, t), ref_x)
        trace = optax.tree_utils.tree_get(_at(states.inner_state, t), "trace")
        _assert_tree_close(trace, ref_buf)
        np.testing.assert_array_equal(np.asarray(states.leader[:, t]), ref_leader)


def test_pull_zero_is_independent_sgd():
    steps = 6
    x0 = _spread_start(4)
    grads, losses = _batches(steps, seed=5)
    params, _ = _run(leader.lsgd(optax.sgd(0.1, 0.9), 0.0, 1), x0, grads, losses)
    plain = optax.sgd(0.1, 0.9)

    def sgd_worker(x, g):
        def step(carry, g):
            x, s = carry
            u, s = plain.update(g, s, x)
            return (optax.apply_updates(x, u), s), optax.apply_updates(x, u)

        return jax.lax.scan(step, (x, plain.init(x)), g)[1]

    expected = jax.jit(jax.vmap(sgd_worker))(x0, grads)
    _assert_tree_close(params, jax.tree.map(np.asarray, expected), atol=1e-7, rtol=1e-6)


def test_pull_one_moves_every_worker_to_the_leader_plus_its_own_step():
    """c = 1: x_i <- x_L + inner(g_i), both on the old values (u_i is x_i's own step)."""
    eta = 0.1
    x0 = _spread_start(6)
    grads, losses = _batches(1, seed=7)
    losses[:, 0] = [0.9, 0.8, 0.2, 0.5]  # worker 2 leads
    params, states = _run(leader.lsgd(optax.sgd(eta), 1.0, 1), x0, grads, losses)
    assert np.all(np.asarray(states.leader[:, 0]) == 2)
    for k in SHAPES:
        expected = x0[k][2][None] - eta * grads[k][:, 0]
        np.testing.assert_allclose(np.asarray(params[k][:, 0]), expected, atol=1e-6)
    # Without a gradient step every worker IS the leader.
    params, _ = _run(leader.lsgd(optax.sgd(0.0), 1.0, 1), x0, grads, losses)
    for k in SHAPES:
        np.testing.assert_allclose(np.asarray(params[k][:, 0]),
                                   np.broadcast_to(x0[k][2], params[k][:, 0].shape), atol=1e-6)


def test_leader_is_the_argmin_of_the_running_losses_over_the_window():
    # Worker 3 has the lowest LAST loss at every step; worker 0 the lowest running mean while
    # its very low first loss is in the window (W = 3: steps 0-2), then worker 1 leads.
    losses = np.array([
        [-9.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        [0.6, 0.6, 0.6, 0.6, 0.6, 0.6],
        [0.8, 0.8, 0.8, 0.8, 0.8, 0.8],
        [0.0, 5.0, 0.0, 0.0, 0.0, 0.5],
    ], np.float32)
    steps = losses.shape[1]
    x0 = _spread_start(8)
    grads, _ = _batches(steps, seed=9)
    tx = leader.lsgd(optax.sgd(0.01), 0.1, 1, loss_window=3)
    assert int(tx.init({"a": jnp.zeros(2)}).leader) == -1
    _, states = _run(tx, x0, grads, losses)
    # means at t: w3 = 0, 2.5, 1.67, 1.67, 0, 0.17; w0 = -9, -4, -2.33, 1, 1, 1; w1 = 0.6.
    assert np.asarray(states.leader[0]).tolist() == [0, 0, 0, 1, 3, 3]
    assert np.all(np.asarray(states.leader) == np.asarray(states.leader[:1]))  # all agree
    # With a window longer than the run the old low loss never drops out.
    _, states = _run(leader.lsgd(optax.sgd(0.01), 0.1, 1, loss_window=10), x0, grads, losses)
    assert np.asarray(states.leader[0]).tolist() == [0] * steps
    # The leader is only chosen on communication steps (tau = 4: steps 0 and 4).
    _, states = _run(leader.lsgd(optax.sgd(0.01), 0.1, 4, loss_window=3), x0, grads, losses)
    assert np.asarray(states.leader[0]).tolist() == [0, 0, 0, 0, 3, 3]


def test_ties_go_to_the_lowest_index_and_nan_never_leads():
    x0 = _spread_start(10)
    grads, _ = _batches(2, seed=11)
    losses = np.array([[0.5, np.nan], [0.2, 0.1], [0.2, 0.3], [np.nan, 0.3]], np.float32)
    _, states = _run(leader.lsgd(optax.sgd(0.01), 0.5, 1, loss_window=1), x0, grads, losses)
    assert np.asarray(states.leader[0]).tolist() == [1, 1]
    means = jnp.array([jnp.nan, 3.0, jnp.nan, 2.0])
    assert int(leader.select_leader(means)) == 3


def test_period_is_respected_and_step_zero_communicates():
    """eta = 0: only pulls move the workers, at t = 0, 3, 6."""
    x0 = _spread_start(12)
    grads, losses = _batches(8, seed=13)
    params, _ = _run(leader.lsgd(optax.sgd(0.0), 0.3, 3), x0, grads, losses)
    a = np.asarray(params["a"])
    moved = [not np.allclose(a[:, 0], x0["a"])]
    moved += [not np.allclose(a[:, t], a[:, t - 1]) for t in range(1, 8)]
    assert moved == [True, False, False, True, False, False, True, False]


def test_pull_does_not_touch_the_momentum_buffer():
    steps = 7
    x0 = _spread_start(14)
    grads, losses = _batches(steps, seed=15)
    pulled, s_pulled = _run(leader.lsgd_nesterov(0.05, 0.9, 0.5, 2), x0, grads, losses)
    free, s_free = _run(leader.lsgd_nesterov(0.05, 0.9, 0.0, 2), x0, grads, losses)
    assert not np.allclose(np.asarray(pulled["b"]), np.asarray(free["b"]))
    for s in (s_pulled, s_free):
        assert optax.tree_utils.tree_get(s.inner_state, "trace") is not None
    _assert_tree_close(optax.tree_utils.tree_get(s_pulled.inner_state, "trace"),
                       jax.tree.map(np.asarray,
                                    optax.tree_utils.tree_get(s_free.inner_state, "trace")),
                       atol=0, rtol=0)


def _quadratic_run(tx, x0, steps):
    """f(x) = 0.5 ||x||^2 on every worker: g = x, loss = f(x)."""
    def worker(carry, _):
        params, state = carry
        loss = 0.5 * sum(jnp.sum(v ** 2) for v in jax.tree.leaves(params))
        updates, state = tx.update(params, state, params, loss=loss)
        params = optax.apply_updates(params, updates)
        return (params, state), params

    def run(x):
        return jax.lax.scan(worker, (x, tx.init(x)), None, length=steps)[1]

    return jax.vmap(run, axis_name="workers")(x0)


def test_quadratic_pull_moves_toward_the_leader_and_all_converge():
    x0 = {"a": np.array([[3.0, 0.0], [0.5, 0.5], [-2.0, 1.0], [0.0, -4.0]], np.float32)}
    # eta = 0: one pull toward the leader (worker 1, nearest 0) shrinks each distance by 1 - c.
    c = 0.25
    history = _quadratic_run(leader.lsgd(optax.sgd(0.0), c, 4), x0, 1)
    x1 = np.asarray(history["a"][:, 0])
    before = np.linalg.norm(x0["a"] - x0["a"][1], axis=1)
    after = np.linalg.norm(x1 - x0["a"][1], axis=1)
    np.testing.assert_allclose(after, (1 - c) * before, rtol=1e-6)
    assert np.all(np.linalg.norm(x1, axis=1)[[0, 2, 3]]
                  < np.linalg.norm(x0["a"], axis=1)[[0, 2, 3]])
    # With gradient steps every worker converges to the minimiser 0.
    history = _quadratic_run(leader.lsgd_nesterov(0.1, 0.9, 0.1, 4), x0, 300)
    assert np.max(np.abs(np.asarray(history["a"][:, -1]))) < 1e-4


def _nested(tree, groups):
    return jax.tree.map(lambda a: a.reshape(groups, a.shape[0] // groups, *a.shape[1:]), tree)


def _flat(tree):
    return jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), tree)


def _run_groups(tx, x0, grads, losses, groups):
    """n = ``groups`` groups of P / n workers: vmap(vmap(worker, "workers"), "groups")."""
    def worker(carry, batches):
        return jax.lax.scan(_step(tx), carry, batches)

    state = jax.vmap(tx.init)(x0)
    mapped = jax.vmap(jax.vmap(worker, axis_name="workers"), axis_name="groups")
    _, history = jax.jit(mapped)(_nested((x0, state), groups), _nested((grads, losses), groups))
    return _flat(history)


@functools.cache
def _single_leader_run():
    x0 = _spread_start(16)
    grads, losses = _batches(8, seed=17)
    return x0, grads, losses, _run(leader.lsgd(optax.sgd(0.1), 0.3, 2, 3), x0, grads, losses)


@pytest.mark.parametrize("pull,global_pull,global_period",
                         [(0.3, 0.0, 8), pytest.param(0.0, 0.3, 2, marks=pytest.mark.slow)])
def test_multi_leader_with_one_group_is_single_leader(pull, global_pull, global_period):
    steps, tau = 8, 2
    x0, grads, losses, (single, s_single) = _single_leader_run()
    tx = leader.lsgd_multi(optax.sgd(0.1), pull, global_pull, tau, global_period, 3)
    multi, s_multi = _run_groups(tx, x0, grads, losses, groups=1)
    _assert_tree_close(multi, jax.tree.map(np.asarray, single), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(s_multi.leader), np.asarray(s_single.leader))
    # Between global rounds global_leader keeps the value of the last one (t = 0 is one).
    rounds = np.arange(steps) % global_period == 0
    last = np.maximum.accumulate(np.where(rounds, np.arange(steps), 0))
    np.testing.assert_array_equal(np.asarray(s_multi.global_leader),
                                  np.asarray(s_single.leader)[:, last])


@pytest.mark.parametrize("groups", [2, 4])
def test_multi_leader_matches_reference(groups):
    steps, eta, c, c_g, tau, tau_g, window = 9, 0.1, 0.3, 0.2, 2, 4, 2
    p = 8
    x0 = _spread_start(18, p)
    grads, losses = _batches(steps, seed=19, p=p)
    tx = leader.lsgd_multi(optax.sgd(eta), c, c_g, tau, tau_g, window)
    params, states = _run_groups(tx, x0, grads, losses, groups)
    ref = _reference_multi(x0, grads, losses, eta, c, c_g, tau, tau_g, window, groups)
    for t in range(steps):
        ref_x, ref_local, ref_global = ref[t]
        _assert_tree_close(_at(params, t), ref_x)
        np.testing.assert_array_equal(np.asarray(states.leader[:, t]), ref_local)
        np.testing.assert_array_equal(np.asarray(states.global_leader[:, t]), ref_global)
    # The local and global leaders differ somewhere, so both pulls were exercised.
    assert len({int(r[2]) for r in ref}) > 1


def test_lsgd_under_shard_map_matches_vmap():
    steps = 6
    x0 = _spread_start(20)
    grads, losses = _batches(steps, seed=21)
    tx = leader.lsgd_nesterov(0.05, 0.9, 0.2, 2, 3)
    expected, expected_state = _run(tx, x0, grads, losses)
    for devices in (4, 2):  # one worker per device; two per device (tuple axis name)
        layout = make_worker_layout(P, devices)
        tx = leader.lsgd_nesterov(0.05, 0.9, 0.2, 2, 3, axis_name=layout.axis_name)
        round_fn = make_round(_step(tx), layout, donate=False)
        (params, state), _ = round_fn((x0, jax.vmap(tx.init)(x0)), (grads, losses))
        _assert_tree_close(params, _at(expected, -1), atol=1e-6)
        np.testing.assert_array_equal(np.asarray(state.leader),
                                      np.asarray(expected_state.leader[:, -1]))
        assert state.leader.dtype == jnp.int32 and state.count.dtype == jnp.int32


@pytest.mark.parametrize("devices", [4, 2])
def test_multi_leader_under_shard_map_on_the_grouped_layout(devices):
    """2 groups x 2 workers on a (groups, workers) mesh, one or two workers per device."""
    steps = 8
    x0 = _spread_start(22)
    grads, losses = _batches(steps, seed=23)
    layout = make_worker_layout(P, devices, num_groups=2)
    tx = leader.lsgd_multi(optax.sgd(0.1), 0.3, 0.2, 2, 4, 2, axis_name=layout.member_axis_name,
                           group_axis_name=layout.group_axis_name)
    round_fn = make_round(_step(tx), layout, donate=False)
    (params, state), _ = round_fn((x0, jax.vmap(tx.init)(x0)), (grads, losses))
    ref_x, ref_local, ref_global = _reference_multi(x0, grads, losses, 0.1, 0.3, 0.2, 2, 4, 2,
                                                    groups=2)[-1]
    _assert_tree_close(params, ref_x)
    np.testing.assert_array_equal(np.asarray(state.leader), ref_local)
    np.testing.assert_array_equal(np.asarray(state.global_leader), ref_global)


def test_state_types_survive_jit_and_chain_passes_the_loss():
    tx = optax.chain(optax.clip_by_global_norm(1.0), leader.lsgd(optax.sgd(0.1), 0.1, 2))
    x = {"a": jnp.ones((P, 2), jnp.float32)}
    state = jax.vmap(tx.init)(x)

    @jax.jit
    def update(grads, state, params, loss):
        return jax.vmap(lambda g, s, p, f: tx.update(g, s, p, loss=f), axis_name="workers")(
            grads, state, params, loss)

    _, new_state = update(x, state, x, jnp.arange(P, dtype=jnp.float32))
    inner = new_state[1]
    assert inner.count.dtype == jnp.int32 and inner.leader.dtype == jnp.int32
    assert inner.losses.dtype == jnp.float32 and inner.losses.shape == (P, 10)
    assert np.asarray(inner.leader).tolist() == [0] * P
    assert np.asarray(leader.leader_index(new_state)).tolist() == [0] * P


def test_missing_loss_or_params_raises():
    tx = leader.lsgd(optax.sgd(0.1), 0.1, 1)
    x = {"a": jnp.ones(2)}
    with pytest.raises(ValueError, match="loss=loss"):
        tx.update(x, tx.init(x), x)
    with pytest.raises(ValueError, match="needs params"):
        tx.update(x, tx.init(x), None, loss=1.0)
    with pytest.raises(ValueError, match="scalar"):
        tx.update(x, tx.init(x), x, loss=jnp.ones(2))


def _stacked_init(tx, p=P):
    """``tx.init`` on every one of p workers (a leading worker axis), as the training loop."""
    x = {"a": jnp.zeros((p, 2))}
    return jax.vmap(tx.init)(x)


def test_evaluation_worker_is_the_global_leader_first():
    """Multi-leader LSGD is evaluated on its global leader G, a flat index over all workers,
    not on worker 0's local leader (an index within its group); single-leader LSGD on its
    leader; before the first choice (-1), and without a leader, on worker 0."""
    multi = _stacked_init(leader.lsgd_multi(optax.sgd(0.1), 0.1, 0.1, 1, 2))
    multi = multi._replace(leader=jnp.array([1, 1, 0, 0], jnp.int32),
                           global_leader=jnp.full([P], 3, jnp.int32))
    evaluation_worker = get_spec("lsgd_multi_nesterov").evaluation_worker
    assert int(evaluation_worker(multi)) == 3
    assert int(evaluation_worker((optax.EmptyState(), multi))) == 3  # found at any depth
    assert int(evaluation_worker(multi._replace(global_leader=jnp.full([P], -1)))) == 0
    single = _stacked_init(leader.lsgd(optax.sgd(0.1), 0.1, 1))
    evaluation_worker = get_spec("lsgd_nesterov").evaluation_worker
    assert int(evaluation_worker(single._replace(leader=jnp.full([P], 2, jnp.int32)))) == 2
    assert int(evaluation_worker(single)) == 0  # -1: no leader chosen yet
    evaluation_worker = get_spec("sgd").evaluation_worker
    assert int(evaluation_worker(optax.sgd(0.1).init({"a": jnp.zeros(2)}))) == 0


@pytest.mark.parametrize("build,message", [
    (lambda: leader.lsgd(optax.sgd(0.1), 1.5, 1), r"pull must be in \[0.0, 1.0\], got 1.5"),
    (lambda: leader.lsgd(optax.sgd(0.1), -0.1, 1), r"pull must be in"),
    (lambda: leader.lsgd(optax.sgd(0.1), 0.1, 0), r"period must be an integer >= 1, got 0"),
    (lambda: leader.lsgd(optax.sgd(0.1), 0.1, 2.0), r"period must be an integer >= 1"),
    (lambda: leader.lsgd(optax.sgd(0.1), 0.1, 1, 0), r"loss_window must be an integer >= 1"),
    (lambda: leader.lsgd(optax.sgd(0.1), 0.1, 1, axis_name=""), r"axis_name must be"),
    (lambda: leader.lsgd_nesterov(-0.1, 0.9, 0.1, 1), r"learning_rate must be >= 0"),
    (lambda: leader.lsgd_nesterov(0.1, 1.0, 0.1, 1), r"momentum must be < 1"),
    (lambda: leader.lsgd_nesterov(0.1, 0.9, 0.1, 1, 0), r"loss_window must be"),
    (lambda: leader.lsgd_multi(optax.sgd(0.1), 0.1, 0.1, 4, 6),
     r"global_period \(6\) must be a multiple of period \(4\)"),
    (lambda: leader.lsgd_multi(optax.sgd(0.1), 0.1, 1.2, 4, 8), r"global_pull must be in"),
    (lambda: leader.lsgd_multi(optax.sgd(0.1), -1.0, 0.1, 4, 8), r"pull must be in"),
    (lambda: leader.lsgd_multi(optax.sgd(0.1), 0.1, 0.1, 0, 8), r"period must be an integer"),
    (lambda: leader.lsgd_multi(optax.sgd(0.1), 0.1, 0.1, 4, 0), r"global_period must be an"),
    (lambda: leader.lsgd_multi(optax.sgd(0.1), 0.1, 0.1, 4, 8, 0), r"loss_window must be"),
    (lambda: leader.lsgd_multi(optax.sgd(0.1), 0.1, 0.1, 4, 8, axis_name="x",
                               group_axis_name=("x", "y")), r"must be disjoint; both hold x"),
    (lambda: leader.lsgd_multi(optax.sgd(0.1), 0.1, 0.1, 4, 8, group_axis_name=()),
     r"group_axis_name must be"),
    (lambda: leader.lsgd_multi_nesterov(0.1, 0.9, 0.1, 0.1, 4, 10), r"multiple of period"),
])
def test_invalid_hyperparameters_raise(build, message):
    with pytest.raises(ValueError, match=message):
        build()
