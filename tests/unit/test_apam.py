"""APAM (easgd_jax/algorithms/adaptive.py): the three AMSGrad forms against optax and
the authors' numpy step, APAM with staleness 0 against optax.amsgrad, APAM under round robin
against a hand-written asynchronous master, and synchronous parallel AMSGrad."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax
from jax.flatten_util import ravel_pytree

from easgd_jax.algorithms import adaptive as am
from easgd_jax.parallel import schedules

X0 = {"a": np.array([0.5, -1.0], np.float32),
      "b": np.array([[0.3, -0.2, 0.9], [-0.7, 0.1, 0.4]], np.float32)}
X0_FLAT = np.asarray(ravel_pytree(X0)[0], np.float64)
N = X0_FLAT.size
KEY = jax.random.PRNGKey(0)


def grads_sequence(steps, seed=0, zero_column=False):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(steps, N)).astype(np.float32) * rng.uniform(0.1, 3, size=(steps, 1))
    if zero_column:
        g[:, 0] = 0.0
    return g.astype(np.float32)


def apply_sequence(tx, grads):
    """Applies tx to fixed gradients (flat) on X0; returns the flat iterates [T, N]."""
    _, unravel = ravel_pytree(X0)

    def step(carry, g):
        params, state = carry
        updates, state = tx.update(unravel(g), state, params)
        params = optax.apply_updates(params, updates)
        return (params, state), ravel_pytree(params)[0]

    x0 = jax.tree.map(jnp.asarray, X0)
    return np.asarray(jax.jit(lambda g: lax.scan(step, (x0, tx.init(x0)), g)[1])(grads))


def test_form_optax_is_optax_amsgrad():
    grads = grads_sequence(30)
    ours = apply_sequence(am.amsgrad(0.01, 0.9, 0.99, 1e-8, form="optax"), grads)
    ref = apply_sequence(optax.amsgrad(0.01, 0.9, 0.99, 1e-8), grads)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7)


def test_form_paper_is_amsgrad_without_corrections_or_epsilon():
    grads = grads_sequence(30, seed=1)
    ours = apply_sequence(am.amsgrad(0.01, 0.9, 0.99, form="paper"), grads)
    ref = apply_sequence(optax.amsgrad(0.01, 0.9, 0.99, eps=0.0, bias_correction_mu=False,
                                       bias_correction_nu=False), grads)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7)
    # The forms differ: the bias corrections change the first steps.
    other = apply_sequence(am.amsgrad(0.01, 0.9, 0.99, form="optax"), grads)
    assert np.abs(ours - other).max() > 1e-3


def test_form_paper_leaves_coordinates_without_gradient_in_place():
    grads = grads_sequence(10, seed=2, zero_column=True)
    ours = apply_sequence(am.amsgrad(0.01, form="paper"), grads)
    assert np.all(np.isfinite(ours))
    np.testing.assert_array_equal(ours[:, 0], X0["a"][0])
    ref = apply_sequence(optax.amsgrad(0.01, eps=0.0, bias_correction_mu=False,
                                       bias_correction_nu=False), grads)
    assert np.isnan(ref[:, 0]).all()  # 0/0 in the literal formula


def authors_step(w, g, state, alpha, beta1, beta2, epsilon):
    """APAM.step of github.com/RPI-OPT/APAM (MPI4PY/optim_and_train_apam.py), in numpy."""
    state["k"] += 1
    k = state["k"]
    step_size = alpha * np.sqrt(1 - beta2 ** k) / (1 - beta1 ** k)
    state["m"] = state["m"] * beta1 + (1 - beta1) * g
    state["v"] = state["v"] * beta2 + (1 - beta2) * g ** 2
    state["v_hat"] = np.maximum(state["v"], state["v_hat"])
    return w - step_size * (state["m"] / (np.sqrt(state["v_hat"]) + epsilon))


def test_form_authors_is_the_authors_step():
    grads = grads_sequence(30, seed=3)
    ours = apply_sequence(am.amsgrad(0.01, 0.9, 0.99, 1e-3, form="authors"), grads)
    w = X0_FLAT.copy()
    state = {"k": 0, "m": np.zeros(N), "v": np.zeros(N), "v_hat": np.zeros(N)}
    ref = []
    for g in grads.astype(np.float64):
        w = authors_step(w, g, state, 0.01, 0.9, 0.99, 1e-3)
        ref.append(w)
    np.testing.assert_allclose(ours, np.array(ref), rtol=1e-5, atol=1e-6)


# --- APAM under the asynchrony executors ----------------------------------------------------

def linear_problem(seed=0, steps=20):
    """g(x) = c x + n_t: the gradient depends on WHERE it is taken."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(steps, N)).astype(np.float32)
    _, unravel = ravel_pytree(X0)

    def grad_fn(params, n, key):
        del key
        x = ravel_pytree(params)[0]
        return unravel(1.5 * x + n), jnp.sum(x * x)

    return grad_fn, noise


