"""SGD, MSGD, ASGD, MVASGD and data-parallel SGD against hand-written numpy references.

p = 3 workers under ``jax.vmap(axis_name="workers")`` (and ``jax.shard_map`` over simulated
devices), tiny params {a: (2,), b: (2, 3)}, and per-worker gradients that depend on the
params, g_i(x) = c_i * x + n_{i,t}. The sequential baselines run as p independent copies;
data-parallel SGD all-reduces. References in float64 on the flattened params.
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

from easgd_jax.algorithms import baselines as av


def run_single(tx, c, noise):
    """One worker on the MEAN of the p gradients, a Python loop: params per step, [T, N]."""

    @jax.jit
    def step(x, state, noise_t):
        flat_x, unravel = ravel_pytree(x)
        grad = unravel(jnp.mean(c[:, None] * flat_x[None] + noise_t, axis=0))
        updates, state = tx.update(grad, state, x)
        return optax.apply_updates(x, updates), state

    x = jax.tree.map(jnp.asarray, X0)
    state = tx.init(x)
    out = []
    for t in range(noise.shape[1]):
        x, state = step(x, state, noise[:, t])
        out.append(np.asarray(ravel_pytree(x)[0], np.float64))
    return np.array(out)


# --- numpy references ([p, T, N] for params and z) -----------------------------------------

def ref_sgd(c, noise, eta, delta=0.0, average=None):
    """Independent (Nesterov-)SGD per worker, paper form on (x, v), params = x + delta v.

    ``average``: None, "polyak" (a_t = 1/(t+1)) or a constant a; z averages x_t.
    """
    p, steps, _ = noise.shape
    x, v, z = np.tile(X0_FLAT, (p, 1)), np.zeros((p, N)), np.tile(X0_FLAT, (p, 1))
    ws, zs = [], []
    for t in range(steps):
        w = x + delta * v
        g = c[:, None] * w + noise[:, t]
        v = delta * v - eta * g
        x = x + v
        if average is not None:
            a = 1.0 / (t + 2) if average == "polyak" else average  # t + 1 steps taken
            z = (1 - a) * z + a * x
        ws.append(x + delta * v)
        zs.append(z.copy())
    return np.swapaxes(np.array(ws), 0, 1), np.swapaxes(np.array(zs), 0, 1)


def ref_data_parallel(c, noise, eta, delta=0.0):
    """Mean over workers of g_i(w), then (Nesterov-)SGD; all workers hold w. [T, N]."""
    x, v = X0_FLAT.copy(), np.zeros(N)
    ws = []
    for t in range(noise.shape[1]):
        w = x + delta * v
        g = np.mean(c[:, None] * w[None] + noise[:, t], axis=0)
        v = delta * v - eta * g
        x = x + v
        ws.append(x + delta * v)
    return np.array(ws)


# --- references ----------------------------------------------------------------------------

def test_sgd_matches_reference():
    c, noise = problem(0)
    params, _ = run_vmap(lambda ax: av.sgd(0.1, ax), c, noise)
    ws, _ = ref_sgd(c, noise, 0.1)
    np.testing.assert_allclose(flat(params), ws, **TOL)


def test_msgd_matches_reference():
    c, noise = problem(1)
    params, state = run_vmap(lambda ax: av.msgd(0.1, 0.8, ax), c, noise)
    ws, _ = ref_sgd(c, noise, 0.1, delta=0.8)
    np.testing.assert_allclose(flat(params), ws, **TOL)
    # No center or average: the training loop evaluates the (look-ahead) params.
    np.testing.assert_array_equal(flat(evaluation_params("msgd", state, params)), flat(params))


def test_asgd_matches_reference():
    c, noise = problem(2)
    params, state = run_vmap(lambda ax: av.asgd(0.1, ax), c, noise)
    ws, zs = ref_sgd(c, noise, 0.1, average="polyak")
    np.testing.assert_allclose(flat(params), ws, **TOL)
    np.testing.assert_allclose(flat(state.average), zs, **TOL)
    # The training loop evaluates z.
    np.testing.assert_array_equal(
        flat(evaluation_params("asgd", state, params)), flat(state.average))


def test_mvasgd_matches_reference():
    c, noise = problem(3)
    params, state = run_vmap(lambda ax: av.mvasgd(0.1, 0.25, ax), c, noise)
    ws, zs = ref_sgd(c, noise, 0.1, average=0.25)
    np.testing.assert_allclose(flat(params), ws, **TOL)
    np.testing.assert_allclose(flat(state.average), zs, **TOL)
    np.testing.assert_array_equal(
        flat(evaluation_params("mvasgd", state, params)), flat(state.average))


@pytest.mark.parametrize("momentum", [0.0, 0.6])
def test_data_parallel_sgd_matches_reference(momentum):
    c, noise = problem(4)
    params, _ = run_vmap(lambda ax: av.data_parallel_sgd(0.1, momentum, ax), c, noise)
    ws = ref_data_parallel(c, noise, 0.1, momentum)
    for i in range(P):
        np.testing.assert_allclose(flat(params)[i], ws, **TOL)


# --- equivalences --------------------------------------------------------------------------

def test_msgd_momentum_zero_is_sgd():
    c, noise = problem(5)
    p_m, _ = run_vmap(lambda ax: av.msgd(0.1, 0.0, ax), c, noise)
    p_s, _ = run_vmap(lambda ax: av.sgd(0.1, ax), c, noise)
    np.testing.assert_allclose(flat(p_m), flat(p_s), rtol=1e-6, atol=1e-7)


def test_asgd_average_is_running_mean_of_iterates():
    c, noise = problem(6)
    params, state = run_vmap(lambda ax: av.asgd(0.1, ax), c, noise)
    xs = flat(params)  # [p, T, N]: x_1..x_T
    iterates = np.concatenate([np.tile(X0_FLAT, (P, 1, 1)), xs], axis=1)  # x_0..x_T
    running = np.cumsum(iterates, axis=1) / np.arange(1, T + 2)[None, :, None]
    np.testing.assert_allclose(flat(state.average), running[:, 1:], **TOL)
    np.testing.assert_array_equal(np.asarray(state.count)[0], np.arange(1, T + 1))


def test_mvasgd_rate_one_tracks_iterate():
    c, noise = problem(7)
    params, state = run_vmap(lambda ax: av.mvasgd(0.1, 1.0, ax), c, noise)
    np.testing.assert_allclose(flat(state.average), flat(params), rtol=0, atol=1e-7)


@pytest.mark.parametrize("momentum", [0.0, 0.6])
def test_data_parallel_sgd_is_single_worker_on_mean_gradient(momentum):
    c, noise = problem(8)
    params, _ = run_vmap(lambda ax: av.data_parallel_sgd(0.1, momentum, ax), c, noise)
    got = flat(params)
    for i in range(1, P):  # the workers stay identical, bit for bit
        np.testing.assert_array_equal(got[i], got[0])
    single = av.msgd(0.1, momentum) if momentum else av.sgd(0.1)
    expected = run_single(single, np.float32(c), noise)
    np.testing.assert_allclose(got[0], expected, **TOL)


def test_data_parallel_sgd_differs_from_independent_sgd():
    """The all-reduce matters: without it the workers drift apart."""
    c, noise = problem(9)
    p_dp, _ = run_vmap(lambda ax: av.data_parallel_sgd(0.1, 0.0, ax), c, noise)
    p_s, _ = run_vmap(lambda ax: av.sgd(0.1, ax), c, noise)
    assert np.abs(flat(p_s)[0] - flat(p_s)[1]).max() > 1e-2
    assert np.abs(flat(p_dp)[0] - flat(p_s)[0]).max() > 1e-2


# --- sign check on a quadratic -------------------------------------------------------------

@pytest.mark.parametrize("make_tx,name", [
    (lambda ax: av.sgd(0.1, ax), "sgd"),
    (lambda ax: av.msgd(0.1, 0.5, ax), "msgd"),
    (lambda ax: av.asgd(0.5, ax), "asgd"),
    (lambda ax: av.mvasgd(0.1, 0.1, ax), "mvasgd"),
    (lambda ax: av.data_parallel_sgd(0.1, 0.0, ax), "data_parallel_sgd"),
    (lambda ax: av.data_parallel_sgd(0.1, 0.5, ax), "data_parallel_sgd"),
], ids=["sgd", "msgd", "asgd", "mvasgd", "data_parallel_sgd", "data_parallel_msgd"])
def test_quadratic_converges(make_tx, name):
    check_quadratic_converges(make_tx, name)


# --- the SPMD executor -----------------------------------------------------------------------

@pytest.mark.parametrize("make_tx,num_workers,num_devices", [
    (lambda ax: av.sgd(0.1, ax), 3, 3),
    (lambda ax: av.msgd(0.1, 0.7, ax), 3, 3),
    pytest.param(lambda ax: av.asgd(0.1, ax), 3, 3, marks=pytest.mark.slow),
    (lambda ax: av.mvasgd(0.1, 0.3, ax), 4, 2),
    pytest.param(lambda ax: av.data_parallel_sgd(0.1, 0.7, ax), 3, 3, marks=pytest.mark.slow),
    (lambda ax: av.data_parallel_sgd(0.1, 0.0, ax), 4, 2),  # nested: vmap inside shard_map
], ids=["sgd", "msgd", "asgd", "mvasgd_nested", "data_parallel", "data_parallel_nested"])
def test_shard_map_matches_vmap(make_tx, num_workers, num_devices):
    check_shard_map_matches_vmap(make_tx, num_workers, num_devices, seed=11)


# --- dtypes and argument checks ------------------------------------------------------------

@pytest.mark.parametrize("make_tx", [
    lambda ax: av.sgd(0.1, ax),
    lambda ax: av.msgd(0.1, 0.9, ax),
    lambda ax: av.asgd(0.1, ax),
    lambda ax: av.mvasgd(0.1, 0.01, ax),
    lambda ax: av.data_parallel_sgd(0.1, 0.9, ax),
], ids=["sgd", "msgd", "asgd", "mvasgd", "data_parallel_sgd"])
def test_state_dtypes_survive_jit(make_tx):
    check_state_dtypes_survive_jit(make_tx)


@pytest.mark.parametrize("build,name", [
    (lambda: av.sgd(-0.1), "learning_rate"),
    (lambda: av.sgd(0.1, axis_name=3), "axis_name"),
    (lambda: av.msgd(0.1, 1.0), "momentum"),
    (lambda: av.msgd(0.1, -0.1), "momentum"),
    (lambda: av.msgd(-0.1, 0.5), "learning_rate"),
    (lambda: av.asgd(-1e-3), "learning_rate"),
    (lambda: av.mvasgd(0.1, 0.0), "moving_average_rate"),
    (lambda: av.mvasgd(0.1, 1.01), "moving_average_rate"),
    (lambda: av.mvasgd(-0.1, 0.5), "learning_rate"),
    (lambda: av.data_parallel_sgd(-0.1), "learning_rate"),
    (lambda: av.data_parallel_sgd(0.1, momentum=1.0), "momentum"),
    (lambda: av.data_parallel_sgd(0.1, momentum=2.0), "momentum"),
    (lambda: av.data_parallel_sgd(0.1, axis_name=()), "axis_name"),
])
def test_invalid_hyperparameters_raise(build, name):
    with pytest.raises(ValueError, match=name):
        build()
