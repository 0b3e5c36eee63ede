"""The contract every registered algorithm keeps, as optax's contrib common test holds its
optimizers: ONE set of checks parametrized over ``registry.algorithm_names()``, so that a newly
registered algorithm is held to it without anyone writing a test for it (the last tests here
register one and run the contract on it).

The contract (:data:`CONTRACT`), each on P = 4 workers stacked on a vmapped axis (groups x
members for the grouped algorithms):

- per-worker init: ``jax.vmap(tx.init)`` gives one state per worker, every leaf stacked;
- donation: init shares no buffer with the params nor between fields, and a step that donates
  ``(params, opt_state)`` gives the same result as one that does not;
- inject_hyperparams: the constructor wrapped in ``optax.inject_hyperparams`` (its rates
  injected) gives the same update and state;
- chain order: behind a gradient transformation in ``optax.chain`` it is accepted
  (``check_chain_order``) and gives the same update;
- evaluation point: the Spec's point is shaped like the stacked params, its worker index one
  of the P;
- bfloat16 center: bfloat16 params train, and a point the state keeps (center, average) is
  float32;
- extra arguments: ``update`` accepts keyword arguments it does not use, as
  ``GradientTransformationExtraArgs`` promises;
- checkpoint round trip: the state saved and restored by the run's Checkpointer (Orbax, with
  checksums) is the same tree, bitwise;
- a worker spanning devices: under a ``shard_map`` manual over the worker axes only, each
  worker's arrays sharded over an automatic ``model`` axis of 2 devices, the algorithm traces,
  runs and equals the vmapped run in float64, and its step exports with ``jax.export`` (no
  host callback in the traced update).

Then optax's OWN contract for optimizers (``optax.contrib._common_test``, the installed
optax's file, not a copy) through a one-worker adapter (:func:`one_worker`): extra
arguments and no recompilation, dtype preservation, gradient accumulation with
``optax.MultiSteps``, dtype stability, ``inject_hyperparams`` and convergence on its parabola.
"""

from __future__ import annotations

import functools
import inspect

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import HPARAMS, P
from optax.contrib import _common_test as optax_common

from easgd_jax.algorithms import base, registry
from easgd_jax.training.checkpoint import Checkpointer

NAMES = registry.algorithm_names()


def _same(a_tree, b_tree, rtol: float = 0.0, atol: float = 0.0) -> None:
    a_leaves, b_leaves = jax.tree.leaves(a_tree), jax.tree.leaves(b_tree)
    assert jax.tree.structure(a_tree) == jax.tree.structure(b_tree)
    for a, b in zip(a_leaves, b_leaves, strict=True):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                   rtol=rtol, atol=atol)


def _steps(tx, grouped: bool, params, num_steps: int = 3, donate: bool = False, **extra):
    """``num_steps`` steps of :func:`helpers.user_step` on P workers, jitted; returns
    ``(params, opt_state)``."""
    c = jnp.linspace(0.5, 1.5, P)
    step = helpers.lift(lambda p, s, c: helpers.user_step(tx)(p, s, c, **extra), grouped)
    step = jax.jit(step, donate_argnums=(0, 1) if donate else ())
    state = helpers.lift(tx.init, grouped)(params)
    for _ in range(num_steps):
        params, state = step(params, state, c)
    return params, state


@functools.cache
def _plain_cached(name: str, frozen: tuple, dtype: str):
    hparams = dict(frozen)
    return _steps(helpers.build(name, **hparams), registry.is_grouped(name),
                  helpers.stacked(dtype=dtype))


def _plain(name: str, hparams: dict, dtype: str = "float32"):
    """``_steps`` of ``name`` built plainly, once per (name, hyperparameters, dtype): the
    reference several checks compare with (float64 ones run under ``jax.enable_x64``)."""
    return _plain_cached(name, tuple(sorted(hparams.items())), dtype)


def _buffers(tree) -> list[int]:
    return [a.unsafe_buffer_pointer() for a in jax.tree.leaves(tree) if isinstance(a, jax.Array)]


# ------------------------------------------------------------------------- the contract


def per_worker_init(name: str, hparams: dict) -> None:
    tx, grouped = helpers.build(name, **hparams), registry.is_grouped(name)
    state = helpers.lift(tx.init, grouped)(helpers.stacked())
    for leaf in jax.tree.leaves(state):  # (plain SGD keeps none)
        assert np.shape(leaf)[:1] == (P,), f"{name}: a state leaf of shape {np.shape(leaf)}"


