"""What the tests share: every registered algorithm's hyperparameters (from the config file that
selects it), a tiny model's params, and the layouts of p workers as vmapped axes.

Imported as ``import helpers`` (pytest puts this folder on ``sys.path`` with the conftest).
"""

from __future__ import annotations

import glob
import importlib
import os
import socket
import time
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


def spanning_mesh(grouped: bool, model: int, explicit: bool = False
                  ) -> tuple[jax.sharding.Mesh, tuple[str, ...]]:
    """P workers, each spanning ``model`` devices: the mesh (worker axes x ``model``) and
    its worker axes, named as :func:`axes` names them (groups x members when grouped). Every
    axis Auto, or every axis Explicit."""
    kind = jax.sharding.AxisType.Explicit if explicit else jax.sharding.AxisType.Auto
    if grouped:
        return jax.make_mesh((GROUPS, P // GROUPS, model), ("groups", "members", "model"),
                             axis_types=(kind,) * 3), ("groups", "members")
    return jax.make_mesh((P, model), ("workers", "model"), axis_types=(kind,) * 2), ("workers",)


def per_worker_on(mesh: jax.sharding.Mesh, workers: tuple[str, ...], fn: Callable) -> Callable:
    """``fn`` of one worker over stacked workers: jit(shard_map) manual over ``workers``
    only (the other mesh axes automatic: each worker's arrays sharded over them)."""
    spec = jax.sharding.PartitionSpec(workers)

    def body(*args):
        out = fn(*jax.tree.map(lambda a: a[0], args))
        return jax.tree.map(lambda a: a[None], out)

    return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=spec, out_specs=spec,
                                 axis_names=set(workers)))


def static_hparams(hparams: dict[str, Any]) -> tuple[str, ...]:
    """The structural hyperparameters ``optax.inject_hyperparams`` must keep static: the
    integers (periods, windows, fragments), flags and strings (dtypes); every float (the
    rates) is injected."""
    return tuple(k for k, v in hparams.items()
                 if isinstance(v, bool | str) or (isinstance(v, int) and k != "momentum")
                 or v is None)


# ------------------------------------------------------------ small runs of the executors


def load_config(name: str):
    """``get_config()`` of the shipped config ``name`` (``easgd_jax/configs/NAME.py``)."""
    from easgd_jax.experiments.sweep import load_config_file

    return load_config_file(os.path.join(CONFIGS, f"{name}.py"))


# The default job's algorithm (EAMSGD, p = 4, tau = 10) on a small model and embedded data
# that loads at once: what such a run checks is the loop's bookkeeping, not the model. A given
# step time for the simulated cluster clock: no step is measured in each run and process.
SMALL = {"data.name": "digits", "model.name": "mlp", "train.batch_size": 32,
         "cluster.compute_s_per_step": 1e-3}

# Metrics that measure this machine (two runs differ in them).
TIMING = ("steps_per_second", "wall_time_s", "simulated_time_s")


def small_sync_config(num_steps: int = 60, every: int = 20):
    """The default config on :data:`SMALL`: ``num_steps`` steps, an evaluation every 20 and a
    checkpoint every ``every``, no event files."""
    config = config_with("default", SMALL)
    config.train.num_steps = num_steps
    config.train.eval_every = 20
    config.checkpoint.every = every
    config.tensorboard = False
    return config


def small_async_config(name: str, **asynchrony):
    """The shipped config ``name`` with 3 workers, a small MLP on digits, 40 steps and an
    evaluation every 20; ``asynchrony`` fields set as given."""
    config = load_config(name)
    config.num_workers = 3
    config.data.name = "digits"  # embedded, loads in well under a second
    config.model.name = "mlp"
    config.model.kwargs.hidden = (32,)
    config.train.num_steps = 40
    config.train.eval_every = 20
    config.train.batch_size = 32
    config.tensorboard = False
    config.cluster.compute_s_per_step = 1e-3  # given: no step measured
    config.asynchrony.update(asynchrony)
    return config


def without_timing(records: list[dict]) -> list[dict]:
    """Metrics records without the fields that measure the machine (:data:`TIMING`)."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def corrupt(step_dir: str, how: str = "garbage") -> None:
    """Damages a checkpoint's array data: ``garbage`` overwrites every data file with
    garbage of the same size; ``bit flip`` flips ONE bit in the middle of the largest data
    file (Orbax restores that without an error: only the checksums see it)."""
    files = [f for f in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"),
                                  recursive=True)
             if os.path.isfile(f) and os.path.getsize(f) > 0]
    assert files
    if how == "bit flip":
        largest = max(files, key=os.path.getsize)
        with open(largest, "r+b") as fh:
            fh.seek(os.path.getsize(largest) // 2)
            byte = fh.read(1)[0]
            fh.seek(-1, os.SEEK_CUR)
            fh.write(bytes([byte ^ 0x10]))
        return
    for f in files:
        with open(f, "r+b") as fh:
            fh.write(b"\x00garbage" * (os.path.getsize(f) // 8 + 1))


def wait_for_checkpoint(workdir: str, at_least: int, timeout: float = 180) -> None:
    """Waits (polling the folder) until a checkpoint of step >= ``at_least`` exists in
    ``workdir`` (another process's run); TimeoutError after ``timeout`` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        steps = [int(os.path.basename(d)) for d in glob.glob(os.path.join(workdir, "checkpoints",
                                                                           "[0-9]*"))
                 if os.path.basename(d).isdigit()]
        if steps and max(steps) >= at_least:
            return
        time.sleep(0.2)
    raise TimeoutError(f"no checkpoint at step >= {at_least} within {timeout} s")


