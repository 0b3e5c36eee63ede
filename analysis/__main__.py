"""Regenerate every figure of the stability analysis: ``python -m analysis --out DIR``.

Zhang, Choromanska & LeCun, "Deep learning with Elastic Averaging SGD" (NIPS 2015,
arXiv 1412.6651), Section 4 (round robin, EASGD vs linearized ADMM) and the quadratic case of
the supplement (synchronous EASGD with gradient noise); then the same questions asked of the
other registered algorithms through ``analysis.linearized`` (EAMSGD, DiLoCo, DOWNPOUR,
data-parallel SGD: stability regions, stationary variances, heterogeneous curvatures).
Prints the spectral radii at a few named points, the unstable fraction of the ADMM map, the
Monte-Carlo checks, the files written and the run time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from analysis import roundrobin as rr
from analysis import synchronous as sync

PS = (3, 8)
H = 1.0
ETA_MAX, RHO_MAX = 1e-2, 10.0
NAMED_POINTS = ((1e-3, 2.5), (5e-4, 0.5), (2e-3, 9.0), (5e-3, 2.5), (9e-3, 9.0))
TRAJ_P, TRAJ_ETA, TRAJ_RHO, TRAJ_STEPS = 3, 1e-3, 2.5, 60_000
SYNC_ETA, SIGMA = 0.1, 1.0
MC_POINTS = ((4, 0.1), (4, 0.5), (4, 0.9), (4, 1.3), (16, 0.5), (16, 1.5))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Stability of round-robin EASGD vs ADMM and noisy synchronous EASGD "
        "(Zhang, Choromanska, LeCun 2015, Section 4): regenerate every figure.",
    )
    parser.add_argument("--out", type=Path, default=Path("figures"), help="output folder")
    parser.add_argument(
        "--grid",
        type=int,
        default=400,
        help="points per axis of the (eta, rho) and (eta, beta) maps (default 400); the "
        "(eta h, alpha) map of the analytic condition uses min(grid, 300)",
    )
    parser.add_argument(
        "--mc-chains", type=int, default=512, help="independent chains per Monte-Carlo run"
    )
    parser.add_argument("--mc-steps", type=int, default=4000, help="recorded steps per chain")
    parser.add_argument(
        "--no-monte-carlo", action="store_true", help="skip the easgd_jax Monte-Carlo check"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-linearized",
        action="store_true",
        help="skip the figures of analysis.linearized (EAMSGD, DiLoCo, DOWNPOUR, ...)",
    )
    return parser.parse_args(argv)


def _trajectory_runs(seed: int) -> list[dict[str, object]]:
    p = TRAJ_P
    rng = np.random.default_rng(seed)
    starts = {"x_i = x~ = 1000, lambda_i = 0": np.full(p + 1, 1000.0)}
    starts["random x_i, x~ ~ U(-1000, 1000), lambda_i = 0"] = rng.uniform(-1000, 1000, p + 1)
    runs = []
    for label, xs in starts.items():
        admm0 = np.zeros(2 * p + 1)
        _, x_rows, c_row = rr.admm_index(p)
        admm0[x_rows], admm0[c_row] = xs[:p], xs[p]
        admm = rr.trajectory("admm", p, TRAJ_ETA, H, TRAJ_RHO, admm0, TRAJ_STEPS)[:, -1]
        easgd = rr.trajectory("easgd", p, TRAJ_ETA, H, TRAJ_ETA * TRAJ_RHO, xs, TRAJ_STEPS)
        runs.append({"label": label, "admm": admm, "easgd": easgd[:, -1]})
    return runs


def _monte_carlo(args: argparse.Namespace) -> list:
    try:
        from analysis.montecarlo import monte_carlo_center_variance
    except ImportError as err:  # pragma: no cover - montecarlo itself imports only numpy
        print(f"Monte Carlo skipped: {err}")
        return []
    results = []
    for k, (p, beta) in enumerate(MC_POINTS):
        try:
            res = monte_carlo_center_variance(
                SYNC_ETA,
                beta,
                p,
                H,
                SIGMA,
                chains=args.mc_chains,
                steps=args.mc_steps,
                seed=args.seed + k,
            )
        except ImportError as err:
            print(f"Monte Carlo skipped (easgd_jax / jax not importable): {err}")
            return []
        results.append(res)
    return results


def _linearized_figures(args: argparse.Namespace, out: Path, written: list[Path]) -> list[str]:
    """The figures of issue 31, each read from the algorithms' own code; returns the lines
    to print."""
    from analysis import plots
    from analysis import regions as reg

    lines = ["Any registered algorithm, linearized from its own code (analysis.linearized):"]
    eta_h, deltas, radii = reg.eamsgd_region()
    written.append(plots.plot_eamsgd_region(eta_h, deltas, radii, reg.P,
                                            out / "eamsgd_stability.png"))
    for (tau, beta), r in radii.items():
        edge = eta_h[r[-1] < 1].max() if (r[-1] < 1).any() else float("nan")
        lines.append(f"  EAMSGD p = {reg.P}, tau = {tau}, beta = {beta:g}: stable on "
                     f"{(r < 1).mean():.0%} of (eta h, delta); at delta = {deltas[-1]:.3f} up "
                     f"to eta h = {edge:.3f}")
    rates, momenta, outer = reg.diloco_outer_region()
    written.append(plots.plot_diloco_outer(rates, momenta, outer, reg.DILOCO_INNER_ETA_H,
                                           reg.DILOCO_POINT, out / "diloco_outer.png"))
    col = np.abs(rates - reg.DILOCO_POINT[0]).argmin()
    row = np.abs(momenta - reg.DILOCO_POINT[1]).argmin()
    at = ", ".join(f"H = {h}: {r[row, col]:.4f}" for h, r in outer.items())
    lines.append(f"  DiLoCo radius at the grid cell nearest outer (0.7, 0.9), inner eta h = "
                 f"{reg.DILOCO_INNER_ETA_H:g}: {at}")
    eh, hs, by_h = reg.diloco_period_region()
    written.append(plots.plot_diloco_period(eh, hs, by_h, out / "diloco_period.png"))
    for label, r in by_h.items():
        lines.append(f"  DiLoCo {label}: stable on {(r < 1).mean():.0%} of (eta h, H)")
    eh, taus, down = reg.downpour_region()
    written.append(plots.plot_downpour(eh, taus, down, out / "downpour_tau.png"))
    for p, r in down.items():
        edge = eh[(r[0] < 1.0)].max()
        lines.append(f"  DOWNPOUR p = {p}: tau = 1 stable up to eta h = {edge:.3f} "
                     f"(2 / p = {2 / p:.3f})")
    variances = reg.variance_by_workers()
    mc = [] if args.no_monte_carlo else _variance_monte_carlo(args)
    written.append(plots.plot_variance_by_workers(reg.VARIANCE_PS, variances, reg.VARIANCE_ETA,
                                                  reg.VARIANCE_SIGMA, mc,
                                                  out / "variance_by_workers.png"))
    for label, v in variances.items():
        vals = ", ".join(f"p = {p}: {x:.3e}" for p, x in zip(reg.VARIANCE_PS, v, strict=True))
        lines.append(f"  stationary Var, {label}: {vals}")
    for res in mc:
        lines.append(f"  Monte Carlo {res.name} p = {res.num_workers}: Var = {res.estimate:.4e} "
                     f"+- {res.stderr:.1e}, Lyapunov {res.predicted:.4e}, z = "
                     f"{res.z_score:+.2f} ({res.chains} chains x {res.periods} periods)")
    etas, het = reg.heterogeneous_radius()
    spreads = {s: reg.curvatures(s) for s in reg.SPREADS}
    written.append(plots.plot_heterogeneous(etas, het, spreads, out / "heterogeneous.png"))
    for label, by_spread in het.items():
        edges = ", ".join(f"spread {s:g}: {etas[r < 1].max():.3f}"
                          for s, r in by_spread.items() if (r < 1).any())
        lines.append(f"  {label}: largest stable eta (mean h = 1) by curvature spread: {edges}")
    return lines


def _variance_monte_carlo(args: argparse.Namespace) -> list:
    """Monte Carlo of the real EAMSGD and DiLoCo transformations at p = 4 (variance figure)."""
    from analysis import regions as reg
    from analysis.montecarlo import monte_carlo_variance

    results = []
    for k, label in enumerate(("EAMSGD", "DiLoCo")):
        name, hp = reg.COMPARED[label]
        results.append(monte_carlo_variance(
            name, reg.P, 1.0, reg.VARIANCE_SIGMA, chains=args.mc_chains,
            periods=max(1, args.mc_steps // reg.TAU), seed=args.seed + 100 + k,
            learning_rate=reg.VARIANCE_ETA, **hp))
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    from analysis import plots  # matplotlib only when figures are made

    out: Path = args.out
    written: list[Path] = []

    # Section 4: round-robin cycle maps over (eta, rho)
    maps = {s: {p: rr.radius_map(s, p, args.grid, ETA_MAX, RHO_MAX, H) for p in PS}
            for s in ("admm", "easgd")}  # fmt: skip
    norm = plots.radius_norm(*(m[2] for s in maps for m in maps[s].values()))
    written.append(plots.plot_radius_maps(maps["admm"], "admm", out / "admm_radius.png", norm))
    written.append(plots.plot_radius_maps(maps["easgd"], "easgd", out / "easgd_radius.png", norm))

    # analytic EASGD condition: exact for one worker, sufficient for the cycle
    side = min(args.grid, 300)
    u, alphas = rr.grid_centres(2.5, side), rr.grid_centres(1.5, side)
    uu, aa = np.meshgrid(u, alphas)
    block = rr.easgd_block_radius(uu, H, aa)
    cycles = {p: rr.easgd_cycle_radius(p, uu, H, aa) for p in (2, *PS)}
    written.append(
        plots.plot_easgd_condition(u, alphas, block, cycles, out / "easgd_condition.png")
    )

    # trajectories
    radii = {
        "admm": float(rr.admm_cycle_radius(TRAJ_P, TRAJ_ETA, H, TRAJ_RHO)),
        "easgd": float(rr.easgd_cycle_radius(TRAJ_P, TRAJ_ETA, H, TRAJ_ETA * TRAJ_RHO)),
    }
    runs = _trajectory_runs(args.seed)
    written.append(
        plots.plot_trajectories(runs, TRAJ_P, TRAJ_ETA, TRAJ_RHO, radii, out / "trajectories.png")
    )

    # synchronous 2x2 system: stability region
    etas, betas = rr.grid_centres(2.2, args.grid), rr.grid_centres(2.2, args.grid)
    ee, bb = np.meshgrid(etas, betas)
    bounds = {
        p: (sync.sync_spectral_radius(ee, bb, p, H), sync.sync_stable_analytic(ee, bb, p, H))
        for p in (1, 2, 4, 8, 16, 64)
    }
    written.append(
        plots.plot_sync_stability(etas, betas, bounds[4][0], 4, bounds, out / "sync_stability.png")
    )

    # stationary variance: closed form vs Lyapunov vs Monte Carlo
    vb = np.linspace(0.01, 1.99, 397)
    lb = np.linspace(0.05, 1.95, 20)
    closed = {p: sync.center_variance(SYNC_ETA, vb, p, H, SIGMA) for p in (1, 4, 16)}
    lyap = {}
    for p in closed:
        vals = []
        for b in lb:
            stable = bool(sync.sync_stable_analytic(SYNC_ETA, b, p, H))
            s = sync.stationary_covariance_lyapunov(SYNC_ETA, b, p, H, SIGMA) if stable else None
            vals.append(s[1, 1] if s is not None else np.nan)
        lyap[p] = np.array(vals)
    mc = [] if args.no_monte_carlo else _monte_carlo(args)
    written.append(
        plots.plot_variance_check(
            vb, closed, lb, lyap, mc, SYNC_ETA, SIGMA, out / "sync_variance.png"
        )
    )

    lines = [] if args.no_linearized else _linearized_figures(args, out, written)

    # report
    print("EASGD vs ADMM stability (Zhang, Choromanska, LeCun 2015, Section 4 + supplement)")
    print(
        f"(eta, rho) maps: {args.grid} x {args.grid} cell centres of (0, {ETA_MAX:g}) x "
        f"(0, {RHO_MAX:g}), h = {H:g}; EASGD uses alpha = eta * rho"
    )
    print("spectral radius of one round-robin cycle map:")
    print(f"  {'p':>2} {'eta':>7} {'rho':>5} {'ADMM':>10} {'EASGD':>10}")
    for p in PS:
        for eta, rho in NAMED_POINTS:
            a = float(rr.admm_cycle_radius(p, eta, H, rho))
            e = float(rr.easgd_cycle_radius(p, eta, H, eta * rho))
            flag = "  ADMM unstable" if a > 1.0 else ""
            print(f"  {p:>2} {eta:>7g} {rho:>5g} {a:>10.6f} {e:>10.6f}{flag}")
    for s, name in (("admm", "ADMM"), ("easgd", "EASGD")):
        fr = ", ".join(f"p = {p}: {(maps[s][p][2] > 1.0).mean():.2%}" for p in PS)
        print(f"fraction of the (eta, rho) grid where {name} is unstable (radius > 1): {fr}")
    agree = ((block <= 1.0 + 1e-9) == rr.easgd_analytic_stable(uu, H, aa)).mean()
    print(f"analytic EASGD condition vs 2x2 block eigenvalues: agree on {agree:.2%} of the grid")
    for p in cycles:
        extra = ((cycles[p] < 1.0) & ~rr.easgd_analytic_stable(uu, H, aa)).mean()
        print(f"  cycle p = {p}: stable although the analytic condition fails on {extra:.2%}")
    if mc:
        print(f"Monte Carlo (easgd_jax.easgd, eta = {SYNC_ETA:g}, h = {H:g}, sigma = {SIGMA:g}):")
        for r in mc:
            print(
                f"  p = {r.p:>2} beta = {r.beta:<4g} Var x~ = {r.estimate:.6f} +- "
                f"{r.stderr:.6f}  closed form {r.closed_form:.6f}  z = {r.z_score:+.2f}  "
                f"({r.chains} chains x {r.steps} steps, ~{r.effective_samples:.0f} eff. samples)"
            )
    elif not args.no_monte_carlo:
        print("Monte Carlo: not run (see message above)")
    for line in lines:
        print(line)
    print("files written:")
    for path in written:
        print(f"  {path}")
    print(f"run time: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
