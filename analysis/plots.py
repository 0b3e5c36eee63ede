"""Figures for the EASGD / ADMM stability analysis (matplotlib, Agg backend).

Zhang, Choromanska & LeCun, "Deep learning with Elastic Averaging SGD" (NIPS 2015,
arXiv 1412.6651), Section 4 and supplement. Each ``plot_*`` function takes data computed by
``analysis.roundrobin`` / ``analysis.synchronous`` / ``analysis.montecarlo``, writes one PNG
and returns its path; ``python -m analysis`` calls them all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from numpy.typing import NDArray  # noqa: E402

from analysis.montecarlo import MonteCarloResult  # noqa: E402
from analysis.roundrobin import easgd_alpha_bound  # noqa: E402

Array = NDArray[np.float64]
RadiusMap = tuple[Array, Array, Array]  # (etas, rhos, radius[rho, eta])

__all__ = [
    "plot_easgd_condition",
    "plot_radius_maps",
    "plot_sync_stability",
    "plot_trajectories",
    "plot_variance_check",
    "radius_norm",
]

DPI = 130
CMAP = "RdBu_r"  # blue: contracting (< 1), white: 1, red: expanding (> 1)


def radius_norm(*maps: Array) -> TwoSlopeNorm:
    """A diverging colour scale with white at spectral radius 1, shared by several maps.

    The two halves are scaled separately (min -> dark blue, max -> dark red), so that the
    small excursions above 1 stay visible next to the larger ones below.
    """
    lo = min(float(np.nanmin(m)) for m in maps)
    hi = max(float(np.nanmax(m)) for m in maps)
    return TwoSlopeNorm(vmin=min(lo, 1.0 - 1e-9), vcenter=1.0, vmax=max(hi, 1.0 + 1e-9))


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_radius_maps(
    maps: Mapping[int, RadiusMap],
    scheme: str,
    path: Path,
    norm: TwoSlopeNorm | None = None,
    marker: tuple[float, float] | None = (1e-3, 2.5),
) -> Path:
    """Cycle spectral radius over (eta, rho), one panel per p, with the level-1 contour."""
    norm = norm or radius_norm(*(m[2] for m in maps.values()))
    fig, axes = plt.subplots(
        1, len(maps), figsize=(6.2 * len(maps), 5.2), squeeze=False, layout="constrained"
    )
    label = "linearized ADMM" if scheme == "admm" else "EASGD, alpha = eta * rho"
    for ax, (p, (etas, rhos, radius)) in zip(axes[0], maps.items(), strict=True):
        extent = (0.0, 2 * etas[-1] - etas[-2], 0.0, 2 * rhos[-1] - rhos[-2])
        im = ax.imshow(radius, origin="lower", extent=extent, aspect="auto", cmap=CMAP, norm=norm)
        if radius.min() < 1.0 < radius.max():
            ax.contour(etas, rhos, radius, levels=[1.0], colors="k", linewidths=1.0)
        if marker is not None:
            ax.plot(*marker, marker="*", color="gold", mec="k", ms=13, ls="none")
            ax.annotate(
                f"eta={marker[0]:g}, rho={marker[1]:g}",
                marker,
                xytext=(8, 6),
                textcoords="offset points",
                fontsize=8,
            )
        unstable = float((radius > 1.0).mean())
        ax.set_title(
            f"Round-robin {label}, p = {p}\n"
            f"range [{radius.min():.7f}, {radius.max():.7f}], "
            f"{unstable:.1%} of the grid > 1 (unstable)",
            fontsize=10,
        )
        ax.set_xlabel("learning rate eta")
        ax.set_ylabel("elastic / dual parameter rho")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
        fig.colorbar(im, ax=ax, label="spectral radius of one cycle map (black line: 1)")
    n = len(next(iter(maps.values()))[0])
    fig.suptitle(
        f"Largest |eigenvalue| of the round-robin cycle map on F(x) = x^2/2 (h = 1), "
        f"{n} x {n} grid",
        fontsize=11,
    )
    return _save(fig, path)


def plot_easgd_condition(
    u: Array,
    alphas: Array,
    block_radius: Array,
    cycle_radius: Mapping[int, Array],
    path: Path,
) -> Path:
    """Analytic EASGD condition against the 2x2 block (exact) and the cycle (sufficient).

    ``block_radius`` and each ``cycle_radius[p]`` have shape (len(alphas), len(u)), with
    u = eta * h on the x axis.
    """
    panels = [("one worker: 2x2 block of F^i", block_radius)]
    panels += [(f"composed cycle F^p...F^1, p = {p}", r) for p, r in cycle_radius.items()]
    ncols = 2 if len(panels) == 4 else len(panels)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(6.0 * ncols, 4.9 * nrows), squeeze=False, layout="constrained"
    )
    norm = TwoSlopeNorm(vmin=0.0, vcenter=1.0, vmax=2.0)
    uu, aa = np.meshgrid(u, alphas)
    analytic = (uu <= 2.0) & (aa <= easgd_alpha_bound(np.minimum(uu, 2.0)))
    curve_u = np.linspace(0.0, 2.0, 200)
    for ax, (title, radius) in zip(axes.flat, panels, strict=False):
        im = ax.imshow(
            np.minimum(radius, 2.0),
            origin="lower",
            extent=(0.0, 2 * u[-1] - u[-2], 0.0, 2 * alphas[-1] - alphas[-2]),
            aspect="auto",
            cmap=CMAP,
            norm=norm,
        )
        ax.contour(u, alphas, radius, levels=[1.0], colors="k", linewidths=1.4)
        ax.plot(curve_u, easgd_alpha_bound(curve_u), "--", color="lime", lw=2.0)
        extra = (radius < 1.0) & ~analytic
        if extra.any():
            ax.contourf(
                u, alphas, extra.astype(float), levels=[0.5, 1.5], colors="none", hatches=["//"]
            )
        agree = float(((radius <= 1.0 + 1e-9) == analytic).mean())
        ax.set_title(
            f"{title}\nnumeric radius <= 1 matches the analytic condition on {agree:.2%} "
            f"of the grid;\nstable although the condition fails: {extra.mean():.2%}",
            fontsize=10,
        )
        ax.set_xlabel("eta * h")
        ax.set_ylabel("moving rate alpha")
        fig.colorbar(im, ax=ax, extend="max", label="spectral radius (clipped at 2)")
    handles = [
        Line2D([], [], color="k", lw=1.4, label="numeric: spectral radius = 1"),
        Line2D(
            [], [], color="lime", ls="--", lw=2, label="analytic: alpha = (4 - 2 eta h)/(4 - eta h)"
        ),
        Patch(
            facecolor="none",
            edgecolor="k",
            hatch="//",
            label="cycle stable, analytic condition fails",
        ),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=3)
    fig.suptitle(
        "EASGD round robin: the analytic condition 0 <= eta h <= 2, "
        "0 <= alpha <= (4 - 2 eta h)/(4 - eta h)\nis exact for one worker's 2x2 map and "
        "sufficient (not necessary) for the composed cycle",
        fontsize=11,
    )
    return _save(fig, path)


def _minmax(values: Array, window: int) -> tuple[Array, Array, Array]:
    """(tick at window start, min, max) over consecutive windows: a cheap, faithful band."""
    n = len(values) // window * window
    w = values[:n].reshape(-1, window)
    return np.arange(0, n, window, dtype=np.float64), w.min(axis=1), w.max(axis=1)


def _envelope(t: Array, values: Array, radius: float, p: int) -> Array:
    """C * radius^(t/p), anchored on the largest |value| over the last tenth of the run."""
    tail = slice(int(0.9 * len(t)), None)
    k = int(np.argmax(np.abs(values[tail]))) + tail.start
    return np.abs(values[k]) * radius ** ((t - t[k]) / p)


def plot_trajectories(
    runs: Sequence[Mapping[str, object]],
    p: int,
    eta: float,
    rho: float,
    radii: Mapping[str, float],
    path: Path,
    zoom: tuple[int, int] = (30_000, 30_090),
) -> Path:
    """Center x~ over time for ADMM and EASGD (alpha = eta*rho), one column per start.

    Each run is a mapping with keys "label" (str), "admm" and "easgd" (center trajectories,
    one value per clock tick). Rows: x~ on a symlog axis, |x~| on a log axis with the rate
    predicted by the cycle map's spectral radius, and a linear zoom into ``zoom`` ticks.
    """
    fig, axes = plt.subplots(
        3, len(runs), figsize=(7.0 * len(runs), 10.5), squeeze=False, layout="constrained"
    )
    colours = {"admm": "tab:red", "easgd": "tab:blue"}
    names = {"admm": "ADMM", "easgd": f"EASGD, alpha = eta*rho = {eta * rho:g}"}
    for col, run in enumerate(runs):
        top, mid, bottom = axes[:, col]
        for scheme in ("admm", "easgd"):
            c = np.asarray(run[scheme])
            t = np.arange(len(c), dtype=np.float64)
            colour = colours[scheme]
            lab = f"{names[scheme]} (cycle radius {radii[scheme]:.6f})"
            # min/max over windows of `band` ticks: the fast oscillation of ADMM fills a band
            band = max(1, len(c) // 2000)
            tw, lo, hi = _minmax(c, band)
            top.fill_between(tw, lo, hi, color=colour, lw=0.6, alpha=0.9, label=lab)
            tw, lo, hi = _minmax(np.abs(c), band)
            mid.fill_between(tw, lo, hi, color=colour, alpha=0.6, lw=1.5, label=lab)
            mid.set_yscale("log")
            mid.plot(t, _envelope(t, c, radii[scheme], p), color="k", ls="--", lw=0.9)
            sl = slice(*zoom)
            bottom.plot(t[sl], c[sl], ".-", color=colour, lw=0.7, ms=2.5, label=names[scheme])
        top.set_yscale("symlog", linthresh=10.0)
        top.axhline(0.0, color="grey", lw=0.5)
        top.set_title(f"{run['label']}: center x~(t) (symlog axis)", fontsize=10)
        top.set_ylabel("center x~")
        top.legend(fontsize=8, loc="upper left")
        mid.set_title(
            "|x~(t)|; dashed: C * radius^(t/p) with the cycle map's spectral radius",
            fontsize=10,
        )
        mid.set_ylabel("|x~|")
        mid.set_ylim(bottom=1e-4)
        bottom.set_title(f"zoom, linear axis: ticks {zoom[0]} to {zoom[1]}", fontsize=10)
        bottom.set_ylabel("center x~")
        bottom.legend(fontsize=8, loc="upper left")
        for ax in (top, mid, bottom):
            ax.set_xlabel("global clock t (one worker update per tick)")
            ax.grid(alpha=0.3)
    fig.suptitle(
        f"Round robin on F(x) = x^2/2, p = {p}, eta = {eta:g}, rho = {rho:g}: "
        "ADMM oscillates and eventually diverges, EASGD converges",
        fontsize=11,
    )
    return _save(fig, path)


def plot_sync_stability(
    etas: Array,
    betas: Array,
    radius: Array,
    p_heat: int,
    boundaries: Mapping[int, tuple[Array, Array]],
    path: Path,
) -> Path:
    """Stability of the synchronous 2x2 mean system M over (eta, beta) (h = 1).

    ``radius`` is max |eig M| for p = p_heat, shape (len(betas), len(etas)); ``boundaries[p]``
    holds (numeric radius, analytic Jury mask) on the same grid for each p.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(13.0, 5.4), layout="constrained")
    norm = TwoSlopeNorm(vmin=0.0, vcenter=1.0, vmax=2.0)
    im = left.imshow(
        np.minimum(radius, 2.0),
        origin="lower",
        extent=(0.0, 2 * etas[-1] - etas[-2], 0.0, 2 * betas[-1] - betas[-2]),
        aspect="auto",
        cmap=CMAP,
        norm=norm,
    )
    left.contour(etas, betas, radius, levels=[1.0], colors="k", linewidths=1.4)
    left.contour(
        etas,
        betas,
        boundaries[p_heat][1].astype(float),
        levels=[0.5],
        colors="lime",
        linestyles="--",
        linewidths=2.0,
    )
    fig.colorbar(im, ax=left, extend="max", label="max |eigenvalue of M| (clipped at 2)")
    left.set_title(
        f"p = {p_heat}: spectral radius of M = [[1 - alpha - eta h, alpha], [beta, 1 - beta]]\n"
        "black: numeric radius = 1, green dashed: analytic (Jury) boundary",
        fontsize=10,
    )
    cmap = plt.get_cmap("plasma")
    handles = []
    for k, (p, (num, mask)) in enumerate(boundaries.items()):
        colour = cmap(0.85 * k / max(1, len(boundaries) - 1))
        right.contour(etas, betas, num, levels=[1.0], colors=[colour], linewidths=2.0)
        right.contour(
            etas,
            betas,
            mask.astype(float),
            levels=[0.5],
            colors="k",
            linestyles=":",
            linewidths=1.0,
        )
        handles.append(Line2D([], [], color=colour, lw=2, label=f"p = {p}"))
    handles.append(Line2D([], [], color="k", ls=":", label="analytic (Jury) boundaries"))
    right.legend(handles=handles, fontsize=8, loc="lower left")
    right.set_title(
        "stability boundary |eig M| = 1 for several p (stable: below/left of each curve)\n"
        "for 0 < beta < 2: eta h < 2 - 2 alpha / (2 - beta), alpha = beta / p",
        fontsize=10,
    )
    for ax in (left, right):
        ax.set_xlabel("learning rate eta (h = 1)")
        ax.set_ylabel("beta = p * alpha")
        ax.set_xlim(0.0, etas[-1])
        ax.set_ylim(0.0, betas[-1])
    fig.suptitle(
        "Synchronous EASGD on F(x) = h x^2/2: mean dynamics of (worker mean, center)",
        fontsize=11,
    )
    return _save(fig, path)


