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

import easgd_jax

P, GROUPS = 4, 2
X0 = {"w": np.array([0.5, -1.0, 2.0], np.float32), "b": np.array([0.25], np.float32)}


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
        out = jax.jit(jax.vmap(jax.vmap(step, axis_name="members"), axis_name="groups"))(
            *split)
        return jax.tree.map(lambda a: a.reshape(P, *a.shape[2:]), out)
    return jax.jit(jax.vmap(step, axis_name="workers"))(stacked, c)


def test_eamsgd_under_inject_hyperparams_without_static_args_and_a_new_rate():
    """The period injected too (an int32 array); setting the injected learning rate in the
    state changes the next step as building the transformation with it would."""
    wrapped = optax.inject_hyperparams(easgd_jax.eamsgd)(
        learning_rate=0.05, momentum=0.9, moving_rate=0.2, period=2, axis_name="workers")
    _, state = _one_step(wrapped, grouped=False)
    assert state.hyperparams["period"].dtype == jnp.int32

    def second(params, state, c):
        grads = jax.tree.map(lambda a: c * (a - 1.0), params)
        return wrapped.update(grads, state, params)

    stacked = jax.tree.map(lambda a: jnp.broadcast_to(a, (P, *a.shape)) + 0.0, X0)
    c = jnp.linspace(0.5, 1.5, P)
    state.hyperparams["learning_rate"] = jnp.full((P,), 0.01, jnp.float32)
    got, _ = jax.jit(jax.vmap(second, axis_name="workers"))(stacked, state, c)
    _, plain_state = _one_step(easgd_jax.eamsgd(0.05, 0.9, 0.2, period=2), grouped=False)
    plain = easgd_jax.eamsgd(0.01, 0.9, 0.2, period=2)  # the same state, the new rate
    want, _ = jax.jit(jax.vmap(lambda p, s, c: plain.update(  # one program, not op by op
        jax.tree.map(lambda a: c * (a - 1.0), p), s, p), axis_name="workers"))(
            stacked, plain_state, c)
    np.testing.assert_allclose(got["w"], want["w"], rtol=1e-6)


def test_lsgd_loss_window_injected_and_traced_says_to_make_it_static():
    wrapped = optax.inject_hyperparams(easgd_jax.lsgd_nesterov)(
        learning_rate=0.1, momentum=0.9, pull=0.1, period=2, loss_window=3)
    with pytest.raises(ValueError, match=r"static_args=\('loss_window',\)"):
        jax.jit(wrapped.init)({"w": jnp.zeros(3)})


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


# --------------------------------------------------------------------------- item 3


def test_update_outside_the_worker_axis_names_the_axis_and_the_fix():
    tx = easgd_jax.eamsgd(0.05, 0.9, 0.2, period=1, axis_name="workers")
    one = {"w": jnp.zeros(3)}
    with pytest.raises(NameError, match=r"built with axis_name='workers'.*"
                                        r"jax\.vmap\(step, axis_name='workers'\).*shard_map"):
        tx.update(one, tx.init(one), one)  # no mapped axis at all
    stacked = easgd_jax.replicate(one, P)
    state = jax.vmap(tx.init)(stacked)
    with pytest.raises(easgd_jax.algorithms.collectives.UnboundAxisError,
                       match="jax.vmap without axis_name does not bind it"):
        jax.vmap(tx.update)(stacked, state, stacked)  # vmap without axis_name
    lsgd = optax.with_extra_args_support(easgd_jax.lsgd_nesterov(0.1, 0.9, 0.1, 1))
    with pytest.raises(NameError, match="built with axis_name='workers'"):
        lsgd.update(one, lsgd.init(one), one, loss=jnp.float32(1.0))  # the gather


# --------------------------------------------------------------------------- item 4


