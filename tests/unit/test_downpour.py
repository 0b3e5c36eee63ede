"""DOWNPOUR, MDOWNPOUR, ADOWNPOUR, MVADOWNPOUR against hand-written numpy references.

p = 3 workers under ``jax.vmap(axis_name="workers")`` (and ``jax.shard_map`` over simulated
devices), tiny params {a: (2,), b: (2, 3)}, and per-worker gradients that depend on the
params, g_i(x) = c_i * x + n_{i,t}, so that the references also check WHERE each gradient
is taken. The references work on the flattened params (every rule is elementwise) in
float64; the transformations run in float32.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from baseline_harness import (
    TOL,
    X0,
    X0_FLAT,
    N,
    P,
    T,
    check_quadratic_converges,
    check_shard_map_matches_vmap,
    check_state_dtypes_survive_jit,
    evaluation_params,
    flat,
    problem,
    run_vmap,
)
from jax.flatten_util import ravel_pytree

from easgd_jax.algorithms import distbelief as dp

# --- numpy references ----------------------------------------------------------------------

def ref_downpour(c, noise, eta, period, average=None):
    """DOWNPOUR(tau), authors' rule; ``average``: None, "polyak" or a constant rate a.

    Returns per-step (params [T, p, N], center [T, N], z [T, N]).
    """
    p, steps, _ = noise.shape
    x = np.tile(X0_FLAT, (p, 1))
    center, z, acc, clock = X0_FLAT.copy(), X0_FLAT.copy(), np.zeros((p, N)), 0
    xs, centers, zs = [], [], []
    for t in range(steps):
        rate = eta(t) if callable(eta) else eta
        d = -rate * (c[:, None] * x + noise[:, t])
        acc = acc + d
        if t % period == 0:
            center = center + acc.sum(axis=0)
            x = np.tile(center, (p, 1))
            acc = np.zeros((p, N))
            clock += 1
            if average is not None:
                a = 1.0 / (clock + 1) if average == "polyak" else average
                z = (1 - a) * z + a * center
        else:
            x = x + d
        xs.append(x.copy())
        centers.append(center.copy())
        zs.append(z.copy())
    return np.array(xs), np.array(centers), np.array(zs)


def ref_downpour_adagrad(c, noise, eta, period, gamma, eps):
    """DOWNPOUR(tau) whose master applies the pushes through Adagrad (DistBelief):
    G += sum_i acc_i^2; x~ += gamma * sum_i acc_i / sqrt(eps + G). Returns (params, center)."""
    p, steps, _ = noise.shape
    x = np.tile(X0_FLAT, (p, 1))
    center, acc, big_g = X0_FLAT.copy(), np.zeros((p, N)), np.zeros(N)
    xs, centers = [], []
    for t in range(steps):
        d = -eta * (c[:, None] * x + noise[:, t])
        acc = acc + d
        if t % period == 0:
            big_g = big_g + (acc ** 2).sum(axis=0)
            center = center + gamma * acc.sum(axis=0) / np.sqrt(eps + big_g)
            x = np.tile(center, (p, 1))
            acc = np.zeros((p, N))
        else:
            x = x + d
        xs.append(x.copy())
        centers.append(center.copy())
    return np.array(xs), np.array(centers)


def ref_mdownpour(c, noise, eta, delta):
    """MDOWNPOUR: master x~, v; every worker at w = x~ + delta v; the master sums the p
    gradients. Returns per-step (params [T, p, N], center [T, N])."""
    p, steps, _ = noise.shape
    center, v = X0_FLAT.copy(), np.zeros(N)
    xs, centers = [], []
    for t in range(steps):
        w = center + delta * v
        g = (c[:, None] * w[None] + noise[:, t]).sum(axis=0)
        v = delta * v - eta * g
        center = center + v
        xs.append(np.tile(center + delta * v, (p, 1)))
        centers.append(center.copy())
    return np.array(xs), np.array(centers)


def per_step(a):
    """[p, T, N] -> [T, p, N]."""
    return np.swapaxes(a, 0, 1)


# --- references, step by step, including communication steps -------------------------------

@pytest.mark.parametrize("period", [1, 3])
def test_downpour_matches_reference(period):
    c, noise = problem(0)
    params, state = run_vmap(lambda ax: dp.downpour(0.05, period, ax), c, noise)
    xs, centers, _ = ref_downpour(c, noise, 0.05, period)
    np.testing.assert_allclose(per_step(flat(params)), xs, **TOL)
    for i in range(P):  # the center is replicated identically on every worker
        np.testing.assert_allclose(flat(state.center)[i], centers, **TOL)
    # The training loop evaluates the center.
    np.testing.assert_array_equal(flat(evaluation_params("downpour", state, params)),
                                  flat(state.center))
    # Between exchanges the workers drift apart, at an exchange they all hold the center.
    if period > 1:
        assert np.abs(xs[1, 0] - xs[1, 1]).max() > 1e-3
        np.testing.assert_allclose(xs[3], np.tile(centers[3], (P, 1)), **TOL)


def test_downpour_learning_rate_schedule_uses_local_clock():
    c, noise = problem(1)
    schedule = optax.exponential_decay(0.08, transition_steps=1, decay_rate=0.7)
    params, _ = run_vmap(lambda ax: dp.downpour(schedule, 2, ax), c, noise)
    xs, _, _ = ref_downpour(c, noise, lambda t: 0.08 * 0.7 ** t, 2)
    np.testing.assert_allclose(per_step(flat(params)), xs, **TOL)


def test_adownpour_matches_reference():
    c, noise = problem(2)
    params, state = run_vmap(lambda ax: dp.adownpour(0.05, 2, ax), c, noise)
    xs, centers, zs = ref_downpour(c, noise, 0.05, 2, average="polyak")
    np.testing.assert_allclose(per_step(flat(params)), xs, **TOL)
    np.testing.assert_allclose(flat(state.center)[0], centers, **TOL)
    np.testing.assert_allclose(flat(state.average)[1], zs, **TOL)
    np.testing.assert_array_equal(np.asarray(state.center_count)[0], [1, 1, 2, 2, 3, 3, 4, 4])
    # The training loop evaluates z.
    np.testing.assert_array_equal(
        flat(evaluation_params("adownpour", state, params)), flat(state.average))


def test_mvadownpour_matches_reference():
    c, noise = problem(3)
    params, state = run_vmap(lambda ax: dp.mvadownpour(0.05, 0.3, 2, ax), c, noise)
    xs, centers, zs = ref_downpour(c, noise, 0.05, 2, average=0.3)
    np.testing.assert_allclose(per_step(flat(params)), xs, **TOL)
    np.testing.assert_allclose(flat(state.center)[0], centers, **TOL)
    np.testing.assert_allclose(flat(state.average)[2], zs, **TOL)
    np.testing.assert_array_equal(
        flat(evaluation_params("mvadownpour", state, params)), flat(state.average))


def test_mdownpour_matches_reference():
    c, noise = problem(4)
    params, state = run_vmap(lambda ax: dp.mdownpour(0.05, 0.7, ax), c, noise)
    xs, centers = ref_mdownpour(c, noise, 0.05, 0.7)
    np.testing.assert_allclose(per_step(flat(params)), xs, **TOL)
    np.testing.assert_allclose(flat(state.center)[1], centers, **TOL)
    # The training loop evaluates the center x~, not the look-ahead params.
    np.testing.assert_array_equal(
        flat(evaluation_params("mdownpour", state, params)), flat(state.center))
    assert np.abs(xs[-1, 0] - centers[-1]).max() > 1e-3


def test_downpour_server_adagrad_matches_reference():
    period = 3
    c, noise = problem(11)
    make_tx = lambda ax: dp.downpour(  # noqa: E731
        0.05, period, ax, server_adagrad=True, adagrad_rate=0.02, adagrad_eps=1e-3)
    params, state = run_vmap(make_tx, c, noise)
    xs, centers = ref_downpour_adagrad(c, noise, 0.05, period, 0.02, 1e-3)
    np.testing.assert_allclose(per_step(flat(params)), xs, **TOL)
    np.testing.assert_allclose(flat(state.center)[2], centers, **TOL)
    # Adagrad's first step: |sum_i a_i| / sqrt(sum_i a_i^2) <= sqrt(p), whatever eta is.
    assert np.all(np.abs(centers[0] - X0_FLAT) <= 0.02 * np.sqrt(P) + 1e-7)


# --- equivalences --------------------------------------------------------------------------

def test_downpour_period_one_is_sgd_on_summed_gradient():
    """tau = 1: every worker holds x~ and x~ <- x~ - eta * sum_i g_i(x~), step by step."""
    c, noise = problem(5)
    params, state = run_vmap(lambda ax: dp.downpour(0.05, 1, ax), c, noise)
    sgd = optax.sgd(0.05)

    @jax.jit
    def sgd_step(x, opt_state, noise_t):
        flat_x, unravel = ravel_pytree(x)
        summed = unravel(sum(c[i] * flat_x + noise_t[i] for i in range(P)))
        updates, opt_state = sgd.update(summed, opt_state)
        return optax.apply_updates(x, updates), opt_state

    x = jax.tree.map(jnp.asarray, X0)
    opt_state = sgd.init(x)
    for t in range(T):
        x, opt_state = sgd_step(x, opt_state, noise[:, t])
        expected = np.asarray(ravel_pytree(x)[0])
        for i in range(P):
            np.testing.assert_allclose(flat(params)[i, t], expected, **TOL)
            np.testing.assert_allclose(flat(state.center)[i, t], expected, **TOL)


def test_adownpour_average_is_running_mean_of_centers():
    c, noise = problem(6)
    period = 3
    _, state = run_vmap(lambda ax: dp.adownpour(0.05, period, ax), c, noise)
    centers, averages = flat(state.center)[0], flat(state.average)[0]
    distinct = [X0_FLAT]  # x~_0, then the center after each center update
    for t in range(T):
        if t % period == 0:
            distinct.append(centers[t])
        np.testing.assert_allclose(averages[t], np.mean(distinct, axis=0), **TOL)
    assert len(distinct) == 4


def test_mvadownpour_rate_one_tracks_center():
    c, noise = problem(7)
    _, state = run_vmap(lambda ax: dp.mvadownpour(0.05, 1.0, 2, ax), c, noise)
    np.testing.assert_allclose(flat(state.average), flat(state.center), rtol=0, atol=1e-7)


def test_mvadownpour_small_rate_lags_center():
    c, noise = problem(7)
    _, state = run_vmap(lambda ax: dp.mvadownpour(0.05, 0.001, 1, ax), c, noise)
    z, centers = flat(state.average)[0], flat(state.center)[0]
    # After k updates z = x~_0 + sum of 0.001-weighted steps: close to x~_0, far from x~_k.
    assert np.abs(z[-1] - X0_FLAT).max() < 0.05 * np.abs(centers[-1] - X0_FLAT).max()


def test_mdownpour_momentum_zero_is_downpour_period_one():
    c, noise = problem(8)
    p_m, s_m = run_vmap(lambda ax: dp.mdownpour(0.05, 0.0, ax), c, noise)
    p_d, s_d = run_vmap(lambda ax: dp.downpour(0.05, 1, ax), c, noise)
    np.testing.assert_allclose(flat(p_m), flat(p_d), **TOL)
    np.testing.assert_allclose(flat(s_m.center), flat(s_d.center), **TOL)


def test_downpour_exchange_is_push_then_fetch():
    worker = {"w": jnp.array([1.0, 2.0])}
    acc = {"w": jnp.array([0.5, -0.25])}
    center = {"w": jnp.array([3.0, 1.0])}
    worker_delta, center_delta = dp.downpour_exchange(worker, acc, center)
    np.testing.assert_allclose(center_delta["w"], [0.5, -0.25])
    # The worker ends at the center after its own push: x~ + acc.
    np.testing.assert_allclose(worker["w"] + worker_delta["w"], [3.5, 0.75])


def test_nesterov_master_step():
    center, velocity = {"w": jnp.array([1.0])}, {"w": jnp.array([0.2])}
    new_center, new_velocity, lookahead = dp.nesterov_master_step(
        center, velocity, {"w": jnp.array([0.5])}, 0.1, 0.9)
    np.testing.assert_allclose(new_velocity["w"], [0.9 * 0.2 - 0.1 * 0.5])
    np.testing.assert_allclose(new_center["w"], [1.0 + 0.13])
    np.testing.assert_allclose(lookahead["w"], [1.13 + 0.9 * 0.13])


# --- sign check on a quadratic -------------------------------------------------------------

@pytest.mark.parametrize("make_tx,name", [
    (lambda ax: dp.downpour(0.1, 1, ax), "downpour"),
    (lambda ax: dp.downpour(0.1, 4, ax), "downpour"),
    (lambda ax: dp.mdownpour(0.05, 0.5, ax), "mdownpour"),
    (lambda ax: dp.adownpour(0.1, 1, ax), "adownpour"),
    (lambda ax: dp.mvadownpour(0.1, 0.1, 2, ax), "mvadownpour"),
    (lambda ax: dp.downpour(0.1, 2, ax, server_adagrad=True, adagrad_rate=0.2), "downpour"),
], ids=["downpour", "downpour_tau4", "mdownpour", "adownpour", "mvadownpour",
        "downpour_adagrad"])
def test_quadratic_converges(make_tx, name):
    check_quadratic_converges(make_tx, name)


# --- the SPMD executor -----------------------------------------------------------------------

@pytest.mark.parametrize("make_tx,num_workers,num_devices", [
    (lambda ax: dp.downpour(0.05, 3, ax), 3, 3),
    (lambda ax: dp.downpour(0.05, 3, ax), 4, 2),  # 2 workers per device: nested vmap
    (lambda ax: dp.mdownpour(0.05, 0.7, ax), 3, 3),
    pytest.param(lambda ax: dp.adownpour(0.05, 2, ax), 3, 3, marks=pytest.mark.slow),
    (lambda ax: dp.mvadownpour(0.05, 0.3, 2, ax), 4, 2),
    pytest.param(lambda ax: dp.downpour(0.05, 2, ax, server_adagrad=True, adagrad_eps=1e-3),
                 3, 3, marks=pytest.mark.slow),
], ids=["downpour", "downpour_nested", "mdownpour", "adownpour", "mvadownpour_nested",
        "downpour_adagrad"])
def test_shard_map_matches_vmap(make_tx, num_workers, num_devices):
    check_shard_map_matches_vmap(make_tx, num_workers, num_devices, seed=10)


# --- dtypes and argument checks ------------------------------------------------------------

@pytest.mark.parametrize("make_tx", [
    lambda ax: dp.downpour(0.1, 2, ax),
    lambda ax: dp.mdownpour(0.1, 0.9, ax),
    lambda ax: dp.adownpour(0.1, 2, ax),
    lambda ax: dp.mvadownpour(0.1, 0.01, 2, ax),
    lambda ax: dp.downpour(0.1, 2, ax, server_adagrad=True),
], ids=["downpour", "mdownpour", "adownpour", "mvadownpour", "downpour_adagrad"])
def test_state_dtypes_survive_jit(make_tx):
    new_state = check_state_dtypes_survive_jit(make_tx)
    assert new_state.count.dtype == jnp.int32


@pytest.mark.parametrize("build,name", [
    (lambda: dp.downpour(-0.1), "learning_rate"),
    (lambda: dp.downpour(0.1, period=0), "period"),
    (lambda: dp.downpour(0.1, period=1.5), "period"),
    (lambda: dp.downpour(0.1, axis_name=""), "axis_name"),
    (lambda: dp.adownpour(float("nan")), "learning_rate"),
    (lambda: dp.adownpour(0.1, period=-2), "period"),
    (lambda: dp.mvadownpour(0.1, 0.0), "moving_average_rate"),
    (lambda: dp.mvadownpour(0.1, 1.5), "moving_average_rate"),
    (lambda: dp.mvadownpour(0.1, -0.1), "moving_average_rate"),
    (lambda: dp.mvadownpour(0.1, 0.01, period=0), "period"),
    (lambda: dp.mdownpour(0.1, 1.0), "momentum"),
    (lambda: dp.mdownpour(0.1, 1.2), "momentum"),
    (lambda: dp.mdownpour(0.1, -0.5), "momentum"),
    (lambda: dp.mdownpour(-1.0, 0.5), "learning_rate"),
    (lambda: dp.downpour(0.1, server_adagrad=1), "server_adagrad"),
    (lambda: dp.downpour(0.1, server_adagrad=True, adagrad_rate=-0.1), "adagrad_rate"),
    (lambda: dp.downpour(0.1, adagrad_rate=lambda t: 0.1), "adagrad_rate"),
    (lambda: dp.downpour(0.1, server_adagrad=True, adagrad_eps=0.0), "adagrad_eps"),
])
def test_invalid_hyperparameters_raise(build, name):
    with pytest.raises(ValueError, match=name):
        build()