def plot_variance_check(
    betas: Array,
    closed: Mapping[int, Array],
    lyap_betas: Array,
    lyapunov: Mapping[int, Array],
    mc: Sequence[MonteCarloResult],
    eta: float,
    sigma: float,
    path: Path,
    z: float = 3.0,
) -> Path:
    """Closed-form stationary Var x~ vs scipy's Lyapunov solution vs Monte Carlo (easgd_jax)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13.0, 5.2), layout="constrained")
    cmap = plt.get_cmap("plasma")
    colours = {p: cmap(0.8 * k / max(1, len(closed) - 1)) for k, p in enumerate(closed)}
    for p, v in closed.items():
        left.semilogy(betas, v, color=colours[p], lw=1.8, label=f"closed form, p = {p}")
        left.semilogy(lyap_betas, lyapunov[p], "o", mfc="none", color=colours[p], ms=6, label=None)
    for res in mc:
        left.errorbar(
            res.beta,
            res.estimate,
            yerr=z * res.stderr,
            fmt="s",
            ms=4,
            color="tab:red",
            capsize=3,
        )
    handles, _ = left.get_legend_handles_labels()
    handles += [
        Line2D([], [], marker="o", mfc="none", color="grey", ls="none",
               label="scipy solve_discrete_lyapunov"),
        Line2D([], [], marker="s", color="tab:red", ls="none",
               label=f"Monte Carlo, easgd_jax.easgd (+- {z:g} s.e.)"),
    ]  # fmt: skip
    left.legend(handles=handles, fontsize=8)
    left.set_xlabel("beta = p * alpha")
    left.set_ylabel("stationary Var x~")
    left.set_title(f"Stationary variance of the center, eta = {eta:g}, h = 1, sigma = {sigma:g}")
    left.grid(alpha=0.3, which="both")
    if mc:
        for k, p in enumerate(sorted({r.p for r in mc})):
            rs = [r for r in mc if r.p == p]
            b = np.array([r.beta for r in rs]) + 0.015 * k  # side by side at equal beta
            rel = np.array([r.estimate / r.closed_form - 1.0 for r in rs])
            err = np.array([z * r.stderr / r.closed_form for r in rs])
            colour = colours.get(p, "tab:red")
            right.errorbar(b, rel, yerr=err, fmt="s", capsize=3, color=colour, label=f"p = {p}")
        worst = max(abs(r.z_score) for r in mc)
        right.axhline(0.0, color="k", lw=0.8)
        right.legend(fontsize=8)
        right.set_title(
            f"Monte Carlo / closed form - 1 (+- {z:g} s.e., batch means over chains)\n"
            f"{len(mc)} runs, {mc[0].chains} chains x {mc[0].steps} steps each, "
            f"max |z| = {worst:.2f}",
            fontsize=10,
        )
    else:
        right.text(0.5, 0.5, "Monte Carlo skipped", ha="center", va="center")
        right.set_title("Monte Carlo / closed form - 1")
    right.set_xlabel("beta = p * alpha")
    right.set_ylabel("relative deviation")
    right.grid(alpha=0.3)
    fig.suptitle(
        "Synchronous EASGD with gradient noise: Var x~ = "
        "beta eta sigma^2 (2 - alpha - beta - eta h (1 - beta)) / "
        "[p h (alpha + beta + eta h (1 - beta)) ((2 - alpha - eta h)(2 - beta) - alpha beta)]",
        fontsize=10,
    )
    return _save(fig, path)