def _stacked_step(tx):
    def step(params, state):
        grads = jax.tree.map(jnp.ones_like, params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(jax.vmap(step, axis_name="workers"))


@pytest.mark.parametrize("make", [lambda: easgd_jax.eamsgd(0.05, 0.9, 0.2, period=2),
                                  lambda: easgd_jax.downpour(0.05, period=2),
                                  lambda: easgd_jax.mdownpour(0.05, 0.9)],
                         ids=["eamsgd", "downpour", "mdownpour"])
def test_workers_initialised_at_different_params_stop_at_the_first_exchange(make):
    """By default the update holds no host callback: the first exchange turns the center
    NaN and records the disagreement in the state, and the host-side readers
    (``easgd_jax.center``, ``easgd_jax.check_agreement``) raise the explanatory error."""
    tx = make()
    one_init_per_worker = {"w": jax.random.normal(jax.random.key(0), (P, 3))}
    state = jax.vmap(tx.init)(one_init_per_worker)
    easgd_jax.check_agreement(state)  # nothing exchanged yet: nothing recorded
    _, after = _stacked_step(tx)(one_init_per_worker, state)
    assert np.all(np.isnan(np.asarray(after.center["w"])))
    assert not np.any(np.asarray(after.copies_agree))
    message = r"copies of the center differ.*easgd_jax\.replicate\(params, num_workers\)"
    with pytest.raises(ValueError, match=message):
        easgd_jax.center(after, worker=0)
    with pytest.raises(ValueError, match=message):
        easgd_jax.check_agreement(after)
    # The fix the message names: one init, replicated.
    stacked = easgd_jax.replicate({"w": one_init_per_worker["w"][0]}, P)
    params, state = _stacked_step(tx)(stacked, jax.vmap(tx.init)(stacked))
    assert np.all(np.isfinite(np.asarray(easgd_jax.center(state)["w"])))


@pytest.mark.parametrize("make", [
    lambda mode: easgd_jax.eamsgd(0.05, 0.9, 0.2, period=2, on_disagreement=mode),
    lambda mode: easgd_jax.downpour(0.05, period=2, on_disagreement=mode),
    lambda mode: easgd_jax.mdownpour(0.05, 0.9, on_disagreement=mode),
    lambda mode: easgd_jax.algorithms.nesterov_diloco(0.05, 0.9, 1, on_disagreement=mode)],
    ids=["eamsgd", "downpour", "mdownpour", "diloco"])
def test_built_with_on_disagreement_nan_differing_centers_turn_nan_without_a_callback(make):
    """``on_disagreement="nan"`` (the default): differing copies give a NaN center and a
    recorded disagreement, and the program holds no host callback (which JAX's persistent
    compilation cache and ``jax.export`` refuse); ``"raise"`` also raises at the exchange;
    agreeing copies train exactly the same either way."""
    raising, quiet = make("raise"), make("nan")
    one_init_per_worker = {"w": jax.random.normal(jax.random.key(0), (P, 3))}
    state = jax.vmap(raising.init)(one_init_per_worker)
    assert "callback" in _stacked_step(raising).lower(one_init_per_worker, state).as_text()
    with pytest.raises(Exception, match="copies of the center differ"):
        jax.block_until_ready(_stacked_step(raising)(one_init_per_worker, state))
    step = _stacked_step(quiet)
    assert "callback" not in step.lower(one_init_per_worker, state).as_text()
    _, after = step(one_init_per_worker, state)
    assert np.all(np.isnan(np.asarray(after.center["w"])))
    stacked = easgd_jax.replicate({"w": one_init_per_worker["w"][0]}, P)
    expected = _stacked_step(raising)(stacked, jax.vmap(raising.init)(stacked))
    got = _stacked_step(quiet)(stacked, jax.vmap(quiet.init)(stacked))
    jax.tree.map(np.testing.assert_array_equal, got, expected)


def test_on_disagreement_is_checked_when_built_and_is_not_a_hyperparameter():
    with pytest.raises(ValueError, match="on_disagreement must be one of 'nan', 'raise'"):
        easgd_jax.easgd(0.05, 0.2, on_disagreement="warn")
    with pytest.raises(ValueError, match="on_disagreement must be one of"):
        easgd_jax.get_algorithm("diloco", learning_rate=0.1, momentum=0.9, period=2,
                                on_disagreement=None)
    assert "on_disagreement" not in easgd_jax.algorithms.hyperparameter_names("easgd")


def test_different_centers_stop_under_shard_map_too_and_nan_centers_do_not():
    layout = easgd_jax.parallel.make_worker_layout(P, P)
    tx = easgd_jax.easgd(0.05, 0.2, period=1, axis_name=layout.axis_name)

    def step(carry, _):
        params, state = carry
        updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
        return (optax.apply_updates(params, updates), state), None

    round_fn = easgd_jax.parallel.make_round(step, layout, donate=False)
    differ = {"w": jnp.arange(P * 2, dtype=jnp.float32).reshape(P, 2)}
    (_, state), _ = round_fn((differ, jax.vmap(tx.init)(differ)), jnp.zeros((P, 1)))
    with pytest.raises(ValueError, match="copies of the center differ"):
        easgd_jax.center(state, worker=0)
    # A diverged (NaN) center is the same on every worker: no disagreement, NaN goes on to
    # the executor's non-finite check.
    nan = {"w": jnp.full((P, 2), jnp.nan)}
    (params, state), _ = round_fn((nan, jax.vmap(tx.init)(nan)), jnp.zeros((P, 1)))
    assert np.all(np.isnan(np.asarray(easgd_jax.center(state, worker=0)["w"])))


# --------------------------------------------------------------------------- item 5


def test_bfloat16_params_get_float32_center_and_averages():
    x = {"w": jnp.ones((P, 2), jnp.bfloat16)}
    tx = easgd_jax.easgd(0.5, 0.001, period=1)
    state = jax.vmap(tx.init)(x)
    assert state.center["w"].dtype == jnp.float32
    # One worker moved by 0.5: the center takes alpha * sum_i (x_i - c) = 0.001 * (-0.5),
    # 1 - 0.0005, which bfloat16 (8 bits of mantissa) would round back to 1.
    moved = {"w": x["w"].at[0].set(0.5)}
    zero = jax.tree.map(jnp.zeros_like, moved)
    updates, state = jax.vmap(tx.update, axis_name="workers")(zero, state, moved)
    assert updates["w"].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(state.center["w"]), 1.0 - 0.0005, rtol=1e-6)
    old = easgd_jax.easgd(0.5, 0.001, period=1, center_dtype=None)
    _, old_state = jax.vmap(old.update, axis_name="workers")(
        zero, jax.vmap(old.init)(x), moved)
    assert old_state.center["w"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(old_state.center["w"], np.float32), 1.0)

    avg = easgd_jax.algorithms.mvasgd(0.5, 0.001)  # z <- 0.999 z + 0.001 x
    one = {"w": jnp.ones(2, jnp.bfloat16)}
    _, avg_state = avg.update({"w": jnp.ones(2, jnp.bfloat16)}, avg.init(one), one)
    assert avg_state.average["w"].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(avg_state.average["w"]), 0.9995, rtol=1e-6)
    with pytest.raises(ValueError, match="center_dtype must be None or a floating dtype"):
        easgd_jax.eamsgd(0.1, 0.9, 0.2, center_dtype="int32")


