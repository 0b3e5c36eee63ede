"""Shared harness of the baseline tests (test_downpour.py, test_averaging.py).

p = 3 workers, tiny params {a: (2,), b: (2, 3)}, and per-worker gradients that depend on
the params, g_i(x) = c_i * x + n_{i,t}, run under ``jax.vmap`` or the SPMD executor.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.flatten_util import ravel_pytree

from easgd_jax import parallel
from easgd_jax.algorithms.registry import get_spec

P = 3  # workers
T = 8  # steps
X0 = {"a": np.array([0.5, -1.0], np.float32),
      "b": np.array([[0.3, -0.2, 0.9], [-0.7, 0.1, 0.4]], np.float32)}
X0_FLAT = np.asarray(ravel_pytree(X0)[0], np.float64)
N = X0_FLAT.size
TOL = {"rtol": 2e-5, "atol": 2e-5}


def problem(seed, p=P, steps=T):
    """Per-worker curvatures c_i and noise n_{i,t}: g_i(x) = c_i * x + n_{i,t}."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(0.5, 1.5, size=p)
    noise = rng.normal(size=(p, steps, N)).astype(np.float32)
    return c, noise


def make_step(tx):
    def step(carry, batch):
        params, state = carry
        c, noise = batch
        flat, unravel = ravel_pytree(params)
        grads = unravel(c * flat + noise)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        return (params, state), (params, state)

    return step


def init_carry(tx, p, x0=X0):
    stacked = jax.tree.map(lambda a: jnp.broadcast_to(jnp.asarray(a), (p, *a.shape)), x0)
    return stacked, jax.vmap(tx.init)(stacked)


def batches(c, noise):
    p, steps, _ = noise.shape
    return np.broadcast_to(np.float32(c)[:, None], (p, steps)).copy(), noise


def run_vmap(make_tx, c, noise, x0=X0):
    """Trajectory ``(params, state)``, leaves [p, T, ...], of p vmapped workers."""
    tx = make_tx("workers")
    worker = jax.vmap(lambda carry, b: lax.scan(make_step(tx), carry, b), axis_name="workers")
    _, traj = jax.jit(worker)(init_carry(tx, len(c), x0), batches(c, noise))
    return traj


def run_shard(make_tx, c, noise, num_devices):
    """The same trajectory under the SPMD executor (shard_map over simulated devices)."""
    layout = parallel.make_worker_layout(len(c), num_devices)
    tx = make_tx(layout.axis_name)
    round_fn = parallel.make_round(make_step(tx), layout, donate=False)
    _, traj = round_fn(init_carry(tx, len(c)), batches(c, noise))
    return traj


def flat(tree):
    """Leaves [p, T, ...] -> [p, T, N] in ravel_pytree order."""
    leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]
    return np.concatenate([x.reshape(*x.shape[:2], -1) for x in leaves], axis=-1)


def evaluation_params(name, state, params):
    """The point the training loop evaluates for the registered algorithm ``name``."""
    return get_spec(name).evaluation_params(state, params)


def check_quadratic_converges(make_tx, name):
    """f(x) = 0.5 ||x||^2 from x = 1: the evaluation point goes to 0 (a flipped sign, a
    missing step or a frozen center would not)."""
    steps = 100
    ones = jax.tree.map(np.ones_like, X0)
    params, state = run_vmap(make_tx, np.ones(P), np.zeros((P, steps, N), np.float32), ones)
    evaluated = flat(evaluation_params(name, state, params))[0]
    f = 0.5 * np.sum(evaluated ** 2, axis=-1)
    f0 = 0.5 * N
    assert f[0] < f0
    assert f[-1] < 1e-2 * f0
    assert np.all(np.isfinite(flat(params)))


def check_shard_map_matches_vmap(make_tx, num_workers, num_devices, seed):
    """The SPMD executor over simulated devices gives the vmapped trajectory."""
    c, noise = problem(seed, p=num_workers)
    expected = run_vmap(make_tx, c, noise)
    got = run_shard(make_tx, c, noise, num_devices)
    for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(got), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-6, atol=1e-6)


def check_state_dtypes_survive_jit(make_tx):
    """A jitted update keeps every state leaf's dtype and returns updates in the params'."""
    x0 = {"a": jnp.ones(2, jnp.bfloat16), "b": jnp.ones((2, 3), jnp.float32)}
    tx = make_tx("workers")
    params, state = init_carry(tx, P, x0)
    step = jax.jit(jax.vmap(lambda pr, s: tx.update(pr, s, pr), axis_name="workers"))
    updates, new_state = step(params, state)
    assert jax.tree.map(lambda x: x.dtype, new_state) == jax.tree.map(lambda x: x.dtype, state)
    assert jax.tree.map(lambda x: x.dtype, updates) == jax.tree.map(lambda x: x.dtype, params)
    return new_state
