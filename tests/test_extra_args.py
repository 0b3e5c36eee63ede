"""The optax contract of extra arguments, for every registered synchronous algorithm: its
``update`` accepts keyword arguments it does not use and ignores them (as optax's
``GradientTransformationExtraArgs`` promises; optax's own optimizers do, and ``optax.chain``
forwards every extra argument to every member), so ``tx.update(g, s, p, value=loss)`` works
and changes nothing. And every constructor takes the build argument ``on_disagreement``.

The hyperparameters are the tuned table's (``configs/tuned.py``): a newly registered
algorithm is checked here as soon as it has a tuned row, without a test of its own."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import easgd_jax
from easgd_jax.algorithms import registry
from easgd_jax.configs import tuned

P, GROUPS = 4, 2


def _tuned_rows(name: str) -> list[str]:
    return [row for row, values in tuned.TUNED.items() if values["name"] == name]


def _run(name: str, hparams: dict, extra: dict) -> list[np.ndarray]:
    """Three steps of ``name`` on P workers (GROUPS x P / GROUPS when grouped) of a small
    quadratic, each ``update`` called with ``loss`` (LSGD reads it) and ``extra``; the
    params and state leaves after them."""
    grouped = registry.is_grouped(name)
    axes = ({"axis_name": "members", "group_axis_name": "groups"} if grouped
            else {"axis_name": "workers"})
    tx = registry.get_algorithm(name, **axes, **hparams)
    rng = np.random.default_rng(0)
    x0 = {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
          "b": jnp.asarray(rng.normal(size=(2,)), jnp.float32)}
    scales = jnp.asarray(rng.uniform(0.5, 1.5, size=(P,)), jnp.float32)

    def worker(params, scale):
        state = tx.init(params)
        for _ in range(3):
            loss, grads = jax.value_and_grad(
                lambda q: scale * sum(jnp.sum(a ** 2) for a in jax.tree.leaves(q)))(params)
            updates, state = tx.update(grads, state, params, loss=loss, **extra)
            params = optax.apply_updates(params, updates)
        return params, state

    stacked = jax.tree.map(lambda a: jnp.broadcast_to(a, (P, *a.shape)), x0)
    if grouped:
        shape = (GROUPS, P // GROUPS)
        mapped = jax.vmap(jax.vmap(worker, axis_name="members"), axis_name="groups")
        out = mapped(jax.tree.map(lambda a: a.reshape(*shape, *a.shape[1:]), stacked),
                     scales.reshape(shape))
    else:
        out = jax.vmap(worker, axis_name="workers")(stacked, scales)
    return [np.asarray(a) for a in jax.tree.leaves(out)]


@pytest.mark.parametrize("name", easgd_jax.algorithm_names())
def test_update_accepts_and_ignores_an_extra_argument_it_does_not_use(name):
    rows = _tuned_rows(name)
    assert rows, f"{name!r} has no row in configs/tuned.py's TUNED table: add one."
    for row in rows:
        hparams = {k: v for k, v in tuned.algorithm(row, P).items() if k != "name"}
        plain = _run(name, hparams, {})
        told = _run(name, hparams, {"value": jnp.float32(1.0), "unused_flag": "x"})
        assert len(plain) == len(told)
        for a, b in zip(plain, told, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=f"{row}: the extra argument mattered")
        assert all(np.all(np.isfinite(a)) for a in plain if a.dtype.kind == "f"), row


@pytest.mark.parametrize("name", easgd_jax.algorithm_names())
def test_every_constructor_takes_on_disagreement_and_checks_it(name):
    constructor = registry.get_spec(name).form()
    assert "on_disagreement" in inspect.signature(constructor).parameters
    hparams = {k: v for k, v in tuned.algorithm(_tuned_rows(name)[0], P).items()
               if k != "name"}
    with pytest.raises(ValueError, match="on_disagreement must be one of"):
        registry.get_algorithm(name, on_disagreement="ignore", **hparams)


def test_an_extra_argument_reaches_the_algorithm_through_optax_chain():
    """``optax.chain`` forwards extra arguments: the phase reaches an elastic transformation
    at the end of a chain (an update told ``communicate=False`` at step 0 does not
    exchange, so the center stays where it was)."""
    tx = optax.chain(optax.clip_by_global_norm(10.0), easgd_jax.easgd(0.1, 0.5, 3))
    x = jnp.stack([jnp.zeros(2), jnp.ones(2)])  # different workers, equal centers below
    state = jax.vmap(tx.init)(jnp.zeros((2, 2)))

    def step(s, p, **extra):
        return tx.update(jnp.zeros_like(p), s, p, value=0.0, **extra)

    _, exchanged = jax.vmap(step, axis_name="workers")(state, x)
    _, skipped = jax.vmap(lambda s, p: step(s, p, communicate=False),
                          axis_name="workers")(state, x)
    assert float(jnp.abs(easgd_jax.center(exchanged, worker=0)).max()) > 0.1
    np.testing.assert_array_equal(np.asarray(easgd_jax.center(skipped, worker=0)), 0.0)