# --------------------------------------------------------------------------- item 6


def test_elastic_transformation_not_last_in_a_chain_is_refused():
    stacked = easgd_jax.replicate({"w": jnp.zeros(3)}, P)
    halved = optax.chain(easgd_jax.eamsgd(0.1, 0.9, 0.2), optax.scale(0.5))
    with pytest.raises(ValueError, match=r"transformation 0 of 2 \(state "
                                         r"ElasticAveragingState\).*Put it LAST"):
        easgd_jax.check_chain_order(jax.vmap(halved.init)(stacked))
    nested = optax.chain(optax.chain(optax.clip(1.0), easgd_jax.downpour(0.1)), optax.scale(2))
    with pytest.raises(ValueError, match="DownpourState"):
        easgd_jax.check_chain_order(nested.init({"w": jnp.zeros(3)}))
    for fine in (optax.chain(optax.clip_by_global_norm(1.0), easgd_jax.eamsgd(0.1, 0.9, 0.2)),
                 optax.chain(optax.scale(0.5), optax.inject_hyperparams(easgd_jax.easgd)(
                     0.1, 0.2)),
                 easgd_jax.data_parallel_sgd(0.1, 0.9)):
        easgd_jax.check_chain_order(jax.vmap(fine.init)(stacked))  # no error


# --------------------------------------------------------------------------- item 7


def test_init_on_stacked_params_says_init_is_per_worker():
    layout = easgd_jax.parallel.make_worker_layout(P, P)
    tx = easgd_jax.eamsgd(0.05, 0.9, 0.2, period=1, axis_name=layout.axis_name)
    stacked = easgd_jax.replicate({"w": jnp.zeros(3)}, P)

    def step(carry, _):
        params, state = carry
        updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
        return (optax.apply_updates(params, updates), state), None

    round_fn = easgd_jax.parallel.make_round(step, layout, donate=False)
    with pytest.raises(ValueError, match=r"args\[0\]\[1\]\.count has shape \(\).*"
                                         r"jax\.vmap\(tx\.init\)\(stacked_params\)"):
        round_fn((stacked, tx.init(stacked)), jnp.zeros((P, 1)))
    # The state of ALL workers handed to each worker (in_axes None): its center is stacked.
    with pytest.raises(ValueError, match=r"center has leaf shapes \[\(4, 3\)\] where this "
                                         r"worker's params have \[\(3,\)\]"):
        jax.vmap(lambda p, s: tx.update(p, s, p), in_axes=(0, None),
                 axis_name="workers")(stacked, tx.init(stacked))


# --------------------------------------------------------------------------- item 2


def test_center_accessor_takes_one_worker_and_unwraps_nnx():
    from flax import nnx

    tx = easgd_jax.easgd(0.1, 0.2)
    stacked = easgd_jax.replicate({"w": jnp.arange(3.0)}, P)
    state = jax.vmap(tx.init)(stacked)
    assert easgd_jax.center(state)["w"].shape == (P, 3)  # as stored
    np.testing.assert_array_equal(easgd_jax.center(state, worker=0)["w"], [0.0, 1.0, 2.0])
    marked = state._replace(center={"w": state.center["w"] + jnp.arange(P)[:, None]})
    np.testing.assert_array_equal(easgd_jax.center(marked, worker=2)["w"], [2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="takes one copy along the leading worker axis"):
        easgd_jax.center(state, worker=P)
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    center = easgd_jax.center(optimizer.opt_state)
    assert type(center) is dict and sorted(center) == ["bias", "kernel"]
    assert isinstance(center["kernel"], jax.Array)
    np.testing.assert_array_equal(center["kernel"], model.kernel.get_value())
