"""Round-robin EASGD and linearized ADMM on a 1-D quadratic: cycle maps and spectral radii.

Reproduces Section 4 of Zhang, Choromanska & LeCun, "Deep learning with Elastic Averaging
SGD" (NIPS 2015, arXiv 1412.6651). The objective is the noise-free quadratic
F(x) = h x^2 / 2 (the paper uses h = 1). There is a global clock t and at time t only worker
i with i - 1 = t mod p is active (paper numbering i = 1..p; in code ``worker = i - 1``).

EASGD, state s = (x_1, ..., x_p, x~) in R^(p+1). The active worker i applies F^i, both
right-hand sides with the old values::

    x_i <- (1 - eta*h - alpha) x_i + alpha x~
    x~  <- alpha x_i + (1 - alpha) x~

Linearized ADMM (dual step rho, lambda rescaled by 1/rho), state
s = (lambda_1, x_1, ..., lambda_p, x_p, x~) in R^(2p+1). The active worker i applies, in
this order, each line using the values just updated::

    lambda_i <- lambda_i - (x_i - x~)
    x_i      <- [x_i - eta*h*x_i + eta*rho*(lambda_i + x~)] / (1 + eta*rho)
    x~       <- (1/p) sum_j (x_j - lambda_j)

One cycle is the composition over i = 1..p (the map of worker p applied last). The paper's
point: every F^i of EASGD is symmetric with norm <= 1 under the analytic condition below, so
the cycle is stable; the ADMM maps are not symmetric and their cycle can have spectral
radius > 1 (p = 3, eta = 0.001, rho = 2.5, h = 1 gives 1.000974) while EASGD with
alpha = eta*rho stays stable (0.99927).

Everything is vectorized over parameter grids: the parameters broadcast against each other,
a leading batch shape ``B`` comes out in front of every matrix, ``(*B, n, n)``. The cycle
maps are built by applying the update rules to the rows of a stacked identity (which is the
batched product F^p ... F^1 without dense matmuls: each worker touches at most three rows),
and the spectral radii come from ``np.linalg.eigvals`` on chunks of the stacked maps.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]

__all__ = [
    "admm_cycle_map",
    "admm_cycle_radius",
    "admm_index",
    "admm_step",
    "admm_worker_map",
    "easgd_analytic_stable",
    "easgd_alpha_bound",
    "easgd_block",
    "easgd_block_radius",
    "easgd_cycle_map",
    "easgd_cycle_radius",
    "easgd_step",
    "easgd_worker_map",
    "grid_centres",
    "radius_map",
    "spectral_radius",
    "trajectory",
]

DEFAULT_CHUNK = 8192


# --------------------------------------------------------------------------- helpers


def _params(*args: ArrayLike) -> tuple[tuple[int, ...], list[Array]]:
    """Broadcast scalar-or-array parameters; return the batch shape and the arrays."""
    arrays = np.broadcast_arrays(*[np.asarray(a, dtype=np.float64) for a in args])
    return arrays[0].shape, list(arrays)


def _col(a: Array) -> Array:
    """Add a trailing axis so that a batch of parameters scales a batch of rows."""
    return a[..., None]


def admm_index(p: int) -> tuple[Array, Array, int]:
    """Positions of (lambda_j), (x_j) and x~ in the ADMM state (lambda_1, x_1, ..., x~)."""
    lam = 2 * np.arange(p)
    return lam, lam + 1, 2 * p


# --------------------------------------------------------------------------- one step


def easgd_step(s: Array, worker: int, p: int, eta: Array, h: Array, alpha: Array) -> Array:
    """Apply worker ``worker``'s EASGD map F^i (i = worker + 1) to a batch of states.

    ``s`` has shape (*B, p + 1, k): k state vectors stored as columns (k = p + 1 columns of
    an identity give the matrix of the map). Parameters have shape B (or broadcast to it).
    Returns a new array; ``s`` is not modified.
    """
    if not 0 <= worker < p:
        raise ValueError(f"worker must be in [0, {p}), got {worker}")
    eta, h, alpha = (_col(np.asarray(a, dtype=np.float64)) for a in (eta, h, alpha))
    out = np.array(s, dtype=np.float64, copy=True)
    x, c = s[..., worker, :], s[..., p, :]
    out[..., worker, :] = (1.0 - eta * h - alpha) * x + alpha * c
    out[..., p, :] = alpha * x + (1.0 - alpha) * c
    return out


def admm_step(s: Array, worker: int, p: int, eta: Array, h: Array, rho: Array) -> Array:
    """Apply worker ``worker``'s linearized ADMM update (i = worker + 1) to a batch of states.

    ``s`` has shape (*B, 2p + 1, k), rows ordered (lambda_1, x_1, ..., lambda_p, x_p, x~).
    The three sub-steps run in order, each on the values just updated.
    """
    if not 0 <= worker < p:
        raise ValueError(f"worker must be in [0, {p}), got {worker}")
    eta, h, rho = (_col(np.asarray(a, dtype=np.float64)) for a in (eta, h, rho))
    lam_rows, x_rows, c_row = admm_index(p)
    li, xi = lam_rows[worker], x_rows[worker]
    out = np.array(s, dtype=np.float64, copy=True)
    out[..., li, :] = out[..., li, :] - (out[..., xi, :] - out[..., c_row, :])
    out[..., xi, :] = (
        out[..., xi, :] * (1.0 - eta * h) + eta * rho * (out[..., li, :] + out[..., c_row, :])
    ) / (1.0 + eta * rho)
    out[..., c_row, :] = (out[..., x_rows, :].sum(-2) - out[..., lam_rows, :].sum(-2)) / p
    return out


# --------------------------------------------------------------------------- maps

StepFn = Callable[[Array, int, int, Array, Array, Array], Array]


def _identity(shape: tuple[int, ...], n: int) -> Array:
    return np.broadcast_to(np.eye(n), (*shape, n, n)).copy()


def _worker_map(step: StepFn, n: int, worker: int, p: int, *params: ArrayLike) -> Array:
    shape, arrays = _params(*params)
    return step(_identity(shape, n), worker, p, *arrays)


def _cycle_map(step: StepFn, n: int, p: int, *params: ArrayLike) -> Array:
    shape, arrays = _params(*params)
    m = _identity(shape, n)
    for worker in range(p):  # F^p ... F^1: worker 1 first, worker p last
        m = step(m, worker, p, *arrays)
    return m


def easgd_worker_map(worker: int, p: int, eta: ArrayLike, h: ArrayLike, alpha: ArrayLike) -> Array:
    """Matrix of F^i (i = worker + 1), shape ``(*B, p + 1, p + 1)``."""
    return _worker_map(easgd_step, p + 1, worker, p, eta, h, alpha)


def admm_worker_map(worker: int, p: int, eta: ArrayLike, h: ArrayLike, rho: ArrayLike) -> Array:
    """Matrix of worker i's ADMM update (i = worker + 1), shape ``(*B, 2p + 1, 2p + 1)``."""
    return _worker_map(admm_step, 2 * p + 1, worker, p, eta, h, rho)