def test_apam_without_staleness_equals_sequential_optax_amsgrad(form="optax"):
    steps = 20
    grad_fn, noise = linear_problem(0, steps)
    rule = am.apam(0.05, 0.9, 0.99, form=form)
    run = schedules.make_delay_simulator(rule, grad_fn)
    state = schedules.init_delay_state(rule, X0, 0, KEY)
    delays = schedules.random_delays(steps, 0, seed=0)
    zeros = np.zeros(steps, np.int32)
    state, info = run(state, delays, zeros, np.arange(steps), jnp.asarray(noise))
    assert np.asarray(info.staleness).max() == 0
    tx = (optax.amsgrad(0.05, 0.9, 0.99) if form == "optax" else
          optax.amsgrad(0.05, 0.9, 0.99, eps=0.0, bias_correction_mu=False,
                        bias_correction_nu=False))

    @jax.jit
    def step(x, opt_state, n):
        g, _ = grad_fn(x, n, None)
        updates, opt_state = tx.update(g, opt_state, x)
        return optax.apply_updates(x, updates), opt_state

    x = jax.tree.map(jnp.asarray, X0)
    opt_state = tx.init(x)
    for t in range(steps):
        x, opt_state = step(x, opt_state, noise[t])
    np.testing.assert_allclose(ravel_pytree(state.master.center)[0], ravel_pytree(x)[0],
                               rtol=1e-5, atol=1e-6)


def test_apam_round_robin_equals_hand_written_master():
    """p workers in turn: each computes its gradient at the x it read when its previous
    gradient was applied (p - 1 master updates old), the master applies AMSGrad at once."""
    p, steps, lr = 3, 15, 0.05
    grad_fn, noise = linear_problem(1, steps)
    rule = am.apam(lr, 0.9, 0.99, 1e-8, form="authors")
    sched = schedules.round_robin(p, steps)
    run = schedules.make_simulator(rule, grad_fn)
    state = schedules.init_sim_state(rule, X0, p, KEY)
    state, info = run(state, sched.workers, jnp.asarray(noise))

    x = X0_FLAT.copy()
    reads = [x.copy() for _ in range(p)]
    moments = {"k": 0, "m": np.zeros(N), "v": np.zeros(N), "v_hat": np.zeros(N)}
    for t, w in enumerate(sched.workers):
        g = 1.5 * reads[w] + noise[t]
        x = authors_step(x, g, moments, lr, 0.9, 0.99, 1e-8)
        reads[w] = x.copy()
    np.testing.assert_allclose(ravel_pytree(state.master.center)[0], x, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(info.staleness)[p:], p - 1)
    assert int(state.master.moments.count) == steps


def test_apam_random_delays_take_gradients_at_stale_iterates():
    steps, max_staleness, lr = 25, 3, 0.05
    grad_fn, noise = linear_problem(2, steps)
    rule = am.apam(lr, 0.9, 0.99, 1e-8, form="authors")
    delays = schedules.random_delays(steps, max_staleness, seed=4)
    run = schedules.make_delay_simulator(rule, grad_fn)
    state = schedules.init_delay_state(rule, X0, max_staleness, KEY)
    zeros = np.zeros(steps, np.int32)
    state, info = run(state, delays, zeros, np.arange(steps), jnp.asarray(noise))
    xs = [X0_FLAT.copy()]
    moments = {"k": 0, "m": np.zeros(N), "v": np.zeros(N), "v_hat": np.zeros(N)}
    for t in range(steps):
        g = 1.5 * xs[t - delays[t]] + noise[t]
        xs.append(authors_step(xs[t], g, moments, lr, 0.9, 0.99, 1e-8))
    np.testing.assert_allclose(ravel_pytree(state.master.center)[0], xs[-1], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(np.asarray(info.staleness), delays)
    assert delays.max() == max_staleness


# --- synchronous parallel AMSGrad -----------------------------------------------------------

def test_amsgrad_sync_applies_one_step_to_the_mean_gradient():
    p, steps = 3, 8
    grads = grads_sequence(steps * p, seed=5).reshape(steps, p, N).transpose(1, 0, 2)
    _, unravel = ravel_pytree(X0)
    tx = am.amsgrad_sync(0.01, 0.9, 0.99, form="optax", axis_name="workers")

    def worker(g_seq):
        x0 = jax.tree.map(jnp.asarray, X0)

        def step(carry, g):
            params, state = carry
            updates, state = tx.update(unravel(g), state, params)
            params = optax.apply_updates(params, updates)
            return (params, state), ravel_pytree(params)[0]

        return lax.scan(step, (x0, tx.init(x0)), g_seq)[1]

    traj = np.asarray(jax.jit(jax.vmap(worker, axis_name="workers"))(grads))
    for i in range(1, p):  # the workers stay identical
        np.testing.assert_array_equal(traj[i], traj[0])
    ref = apply_sequence(optax.amsgrad(0.01, 0.9, 0.99), grads.mean(axis=0))
    np.testing.assert_allclose(traj[0], ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"form": "adam"}, "form"), ({"b1": 1.0}, "b1"), ({"b2": -0.1}, "b2"),
    ({"eps": -1.0}, "eps"), ({"learning_rate": -1.0}, "learning_rate"),
])
def test_bad_hyperparameters_raise(kwargs, match):
    args = {"learning_rate": 0.01, **kwargs}
    with pytest.raises(ValueError, match=match):
        am.apam(**args)
    with pytest.raises(ValueError, match=match):
        am.amsgrad_sync(**args)
