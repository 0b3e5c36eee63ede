"""The package is typed like the libraries beside it: a ``py.typed`` marker ships with it, and
every state type a registered algorithm's ``init`` returns is exported from ``easgd_jax``.

The state types are found by walking the states, not listed here: a class added, renamed or
merged in ``easgd_jax/algorithms`` is checked without editing this file.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import pytest

import easgd_jax
from easgd_jax.algorithms import registry
from easgd_jax.configs import tuned

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_WORKERS = 2

# Optional hyperparameters that change the type of the state (a residual for error feedback),
# tried on every algorithm that takes them.
STATE_VARIANTS = ({"exchange_dtype": "bfloat16", "error_feedback": True},
                  {"server_adagrad": True})


def _settings() -> Iterator[tuple[str, dict[str, Any]]]:
    """(algorithm name, hyperparameters): every tuned row of a synchronous algorithm, and the
    same row with each state-changing variant the algorithm accepts."""
    synchronous = set(registry.algorithm_names())
    for config_name in tuned.TUNED:
        section = tuned.algorithm(config_name, NUM_WORKERS).to_dict()
        name = section.pop("name")
        if name not in synchronous:
            continue
        yield name, section
        accepted = set(registry.hyperparameter_names(name))
        for variant in STATE_VARIANTS:
            if set(variant) <= accepted:
                yield name, {**section, **variant}


def _named_tuple_types(tree: Any) -> Iterator[type]:
    """Every NamedTuple type in ``tree``, nested ones included (optax's chains hold tuples
    and states of their own)."""
    if isinstance(tree, tuple) and hasattr(type(tree), "_fields"):
        yield type(tree)
    if isinstance(tree, (tuple, list)):
        for child in tree:
            yield from _named_tuple_types(child)
    elif isinstance(tree, dict):
        for child in tree.values():
            yield from _named_tuple_types(child)


def _state_types(name: str, hparams: dict[str, Any]) -> set[type]:
    """The NamedTuple types defined in easgd_jax that ``name``'s ``init`` returns, built on
    NUM_WORKERS replicated copies of a tiny parameter tree."""
    axes = {"group_axis_name": "groups"} if registry.is_grouped(name) else {}
    tx = easgd_jax.get_algorithm(name, axis_name="workers", **axes, **hparams)
    params = easgd_jax.replicate({"w": jnp.ones((3, 2)), "b": jnp.zeros((2,))}, NUM_WORKERS)
    state = jax.vmap(tx.init)(params)
    return {t for t in _named_tuple_types(state) if t.__module__.startswith("easgd_jax.")}


SETTINGS = list(_settings())


def test_every_synchronous_algorithm_is_covered():
    assert {name for name, _ in SETTINGS} == set(registry.algorithm_names())


@pytest.mark.parametrize(("name", "hparams"), SETTINGS,
                         ids=[f"{n}-{i}" for i, (n, _) in enumerate(SETTINGS)])
def test_state_types_of_init_are_exported(name, hparams):
    types = _state_types(name, hparams)  # empty for sgd, whose state is optax's own
    missing = sorted(f"{t.__module__}.{t.__qualname__}" for t in types
                     if getattr(easgd_jax, t.__name__, None) is not t)
    assert not missing, f"{name}'s state types not exported from easgd_jax: {missing}"
    assert all(t.__name__ in easgd_jax.__all__ for t in types)


def test_the_walk_finds_the_state_types():
    """The walk sees nested states: EAMSGD's ElasticAveragingState holds a NesterovState."""
    found = set().union(*(_state_types(name, hparams) for name, hparams in SETTINGS))
    assert {easgd_jax.ElasticAveragingState, easgd_jax.NesterovState} <= found
    assert len(found) >= 5


def test_exported_names_resolve():
    for name in easgd_jax.__all__:
        assert getattr(easgd_jax, name) is not None, name


def test_py_typed_marker_ships_with_the_package():
    package = os.path.dirname(inspect.getfile(easgd_jax))
    assert os.path.isfile(os.path.join(package, "py.typed"))
    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as f:
        setup_py = f.read()
    assert '"py.typed"' in setup_py