def easgd_cycle_map(p: int, eta: ArrayLike, h: ArrayLike, alpha: ArrayLike) -> Array:
    """One round-robin EASGD cycle F^p ... F^1, shape ``(*B, p + 1, p + 1)``."""
    return _cycle_map(easgd_step, p + 1, p, eta, h, alpha)


def admm_cycle_map(p: int, eta: ArrayLike, h: ArrayLike, rho: ArrayLike) -> Array:
    """One round-robin ADMM cycle (worker 1 first, worker p last), shape ``(*B, 2p+1, 2p+1)``."""
    return _cycle_map(admm_step, 2 * p + 1, p, eta, h, rho)


# --------------------------------------------------------------------------- spectra


def _map_chunks(fn: Callable[[slice], Array], total: int, chunk: int) -> Array:
    """Evaluate ``fn`` on consecutive slices of ``range(total)`` in a thread pool.

    ``np.linalg.eigvals`` releases the GIL, so the chunks run in parallel on all cores.
    """
    slices = [slice(s, min(s + chunk, total)) for s in range(0, total, chunk)]
    out = np.empty(total)
    workers = max(1, min(len(slices), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for sl, values in zip(slices, pool.map(fn, slices), strict=True):
            out[sl] = values
    return out


def spectral_radius(m: ArrayLike, chunk: int = DEFAULT_CHUNK) -> Array:
    """Largest ``|eigenvalue|`` of each matrix in a stack ``(*B, n, n)``, computed in chunks."""
    m = np.asarray(m)
    batch, n = m.shape[:-2], m.shape[-1]
    flat = m.reshape(-1, n, n)

    def radius(sl: slice) -> Array:
        return np.abs(np.linalg.eigvals(flat[sl])).max(-1)

    return _map_chunks(radius, flat.shape[0], chunk).reshape(batch)


def _cycle_radius(step: StepFn, n: int, p: int, chunk: int, *params: ArrayLike) -> Array:
    shape, arrays = _params(*params)
    flat = [a.reshape(-1) for a in arrays]

    def radius(sl: slice) -> Array:
        m = _cycle_map(step, n, p, *[a[sl] for a in flat])
        return np.abs(np.linalg.eigvals(m)).max(-1)

    return _map_chunks(radius, flat[0].shape[0], chunk).reshape(shape)


def easgd_cycle_radius(
    p: int, eta: ArrayLike, h: ArrayLike, alpha: ArrayLike, chunk: int = DEFAULT_CHUNK
) -> Array:
    """Spectral radius of the EASGD cycle map over a broadcast grid of (eta, h, alpha)."""
    return _cycle_radius(easgd_step, p + 1, p, chunk, eta, h, alpha)


def admm_cycle_radius(
    p: int, eta: ArrayLike, h: ArrayLike, rho: ArrayLike, chunk: int = DEFAULT_CHUNK
) -> Array:
    """Spectral radius of the ADMM cycle map over a broadcast grid of (eta, h, rho)."""
    return _cycle_radius(admm_step, 2 * p + 1, p, chunk, eta, h, rho)


# --------------------------------------------------------------------------- analytic EASGD


def easgd_block(eta: ArrayLike, h: ArrayLike, alpha: ArrayLike) -> Array:
    """The 2x2 block of F^i on (x_i, x~): [[1 - eta*h - alpha, alpha], [alpha, 1 - alpha]]."""
    shape, (eta, h, alpha) = _params(eta, h, alpha)
    b = np.empty((*shape, 2, 2))
    b[..., 0, 0] = 1.0 - eta * h - alpha
    b[..., 0, 1] = alpha
    b[..., 1, 0] = alpha
    b[..., 1, 1] = 1.0 - alpha
    return b


def easgd_block_radius(eta: ArrayLike, h: ArrayLike, alpha: ArrayLike) -> Array:
    """Spectral radius of one worker's 2x2 block (symmetric, so eigvalsh)."""
    return np.abs(np.linalg.eigvalsh(easgd_block(eta, h, alpha))).max(-1)


def easgd_alpha_bound(eta_h: ArrayLike) -> Array:
    """Upper end of the analytic alpha range, (4 - 2 eta h) / (4 - eta h)."""
    u = np.asarray(eta_h, dtype=np.float64)
    return (4.0 - 2.0 * u) / (4.0 - u)


def easgd_analytic_stable(eta: ArrayLike, h: ArrayLike, alpha: ArrayLike) -> NDArray[np.bool_]:
    """Analytic EASGD condition: 0 <= eta*h <= 2 and 0 <= alpha <= (4 - 2 eta h)/(4 - eta h).

    Exact for one worker's 2x2 block (``|eig| <= 1`` iff the condition holds, by the Jury
    conditions of its characteristic polynomial), hence for each F^i. For the composed cycle
    it is sufficient (each F^i is symmetric with norm <= 1, so the product has norm <= 1) but
    not necessary: the cycle can be stable where some F^i has an eigenvalue beyond 1.
    """
    _, (eta, h, alpha) = _params(eta, h, alpha)
    u = eta * h
    ok_u = (u >= 0.0) & (u <= 2.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ok_a = (alpha >= 0.0) & (alpha <= easgd_alpha_bound(np.clip(u, 0.0, 2.0)))
    return ok_u & ok_a


# --------------------------------------------------------------------------- trajectories


def trajectory(
    scheme: str, p: int, eta: float, h: float, k: float, s0: ArrayLike, n_steps: int
) -> Array:
    """States s_0, s_1, ..., s_{n_steps} of a round-robin scheme, shape (n_steps + 1, n).

    ``scheme`` is "easgd" (k = alpha, n = p + 1) or "admm" (k = rho, n = 2p + 1). One step is
    one tick of the global clock (one worker's update). Computed from the worker prefix maps
    and powers of the cycle map, so long runs cost a few small matvecs per cycle.
    """
    step: StepFn
    if scheme == "easgd":
        step, n = easgd_step, p + 1
    elif scheme == "admm":
        step, n = admm_step, 2 * p + 1
    else:
        raise ValueError(f"unknown scheme {scheme!r}")
    s0 = np.asarray(s0, dtype=np.float64)
    if s0.shape != (n,):
        raise ValueError(f"s0 must have shape ({n},), got {s0.shape}")
    prefix = [np.eye(n)]  # prefix[j] = F^j ... F^1 (worker j applied last)
    for worker in range(p):
        prefix.append(step(prefix[-1], worker, p, eta, h, k))
    cycle = prefix[-1]
    n_cycles = -(-n_steps // p) + 1
    starts = np.empty((n_cycles, n))
    starts[0] = s0
    for c in range(1, n_cycles):
        starts[c] = cycle @ starts[c - 1]
    states = np.einsum("jab,cb->cja", np.stack(prefix[:p]), starts).reshape(-1, n)
    return states[: n_steps + 1]


# --------------------------------------------------------------------------- grids


def grid_centres(upper: float, n: int) -> Array:
    """n cell centres of (0, upper): upper * (k + 1/2) / n, k = 0..n-1 (no zero step)."""
    return upper * (np.arange(n) + 0.5) / n


def radius_map(
    scheme: str,
    p: int,
    n: int = 400,
    eta_max: float = 1e-2,
    rho_max: float = 10.0,
    h: float = 1.0,
) -> tuple[Array, Array, Array]:
    """Cycle spectral radius on an n x n grid of cell centres in (0, eta_max) x (0, rho_max).

    Returns (etas, rhos, radius) with radius[j, k] at (etas[k], rhos[j]), i.e. rows = rho,
    ready for ``imshow(origin="lower")``. For "easgd" the coupling is alpha = eta * rho.
    """
    etas, rhos = grid_centres(eta_max, n), grid_centres(rho_max, n)
    e, r = np.meshgrid(etas, rhos)
    if scheme == "admm":
        radius = admm_cycle_radius(p, e, h, r)
    elif scheme == "easgd":
        radius = easgd_cycle_radius(p, e, h, e * r)
    else:
        raise ValueError(f"unknown scheme {scheme!r}")
    return etas, rhos, radius
