"""Rounds traced in whole periods (``parallel.make_round(period=tau)``, which passes each
step's phase as ``tx.update(..., communicate=True / False)``) run the periodic algorithms
exactly as the per-step conditional does: same parameters and states at every step, on every
layout. And the phase argument itself: a step told its phase gives the state of the step
whose clock decides, at the matching clock."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

import easgd_jax
from easgd_jax import parallel
from easgd_jax.algorithms import clock, leader

P, STEPS, N = 4, 12, 5


def _make(name: str, tau: int, layout: parallel.WorkerLayout) -> optax.GradientTransformation:
    axis = layout.axis_name
    if name == "easgd":
        return easgd_jax.easgd(0.1, 0.2, tau, axis_name=axis)
    if name == "eamsgd":
        return easgd_jax.eamsgd(0.05, 0.9, 0.2, tau, axis_name=axis)
    if name == "downpour":
        return easgd_jax.downpour(0.05, tau, axis_name=axis)
    if name == "mvadownpour":
        return easgd_jax.mvadownpour(0.05, 0.01, tau, axis_name=axis)
    if name == "lsgd":
        return leader.lsgd_nesterov(0.05, 0.9, 0.2, tau, 3, axis_name=axis)
    if name == "lsgd_multi":  # global period 2 tau: the inner conditional stays
        return leader.lsgd_multi(optax.sgd(0.05), 0.3, 0.2, tau, 2 * tau, 2,
                                 axis_name=layout.member_axis_name,
                                 group_axis_name=layout.group_axis_name)
    raise ValueError(name)


def _step(tx: optax.GradientTransformation):
    """g_i = c_i * x + noise, loss_i = 0.5 c_i |x|^2 (for the leader's choice)."""
    tx = optax.with_extra_args_support(tx)

    def step(carry, batch, communicate=None):
        params, state = carry
        c, noise = batch
        loss = 0.5 * c * jnp.sum(params ** 2)
        phase = {} if communicate is None else {"communicate": communicate}
        updates, state = tx.update(c * params + noise, state, params, loss=loss, **phase)
        params = optax.apply_updates(params, updates)
        return (params, state), (params, state)

    return step


def _trajectories(name, tau, devices, period):
    num_groups = 2 if name == "lsgd_multi" else 1  # a group spans whole devices
    layout = parallel.make_worker_layout(P, max(devices, num_groups), num_groups=num_groups)
    tx = _make(name, tau, layout)
    rng = np.random.default_rng(tau)
    x0 = jnp.broadcast_to(jnp.asarray(rng.normal(size=N), jnp.float32), (P, N))
    c = np.broadcast_to(rng.uniform(0.5, 1.5, size=(P, 1)), (P, STEPS)).astype(np.float32)
    noise = rng.normal(size=(P, STEPS, N)).astype(np.float32)
    round_fn = parallel.make_round(_step(tx), layout, donate=False, period=period)
    return round_fn((x0, jax.vmap(tx.init)(x0)), (c, noise))


@pytest.mark.parametrize("name", ["easgd", "eamsgd", "downpour", "mvadownpour", "lsgd",
                                  "lsgd_multi"])
@pytest.mark.parametrize("tau", [pytest.param(1, marks=pytest.mark.slow), 3])
@pytest.mark.parametrize("devices", [4, 1])  # one worker per device; all vmapped
def test_whole_period_rounds_equal_the_per_step_conditional(name, tau, devices):
    expected = _trajectories(name, tau, devices, period=None)
    got = _trajectories(name, tau, devices, period=tau)
    for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(got), strict=True):
        assert e.shape == g.shape
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-6, atol=1e-6)
    # Not a vacuous comparison: the workers moved.
    params = np.asarray(got[1][0])
    assert np.all(np.isfinite(params)) and np.abs(params[:, -1] - params[:, 0]).max() > 1e-2


def test_a_period_round_on_a_wrong_phase_is_not_the_algorithm():
    """The declared phase is trusted: a round of period 3 whose clock starts at 1 (not a
    multiple of 3) differs from the conditional's round. Callers must keep rounds aligned
    (train.py: rounds of whole periods from step 0)."""
    layout = parallel.make_worker_layout(P, 1)
    tx = _make("easgd", 3, layout)
    x0 = jnp.broadcast_to(jnp.linspace(-1.0, 1.0, N, dtype=jnp.float32), (P, N))
    shifted = jax.vmap(tx.init)(x0)._replace(count=jnp.ones((P,), jnp.int32))
    batches = (np.linspace(0.5, 1.5, P * 6, dtype=np.float32).reshape(P, 6),
               np.zeros((P, 6, N), np.float32))
    runs = [parallel.make_round(_step(tx), layout, donate=False, period=period)(
        (x0 * jnp.arange(1, P + 1)[:, None], shifted), batches)[0][0] for period in (None, 3)]
    assert not np.allclose(np.asarray(runs[0]), np.asarray(runs[1]))


