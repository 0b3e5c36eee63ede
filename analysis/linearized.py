"""Stability of any registered algorithm on a quadratic, read from its own code.

On F_i(x) = h_i x^2 / 2 (worker i's curvature h_i, gradient g_i = h_i x_i - xi_i with the
gradient noise xi_i) one period of every linear algorithm of ``easgd_jax`` is a linear map of
its floating state s (every worker's params, velocities, averages, the center, the outer
momentum, the residuals):

    s_{k+1} = M s_k + B xi_k,      M = d s_{k+1} / d s_k,   B = d s_{k+1} / d xi_k

This module computes M and B by differentiating the project's own transformation
(``Spec.build``, run under ``jax.vmap`` with a worker ``axis_name`` as the training loop runs
it) or its asynchronous rule (``parallel.schedules.worker_tick``, the step the seeded
simulator takes), in forward mode (``jax.jacfwd``) and float64, at the operating point
x = 0. Nothing is derived by hand: a new registered algorithm gets its map for free.

Periods (``schedule``):

- ``"sync"``: one period of the synchronous transformation, tau local steps of every
  worker (DiLoCo: H inner steps ending with the outer step; LSGD with two periods: their
  least common multiple), starting at clock 0.
- ``"round_robin"``: one cycle of the asynchronous rule under the round-robin schedule of
  the EASGD paper's Section 4 (Zhang, Choromanska & LeCun, NIPS 2015, arXiv 1412.6651):
  at tick t only worker t mod p steps, p * tau ticks.

The state the map acts on:

- integer clocks are held at their initial values (0: the period starts a communication
  cycle; ADOWNPOUR's a_t = 1 / (t + 1) is read at t = 0);
- a replicated leaf (the center, the outer optimizer's state, data-parallel SGD's params)
  is ONE coordinate: a leaf whose copies stay equal from any state where they are equal,
  whatever the workers' gradients (checked on M and B at every grid point), e.g. the
  center that the all-reduce keeps identical;
- only the part of the state that reaches the params or the evaluated point is kept (a
  coordinate no kept one depends on, e.g. LSGD's loss buffers at the optimum or a zero-
  momentum trace, is left out: M is block-triangular and the left-out block cannot move
  what is kept);
- a rule that is not linear on the quadratic (its period map differs from its derivative at
  a random state) is refused with a one-line reason, unless :data:`OPERATING_POINTS` states
  where it is linearized (LSGD: at the optimum all running losses tie at 0, so the leader is
  worker 0, ties going to the lowest index).

The spectral radius of M decides stability (:func:`linearized_radius`, vectorised over
grids of hyperparameters by ``jax.vmap``); with gradient noise of standard deviation sigma
the stationary covariance of s at period boundaries solves the discrete Lyapunov equation
S = M S M^T + sigma^2 B B^T, and the evaluated point's variance is c S c^T with c its
readout row (:func:`stationary_center_variance`). The centers of the algorithms here move
only at an exchange, so their variance at period boundaries is their variance at every step.

Checks (tests/unit/test_linearized.py): round-robin EASGD is ``roundrobin.easgd_cycle_map``
(radius 0.999270 at the paper's point), synchronous EASGD has the 2x2 mean system's
eigenvalues plus 1 - alpha - eta h, EAMSGD with alpha = 0 is Nesterov's 2x2 map to the power
tau, DiLoCo is (1 - eta h)^H with outer SGD(1) and the 2x2 Nesterov map on the effective
curvature 1 - (1 - eta h)^H with an outer Nesterov step, data-parallel SGD is 1 - eta h, and
the variance is ``synchronous.center_variance`` for synchronous EASGD.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

__all__ = [
    "OPERATING_POINTS",
    "LinearizedMap",
    "linearize",
    "linearized_map",
    "linearized_radius",
    "stationary_center_variance",
]

SCHEDULES = ("sync", "round_robin")
# Integer hyperparameters that are shapes (a buffer's length, a split): never traced.
STRUCTURAL = ("loss_window", "num_fragments")
LINEARITY_TOLERANCE = 1e-6  # relative gap |f(s) - f(0) - M s| / |M s|: rounding of a linear
# rule over hundreds of steps of an unstable map stays far below (the nonlinear rules here: > 1e-2)
COPY_TOLERANCE = 1e-13  # copies of a replicated leaf agree to rounding
GRID = "__grid__"  # the batch axis of a call with no traced hyperparameter
CHUNK = 4096  # grid points per call of one compiled program

# Rules that are not linear on the quadratic, linearized at a stated operating point.
OPERATING_POINTS: dict[str, str] = {
    "lsgd_nesterov": "LSGD linearized at the optimum x = 0: every running loss is 0 there, so "
    "the leader is worker 0 (ties go to the lowest index) and is held; the loss buffers, "
    "constant to first order there (d loss = h x dx = 0), are left out",
    "lsgd_multi_nesterov": "multi-leader LSGD linearized at the optimum x = 0: every running "
    "loss is 0 there, so the leaders are the first worker of each group and of all (ties go "
    "to the lowest index) and are held; the loss buffers are left out",
}

# Why a known nonlinear rule is refused (the generic reason names the measured gap).
_REFUSALS: dict[str, str] = {
    "amsgrad_sync": "AMSGrad divides its step by sqrt(max v), the gradients' own size",
    "apam": "APAM's AMSGrad divides its step by sqrt(max v), the gradients' own size",
    "server_adagrad": "the master's Adagrad divides the pushes by sqrt(eps + G), the sum of "
    "their squares",
}

BASE_NOTE = ("linearized at the optimum x = 0, every integer clock at its initial value (the "
             "period starts a communication cycle), every other state at its initial value")


@dataclasses.dataclass(frozen=True)
class LinearizedMap:
    """One period of an algorithm on the quadratic, as matrices (leading grid shape ``B``).

    Attributes:
        matrix: M, ``(*B, n, n)``: the state after one period from the state before.
        noise: B, ``(*B, n, m)``: its derivative with respect to the period's gradient
            noise (m = p * tau numbers, step major), or None when the period is a grid or
            ``with_noise`` is False.
        readout: c, ``(n,)``: the evaluated point (the center, the average, worker 0's or
            the leader's params) as a row on the state.
        labels: the n coordinates, e.g. ``"params[2]"``, ``"opt_state.center"``.
        note: the operating point and what was held or left out.
        linearity_gap: the largest relative gap |f(s) - f(0) - M s| / |M s| at a random
            state over the grid (rounding for a linear rule).
    """

    matrix: Array
    noise: Array | None
    readout: Array
    labels: tuple[str, ...]
    note: str
    linearity_gap: float


# --------------------------------------------------------------------------- the problem


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray | list | tuple) or (
        hasattr(value, "shape") and np.ndim(value) > 0)


def _split(spec: Any, num_workers: int, hparams: Mapping[str, Any], asynchronous: bool
           ) -> tuple[dict[str, Any], dict[str, Array], tuple[int, ...]]:
    """(static hyperparameters, traced ones broadcast and flattened to ``(size,)``, grid)."""
    given = spec.hyperparameters(hparams, num_workers)  # beta -> moving_rate = beta / p
    from easgd_jax.algorithms import registry

    registry.check_hyperparameters(spec.name, given, asynchronous)
    static: dict[str, Any] = {}
    traced: dict[str, Any] = {}
    for key, value in given.items():
        if isinstance(value, bool | str) or value is None or key in STRUCTURAL:
            static[key] = value
        elif _is_array(value):
            traced[key] = np.asarray(value)
        elif isinstance(value, int) and not isinstance(value, bool) and key != "momentum":
            static[key] = value
        else:
            traced[key] = np.asarray(value, np.float64)
    shape = np.broadcast_shapes(*(np.shape(v) for v in traced.values())) if traced else ()
    flat = {k: np.broadcast_to(v, shape).reshape(-1) for k, v in traced.items()}
    flat = {k: v.astype(np.int32 if np.issubdtype(v.dtype, np.integer) else np.float64)
            for k, v in flat.items()}
    return static, flat, shape


def _defaults(form: Any) -> dict[str, Any]:
    return {k: p.default for k, p in inspect.signature(form).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _period_names(form: Any) -> list[str]:
    return [k for k in inspect.signature(form).parameters if k.endswith("period")]


def _leaf_name(path: tuple, roots: tuple[str, str]) -> str:
    """``params``, ``opt_state.center``, ``workers.extra.inner_state.velocity``, ..."""
    import jax

    root = roots[getattr(path[0], "idx", 0)]
    rest = jax.tree_util.keystr(path[1:], simple=True, separator=".")
    return f"{root}.{rest}" if rest else root


@dataclasses.dataclass(frozen=True)
class _Leaf:
    name: str
    copies: int  # p for a stacked (per-worker or replicated) leaf, 1 for the master's
    size: int  # numbers per copy
    offset: int


def _leaves(tree: Any, stacked: Any, roots: tuple[str, str]
            ) -> tuple[list[_Leaf], list[bool]]:
    """The floating leaves of ``tree`` with their copies; and which leaves are floating."""
    import jax

    leaves, floating = [], []
    offset = 0
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    stacked_flags = jax.tree.leaves(stacked)
    for (path, leaf), is_stacked in zip(flat, stacked_flags, strict=True):
        is_float = np.issubdtype(np.asarray(leaf).dtype, np.floating)
        floating.append(bool(is_float))
        if not is_float:
            continue
        shape = np.shape(leaf)
        copies = shape[0] if is_stacked else 1
        size = int(np.prod(shape[1:] if is_stacked else shape))
        leaves.append(_Leaf(_leaf_name(path, roots), copies, size, offset))
        offset += copies * size
    return leaves, floating


# --------------------------------------------------------------------------- the period


@functools.lru_cache(maxsize=64)
def _compiled(name: str, num_workers: int, schedule: str, static_items: tuple,
              traced_names: tuple, num_groups: int | None, with_noise: bool):
    """The :class:`_Program` of one configuration: the jitted ``(traced hparams (S,),
    curvature (p,), u) -> (JF, JN, gap)`` over a flattened grid of S points (JF, JN: the
    period's derivatives on the whole floating state, copies and all; gap: the relative
    linearity gap at the random params u), the state's description and the readout rows."""
    import jax
    import jax.numpy as jnp
    import optax
    from jax.flatten_util import ravel_pytree

    from easgd_jax.algorithms import base, registry
    from easgd_jax.parallel.schedules import worker_tick

    spec = registry.get_spec(name)
    p = num_workers
    static = dict(static_items)
    asynchronous = schedule == "round_robin"
    form = spec.form(asynchronous)
    defaults = _defaults(form)

    def hyper(traced: Mapping[str, Any]) -> dict[str, Any]:
        return {**static, **{k: v for k, v in traced.items() if k != GRID}}

    def steps_of(hp: Mapping[str, Any]) -> Any:
        values = [hp.get(k, defaults.get(k)) for k in _period_names(form)]
        values = [v for v in values if v is not None]
        if not values:
            return 1
        if all(isinstance(v, int) for v in values):
            return math.lcm(*values)
        return functools.reduce(jnp.lcm, [jnp.asarray(v, jnp.int32) for v in values])

    static_steps = steps_of(static) if not any(
        k in traced_names for k in _period_names(form)) else None
    # The noise of every step (the variance), or of the first and last step of each worker
    # only (enough to tell per-worker leaves from replicated ones; a traced period).
    full = bool(with_noise and static_steps)
    n_noise = static_steps * p if full else 2 * p

    def grad_fn(x, h, xi):  # g = h x - xi, loss = h x^2 / 2
        return h * x - xi, 0.5 * h * x * x

    if asynchronous:
        def build(hp):
            return registry.get_async_rule(name, p, **hp)

        def initial(hp):
            rule = build(hp)
            zero = jnp.zeros([], jnp.float64)
            worker = rule.init_worker(zero)
            workers = jax.tree.map(lambda a: jnp.stack([a] * p), worker)
            return (workers, rule.init_master(zero))

        def stacked_flags(state):
            workers, master = state
            return (jax.tree.map(lambda _: True, workers), jax.tree.map(lambda _: False, master))

        def period(state, hp, h, noise):
            rule = build(hp)
            ticks = p * steps_of(hp)

            def body(t, carry):
                workers, master = carry
                index = t % p
                xi = noise[t] if full else (jnp.where(t < p, noise[index], 0.0)
                                            + jnp.where(t >= ticks - p, noise[p + index], 0.0))
                worker = jax.tree.map(lambda a: a[index], workers)

                def gfn(x, batch, key):
                    del key
                    return grad_fn(x, *batch)

                worker, master, _, _ = worker_tick(rule, gfn, worker, master, index, t,
                                                   (h[index], xi), None)
                workers = jax.tree.map(lambda a, w: a.at[index].set(w), workers, worker)
                return workers, master

            return jax.lax.fori_loop(0, ticks, body, state)

        def readout(state):
            return state[1].center

        def params_of(state):
            return state[0].params
    else:
        grouped = spec.grouped
        if grouped:
            layout = base.NamedAxes(("groups", "members"), "members", "groups")
        else:
            layout = base.NamedAxes("workers", "workers", None)

        def lift(fn):
            if not grouped:
                return jax.vmap(fn, axis_name="workers")
            g = num_groups
            nested = jax.vmap(jax.vmap(fn, axis_name="members"), axis_name="groups")

            def lifted(*args):
                split = jax.tree.map(lambda a: a.reshape(g, p // g, *a.shape[1:]), args)
                return jax.tree.map(lambda a: a.reshape(p, *a.shape[2:]), nested(*split))

            return lifted

        def build(hp):
            tx = spec.build(hp, layout, on_disagreement="nan")
            return optax.with_extra_args_support(tx)

        def initial(hp):
            tx = build(hp)
            params = jnp.zeros([p], jnp.float64)
            return (params, lift(tx.init)(params))

        def stacked_flags(state):
            return jax.tree.map(lambda _: True, state)

        def period(state, hp, h, noise):
            tx = build(hp)
            steps = steps_of(hp)

            def worker_step(x, s, hi, xi):
                g, loss = grad_fn(x, hi, xi)
                u, s = tx.update(g, s, x, loss=loss)
                return optax.apply_updates(x, u), s

            step_all = lift(worker_step)

            def body(t, carry):
                x, s = carry
                rows = noise.reshape(-1, p)
                xi = (jax.lax.dynamic_index_in_dim(rows, t, keepdims=False) if full else
                      jnp.where(t == 0, rows[0], 0.0) + jnp.where(t == steps - 1, rows[1], 0.0))
                return step_all(x, s, h, xi)

            return jax.lax.fori_loop(0, steps, body, state)

        def readout(state):
            params, opt_state = state
            point = spec.evaluation_params(opt_state, params)
            index = spec.evaluation_worker(opt_state, params)
            return jax.tree.leaves(point)[0][index]

        def params_of(state):
            return state[0]

    with jax.enable_x64(True):
        # representative values of the traced hyperparameters (the state's structure only)
        rep = {k: jnp.asarray(2, jnp.int32) if k.endswith("period")
               else jnp.asarray(0.5, jnp.float64) for k in traced_names}
        def unflattener(flat: list, floating: list[bool]):
            """``vec -> state``: the floating leaves from ``vec``, the others from ``flat``."""
            float_shapes = [np.shape(a) for a, f in zip(flat, floating, strict=True) if f]
            others = [a for a, f in zip(flat, floating, strict=True) if not f]

            def unflatten(vec):
                out, k, i, j = [], 0, 0, 0
                for f in floating:
                    if f:
                        size = int(np.prod(float_shapes[i]))
                        out.append(vec[k:k + size].reshape(float_shapes[i]))
                        k, i = k + size, i + 1
                    else:
                        out.append(jnp.asarray(others[j]))
                        j += 1
                return jax.tree.unflatten(treedef, out)

            return unflatten

        def floats_of(flat: list, floating: list[bool]):
            return jnp.concatenate([jnp.ravel(a).astype(jnp.float64)
                                    for a, f in zip(flat, floating, strict=True) if f])

        @jax.jit
        def start():
            """The state at the operating point and the rows of the evaluated point and of
            the params on its floating part: one program, not one per operation."""
            state = initial(hyper(rep))
            flat = jax.tree.leaves(state)
            floating = [jnp.issubdtype(a.dtype, jnp.floating) for a in flat]
            unflatten = unflattener(flat, floating)
            vec = floats_of(flat, floating)
            point = jax.jacfwd(lambda v: readout(unflatten(v)))(vec)
            params = jax.jacfwd(lambda v: ravel_pytree(params_of(unflatten(v)))[0])(vec)
            return state, point, params

        treedef = jax.tree.structure(jax.eval_shape(lambda: initial(hyper(rep))))
        state0, readout_row, params_rows = start()
        readout_row, params_mask = np.asarray(readout_row), np.asarray(params_rows).any(axis=0)
        stacked = stacked_flags(state0)
        roots = ("workers", "master") if asynchronous else ("params", "opt_state")
        leaves, floating = _leaves(state0, stacked, roots)
        flat0 = [np.asarray(a) for a in jax.tree.leaves(state0)]
        vec0 = np.concatenate([a.astype(np.float64).ravel()
                               for a, f in zip(flat0, floating, strict=True) if f])
        unflatten = unflattener(flat0, floating)

        def floats(state):
            return floats_of(jax.tree.leaves(state), floating)

    def one(traced, h, u):
        hp = hyper(traced)

        def f(vec, noise):
            return floats(period(unflatten(vec), hp, h, noise))

        v0 = jnp.asarray(vec0)
        n0 = jnp.zeros([n_noise], jnp.float64)
        n, m = v0.shape[0], n0.shape[0]
        du = jnp.zeros_like(v0).at[np.flatnonzero(params_mask)].set(u)

        def push(tangent):  # jacfwd by hand, keeping the primal
            return jax.jvp(f, (v0, n0), (tangent[:n], tangent[n:]))

        primal, columns = jax.vmap(push, out_axes=(None, 1))(jnp.eye(n + m))
        jf, jn = columns[:, :n], columns[:, n:]
        gap = f(v0 + du, n0) - primal - jf @ du  # the map at a random state
        scale = jnp.maximum(jnp.max(jnp.abs(jf @ du)), 1e-300)
        return jf, jn, jnp.max(jnp.abs(gap)) / scale

    def simulate(traced, h, noise, periods):
        """The evaluated point after each of ``periods`` noisy periods from x = 0: the real
        transformation (or rule) run forward, ``noise`` of shape (periods, steps * p)."""
        hp = hyper(traced)

        def body(state, xi):
            state = period(state, hp, h, xi)
            return state, readout(state)

        return jax.lax.scan(body, unflatten(jnp.asarray(vec0)), noise, length=periods)[1]

    batched = jax.jit(jax.vmap(one, in_axes=(0, None, None)))
    return _Program(batched, one, simulate, leaves, readout_row, params_mask,
                    static_steps if full else None)


@dataclasses.dataclass(frozen=True)
class _Program:
    batched: Any  # jitted (traced grid, h, u) -> (JF, JN, gap)
    one: Any  # the same for one point, unbatched
    simulate: Any  # (traced, h, noise, periods) -> the evaluated point per period
    leaves: list[_Leaf]
    readout_row: np.ndarray
    params_mask: np.ndarray
    static_steps: int | None  # None: the noise of a period is not all there (no variance)


# --------------------------------------------------------------------------- reduction


def _copy_rows(leaf: _Leaf, k: int) -> np.ndarray:
    start = leaf.offset + k * leaf.size
    return np.arange(start, start + leaf.size)


def _embedding(leaves: list[_Leaf], replicated: set[str]) -> tuple[np.ndarray, np.ndarray,
                                                                    list[str]]:
    """E (N x n) from the reduced coordinates to the full state, P (n x N) back (copy 0 of
    a replicated leaf), and the reduced coordinates' labels."""
    total = sum(leaf.copies * leaf.size for leaf in leaves)
    columns: list[np.ndarray] = []
    rows: list[int] = []
    labels: list[str] = []
    for leaf in leaves:
        one_copy = leaf.name in replicated or leaf.copies == 1
        for k in range(1 if one_copy else leaf.copies):
            for j in range(leaf.size):
                col = np.zeros(total)
                copies = range(leaf.copies) if one_copy else [k]
                for c in copies:
                    col[_copy_rows(leaf, c)[j]] = 1.0
                columns.append(col)
                rows.append(int(_copy_rows(leaf, k)[j]))
                suffix = "" if one_copy else f"[{k}]"
                labels.append(leaf.name + suffix + (f"({j})" if leaf.size > 1 else ""))
    e = np.stack(columns, axis=1)
    proj = np.zeros((len(rows), total))
    proj[np.arange(len(rows)), rows] = 1.0
    return e, proj, labels


def _replicated(leaves: list[_Leaf], jf: np.ndarray, jn: np.ndarray) -> set[str]:
    """The stacked leaves whose copies stay equal from any state where they are equal,
    whatever the workers' gradient noise: the largest such set (iterated from all)."""
    candidates = {leaf.name for leaf in leaves if leaf.copies > 1}
    # each grid point against its own scale (an unstable point's entries reach 1e39)
    scale = 1.0 + np.maximum(np.abs(jf).max(axis=(-2, -1)), np.abs(jn).max(axis=(-2, -1)))
    tolerance = COPY_TOLERANCE * scale[..., None, None]
    while True:
        e, _, _ = _embedding(leaves, candidates)
        je = jf @ e
        dropped = set()
        for leaf in leaves:
            if leaf.name not in candidates:
                continue
            first_e, first_n = je[..., _copy_rows(leaf, 0), :], jn[..., _copy_rows(leaf, 0), :]
            for k in range(1, leaf.copies):
                rows = _copy_rows(leaf, k)
                if ((np.abs(je[..., rows, :] - first_e) > tolerance).any()
                        or (np.abs(jn[..., rows, :] - first_n) > tolerance).any()):
                    dropped.add(leaf.name)
                    break
        if not dropped:
            return candidates
        candidates -= dropped


def _kept(matrix: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The coordinates the targets depend on through M, at any grid point (and the targets)."""
    reach = np.abs(matrix).reshape(-1, *matrix.shape[-2:]).max(axis=0) > 0.0
    kept = targets.copy()
    while True:
        grown = kept | reach[kept].any(axis=0)
        if (grown == kept).all():
            return kept
        kept = grown


def _refusal(name: str, static: Mapping[str, Any], gap: float) -> str:
    reason = _REFUSALS.get(name)
    if static.get("server_adagrad"):
        reason = _REFUSALS["server_adagrad"]
    reason = reason or "its step depends on the state beyond a linear rule"
    return (f"{name} is not linear on a quadratic ({reason}; one period from a random state "
            f"differs from its derivative at the optimum by {gap:.2g}, relative): it has no "
            "linearized map; add a stated operating point to analysis.linearized."
            "OPERATING_POINTS to linearize it anyway.")


@dataclasses.dataclass(frozen=True)
class _Setup:
    name: str
    num_workers: int
    curvature: np.ndarray  # (p,)
    static: dict[str, Any]
    traced: dict[str, np.ndarray]  # each (size,)
    shape: tuple[int, ...]
    program: _Program


def _setup(name: str, num_workers: int, curvature: Any, schedule: str,
           num_groups: int | None, hparams: Mapping[str, Any], with_noise: bool = True
           ) -> _Setup:
    from easgd_jax.algorithms import registry

    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}.")
    spec = registry.get_spec(name)
    asynchronous = schedule == "round_robin"
    spec.form(asynchronous)  # ValueError when there is no such form
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be an integer >= 1, got {num_workers!r}.")
    if spec.grouped and not asynchronous:
        num_groups = 2 if num_groups is None else num_groups
        if num_workers % num_groups:
            raise ValueError(f"{name} runs on {num_groups} groups: num_workers "
                             f"({num_workers}) must be a multiple of num_groups.")
    else:
        num_groups = None
    h = np.broadcast_to(np.asarray(curvature, np.float64), (num_workers,)).copy()
    static, traced, shape = _split(spec, num_workers, hparams, asynchronous)
    program = _compiled(name, num_workers, schedule, tuple(sorted(static.items())),
                        tuple(sorted(traced)), num_groups, with_noise)
    return _Setup(name, num_workers, h, static, traced, shape, program)


def _chunked(batched: Any, grid: dict[str, np.ndarray], size: int, h: np.ndarray,
             u: np.ndarray) -> tuple[np.ndarray, ...]:
    """``batched`` over the grid in chunks of one size (a power of two up to
    :data:`CHUNK`, the last chunk padded), so that grids of any size share one program."""
    chunk = min(CHUNK, 1 << max(0, size - 1).bit_length())
    outs: list[tuple] = []
    for start in range(0, size, chunk):
        part = {k: v[start:start + chunk] for k, v in grid.items()}
        short = chunk - len(part[GRID])
        part = {k: np.concatenate([v, np.repeat(v[:1], short)]) for k, v in part.items()}
        outs.append(tuple(np.asarray(a)[:chunk - short] for a in batched(part, h, u)))
    return tuple(np.concatenate([o[j] for o in outs]) for j in range(3))


def _left_out(labels: list[str], kept: np.ndarray) -> str:
    """The left-out leaves by name (copies and elements folded)."""
    names: list[str] = []
    for label, k in zip(labels, kept, strict=True):
        leaf = label.split("[")[0].split("(")[0]
        if not k and leaf not in names:
            names.append(leaf)
    return ", ".join(names)


def linearize(name: str, num_workers: int, curvature: Any = 1.0, schedule: str = "sync",
              *, num_groups: int | None = None, with_noise: bool = True,
              **hparams: Any) -> LinearizedMap:
    """The matrices of one period of ``name`` on F_i(x) = h_i x^2 / 2 (module docstring).

    Args:
        name: a registered algorithm (``easgd_jax.algorithms.registry``).
        num_workers: p.
        curvature: h, a number or one h_i per worker.
        schedule: ``"sync"`` (its synchronous transformation) or ``"round_robin"`` (its
            asynchronous rule, one worker per tick).
        num_groups: the groups of a grouped algorithm (multi-leader LSGD; default 2).
        with_noise: also B, the derivative with respect to every step's noise (False:
            the map alone, cheaper on grids; B is then None).
        **hparams: the algorithm's hyperparameters (``beta`` is accepted for
            ``moving_rate = beta / p``). Any numeric one may be an array: the arrays
            broadcast to a grid ``B`` and the matrices come out with leading shape ``B``
            (one compiled, vmapped program for the whole grid; an integer period given as
            an array is traced too). A rule whose constructor needs concrete rates
            (``float(rate)``) is compiled once per grid point instead.

    Returns:
        A :class:`LinearizedMap`. ValueError with a one-line reason for a rule that is
        not linear and has no stated operating point, or a schedule the algorithm lacks.
    """
    import jax

    setup = _setup(name, num_workers, curvature, schedule, num_groups, hparams, with_noise)
    program, traced, shape = setup.program, setup.traced, setup.shape
    size = int(np.prod(shape))  # 1 for the grid of no traced hyperparameter
    u = np.random.default_rng(0).normal(size=int(program.params_mask.sum()))
    grid = {**traced, GRID: np.zeros(size)}  # a grid of one point when nothing is traced
    h = setup.curvature
    with jax.enable_x64(True):
        try:
            jf, jn, gap = _chunked(program.batched, grid, size, h, u)
        except jax.errors.ConcretizationTypeError:
            # a constructor that needs concrete rates (float(rate)): one program per point
            points = []
            for i in range(size):
                concrete = {k: v[i].item() for k, v in traced.items()}
                points.append(jax.jit(functools.partial(program.one, concrete))(h, u))
            jf, jn, gap = (np.stack([np.asarray(q[j]) for q in points]) for j in range(3))
    jf, jn, gap = (np.asarray(a, np.float64) for a in (jf, jn, gap))
    worst = float(np.max(gap))
    note = BASE_NOTE
    if name in OPERATING_POINTS:
        note = f"{BASE_NOTE}; {OPERATING_POINTS[name]}"
    elif not worst <= LINEARITY_TOLERANCE:
        raise ValueError(_refusal(name, setup.static, worst))
    asynchronous = schedule == "round_robin"
    replicated = set() if asynchronous else _replicated(program.leaves, jf, jn)
    e, proj, labels = _embedding(program.leaves, replicated)
    matrix = proj @ jf @ e
    noise = proj @ jn
    readout = program.readout_row @ e
    targets = (np.abs(proj @ program.params_mask.astype(float)) > 0) | (np.abs(readout) > 0)
    kept = _kept(matrix, targets)
    if not kept.all():
        note += f"; left out (nothing kept depends on them): {_left_out(labels, kept)}"
    matrix = matrix[..., kept, :][..., :, kept]
    noise = noise[..., kept, :]
    return LinearizedMap(
        matrix=matrix.reshape(*shape, *matrix.shape[-2:]),
        noise=noise.reshape(*shape, *noise.shape[-2:]) if program.static_steps else None,
        readout=readout[kept],
        labels=tuple(lab for lab, k in zip(labels, kept, strict=True) if k),
        note=note,
        linearity_gap=worst,
    )


def linearized_map(name: str, num_workers: int, curvature: Any = 1.0,
                   schedule: str = "sync", **hparams: Any) -> Array:
    """M, the matrix of one period (``schedule="sync"``) or one round-robin cycle
    (``"round_robin"``) of ``name`` on F_i(x) = h_i x^2 / 2, ``(*B, n, n)``; see
    :func:`linearize` for the arguments and ``LinearizedMap.labels`` for the order of
    the coordinates (every worker's params first, then the state leaf by leaf)."""
    return linearize(name, num_workers, curvature, schedule, **hparams).matrix


def linearized_radius(name: str, num_workers: int, curvature: Any = 1.0,
                      schedule: str = "sync", **hparams: Any) -> Array:
    """The spectral radius of :func:`linearized_map`, shape ``B`` (the hyperparameter
    grid): below 1 the algorithm converges on the quadratic from every state, above 1 it
    diverges from almost every state. Grids are vmapped: a 200 x 200 map is one program."""
    from analysis.roundrobin import spectral_radius

    matrix = linearize(name, num_workers, curvature, schedule, with_noise=False, **hparams).matrix
    return spectral_radius(matrix)


def _lyapunov_readout(matrix: Array, noise: Array, readout: Array, sigma: float) -> float:
    from scipy.linalg import solve_discrete_lyapunov

    if not np.abs(np.linalg.eigvals(matrix)).max() < 1.0:
        return float("nan")
    cov = solve_discrete_lyapunov(matrix, sigma**2 * noise @ noise.T)
    return float(readout @ cov @ readout)


def stationary_center_variance(name: str, num_workers: int, curvature: Any = 1.0,
                               noise_std: Any = 1.0, schedule: str = "sync",
                               **hparams: Any) -> Array:
    """The stationary variance of the evaluated point (the center x~; the average z of
    ASGD/ADOWNPOUR; worker 0's or the leader's params) under gradient noise.

    With g_i = h_i x_i - xi_i, xi_i ~ N(0, sigma^2) independent over workers and steps,
    the state at period boundaries follows s_{k+1} = M s_k + B xi_k (:func:`linearize`),
    whose stationary covariance solves the discrete Lyapunov equation

        S = M S M^T + sigma^2 B B^T        (scipy.linalg.solve_discrete_lyapunov)

    and Var(point) = c S c^T with c the point's readout row. For synchronous EASGD with
    tau = 1 this is the supplement's closed form (``analysis.synchronous.center_variance``,
    Zhang, Choromanska & LeCun, NIPS 2015). The centers here move only at an exchange, so
    this is also their variance at every step. NaN where the map is not stable (radius >=
    1). Shape ``B`` of the hyperparameter grid; the period must be an integer (not a grid).
    """
    lin = linearize(name, num_workers, curvature, schedule, **hparams)
    if lin.noise is None:
        raise ValueError("the stationary variance needs an integer period (the noise of a "
                         "period is one number per worker and step), not a grid of them.")
    sigma = float(noise_std)
    n = lin.matrix.shape[-1]
    mats = lin.matrix.reshape(-1, n, n)
    noises = lin.noise.reshape(-1, n, lin.noise.shape[-1])
    out = np.array([_lyapunov_readout(m, b, lin.readout, sigma)
                    for m, b in zip(mats, noises, strict=True)])
    return out.reshape(lin.matrix.shape[:-2])
