"""parallel.unrolled_over_workers: co-located workers' gradients computed one worker at a time
(so that XLA:CPU runs them concurrently), with vmap's numbers."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import easgd_jax
from easgd_jax import models, parallel
from easgd_jax.algorithms import registry
from easgd_jax.training.common import TrainState, make_local_step


def _loss_grad(params, x, scale):
    """A small nonlinear gradient with two products; ``scale`` is shared by the workers."""
    def loss(p):
        h = jnp.tanh(x @ p["w1"])
        return scale * jnp.sum((h @ p["w2"]) ** 2)
    return jax.grad(loss)(params)


def _inputs(k: int, dtype=np.float64):
    rng = np.random.default_rng(k)
    params = {"w1": rng.normal(size=(k, 3, 5)).astype(dtype),
              "w2": rng.normal(size=(k, 5, 2)).astype(dtype)}
    x = rng.normal(size=(k, 4, 3)).astype(dtype)
    return params, x, dtype(0.5)


def _dots(jaxpr) -> list:
    """Every dot_general of a (closed) jaxpr, nested jaxprs included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(eqn)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found += _dots(sub)
    return found


@pytest.mark.parametrize("k, max_chains", [(1, 8), (4, 8), (5, 2), (3, 3)])
def test_under_vmap_equals_vmap_in_float64(k, max_chains):
    """Every worker's result is its own (no worker swapped, dropped or repeated), the shared
    argument reaches every worker, and chains of several vmapped workers split evenly."""
    with jax.enable_x64(True):
        params, x, scale = _inputs(k)
        unrolled = parallel.unrolled_over_workers(_loss_grad, max_chains=max_chains)
        got = jax.jit(jax.vmap(unrolled, in_axes=(0, 0, None)))(params, x, scale)
        want = jax.vmap(_loss_grad, in_axes=(0, 0, None))(params, x, scale)
        for name in params:
            assert got[name].shape == params[name].shape
            np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=0)


def test_outside_a_vmap_it_is_the_function():
    params, x, scale = _inputs(1, np.float32)
    one = jax.tree.map(lambda a: a[0], params)
    got = parallel.unrolled_over_workers(_loss_grad)(one, x[0], scale)
    want = _loss_grad(one, x[0], scale)
    for name in one:
        np.testing.assert_array_equal(got[name], want[name])


@pytest.mark.parametrize("k, max_chains, unbatched_copies", [(4, 8, 4), (6, 2, 0)])
def test_under_vmap_each_worker_runs_its_own_products(k, max_chains, unbatched_copies):
    """4 workers: 4 copies of the gradient's 5 products, none batched over the workers. 6
    workers in 2 chains: 2 copies, each batched over its 3 workers."""
    params, x, scale = _inputs(k, np.float32)
    unrolled = parallel.unrolled_over_workers(_loss_grad, max_chains=max_chains)
    dots = _dots(jax.make_jaxpr(jax.vmap(unrolled, in_axes=(0, 0, None)))(
        params, x, scale).jaxpr)
    batched = [d for d in dots if d.params["dimension_numbers"][1][0]]
    plain = _dots(jax.make_jaxpr(jax.vmap(_loss_grad, in_axes=(0, 0, None)))(
        params, x, scale).jaxpr)
    assert len(plain) == 5 and all(d.params["dimension_numbers"][1][0] for d in plain)
    assert len(dots) == min(k, max_chains) * len(plain)
    assert len(dots) - len(batched) == unbatched_copies * len(plain)


def _vmapped_step_dots(unroll_workers):
    model = models.get_model("mlp", 10, hidden=(8,))
    x = np.zeros((4, 3, 6), np.float32)
    params = jax.vmap(lambda key: model.init(key, x[0])["params"])(
        jax.random.split(jax.random.PRNGKey(0), 4))
    tx = easgd_jax.eamsgd(0.1, 0.9, 0.2, period=2, axis_name="workers")
    step = make_local_step(model, tx, 0.0, unroll_workers=unroll_workers)
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    state = TrainState(params, jax.vmap(tx.init)(params), keys)
    batch = (x, np.zeros((4, 3), np.int32))
    jaxpr = jax.make_jaxpr(jax.vmap(step, axis_name="workers"))(state, batch).jaxpr
    return [bool(d.params["dimension_numbers"][1][0]) for d in _dots(jaxpr)]


def test_the_local_step_unrolls_co_located_workers_on_cpu_by_default():
    """The default (None) on this CPU backend: each of the 4 workers' forward and backward
    products alone; unroll_workers=False: the products batched over the workers."""
    assert jax.default_backend() == "cpu"
    default, batched = _vmapped_step_dots(None), _vmapped_step_dots(False)
    assert len(default) == 4 * len(batched) and not any(default)
    assert batched and all(batched)
    assert _vmapped_step_dots(True) == default


def test_a_vmapped_round_gives_the_same_numbers_unrolled_or_batched():
    """EAMSGD, 4 workers vmapped on one device, a round of 6 steps of a narrow MNIST-1D CNN
    (the strided convolutions' custom gradient included) in float64: the unrolled gradients
    give the batched round's parameters and center."""
    with jax.enable_x64(True):
        layout = parallel.make_worker_layout(4, 1)
        model = models.get_model("cnn1d", 10, features=(4, 4), kernel_sizes=(3, 3))
        rng = np.random.default_rng(0)
        x = rng.normal(size=(4, 6, 8, 40))
        y = rng.integers(0, 10, size=(4, 6, 8)).astype(np.int32)
        init = jax.jit(model.init)(jax.random.PRNGKey(0), x[0, 0])["params"]  # one program
        params = jax.tree.map(lambda a: np.broadcast_to(np.asarray(a, np.float64),
                                                        (4, *a.shape)), init)
        spec = registry.get_spec("eamsgd")
        tx = registry.get_algorithm("eamsgd", axis_name=layout.axis_name, learning_rate=0.05,
                                    momentum=0.9, moving_rate=0.2, period=3)

        def run(unroll_workers):
            step = make_local_step(model, tx, 0.0, spec, unroll_workers=unroll_workers)
            round_fn = parallel.make_round(step, layout, donate=False, period=3)
            state = TrainState(params, jax.vmap(tx.init)(params),
                               jax.random.split(jax.random.PRNGKey(1), 4))
            state, (losses, _) = round_fn(state, (x, y))
            return jax.device_get((state.params, easgd_jax.center(state.opt_state), losses))

        unrolled, batched = run(True), run(False)
        assert jax.tree.leaves(unrolled)[0].dtype == np.float64
        moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(), batched[0],
                                             params))
        assert max(moved) > 1e-3  # the round trained
        for a, b in zip(jax.tree.leaves(unrolled), jax.tree.leaves(batched), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
