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
    "plot_diloco_outer",
    "plot_diloco_period",
    "plot_downpour",
    "plot_eamsgd_region",
    "plot_easgd_condition",
    "plot_heterogeneous",
    "plot_radius_maps",
    "plot_sync_stability",
    "plot_trajectories",
    "plot_variance_by_workers",
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
        crosses = bool(radius.min() < 1.0 < radius.max())
        if crosses:
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
        side = "black line: 1" if crosses else (
            "all < 1: stable on the whole grid" if radius.max() < 1.0 else "all >= 1")
        fig.colorbar(im, ax=ax, label=f"spectral radius of one cycle map ({side})")
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
    """Closed-form stationary Var x~ vs scipy's Lyapunov solution vs Monte Carlo (easgd_jax).

    Without Monte-Carlo results the figure has the left panel alone, and its legend lists
    only what is drawn."""
    if mc:
        fig, (left, right) = plt.subplots(1, 2, figsize=(13.0, 5.2), layout="constrained")
    else:
        fig, left = plt.subplots(figsize=(8.0, 5.2), layout="constrained")
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
    handles.append(Line2D([], [], marker="o", mfc="none", color="grey", ls="none",
                          label="scipy solve_discrete_lyapunov"))
    if mc:
        handles.append(Line2D([], [], marker="s", color="tab:red", ls="none",
                              label=f"Monte Carlo, easgd_jax.easgd (+- {z:g} s.e.)"))
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


# --------------------------------------------------------------------------- issue 31


def _radius_panel(ax: plt.Axes, x: Array, y: Array, radius: Array, logy: bool = False):
    """Spectral radius over (x, y) (rows = y) clipped at 2, white at 1, the level-1 contour
    in black; returns the image for a colour bar."""
    norm = TwoSlopeNorm(vmin=0.0, vcenter=1.0, vmax=2.0)
    im = ax.pcolormesh(x, y, np.minimum(radius, 2.0), cmap=CMAP, norm=norm, shading="nearest")
    if np.nanmin(radius) < 1.0 < np.nanmax(radius):
        ax.contour(x, y, radius, levels=[1.0], colors="k", linewidths=1.3)
    if logy:
        ax.set_yscale("log")
    return im


def _title(fig: plt.Figure, title: str, caption: str, width: int = 150) -> None:
    """The figure's title and, under it, its caption: what it shows, which claim it tests."""
    import textwrap

    fig.suptitle(f"{title}\n{textwrap.fill(caption, width)}", fontsize=10)


def plot_eamsgd_region(eta_h: Array, deltas: Array, radii: Mapping[tuple[int, float], Array],
                       p: int, path: Path) -> Path:
    """EAMSGD's stability region over (eta h, delta): rows tau, columns beta = p alpha."""
    taus = sorted({tau for tau, _ in radii})
    betas = sorted({beta for _, beta in radii})
    fig, axes = plt.subplots(len(taus), len(betas), figsize=(4.6 * len(betas), 4.0 * len(taus)),
                             squeeze=False, layout="constrained")
    curve_d = np.linspace(0.0, 0.999, 200)
    for (row, tau), (col, beta) in ((r, c) for r in enumerate(taus) for c in enumerate(betas)):
        ax, radius = axes[row, col], radii[(tau, beta)]
        im = _radius_panel(ax, eta_h, deltas, radius)
        ax.plot(2 * (1 + curve_d) / (1 + 2 * curve_d), curve_d, "--", color="lime", lw=2)
        ax.axhline(0.99, color="grey", ls=":", lw=1)
        ax.set_title(f"tau = {tau}, beta = p alpha = {beta:g} (alpha = {beta / p:.4g})\n"
                     f"stable on {(radius < 1.0).mean():.0%} of the grid", fontsize=10)
        ax.set_xlabel("eta h")
        ax.set_ylabel("momentum delta")
    fig.colorbar(im, ax=axes.ravel().tolist(), extend="max",
                 label="spectral radius of one period (clipped at 2)")
    handles = [Line2D([], [], color="k", lw=1.3, label="radius = 1 (read from eamsgd's code)"),
               Line2D([], [], color="lime", ls="--", lw=2,
                      label="one worker alone (alpha = 0): Nesterov's "
                      "eta h < 2(1+delta)/(1+2delta)"),
               Line2D([], [], color="grey", ls=":", label="the paper's delta = 0.99")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=9)
    _title(fig, f"Synchronous EAMSGD, p = {p}, on F(x) = h x^2/2: stability region in "
           "(eta h, delta) at several alpha",
           "Tests the EASGD paper's remark (as issue 31 cites it) that EAMSGD needs a smaller "
           "moving rate than EASGD: with an exchange every step (tau = 1) the elastic force "
           "narrows the stable range as alpha grows, on top of the momentum's own bound "
           "(green); at the paper's tau = 10 the momentum's bound alone decides.")
    return _save(fig, path)


