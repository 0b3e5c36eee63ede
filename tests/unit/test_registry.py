"""The one registry: name -> Spec (sync form, async rule, evaluated point, grouped, reported).

The evaluated point used to be found by searching the optimizer state's field names
(``average``, else ``center``, else the params; ``global_leader``, else ``leader``, else
worker 0): every registered Spec must name the same point on its algorithm's real state.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import HPARAMS  # each name's hyperparameters, from its config file

from easgd_jax.algorithms import base, registry
from easgd_jax.algorithms.adaptive import ApamMasterState
from easgd_jax.algorithms.distbelief import AdagradMasterState, DownpourExtra
from easgd_jax.algorithms.elastic import ElasticExtra
from easgd_jax.algorithms.leader import LeaderExtra, LeaderMasterState
from easgd_jax.algorithms.outer import DilocoExtra, DilocoMasterState

P, GROUPS = 4, 2
X0 = {"w": np.array([0.5, -1.0, 2.0], np.float32), "b": np.array([0.25], np.float32)}


def _old_evaluation(opt_state, params):
    """The former field-name search (algorithms/evaluation.py), as the reference."""
    point = params
    for field in ("average", "center"):
        found = optax.tree_utils.tree_get(opt_state, field)
        if found is not None:
            point = found
            break
    index = jnp.zeros([], jnp.int32)
    for field in ("global_leader", "leader"):
        found = optax.tree_utils.tree_get(opt_state, field)
        if found is not None:
            index = jnp.maximum(jnp.asarray(found).reshape(-1)[0], 0)
            break
    reported = {f: v for f in ("leader", "global_leader")
                if (v := optax.tree_utils.tree_get(opt_state, f)) is not None}
    return point, index, reported


def _stepped_state(name: str):
    """p workers after 3 steps of ``name`` on a quadratic, stacked (grouped: nested axes)."""
    spec = registry.get_spec(name)
    axes = ({"axis_name": "members", "group_axis_name": "groups"} if spec.grouped
            else {"axis_name": "workers"})
    tx = optax.with_extra_args_support(registry.get_algorithm(name, **axes, **HPARAMS[name]))

    def steps(params, c):
        state = tx.init(params)
        for _ in range(3):
            loss, grads = jax.value_and_grad(
                lambda q: 0.5 * c * sum(jnp.sum((a - 1.0) ** 2) for a in jax.tree.leaves(q))
            )(params)
            updates, state = tx.update(grads, state, params, loss=loss)
            params = optax.apply_updates(params, updates)
        return params, state

    stacked = jax.tree.map(lambda a: jnp.broadcast_to(a, (P, *a.shape)), X0)
    c = jnp.linspace(0.5, 1.5, P)
    if spec.grouped:
        split = jax.tree.map(lambda a: a.reshape(GROUPS, P // GROUPS, *a.shape[1:]),
                             (stacked, c))
        out = jax.vmap(jax.vmap(steps, axis_name="members"), axis_name="groups")(*split)
        return jax.tree.map(lambda a: a.reshape(P, *a.shape[2:]), out)
    return jax.vmap(steps, axis_name="workers")(stacked, c)


@pytest.mark.parametrize("name", registry.algorithm_names())
def test_spec_evaluates_the_point_the_field_search_found(name):
    spec = registry.get_spec(name)
    params, state = _stepped_state(name)
    point, index, reported = _old_evaluation(state, params)
    for a, b in zip(jax.tree.leaves(spec.evaluation_params(state, params)),
                    jax.tree.leaves(point), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(spec.evaluation_worker(state)) == int(index)
    got = spec.reported_state(state)
    assert sorted(got) == sorted(reported)
    for field in got:
        np.testing.assert_array_equal(np.asarray(got[field]), np.asarray(reported[field]))


def test_names():
    assert "apam" not in registry.algorithm_names()
    assert "amsgrad_sync" in registry.algorithm_names()
    assert registry.async_algorithm_names() == [
        "apam", "diloco", "downpour", "eamsgd", "easgd", "lsgd_nesterov"]
    assert [n for n in registry.algorithm_names() if registry.is_grouped(n)] == [
        "lsgd_multi_nesterov"]
    with pytest.raises(ValueError, match="unknown algorithm 'nope'; known: adownpour"):
        registry.get_spec("nope")


@pytest.mark.parametrize("name", registry.async_algorithm_names())
def test_async_rules_share_the_sync_hyperparameters_and_have_typed_states(name):
    spec = registry.get_spec(name)
    if spec.sync is not None:
        assert set(registry.hyperparameter_names(name, asynchronous=True)) <= set(
            registry.hyperparameter_names(name))
    hparams = {k: v for k, v in HPARAMS[name].items()
               if k in registry.hyperparameter_names(name, asynchronous=True)}
    rule = registry.get_async_rule(name, P, **hparams)
    worker, master = rule.init_worker(X0), rule.init_master(X0)
    assert isinstance(worker, base.AsyncWorkerState)
    extra = {"easgd": ElasticExtra, "eamsgd": ElasticExtra, "downpour": DownpourExtra,
             "lsgd_nesterov": LeaderExtra, "apam": base.NoExtra, "diloco": DilocoExtra}[name]
    assert type(worker.extra) is extra
    masters = (base.CenterState, AdagradMasterState, LeaderMasterState, ApamMasterState,
               DilocoMasterState)
    assert isinstance(master, masters) and master.center is not None


def test_async_hyperparameters_are_checked_against_the_signature():
    assert registry.hyperparameter_names("lsgd_nesterov", asynchronous=True) == [
        "learning_rate", "momentum", "pull", "period", "loss_window"]
    rule = registry.get_async_rule("lsgd_nesterov", 3, learning_rate=0.1, momentum=0.9,
                                   pull=0.1, period=2)  # num_workers passed by the registry
    assert rule.name == "lsgd"
    with pytest.raises(ValueError, match="asynchronous algorithm 'easgd' does not take "
                       "momentum; it takes learning_rate, moving_rate, period"):
        registry.get_async_rule("easgd", 3, learning_rate=0.1, moving_rate=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="asynchronous algorithm 'eamsgd' needs momentum"):
        registry.get_async_rule("eamsgd", 3, learning_rate=0.1, moving_rate=0.1)
    with pytest.raises(ValueError, match="'adownpour' has no asynchronous rule"):
        registry.hyperparameter_names("adownpour", asynchronous=True)
    with pytest.raises(ValueError, match="'apam' has no synchronous form"):
        registry.get_algorithm("apam", learning_rate=0.1)


def test_register_a_constructor_or_a_spec(monkeypatch):
    monkeypatch.setattr(registry, "_SPECS", dict(registry._SPECS))
    from easgd_jax.algorithms.elastic import elastic_averaging

    def elastic_adam(learning_rate, moving_rate, period=1, axis_name="workers"):
        return elastic_averaging(optax.adam(learning_rate), moving_rate, period, axis_name)

    spec = registry.register("elastic_adam", elastic_adam, evaluation="center")
    assert registry.get_spec("elastic_adam") is spec and not spec.grouped
    assert "elastic_adam" in registry.algorithm_names()
    assert registry.hyperparameter_names("elastic_adam") == [
        "learning_rate", "moving_rate", "period"]
    tx = registry.get_algorithm("elastic_adam", learning_rate=0.1, moving_rate=0.2)
    state = tx.init(X0)
    assert spec.evaluation_params(state, None) is state.center
    # The default evaluation is worker 0's params.
    assert registry.register("plain", lambda learning_rate, axis_name="w": optax.sgd(
        learning_rate)).evaluation is base.evaluate_params
    with pytest.raises(ValueError, match="already registered"):
        registry.register("elastic_adam", elastic_adam)
    with pytest.raises(ValueError, match="must accept axis_name"):
        registry.register("no_axis", lambda learning_rate: optax.sgd(learning_rate))
    with pytest.raises(ValueError, match="evaluation of 'bad' must be a callable or one of"):
        registry.register("bad", elastic_adam, evaluation="centre")
    with pytest.raises(ValueError, match="the Spec of 'other'"):
        registry.register("mine", base.Spec("other", elastic_adam, None, "center"))


def test_spec_checks_itself():
    from easgd_jax.algorithms.elastic import async_easgd, easgd
    from easgd_jax.algorithms.leader import lsgd_multi_nesterov

    with pytest.raises(ValueError, match="grouped=False for 'x', whose constructor takes"):
        base.Spec("x", lsgd_multi_nesterov, None, "global_leader")

    def rule(learning_rate, moving_rate, period=1, extra_knob=0.0):
        return async_easgd(learning_rate, moving_rate, period)

    with pytest.raises(ValueError, match="takes extra_knob, which its synchronous form"):
        base.Spec("x", easgd, rule, "center")
    with pytest.raises(ValueError, match="needs a sync or an async_rule"):
        base.Spec("x", None, None, "center")
    with pytest.raises(ValueError, match="evaluated on its state's 'center'"):
        registry.get_spec("easgd").evaluation_params(optax.EmptyState(), X0)


# ---------------------------------------------- the Spec: the one place that knows it


@pytest.mark.parametrize("name", registry.algorithm_names())
def test_the_spec_states_the_exchange_clock_from_the_hyperparameters(name):
    """``period`` is the ``period`` hyperparameter (tau, DiLoCo's H) or None; the exchange
    interval divides it by the fragments; the volume per step is 1 / tau."""
    spec, hparams = registry.get_spec(name), dict(HPARAMS[name])
    names = spec.hyperparameter_names()
    if "period" in names:
        hparams["period"] = 6
        assert spec.period(hparams) == 6
        assert spec.models_exchanged_per_step(hparams) == pytest.approx(1 / 6)
        if "num_fragments" in names:
            hparams["num_fragments"] = 3
            assert (spec.num_fragments(hparams), spec.exchange_interval(hparams)) == (3, 2)
        else:
            assert (spec.num_fragments(hparams), spec.exchange_interval(hparams)) == (1, 6)
    else:
        assert spec.period(hparams) is None
        assert (spec.exchange_interval(hparams), spec.num_fragments(hparams)) == (1, 1)
        assert spec.models_exchanged_per_step(hparams) == 1.0


def test_a_period_left_to_its_default_is_the_constructors_default():
    def elastic_sgd(learning_rate, moving_rate, period=7, axis_name="w"):
        return base_elastic(learning_rate, moving_rate, period, axis_name)

    from easgd_jax.algorithms.elastic import easgd as base_elastic

    spec = base.Spec("elastic_sgd_default_period", elastic_sgd, None, "center")
    assert spec.period({"learning_rate": 0.1, "moving_rate": 0.1}) == 7
    assert spec.period({"learning_rate": 0.1, "moving_rate": 0.1, "period": 3}) == 3


def test_a_stated_beta_becomes_moving_rate_beta_over_p():
    from easgd_jax.algorithms import rates

    spec = registry.get_spec("eamsgd")
    given = {"learning_rate": 0.1, "momentum": 0.9, "beta": 0.9, "period": 10}
    hparams = spec.hyperparameters(given, 4)
    assert "beta" not in hparams and hparams["moving_rate"] == pytest.approx(0.225)
    assert rates.moving_rate(0.9, 8) == pytest.approx(0.1125)
    assert spec.hyperparameters({"moving_rate": 0.1}, 4) == {"moving_rate": 0.1}
    with pytest.raises(ValueError, match="not both"):
        spec.hyperparameters({"beta": 0.9, "moving_rate": 0.2}, 4)
    with pytest.raises(ValueError, match="takes no moving_rate"):
        registry.get_spec("sgd").hyperparameters({"learning_rate": 0.1, "beta": 0.9}, 4)


def test_the_config_check_is_the_specs():
    """The stability bound of synchronous EASGD is its Spec's check; a registered
    algorithm's own check runs in validate."""
    with pytest.raises(ValueError, match="diverges for beta >= 2p / \\(p \\+ 1\\)"):
        registry.get_spec("easgd").check_config({"learning_rate": 0.1, "moving_rate": 0.5}, 4)
    with pytest.warns(UserWarning, match="overshoots the workers' mean"):
        registry.get_spec("eamsgd").check_config({"moving_rate": 0.3}, 4)
    registry.get_spec("easgd").check_config({"moving_rate": 0.225}, 4)  # beta = 0.9: fine
    registry.get_spec("diloco").check_config({"outer_learning_rate": 5.0}, 4)  # no check


def test_the_spec_builds_on_a_layouts_axes():
    class Axes:
        axis_name, member_axis_name, group_axis_name = ("g", "m"), "m", "g"

    assert registry.get_spec("eamsgd").axes(Axes()) == {"axis_name": ("g", "m")}
    assert registry.get_spec("lsgd_multi_nesterov").axes(Axes()) == {
        "axis_name": "m", "group_axis_name": "g"}
    tx = registry.get_spec("easgd").build(
        {"learning_rate": 0.1, "moving_rate": 0.2, "period": 2}, Axes())
    state = jax.vmap(tx.init)(base.replicate(X0, 2))
    assert state.center["w"].shape == (2, 3)


def test_an_evaluation_point_is_a_callable_of_the_state():
    def second_worker(opt_state, params):
        return params, jnp.int32(1)

    spec = base.Spec("second_worker_sgd", lambda learning_rate, axis_name="w":
                     optax.sgd(learning_rate), None, second_worker)
    params = {"w": jnp.arange(6.0).reshape(2, 3)}
    assert spec.evaluation_params(optax.EmptyState(), params) is params
    assert int(spec.evaluation_worker(optax.EmptyState(), params)) == 1
    assert registry.get_spec("asgd").evaluation is base.evaluate_average
