"""The EASGD paper's three qualitative findings, checked on a sweep's summary table.

Zhang, Choromanska & LeCun (NIPS 2015, arXiv 1412.6651), Section 5.2, on CIFAR-10:

1. the DOWNPOUR variants (DOWNPOUR, ADOWNPOUR, MVADOWNPOUR) do best at small tau and are
   unstable at tau in {16, 64};
2. EAMSGD beats all comparators at every tau (p = 4);
3. larger tau and larger p give EASGD and EAMSGD lower test error.

Each finding is judged on the ``mean`` center test error: the mean over seeds of the final
error at the learning rate chosen for the setting (``report.summarize``), with its
standard deviation; "best" is the lowest error any run of the setting reached (the paper
reports the best of its runs). The rules, spelled out with every verdict:

1. per variant: held if its lowest mean error is at tau <= 4 AND at tau 16 or 64 it either
   diverged with a learning rate that did not diverge at tau = 1 or has at least twice its
   tau = 1 mean error;
2. per tau: held if EAMSGD's mean error is the lowest in the panel (the methods at that tau
   and those without a tau, e.g. MSGD and MDOWNPOUR, shown in every panel); the margin to
   the runner-up is given next to the larger of the two standard deviations;
3. per method and axis (tau at p = 4; p at tau = 10): "held" if the mean error does not
   increase from one value to the next (within the larger standard deviation of the two),
   "partly" if some larger value beats the smallest, "not held" otherwise.

The sweep's report writes them to ``report/findings.md`` (:func:`report.write_report`):

    python -m easgd_jax.experiments.report --workdir SWEEP_DIR
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

DOWNPOUR_VARIANTS = ("downpour", "adownpour", "mvadownpour")
ELASTIC = ("easgd", "eamsgd")

Row = dict[str, Any]


def _rows(summary: Sequence[Row], grid: str, method: str) -> list[Row]:
    return [r for r in summary if r["grid"] == grid and r["method"] == method]


def _mean(row: Row | None) -> float:
    if row is None or row.get("mean_final_test_error") is None:
        return math.nan
    return float(row["mean_final_test_error"])


def _std(row: Row) -> float:
    return float(row.get("std_final_test_error") or 0.0)


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.2f}"


def _cell(row: Row | None) -> str:
    """mean +- std (seeds) [best], or the failure."""
    if row is None:
        return "not run"
    if row.get("best_test_error") is None:
        return "all diverged" if row["diverged"] == row["runs"] else "no finished run"
    text = (f"{_pct(_mean(row))} +- {_pct(_std(row))} ({row['seeds_at_best_lr']}) "
            f"[best {_pct(float(row['best_test_error']))}]")
    if row["diverged"]:
        text += f", diverged: lr {row['diverged_learning_rates']}"
    return text


def _diverged_rates(row: Row) -> set[str]:
    return set((row.get("diverged_learning_rates") or "").split())


def downpour_finding(summary: Sequence[Row]) -> tuple[list[str], list[bool]]:
    """Finding 1: lines of Markdown and a verdict per DOWNPOUR variant present."""
    lines, verdicts = [], []
    for method in DOWNPOUR_VARIANTS:
        rows = {r["tau"]: r for r in _rows(summary, "tau", method)}
        if 1 not in rows or not ({16, 64} & set(rows)):
            continue
        means = {t: _mean(r) for t, r in rows.items()}
        finite = {t: m for t, m in means.items() if not math.isnan(m)}
        best_tau = min(finite, key=finite.get) if finite else None
        base = means[1]
        unstable = []
        for tau in (16, 64):
            if tau not in rows:
                continue
            new = _diverged_rates(rows[tau]) - _diverged_rates(rows[1])
            if new:
                unstable.append(f"tau {tau}: diverged at lr {' '.join(sorted(new))}")
            if rows[tau].get("best_test_error") is None:
                unstable.append(f"tau {tau}: no finished run")
            elif not math.isnan(base) and means[tau] >= 2 * base:
                unstable.append(f"tau {tau}: mean error {means[tau] / base:.1f}x tau 1's")
        held = best_tau is not None and best_tau <= 4 and bool(unstable)
        verdicts.append(held)
        lines.append(f"- **{method}: {'held' if held else 'not held'}.** "
                     + "; ".join(f"tau {t}: {_cell(rows[t])}" for t in sorted(rows))
                     + f". Lowest mean error at tau {best_tau}; "
                     + ("instability: " + "; ".join(unstable) if unstable
                        else "no instability at tau 16/64 by the rule") + ".")
    return lines, verdicts


def eamsgd_finding(summary: Sequence[Row]) -> tuple[list[str], list[bool]]:
    """Finding 2: per tau, is EAMSGD's mean error the lowest of the panel?"""
    rows = [r for r in summary if r["grid"] == "tau"]
    taus_of: dict[str, set] = {}
    for r in rows:
        taus_of.setdefault(r["method"], set()).add(r["tau"])
    everywhere = {m for m, taus in taus_of.items() if len(taus) == 1}  # MSGD, MDOWNPOUR
    lines, verdicts = [], []
    for tau in sorted(taus_of.get("eamsgd", set())):
        panel = [r for r in rows if r["tau"] == tau and r["method"] not in everywhere]
        panel += [r for r in rows if r["method"] in everywhere]
        eamsgd = next(r for r in panel if r["method"] == "eamsgd")
        others = sorted((r for r in panel if r["method"] != "eamsgd"
                         and not math.isnan(_mean(r))), key=_mean)
        if math.isnan(_mean(eamsgd)) or not others:
            continue
        runner_up = others[0]
        held = _mean(eamsgd) < _mean(runner_up)
        verdicts.append(held)
        margin = _mean(runner_up) - _mean(eamsgd)
        noise = max(_std(eamsgd), _std(runner_up))
        ranking = ", ".join(f"{r['method']} {_pct(_mean(r))}"
                            for r in sorted(panel, key=lambda r: (math.isnan(_mean(r)),
                                                                  _mean(r))))
        lines.append(
            f"- **tau {tau}: {'held' if held else 'not held'}** (mean error, %: {ranking}). "
            f"EAMSGD {_cell(eamsgd)}; {'runner-up' if held else 'best'} "
            f"{runner_up['method']} {_cell(runner_up)}; margin {100 * margin:+.2f} points "
            f"against a std of {100 * noise:.2f}.")
    return lines, verdicts