def donation(name: str, hparams: dict) -> None:
    tx, grouped = helpers.build(name, **hparams), registry.is_grouped(name)
    params = helpers.stacked()
    state = helpers.lift(tx.init, grouped)(params)
    state_buffers = _buffers(state)
    assert len(set(state_buffers)) == len(state_buffers), f"{name}: two fields share a buffer"
    assert not set(state_buffers) & set(_buffers(params)), f"{name}: state holds params' buffers"
    donated = _steps(tx, grouped, helpers.stacked(), donate=True)
    _same(donated, _plain(name, hparams))


def inject_hyperparams(name: str, hparams: dict) -> None:
    spec = registry.get_spec(name)
    static = helpers.static_hparams(hparams)
    assert [k for k in hparams if k not in static], f"{name}: no rate to inject"
    wrapped = optax.with_extra_args_support(optax.inject_hyperparams(
        spec.sync, static_args=static)(**helpers.axes(name), **hparams))
    # In float64: an injected rate is an array where the plain one is a Python constant, and
    # the two programs may round in another order (float32 AMSGrad differs in its last bits).
    with jax.enable_x64(True):
        injected = _steps(wrapped, spec.grouped, helpers.stacked(dtype=jnp.float64))
        plain = _plain(name, hparams, "float64")
    _same((injected[0], injected[1].inner_state), plain, rtol=1e-12, atol=1e-15)


def chain_order(name: str, hparams: dict) -> None:
    grouped = registry.is_grouped(name)
    chained = optax.with_extra_args_support(
        optax.chain(optax.clip_by_global_norm(1e6), helpers.build(name, **hparams)))
    with jax.enable_x64(True):  # two programs: compared in float64
        params, state = _steps(chained, grouped, helpers.stacked(dtype=jnp.float64))
        alone = _plain(name, hparams, "float64")[0]
    base.check_chain_order(state)  # accepted behind a gradient transformation
    _same(params, alone, rtol=1e-12, atol=1e-15)


def evaluation_point(name: str, hparams: dict) -> None:
    spec = registry.get_spec(name)
    params, state = _plain(name, hparams)
    point = spec.evaluation_params(state, params)
    assert jax.tree.structure(point) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(point), jax.tree.leaves(params), strict=True):
        assert np.shape(a) == np.shape(b)
    index = int(spec.evaluation_worker(state, params))
    assert 0 <= index < P
    assert all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree.leaves(point))


def bfloat16_center(name: str, hparams: dict) -> None:
    spec = registry.get_spec(name)
    params, state = _steps(helpers.build(name, **hparams), spec.grouped,
                           helpers.stacked(dtype=jnp.bfloat16))
    assert {str(a.dtype) for a in jax.tree.leaves(params)} == {"bfloat16"}
    point = spec.evaluation_params(state, params)
    kept = point is not params  # a center or an average the state keeps
    want = "float32" if kept else "bfloat16"
    assert {str(a.dtype) for a in jax.tree.leaves(point)} == {want}, name


def extra_arguments(name: str, hparams: dict) -> None:
    grouped = registry.is_grouped(name)
    plain = _plain(name, hparams)
    raw = registry.get_algorithm(name, **helpers.axes(name), **hparams)  # not wrapped
    with_extra = _steps(raw, grouped, helpers.stacked(), value=jnp.float32(1.0),
                        unexpected_extra_arg_your_optimizer_does_not_expect=1)
    _same(with_extra, plain)


def checkpoint_round_trip(name: str, hparams: dict, workdir: str) -> None:
    tx, grouped = helpers.build(name, **hparams), registry.is_grouped(name)
    params, state = _plain(name, hparams)
    checkpoints = Checkpointer(workdir, max_to_keep=1)
    try:
        checkpoints.save(3, (params, state), {"step": 3})
        target = helpers.lift(tx.init, grouped)(helpers.stacked())
        restored, meta = checkpoints.restore(3, (helpers.stacked(), target))
    finally:
        checkpoints.close()
    assert meta == {"step": 3}
    _same(restored, (params, state))