def free_ports(count: int) -> list[int]:
    """``count`` TCP ports on 127.0.0.1 free at the time of the call."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def set_fields(config, overrides: dict[str, Any]):
    """``config`` with ``overrides`` ({"section.field": value}, any depth) set; returned."""
    for key, value in overrides.items():
        *path, leaf = key.split(".")
        node = config
        for part in path:
            node = node[part]
        node[leaf] = value
    return config


def config_with(name: str, overrides: dict[str, Any]):
    """The shipped config ``name`` with ``overrides`` ({"section.field": value}) set."""
    return set_fields(load_config(name), overrides)


# --------------------------------------------- a quadratic per worker (DiLoCo, the exchange)

QUADRATIC_SHAPES = {"a": (2,), "b": (2, 3)}
CURVATURE = 0.7  # worker i minimises 0.5 H ||x - target_i||^2


def _quadratic_tree(rng, leading=()):
    return {k: rng.normal(size=(*leading, *s)).astype(np.float32)
            for k, s in QUADRATIC_SHAPES.items()}


def quadratic_start(p: int = 3, seed: int = 1) -> dict:
    """One random start, stacked for ``p`` workers."""
    x0 = _quadratic_tree(np.random.default_rng(seed))
    return {k: np.broadcast_to(v, (p, *v.shape)).copy() for k, v in x0.items()}


def quadratic_targets(p: int = 3, seed: int = 0) -> dict:
    """Each worker's minimum."""
    return _quadratic_tree(np.random.default_rng(seed), (p,))


def run_quadratic(tx, params, targets, steps: int):
    """``steps`` updates of ``tx`` on vmapped workers; the params and states of every step.
    The center starts at worker 0's parameters (the workers may start elsewhere)."""
    state = jax.vmap(tx.init)(params)
    if hasattr(state, "center"):  # data_parallel_sgd, compared with, has none
        state = state._replace(center=jax.tree.map(
            lambda a: jnp.broadcast_to(a[0], a.shape), params))

    def step(carry, _):
        params, state = carry
        grads = jax.tree.map(lambda x, t: CURVATURE * (x - t), params, targets)

        def update(g, s, p):
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        params, state = jax.vmap(update, axis_name="workers")(grads, state, params)
        return (params, state), (params, state)

    return jax.lax.scan(step, (params, state), None, length=steps)[1]


def quadratic_rounds(tx, layout, steps: int):
    """``run(period, exchange_step) -> (params, state)``: one executor round
    (``make_round``) of ``steps`` local steps of ``tx`` on the quadratic, always from the same
    start and targets; ``period=None``: the steps decide at run time."""
    from easgd_jax.parallel import make_round

    rng = np.random.default_rng(3)
    p = layout.num_workers
    x0 = {k: np.broadcast_to(rng.normal(size=s).astype(np.float32), (p, *s)).copy()
          for k, s in QUADRATIC_SHAPES.items()}
    targets = {k: rng.normal(size=(p, steps, *s)).astype(np.float32)
               for k, s in QUADRATIC_SHAPES.items()}

    def step(carry, target, communicate=None):
        params, state = carry
        grads = jax.tree.map(lambda x, t: CURVATURE * (x - t), params, target)
        u, state = tx.update(grads, state, params, communicate=communicate)
        return (optax.apply_updates(params, u), state), ()

    state0 = jax.vmap(tx.init)(x0)

    def run(period, exchange_step="first"):
        round_fn = make_round(step, layout, donate=False, period=period,
                              exchange_step=exchange_step)
        return round_fn((x0, state0), targets)[0]

    return run


def tiny_cluster_config(tmp_path, **overrides):
    """The default config on digits and an MLP, 20 steps, one device, ``overrides`` set
    (``cluster.*`` fields by name)."""
    config = load_config("default")
    config.data.name, config.model.name = "digits", "mlp"
    config.train.batch_size, config.train.num_steps, config.train.eval_every = 16, 20, 10
    config.num_devices = 1
    config.checkpoint.every = 0
    config.tensorboard = False
    config.cluster.compute_s_per_step = 2e-3
    config.cluster.latency_us = 10.0
    set_fields(config, overrides)
    return config
