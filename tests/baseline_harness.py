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