def worker_spanning_devices(name: str, hparams: dict) -> None:
    grouped = registry.is_grouped(name)
    with jax.enable_x64(True):
        tx = helpers.build(name, **hparams)
        params = helpers.stacked({"w": np.linspace(-1.0, 2.0, 8).reshape(4, 2),
                                  "b": np.array([0.25, -0.5])}, jnp.float64)
        expected = _steps(tx, grouped, params)
        mesh, workers = helpers.spanning_mesh(grouped, model=2)
        sharded = jax.device_put(params, jax.sharding.NamedSharding(
            mesh, jax.sharding.PartitionSpec(workers, "model")))
        state = jax.jit(helpers.lift(tx.init, grouped))(sharded)
        step = helpers.per_worker_on(mesh, workers, helpers.user_step(tx))
        c = jnp.linspace(0.5, 1.5, P)
        got = (sharded, state)
        for _ in range(3):
            got = step(*got, c)
        assert got[0]["w"].sharding.spec[1] == "model"  # still split inside each worker
        _same(got, expected, rtol=1e-12, atol=1e-15)
        jax.export.export(step)(sharded, state, c)  # refused if a host callback were inside


CONTRACT = {f.__name__: f for f in (
    per_worker_init, donation, inject_hyperparams, chain_order, evaluation_point,
    bfloat16_center, extra_arguments, worker_spanning_devices)}


@pytest.mark.parametrize("check", sorted(CONTRACT))
@pytest.mark.parametrize("name", NAMES)
def test_every_registered_algorithm_keeps_the_contract(name, check):
    CONTRACT[check](name, HPARAMS[name])


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_algorithm_survives_a_checkpoint_round_trip(name, tmp_path):
    checkpoint_round_trip(name, HPARAMS[name], str(tmp_path))


def test_every_registered_algorithm_has_a_config():
    """The contract takes each algorithm's hyperparameters from its config file."""
    assert set(NAMES) <= set(HPARAMS), sorted(set(NAMES) - set(HPARAMS))


# ------------------------------------------- optax's own contract, through one worker


def one_worker(constructor):
    """``constructor`` (a synchronous algorithm, ``(**hparams, axis_name)``) as a plain
    optimizer of ONE worker: init and update run under ``jax.vmap`` over a worker axis of
    size 1 (bound, so the collectives are identities), the state kept without it. Its
    signature is the constructor's hyperparameters, so ``inject_hyperparams`` sees them."""
    hyperparameters = [p for p in inspect.signature(constructor).parameters.values()
                       if p.name not in base.BUILD_ARGUMENTS]

    def factory(*args, **kwargs):
        tx = optax.with_extra_args_support(constructor(*args, axis_name="one_worker", **kwargs))
        add = functools.partial(jax.tree.map, lambda a: jnp.asarray(a)[None])
        drop = functools.partial(jax.tree.map, lambda a: a[0])

        def init(params):
            if not jax.tree.leaves(params):  # optax.tree.map_params' placeholder
                return tx.init(params)
            return drop(jax.vmap(tx.init, axis_name="one_worker")(add(params)))

        def update(updates, state, params=None, **extra):
            extra.setdefault("loss", jnp.zeros([], jnp.float32))  # LSGD: one worker leads

            def one(u, s, p):
                return tx.update(u, s, p, **extra)

            return drop(jax.vmap(one, axis_name="one_worker")(add(updates), add(state),
                                                                add(params)))

        return optax.GradientTransformationExtraArgs(init, update)

    factory.__signature__ = inspect.Signature(hyperparameters)
    factory.__name__ = constructor.__name__
    return factory


# optax's parabola converges in its 30,000 steps from these rates (every algorithm's config
# rate is for MNIST-1D; on the parabola's curvature 2 a rate below 1 is stable without
# momentum and below 1 / 1.9 ~ 0.5 with 0.9 momentum).
OPTAX_RATE = 0.05


def _optax_kwargs(name: str) -> dict:
    hparams = {k: v for k, v in HPARAMS[name].items() if k != "loss_window"}
    hparams["learning_rate"] = OPTAX_RATE
    return hparams


def _optax_case(monkeypatch, name: str):
    """A ``ContribTest`` instance whose optimizer factory builds ``name`` on one worker."""
    factory = one_worker(registry.get_spec(name).sync)
    monkeypatch.setattr(optax_common, "_get_opt_factory", lambda opt_name: factory)
    return optax_common.ContribTest("test_optimizers_accept_extra_args0")


def _optax_test(method: str):
    """optax's test function behind its parameterized ``method`` (absl's parameterized
    decorator keeps it as ``__wrapped__``)."""
    generated = getattr(optax_common.ContribTest, f"{method}0")
    return generated.__wrapped__


ONE_WORKER_NAMES = [n for n in NAMES if not registry.is_grouped(n)]