def plot_diloco_outer(rates: Array, momenta: Array, radii: Mapping[int, Array], eta_h: float,
                      point: tuple[float, float], path: Path) -> Path:
    """DiLoCo's stability region over (outer rate, outer momentum), one panel per H."""
    fig, axes = plt.subplots(1, len(radii), figsize=(4.4 * len(radii), 4.5), squeeze=False,
                             layout="constrained")
    mu = np.linspace(0.0, 0.999, 200)
    for ax, (h, radius) in zip(axes[0], radii.items(), strict=True):
        im = _radius_panel(ax, rates, momenta, radius)
        kappa = 1.0 - (1.0 - eta_h) ** h
        bound = 2 * (1 + mu) / ((1 + 2 * mu) * kappa)
        ax.plot(bound, mu, "--", color="lime", lw=2)
        ax.plot(*point, marker="*", color="gold", mec="k", ms=14, ls="none")
        ax.set_xlim(0.0, rates[-1] + rates[0])
        ax.set_title(f"H = {h}: effective curvature 1 - (1 - eta h)^H = {kappa:.3f}\n"
                     f"stable on {(radius < 1.0).mean():.0%} of the grid", fontsize=10)
        ax.set_xlabel("outer learning rate")
        ax.set_ylabel("outer Nesterov momentum")
    fig.colorbar(im, ax=axes[0].tolist(), extend="max",
                 label="spectral radius of one period (clipped at 2)")
    handles = [Line2D([], [], color="k", lw=1.3, label="radius = 1 (read from diloco's code)"),
               Line2D([], [], color="lime", ls="--", lw=2,
                      label="Nesterov on the effective curvature: rate < 2(1+mu)/((1+2mu) kappa)"),
               Line2D([], [], marker="*", color="gold", mec="k", ms=12, ls="none",
                      label=f"the DiLoCo papers' rate {point[0]:g}, momentum {point[1]:g}")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=9)
    _title(fig, f"DiLoCo (inner SGD, eta h = {eta_h:g}, p = 2) on F(x) = h x^2/2: stability "
           "region of the outer step as H grows",
           "Tests the DiLoCo papers' outer rate 0.7 and momentum 0.9: stable at every H (the "
           "outer step is Nesterov's on the effective curvature 1 - (1 - eta h)^H, which tends "
           "to 1), well inside the bound rate < 2(1+mu)/((1+2mu) kappa), 1.36 at mu = 0.9.")
    return _save(fig, path)


def plot_diloco_period(eta_h: Array, hs: Array, radii: Mapping[str, Array], path: Path) -> Path:
    """DiLoCo's stability region over (eta h, H), one panel per outer optimizer."""
    fig, axes = plt.subplots(1, len(radii), figsize=(6.0 * len(radii), 4.8), squeeze=False,
                             layout="constrained")
    for ax, (label, radius) in zip(axes[0], radii.items(), strict=True):
        im = _radius_panel(ax, eta_h, hs, radius, logy=True)
        for x, style in ((1.0, ":"), (2.0, "--")):
            ax.axvline(x, color="grey", ls=style, lw=1)
        ax.set_title(f"{label}\nstable on {(radius < 1.0).mean():.0%} of the grid", fontsize=10)
        ax.set_xlabel("inner eta h")
        ax.set_ylabel("H, inner steps per outer step")
    fig.colorbar(im, ax=axes[0].tolist(), extend="max",
                 label="spectral radius of one period (clipped at 2)")
    _title(fig, "DiLoCo (inner SGD, p = 2) on F(x) = h x^2/2: stability over (eta h, H), "
           "H = 1..500 (black: radius = 1; dotted eta h = 1, dashed eta h = 2)",
           "Where DiLoCo's outer Nesterov step becomes unstable as H grows: local SGD (outer "
           "SGD(1)) is stable exactly where one worker's SGD is (eta h < 2, radius "
           "|1 - eta h|^H); the DiLoCo papers' outer (0.7, 0.9) loses only a sliver by "
           "eta h = 2 at small H, and its radius per period levels off near 0.52 (the outer "
           "2x2 map's at curvature 1, sqrt(0.27)) where local SGD's keeps falling with H.",
           width=120)
    return _save(fig, path)


