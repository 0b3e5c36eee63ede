"""What a researcher importing the package does with optax and JAX, and the errors and
safeguards around it (issue 15, items 1 and 3-7).

- every registered algorithm under ``optax.inject_hyperparams``, its rates injectable;
- ``tx.update`` where the worker axis is unbound: an error naming the axis and the fix;
- workers whose replicated centers disagree (different initial params): a loud error;
- bfloat16 params: the center and the averages kept in float32 (``center_dtype``);
- an elastic transformation that is not last in an ``optax.chain``: refused by
  ``check_chain_order`` (and by the executor);
- ``tx.init`` on stacked params: an error that shows ``jax.vmap(tx.init)``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_donation import HPARAMS  # each name's hyperparameters, from its config file

import easgd_jax
from easgd_jax.algorithms import registry

P, GROUPS = 4, 2
X0 = {"w": np.array([0.5, -1.0, 2.0], np.float32), "b": np.array([0.25], np.float32)}


def _integer_hparams(hparams: dict) -> tuple[str, ...]:
    """The structural hyperparameters (periods, windows) and flags: static under
    ``inject_hyperparams``; every float (the rates) is injected."""
    return tuple(k for k, v in hparams.items()
                 if isinstance(v, bool | str) or (isinstance(v, int) and k != "momentum"))


def _one_step(tx: optax.GradientTransformation, grouped: bool):
    """One update of P workers (stacked) on a quadratic with per-worker curvature, under
    vmap with the axis names bound (grouped: groups x members)."""
    tx = optax.with_extra_args_support(tx)

    def step(params, c):
        state = tx.init(params)
        loss, grads = jax.value_and_grad(
            lambda q: 0.5 * c * sum(jnp.sum((a - 1.0) ** 2) for a in jax.tree.leaves(q))
        )(params)
        return tx.update(grads, state, params, loss=loss)

    stacked = jax.tree.map(
        lambda a: jnp.broadcast_to(a, (P, *a.shape)) + 0.0, X0)
    c = jnp.linspace(0.5, 1.5, P)
    if grouped:
        split = jax.tree.map(lambda a: a.reshape(GROUPS, P // GROUPS, *a.shape[1:]),
                             (stacked, c))
        out = jax.vmap(jax.vmap(step, axis_name="members"), axis_name="groups")(*split)
        return jax.tree.map(lambda a: a.reshape(P, *a.shape[2:]), out)
    return jax.vmap(step, axis_name="workers")(stacked, c)


def _axes(name: str) -> dict:
    if registry.is_grouped(name):
        return {"axis_name": "members", "group_axis_name": "groups"}
    return {"axis_name": "workers"}


@pytest.mark.parametrize("name", registry.algorithm_names())
def test_every_algorithm_works_under_inject_hyperparams(name):
    spec = registry.get_spec(name)
    hparams = HPARAMS[name]
    static = _integer_hparams(hparams)
    injected = [k for k in hparams if k not in static]
    assert injected, name  # every algorithm has at least one rate to inject
    wrapped = optax.inject_hyperparams(spec.sync, static_args=static)(**_axes(name), **hparams)
    plain = registry.get_algorithm(name, **_axes(name), **hparams)
    updates, state = _one_step(wrapped, spec.grouped)
    ref_updates, ref_state = _one_step(plain, spec.grouped)
    assert set(injected) <= set(state.hyperparams)  # (defaults are injected too)
    for a, b in zip(jax.tree.leaves((updates, state.inner_state)),
                    jax.tree.leaves((ref_updates, ref_state)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_eamsgd_under_inject_hyperparams_without_static_args_and_a_new_rate():
    """The period injected too (an int32 array); setting the injected learning rate in the
    state changes the next step as building the transformation with it would."""
    wrapped = optax.inject_hyperparams(easgd_jax.eamsgd)(
        learning_rate=0.05, momentum=0.9, moving_rate=0.2, period=2, axis_name="workers")
    updates, state = _one_step(wrapped, grouped=False)
    assert state.hyperparams["period"].dtype == jnp.int32
    ref, _ = _one_step(easgd_jax.eamsgd(0.05, 0.9, 0.2, period=2), grouped=False)
    np.testing.assert_allclose(updates["w"], ref["w"], rtol=1e-6)

    def second(params, state, c):
        grads = jax.tree.map(lambda a: c * (a - 1.0), params)
        return wrapped.update(grads, state, params)

    stacked = jax.tree.map(lambda a: jnp.broadcast_to(a, (P, *a.shape)) + 0.0, X0)
    c = jnp.linspace(0.5, 1.5, P)
    state.hyperparams["learning_rate"] = jnp.full((P,), 0.01, jnp.float32)
    got, _ = jax.jit(jax.vmap(second, axis_name="workers"))(stacked, state, c)
    _, plain_state = _one_step(easgd_jax.eamsgd(0.05, 0.9, 0.2, period=2), grouped=False)
    plain = easgd_jax.eamsgd(0.01, 0.9, 0.2, period=2)  # the same state, the new rate
    want, _ = jax.vmap(lambda p, s, c: plain.update(
        jax.tree.map(lambda a: c * (a - 1.0), p), s, p), axis_name="workers")(
            stacked, plain_state, c)
    np.testing.assert_allclose(got["w"], want["w"], rtol=1e-6)


def test_injected_values_are_still_checked():
    with pytest.raises(ValueError, match=r"moving_rate must be in \[0.0, 1.0\], got "
                                         r"Array\(1.5"):
        easgd_jax.eamsgd(0.05, 0.9, jnp.asarray(1.5))
    with pytest.raises(ValueError, match="period must be an integer >= 1, got Array"):
        easgd_jax.easgd(0.05, 0.2, period=jnp.asarray(0))
    with pytest.raises(ValueError, match="learning_rate must be >= 0"):
        easgd_jax.easgd(jnp.asarray(-0.1), 0.2)
    with pytest.raises(ValueError, match="period must be an integer >= 1, got Array"):
        easgd_jax.easgd(0.05, 0.2, period=jnp.asarray(2.0))  # a float array is no period
