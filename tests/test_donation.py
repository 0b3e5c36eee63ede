"""Buffer donation, the JAX idiom for in-place updates, works with every algorithm.

``init`` must return state that shares no buffer with ``params`` (nor two state fields one
buffer): under an eager ``jax.vmap(tx.init)`` a ``jnp.asarray(params)`` center IS the params'
array, and ``jit(..., donate_argnums=(0, 1))`` over ``(params, opt_state)`` then fails with
"Attempt to donate the same buffer twice" (or, through ``parallel.make_round``, crashed the
process).
"""

import glob
import importlib
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import easgd_jax
from easgd_jax import parallel
from easgd_jax.algorithms import registry
from easgd_jax.training import config as validation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

P, GROUPS = 4, 2
X0 = {"w": np.array([0.5, -1.0, 2.0], np.float32), "b": np.array([0.25], np.float32)}


def _configs_by_algorithm() -> dict[str, dict]:
    """Each registered name's hyperparameters, from the config file that selects it."""
    found: dict[str, dict] = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))):
        module = importlib.import_module(f"configs.{os.path.basename(path)[:-3]}")
        if hasattr(module, "get_config"):
            config = module.get_config()
            found.setdefault(config.algorithm.name, validation.algorithm_hparams(config))
    return found


HPARAMS = _configs_by_algorithm()


def test_every_registered_algorithm_has_a_config():
    assert set(registry.algorithm_names()) <= set(HPARAMS), (
        sorted(set(registry.algorithm_names()) - set(HPARAMS)))


def _tx(name: str) -> optax.GradientTransformationExtraArgs:
    if registry.is_grouped(name):
        tx = easgd_jax.get_algorithm(name, axis_name="members", group_axis_name="groups",
                                     **HPARAMS[name])
    else:
        tx = easgd_jax.get_algorithm(name, axis_name="workers", **HPARAMS[name])
    return optax.with_extra_args_support(tx)


def _lift(fn, grouped: bool):
    """p workers as one vmapped axis, or GROUPS x (p / GROUPS) nested axes."""
    if grouped:
        inner = jax.vmap(fn, axis_name="members")
        nested = jax.vmap(inner, axis_name="groups")

        def lifted(*args):
            split = jax.tree.map(lambda a: a.reshape(GROUPS, P // GROUPS, *a.shape[1:]), args)
            return jax.tree.map(lambda a: a.reshape(P, *a.shape[2:]), nested(*split))

        return lifted
    return jax.vmap(fn, axis_name="workers")


def _user_step(tx):
    """A user's step: quadratic loss 0.5 * c * |x - 1|^2 per worker, gradient at params."""

    def step(params, opt_state, c, **phase):
        def loss_fn(q):
            return 0.5 * c * sum(jnp.sum((a - 1.0) ** 2) for a in jax.tree.leaves(q))

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params, loss=loss, **phase)
        return optax.apply_updates(params, updates), opt_state

    return step


def _buffers(tree) -> list[int]:
    return [a.unsafe_buffer_pointer() for a in jax.tree.leaves(tree)
            if isinstance(a, jax.Array)]


@pytest.mark.parametrize("name", registry.algorithm_names())
def test_init_shares_no_buffer_and_donation_runs(name):
    tx = _tx(name)
    grouped = registry.is_grouped(name)
    stacked = jax.tree.map(lambda a: jnp.broadcast_to(jnp.asarray(a), (P, *a.shape)), X0)
    stacked = jax.tree.map(jnp.copy, stacked)
    one = jax.tree.map(jnp.asarray, X0)
    for params, opt_state in ((one, tx.init(one)),  # one worker, no mapped axis
                              (stacked, _lift(tx.init, grouped)(stacked))):  # eager vmap
        state_buffers = _buffers(opt_state)
        assert len(set(state_buffers)) == len(state_buffers), "two state fields share a buffer"
        assert not set(state_buffers) & set(_buffers(params)), "the state holds params' buffers"

    c = jnp.linspace(0.5, 1.5, P)
    step = _lift(_user_step(tx), grouped)
    expected = jax.jit(step)(stacked, opt_state, c)
    donated = jax.jit(step, donate_argnums=(0, 1))(stacked, opt_state, c)
    for a, b in zip(jax.tree.leaves(donated), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_make_round_on_a_user_step_with_vmapped_workers():
    """8 workers on 4 devices (2 vmapped per device), the round donating its carry: a user's
    own step (not train.py's) through ``parallel.make_round``; this crashed the process."""
    layout = parallel.make_worker_layout(8, 4)
    tx = easgd_jax.eamsgd(0.05, 0.9, 0.9 / 8, 2, axis_name=layout.axis_name)
    user_step = _user_step(optax.with_extra_args_support(tx))

    def step(carry, c, communicate=None):  # make_round(period=...) passes the phase
        params, opt_state = user_step(*carry, c, communicate=communicate)
        return (params, opt_state), jnp.sum(params["w"])

    stacked = jax.tree.map(lambda a: jnp.broadcast_to(jnp.asarray(a), (8, *a.shape)), X0)
    stacked = jax.device_put(jax.tree.map(jnp.copy, stacked), layout.worker_sharding())
    carry = (stacked, jax.vmap(tx.init)(stacked))  # eager, as a user writes it
    c = jax.device_put(jnp.broadcast_to(jnp.linspace(0.5, 1.5, 8)[:, None], (8, 4)),
                       layout.worker_sharding())
    round_fn = parallel.make_round(step, layout, period=2)
    for _ in range(3):
        carry, sums = round_fn(carry, c)
    center = easgd_jax.center(carry[1])
    # The minimum of every worker's loss is x = 1: after 12 steps everything moved toward it
    # and the replicated centers agree.
    w = np.asarray(center["w"])
    assert np.all(np.abs(w - 1.0) < np.abs(X0["w"] - 1.0)), w
    np.testing.assert_array_equal(w, np.broadcast_to(w[0], w.shape))
    assert np.asarray(sums).shape == (8, 4)