def _trend(points: list[tuple[int, Row]]) -> str:
    """'held', 'partly' or 'not held' for 'larger is better' over sorted points."""
    means = [(_mean(r), _std(r)) for _, r in points]
    if math.isnan(means[0][0]):
        return "n/a"
    if any(math.isnan(m) for m, _ in means):  # a larger value with no finished run
        return "not held"
    monotone = all(b <= a + max(sa, sb) for (a, sa), (b, sb) in itertools.pairwise(means))
    if monotone and means[-1][0] < means[0][0]:
        return "held"
    if any(m < means[0][0] - 1e-9 for m, _ in means[1:]):  # not float noise of equal means
        return "partly"
    return "not held"


def scaling_finding(summary: Sequence[Row]) -> tuple[list[str], list[str]]:
    """Finding 3: error against tau (grid "tau", p = 4) and against p (grid "p")."""
    lines, verdicts = [], []
    for method in ELASTIC:
        for grid, key, label in (("tau", "tau", "tau (p = 4)"), ("p", "p", "p (tau = 10)")):
            rows = [r for r in _rows(summary, grid, method)
                    if grid != "p" or r["tau"] == 10]
            if len(rows) < 2:
                continue
            points = sorted(((r[key], r) for r in rows), key=lambda x: x[0])
            verdict = _trend(points)
            verdicts.append(verdict)
            times = "; ".join(
                f"{label.split()[0]} {k}: {_cell(r)}, time to threshold "
                f"{_fmt_time(r)}" for k, r in points)
            lines.append(f"- **{method}, larger {label}: {verdict}.** {times}.")
    return lines, verdicts


def _fmt_time(row: Row) -> str:
    seconds = row.get("time_to_threshold_s")
    steps = row.get("steps_to_threshold")
    if seconds is None:
        return "not reached"
    return f"{float(seconds):.2f} s ({steps} steps, best run)"


def comparison(summary: Sequence[Row], grid: str) -> list[str]:
    """One line per setting of an extra grid (LSGD vs EASGD/EAMSGD; APAM vs AMSGrad)."""
    rows = [r for r in summary if r["grid"] == grid]
    lines = []
    for tau in sorted({r["tau"] for r in rows}, key=lambda t: -1 if t is None else t):
        panel = sorted((r for r in rows if r["tau"] == tau),
                       key=lambda r: (math.isnan(_mean(r)), _mean(r)))
        where = f"tau {tau}" if tau is not None else f"p = {panel[0]['p']}"
        lines.append(f"- {where}: " + "; ".join(f"{r['method']} {_cell(r)}" for r in panel)
                     + f" (lowest mean: {panel[0]['method']}).")
    return lines


def findings_markdown(summary: Sequence[Row], threshold: float) -> str:
    """The three findings with their verdicts and numbers, and the extra comparisons."""
    out = ["Errors are center test errors in %: mean +- std over seeds (n) at the chosen "
           "learning rate [best of any run]. Rules: easgd_jax/experiments/findings.py. Time to "
           f"threshold: first evaluation at <= {100 * threshold:g}% test error, best run, "
           "compilation excluded.", ""]
    lines, verdicts = downpour_finding(summary)
    out += [f"### 1. DOWNPOUR variants best at small tau, unstable at tau 16/64: "
            f"held for {sum(verdicts)} of {len(verdicts)}", "", *lines, ""]
    lines, verdicts = eamsgd_finding(summary)
    out += [f"### 2. EAMSGD beats all comparators at every tau: held at {sum(verdicts)} of "
            f"{len(verdicts)} values of tau", "", *lines, ""]
    lines, verdicts = scaling_finding(summary)
    counts = ", ".join(f"{v}: {verdicts.count(v)}" for v in ("held", "partly", "not held")
                       if verdicts.count(v))
    out += [f"### 3. Larger tau and larger p give EASGD/EAMSGD lower test error: {counts}",
            "", *lines, ""]
    for grid, title in (("lsgd", "LSGD against EASGD and EAMSGD (p = 4)"),
                        ("apam", "APAM against synchronous AMSGrad (p = 4)")):
        lines = comparison(summary, grid)
        if lines:
            out += [f"### {title}", "", *lines, ""]
    return "\n".join(out)
