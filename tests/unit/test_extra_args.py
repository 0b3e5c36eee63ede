"""The build and extra arguments of every registered synchronous algorithm: every constructor
takes ``on_disagreement`` and checks it, and the phase argument ``communicate`` reaches an
algorithm through ``optax.chain``. (That ``update`` accepts and ignores extra arguments it does
not use is the contract's, tests/unit/test_contract.py.)

The hyperparameters are the tuned table's (``configs/tuned.py``)."""

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

    _, exchanged = jax.jit(jax.vmap(step, axis_name="workers"))(state, x)  # not op by op
    _, skipped = jax.jit(jax.vmap(lambda s, p: step(s, p, communicate=False),
                                  axis_name="workers"))(state, x)
    assert float(jnp.abs(easgd_jax.center(exchanged, worker=0)).max()) > 0.1
    np.testing.assert_array_equal(np.asarray(easgd_jax.center(skipped, worker=0)), 0.0)