@pytest.mark.parametrize("name", ONE_WORKER_NAMES)
def test_optax_contract_extra_args_and_no_recompilation(monkeypatch, name):
    case = _optax_case(monkeypatch, name)
    _optax_test("test_optimizers_accept_extra_args")(
        case, opt_name=name, opt_kwargs=_optax_kwargs(name), wrapper_name=None,
        wrapper_kwargs=None, wrap=False)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("name", ONE_WORKER_NAMES)
def test_optax_contract_dtypes_and_gradient_accumulation(monkeypatch, name, dtype):
    case = _optax_case(monkeypatch, name)
    for method in ("test_preserve_dtype", "test_gradient_accumulation"):
        _optax_test(method)(case, opt_name=name, opt_kwargs=_optax_kwargs(name), dtype=dtype)


@pytest.mark.parametrize("name", ONE_WORKER_NAMES)
def test_optax_contract_dtype_stability(monkeypatch, name):
    case = _optax_case(monkeypatch, name)
    for dtype in (jnp.bfloat16, jnp.float32):
        _optax_test("test_state_shape_dtype_shard_stability")(
            case, opt_name=name, opt_kwargs=_optax_kwargs(name), wrapper_name=None,
            wrapper_kwargs=None, dtype=dtype)


@pytest.mark.parametrize("name", ONE_WORKER_NAMES)
def test_optax_contract_inject_hyperparams_and_convergence(monkeypatch, name):
    case = _optax_case(monkeypatch, name)
    monkeypatch.setattr(optax_common._inject, "inject_hyperparams", functools.partial(
        _static_structure, optax_common._inject.inject_hyperparams))
    _optax_test("test_optimizers_can_be_wrapped_in_inject_hyperparams")(
        case, opt_name=name, opt_kwargs=_optax_kwargs(name))
    _optax_test("test_optimizers")(
        case, opt_name=name, opt_kwargs=_optax_kwargs(name), wrapper_name=None,
        wrapper_kwargs=None, target=optax_common._setup_parabola, dtype="float32")


def _static_structure(inject, factory, static_args=()):
    """optax's test names the static arguments it knows; ours (periods, windows, dtypes)
    are added as the contract above keeps them."""
    names = list(inspect.signature(factory).parameters)
    static = tuple(static_args) + tuple(
        n for n in ("period", "loss_window", "num_fragments", "exchange_dtype",
                    "error_feedback", "center_dtype", "global_period") if n in names)
    return inject(factory, static_args=static)


# ------------------------------------------- a new algorithm, held to the contract unasked


def _elastic_adam(learning_rate, moving_rate, period=2, axis_name="workers"):
    """EASGD's elastic force over Adam: ``elastic_averaging`` wrapping an optax optimizer."""
    from easgd_jax.algorithms.elastic import elastic_averaging

    return elastic_averaging(optax.adam(learning_rate), moving_rate, period,
                             axis_name=axis_name)


@pytest.fixture
def elastic_adam():
    """``elastic_adam`` registered for one test (the registry is restored after it)."""
    spec = registry.register("elastic_adam_contract", _elastic_adam, evaluation="center")
    yield spec.name, {"learning_rate": 0.01, "moving_rate": 0.2, "period": 2}
    registry._SPECS.pop(spec.name)


def test_an_algorithm_registered_in_a_test_is_held_to_the_whole_contract(elastic_adam, tmp_path):
    name, hparams = elastic_adam
    assert name in registry.algorithm_names()
    HPARAMS[name] = hparams  # as its config file would give them
    try:
        for check in CONTRACT.values():
            check(name, hparams)
        checkpoint_round_trip(name, hparams, str(tmp_path))
    finally:
        HPARAMS.pop(name)


def test_the_contract_catches_an_algorithm_that_breaks_it(tmp_path):
    """A transformation whose state shares the params' buffers (a center kept with
    ``jnp.asarray``, the bug donation found) fails the contract's donation check."""

    def aliasing(learning_rate, axis_name="workers"):
        def init(params):
            return base.CenterState(jax.tree.map(jnp.asarray, params))

        def update(updates, state, params=None, **extra):
            del extra
            return jax.tree.map(lambda g: -learning_rate * g, updates), state

        return optax.GradientTransformationExtraArgs(init, update)

    spec = registry.register("aliasing_contract", aliasing, evaluation="center")
    try:
        with pytest.raises(AssertionError, match="state holds params' buffers"):
            donation(spec.name, {"learning_rate": 0.1})
    finally:
        registry._SPECS.pop(spec.name)