def test_rounds_must_be_whole_periods():
    layout = parallel.make_worker_layout(P, 1)
    tx = _make("easgd", 5, layout)
    x0 = jnp.zeros((P, N))
    round_fn = parallel.make_round(_step(tx), layout, donate=False, period=5)
    batches = (np.ones((P, 12), np.float32), np.zeros((P, 12, N), np.float32))
    with pytest.raises(ValueError, match="not a whole number of periods"):
        round_fn((x0, jax.vmap(tx.init)(x0)), batches)
    with pytest.raises(ValueError, match="period must be None or an integer >= 1"):
        parallel.make_round(_step(tx), layout, period=0)


def test_on_clock_takes_the_given_branch():
    def run(count, phase=None):
        return clock.on_clock(count, 3, lambda x: x + 1, lambda x: x - 1, jnp.float32(0), phase)

    def has_cond(phase):
        jaxpr = jax.make_jaxpr(lambda count: run(count, phase))(jnp.int32(0))
        return any(e.primitive is lax.cond_p for e in jaxpr.eqns)

    assert [float(run(jnp.int32(t))) for t in (0, 1, 3)] == [1.0, -1.0, 1.0]
    assert float(run(jnp.int32(1), True)) == 1.0  # given, not read from the clock
    assert float(run(jnp.int32(0), False)) == -1.0
    # Without a phase the choice is made at run time, with one it is not.
    assert has_cond(None) and not has_cond(True) and not has_cond(False)


# The periodic algorithms, each with the clock value its exchange happens at (t + 1 for
# DiLoCo, whose outer step closes the period).
_PERIODIC = {
    "easgd": lambda axis: easgd_jax.easgd(0.1, 0.2, 3, axis_name=axis),
    "eamsgd": lambda axis: easgd_jax.eamsgd(0.05, 0.9, 0.2, 3, axis_name=axis),
    # tau = 6 in 2 fragments: an exchange (of one fragment) every s = 3 steps.
    "eamsgd_fragments_bf16": lambda axis: easgd_jax.eamsgd(
        0.05, 0.9, 0.2, 6, axis_name=axis, num_fragments=2, exchange_dtype="bfloat16",
        error_feedback=True),
    "eamsgd_outer": lambda axis: easgd_jax.eamsgd_outer(0.05, 0.9, 0.2, 3, 0.7, 0.5,
                                                        axis_name=axis),
    "diloco": lambda axis: easgd_jax.algorithms.nesterov_diloco(0.05, 0.9, 3, axis_name=axis),
    "downpour": lambda axis: easgd_jax.downpour(0.05, 3, axis_name=axis),
    "adownpour": lambda axis: easgd_jax.adownpour(0.05, 3, axis_name=axis),
    "lsgd": lambda axis: leader.lsgd_nesterov(0.05, 0.9, 0.2, 3, 3, axis_name=axis),
}


@pytest.mark.parametrize("name", sorted(_PERIODIC))
def test_the_phase_argument_gives_the_clock_decided_step(name):
    """``tx.update(..., communicate=c)`` at a clock whose phase is c equals the step whose
    clock decides (no ``communicate``), for both phases; told the wrong phase it
    does something else (the argument is obeyed, not re-read from the clock)."""
    tx = _PERIODIC[name]("workers")
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(P, N)), jnp.float32)
    state = jax.vmap(tx.init)(jnp.broadcast_to(x[0], (P, N)))

    def compiled(**phase):
        def one(s, p, g):
            loss = 0.5 * jnp.sum(p ** 2)
            return tx.update(g, s, p, loss=loss, **phase)
        return jax.jit(jax.vmap(one, axis_name="workers"))

    steps = {None: compiled(), True: compiled(communicate=True),
             False: compiled(communicate=False)}  # each traced once

    def run(state, params, grads, communicate=None):
        return steps[communicate](state, params, grads)

    exchange_at = 0 if name != "diloco" else 2  # the clock's first exchange step
    seen = set()
    for t in range(6):  # walk the clock through two periods, one step at a time
        grads = jnp.asarray(rng.normal(size=(P, N)), jnp.float32)
        decided = run(state, x, grads)
        phase = (t - exchange_at) % 3 == 0
        told = run(state, x, grads, communicate=phase)
        for a, b in zip(jax.tree.leaves(told), jax.tree.leaves(decided), strict=True):
            # Equal up to float32 rounding: without the conditional XLA fuses differently.
            np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                       rtol=1e-6, atol=1e-6)
        wrong = run(state, x, grads, communicate=not phase)
        assert max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
                   for a, b in zip(jax.tree.leaves(wrong), jax.tree.leaves(decided),
                                   strict=True)) > 1e-4, t
        seen.add(phase)
        updates, state = decided
        x = optax.apply_updates(x, updates)
    assert seen == {True, False}


@pytest.mark.parametrize("bad", [jnp.bool_(True), 1, "yes"])
def test_the_phase_must_be_known_while_tracing(bad):
    tx = easgd_jax.easgd(0.1, 0.2, 3)
    x = jnp.ones((P, N))
    with pytest.raises(ValueError, match="communicate= must be None"):
        jax.vmap(lambda s, p: tx.update(p, s, p, communicate=bad),
                 axis_name="workers")(jax.vmap(tx.init)(x), x)
