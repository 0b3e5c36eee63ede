"""What the tests share: every registered algorithm's hyperparameters (from the config file that
selects it), a tiny model's params, and the layouts of p workers as vmapped axes.

Imported as ``import helpers`` (pytest puts this folder on ``sys.path`` with the conftest).
"""

from __future__ import annotations

import glob
import importlib
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from easgd_jax.algorithms import registry
from easgd_jax.training import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "easgd_jax", "configs")

P, GROUPS = 4, 2  # workers, and groups of them for the grouped (multi-leader) algorithms
X0 = {"w": np.array([0.5, -1.0, 2.0], np.float32), "b": np.array([0.25], np.float32)}


def _configs_by_algorithm() -> dict[str, dict]:
    """Each registered name's hyperparameters, from the (first) config file that selects it."""
    found: dict[str, dict] = {}
    for path in sorted(glob.glob(os.path.join(CONFIGS, "*.py"))):
        module = importlib.import_module(f"easgd_jax.configs.{os.path.basename(path)[:-3]}")
        if hasattr(module, "get_config"):
            config = module.get_config()
            found.setdefault(config.algorithm.name, config_lib.algorithm_hparams(config))
    return found


HPARAMS: dict[str, dict[str, Any]] = _configs_by_algorithm()


def axes(name: str) -> dict[str, str]:
    """The axis arguments of ``name`` on the layouts of :func:`lift`."""
    if registry.is_grouped(name):
        return {"axis_name": "members", "group_axis_name": "groups"}
    return {"axis_name": "workers"}


def build(name: str, **hparams: Any) -> optax.GradientTransformationExtraArgs:
    """``name`` with ``hparams`` (default: its config's) on the axes of :func:`lift`."""
    tx = registry.get_algorithm(name, **axes(name), **(hparams or HPARAMS[name]))
    return optax.with_extra_args_support(tx)


def lift(fn: Callable, grouped: bool) -> Callable:
    """``fn`` of one worker over P workers stacked on a leading axis: one vmapped axis
    ``workers``, or GROUPS x (P / GROUPS) nested axes ``groups`` x ``members``."""
    if grouped:
        inner = jax.vmap(fn, axis_name="members")
        nested = jax.vmap(inner, axis_name="groups")

        def lifted(*args):
            split = jax.tree.map(lambda a: a.reshape(GROUPS, P // GROUPS, *a.shape[1:]), args)
            return jax.tree.map(lambda a: a.reshape(P, *a.shape[2:]), nested(*split))

        return lifted
    return jax.vmap(fn, axis_name="workers")


def stacked(params: Any = None, dtype: Any = None) -> Any:
    """P copies of ``params`` (default :data:`X0`) in fresh buffers, optionally cast."""
    params = X0 if params is None else params
    return jax.tree.map(
        lambda a: jnp.array(jnp.broadcast_to(jnp.asarray(a, dtype), (P, *np.shape(a)))), params)


def user_step(tx: optax.GradientTransformation) -> Callable:
    """A user's step: quadratic loss 0.5 * c * |x - 1|^2 per worker, gradient at params, the
    loss passed to ``tx.update`` as the extra argument ``loss`` (LSGD reads it)."""

    def step(params, opt_state, c, **phase):
        def loss_fn(q):
            return 0.5 * c * sum(jnp.sum((a - 1.0) ** 2) for a in jax.tree.leaves(q))

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params, loss=loss, **phase)
        return optax.apply_updates(params, updates), opt_state

    return step


def static_hparams(hparams: dict[str, Any]) -> tuple[str, ...]:
    """The structural hyperparameters ``optax.inject_hyperparams`` must keep static: the
    integers (periods, windows, fragments), flags and strings (dtypes); every float (the
    rates) is injected."""
    return tuple(k for k, v in hparams.items()
                 if isinstance(v, bool | str) or (isinstance(v, int) and k != "momentum")
                 or v is None)
