"""Buffer donation, the JAX idiom for in-place updates, through the executor's rounds (every
algorithm's init and a donating step are the contract's, tests/unit/test_contract.py).

``init`` must return state that shares no buffer with ``params`` (nor two state fields one
buffer): under an eager ``jax.vmap(tx.init)`` a ``jnp.asarray(params)`` center IS the params'
array, and ``jit(..., donate_argnums=(0, 1))`` over ``(params, opt_state)`` then fails with
"Attempt to donate the same buffer twice" (or, through ``parallel.make_round``, crashed the
process).
"""

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax

import easgd_jax
from easgd_jax import parallel

X0 = helpers.X0


def test_make_round_on_a_user_step_with_vmapped_workers():
    """8 workers on 4 devices (2 vmapped per device), the round donating its carry: a user's
    own step (not train.py's) through ``parallel.make_round``; this crashed the process."""
    layout = parallel.make_worker_layout(8, 4)
    tx = easgd_jax.eamsgd(0.05, 0.9, 0.9 / 8, 2, axis_name=layout.axis_name)
    user_step = helpers.user_step(optax.with_extra_args_support(tx))

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
