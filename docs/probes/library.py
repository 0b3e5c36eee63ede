"""Issue 15, items 1-7, as a JAX user meets them: one line per attempt, the result or the
error. From the repository root: ``.venv/bin/python docs/probes/library.py``."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import easgd_jax  # noqa: E402
from easgd_jax.parallel import make_round, make_worker_layout  # noqa: E402

P = 4
X0 = {"w": jnp.array([0.5, -1.0, 2.0])}
STACKED = easgd_jax.replicate(X0, P)


def attempt(label, fn):
    try:
        print(f"{label}: OK {fn()}")
    except Exception as e:
        print(f"{label}: {type(e).__name__}: {str(e)[:330]}")


def train(tx, params, steps=1):
    """``steps`` updates of ``tx`` on P vmapped workers, gradient params - 1."""
    def step(params, state):
        updates, state = tx.update(jax.tree.map(lambda a: a - 1.0, params), state, params)
        return optax.apply_updates(params, updates), state

    state = jax.vmap(tx.init)(params)
    step = jax.jit(jax.vmap(step, axis_name="workers"))
    for _ in range(steps):
        params, state = step(params, state)
    return params, state


def rounded(tree):
    return np.asarray(tree["w"]).round(4).tolist()


def main():
    injected = optax.inject_hyperparams(easgd_jax.eamsgd)(
        learning_rate=0.05, momentum=0.9, moving_rate=0.2, period=2, axis_name="workers")
    attempt("1 inject_hyperparams(eamsgd)", lambda: rounded(train(injected, STACKED)[0])[0])

    tx = easgd_jax.eamsgd(0.05, 0.9, 0.2, 1, axis_name="workers")
    attempt("3 tx.update outside any axis", lambda: tx.update(X0, tx.init(X0), X0))

    different = {"w": jnp.arange(12.0).reshape(P, 3)}
    attempt("4 workers initialised differently", lambda: train(tx, different))

    bf16 = easgd_jax.replicate({"w": jnp.ones(3, jnp.bfloat16)}, P)
    easgd = easgd_jax.easgd(0.5, 0.001)
    attempt("5 bfloat16 params: center dtype",
            lambda: str(jax.vmap(easgd.init)(bf16).center["w"].dtype))

    chain = optax.chain(easgd_jax.eamsgd(0.05, 0.9, 0.2, 1), optax.scale(0.5))
    attempt("6 chain(eamsgd, scale(0.5))",
            lambda: easgd_jax.check_chain_order(jax.vmap(chain.init)(STACKED)))

    def round_step(carry, batch):
        params, state = carry
        updates, state = tx.update(jax.tree.map(lambda a: a - batch, params), state, params)
        return (optax.apply_updates(params, updates), state), ()

    round_fn = make_round(round_step, make_worker_layout(P, P), donate=False)
    attempt("7 make_round with tx.init(stacked)",
            lambda: round_fn((STACKED, tx.init(STACKED)), jnp.zeros((P, 2, 3))))

    _, state = train(tx, STACKED, 3)
    attempt("2 center(state, worker=0)", lambda: rounded(easgd_jax.center(state, worker=0)))


if __name__ == "__main__":
    main()