def plot_downpour(eta_h: Array, taus: Array, radii: Mapping[int, Array], path: Path) -> Path:
    """Synchronous DOWNPOUR's stability region over (eta h, tau), one panel per p."""
    fig, axes = plt.subplots(1, len(radii), figsize=(5.6 * len(radii), 4.6), squeeze=False,
                             layout="constrained")
    for ax, (p, radius) in zip(axes[0], radii.items(), strict=True):
        im = _radius_panel(ax, eta_h, taus, radius)
        ax.axvline(2.0 / p, color="lime", ls="--", lw=2)
        ax.axvline(2.0, color="grey", ls=":", lw=1)
        ax.set_title(f"p = {p}: stable on {(radius < 1.0).mean():.0%} of the grid", fontsize=10)
        ax.set_xlabel("eta h")
        ax.set_ylabel("tau, local steps per push")
    fig.colorbar(im, ax=axes[0].tolist(), extend="max",
                 label="spectral radius of one period (clipped at 2)")
    handles = [Line2D([], [], color="k", lw=1.3, label="radius = 1 (read from downpour's code)"),
               Line2D([], [], color="lime", ls="--", lw=2,
                      label="tau = 1: SGD on the SUM of p gradients, eta h < 2 / p"),
               Line2D([], [], color="grey", ls=":", label="one worker's SGD: eta h < 2")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=9)
    _title(fig, "Synchronous DOWNPOUR (the EASGD paper's baseline) on F(x) = h x^2/2: the "
           "master adds the sum of the p workers' pushes",
           "Where the sum of p pushes destabilises: tau = 1 is SGD on the sum of p gradients, "
           "stable for eta h < 2 / p (green); each push then carries tau local steps, and the "
           "stable eta h shrinks further, about as 2 / (p tau) (black), apart from narrow "
           "islands by eta h = 2 at even tau, where the local steps nearly cancel.", width=130)
    return _save(fig, path)


def plot_variance_by_workers(ps: Sequence[int], variances: Mapping[str, Array], eta: float,
                             sigma: float, mc: Sequence, path: Path, z: float = 3.0) -> Path:
    """Stationary Var x~ against p for several algorithms (Lyapunov), with Monte Carlo."""
    fig, ax = plt.subplots(figsize=(7.2, 5.0), layout="constrained")
    ps_arr = np.asarray(ps, float)
    for label, v in variances.items():
        ax.loglog(ps_arr, v, "o-", lw=1.8, label=f"{label} (Lyapunov)")
    first = next(iter(variances.values()))
    ax.loglog(ps_arr, first[0] / ps_arr, "k:", lw=1, label="1 / p from p = 1")
    for res in mc:
        ax.errorbar(res.num_workers, res.estimate, yerr=z * res.stderr, fmt="s", ms=5,
                    color="tab:red", capsize=3)
    if mc:
        ax.plot([], [], "s", color="tab:red",
                label=f"Monte Carlo of the transformation (+- {z:g} s.e.)")
    ax.set_xlabel("workers p")
    ax.set_ylabel("stationary Var of the evaluated point")
    ax.set_xticks(ps_arr, [str(p) for p in ps])
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    _title(fig, f"Stationary variance of the center under gradient noise, eta = {eta:g}, "
           f"h = 1, sigma = {sigma:g}; EASGD, EAMSGD: beta = 0.9, tau = 10, delta = 0.9; "
           "DiLoCo: H = 10, outer (0.7, 0.9)",
           "Tests the EASGD supplement's quadratic case (the center's variance falls as p "
           "grows) for EAMSGD and DiLoCo too, each from the discrete Lyapunov equation of its "
           "linearized period: all fall as 1/p; at equal eta the momentum methods pay for "
           "their larger effective step.", width=100)
    return _save(fig, path)


def plot_heterogeneous(etas: Array, radii: Mapping[str, Mapping[float, Array]],
                       curvatures: Mapping[float, Array], path: Path) -> Path:
    """Spectral radius against eta when the workers' curvatures differ."""
    fig, axes = plt.subplots(1, len(radii), figsize=(4.4 * len(radii), 4.2), squeeze=False,
                             layout="constrained")
    cmap = plt.get_cmap("viridis")
    spreads = list(next(iter(radii.values())))
    colours = {s: cmap(0.85 * k / max(1, len(spreads) - 1)) for k, s in enumerate(spreads)}
    for ax, (label, by_spread) in zip(axes[0], radii.items(), strict=True):
        for s, r in by_spread.items():
            h = curvatures[s]
            ax.semilogy(etas, r, color=colours[s], lw=1.6,
                        label=f"h_i in [{h.min():.2g}, {h.max():.2g}]")
            ax.axvline(2.0 / h.max(), color=colours[s], ls=":", lw=1)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_ylim(1e-2, 1e2)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("learning rate eta (mean h = 1)")
        ax.set_ylabel("spectral radius of one period")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=8, loc="upper left")
    _title(fig, "Workers with different curvatures h_i (p = 4, mean 1): dotted, eta = 2 / "
           "max h_i; EASGD, EAMSGD (delta = 0.9): beta = 0.9, tau = 10; DiLoCo: H = 10, "
           "outer (0.7, 0.9)",
           "Heterogeneous curvatures: data-parallel SGD averages the gradients and is bounded "
           "by the mean curvature, eta < 2 (its three curves coincide); the local methods by "
           "the stiffest worker: EASGD at about 2 / max h_i, EAMSGD at its momentum's "
           "2(1+delta)/((1+2delta) max h_i), DiLoCo, which averages the workers' H-step maps, "
           "a little beyond 2 / max h_i.")
    return _save(fig, path)
