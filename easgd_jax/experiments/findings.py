r"""The EASGD paper's three qualitative findings, checked on a sweep's summary table.

Zhang, Choromanska & LeCun (NIPS 2015, arXiv 1412.6651), Section 5.2, on CIFAR-10:

1. the DOWNPOUR variants (DOWNPOUR, ADOWNPOUR, MVADOWNPOUR) do best at small tau and are
   unstable at tau in {16, 64};
2. EAMSGD beats all comparators at every tau (p = 4);
3. larger tau and larger p give EASGD and EAMSGD lower test error.

Each finding is judged on the ``mean`` center test error of a setting (``stats.summarize``):
the mean over seeds of the final error at the setting's chosen learning rate. In a summary
of this version (learning_rate_selection "all_seeds"), the rate is chosen on that mean and
a diverged or failed seed counts in it as chance error (90%), so a rate at the edge of
stability pays for its failures; the number of failed seeds is given with every mean. In
issue 10's summaries (docs/mnist1d_paper/summary.csv, read by ``tables.read_summary_csv``),
the rate was chosen on seed 0 and failed seeds were left out of the mean ("(n finished)").
"best" is the lowest error any run of the setting reached (the paper reports the best of its
runs). The rules, spelled out with every verdict:

1. per variant: held if its lowest mean error is at tau <= 4 AND at tau 16 or 64 it either
   diverged with a learning rate that did not diverge at tau = 1, has no finished run, or
   has at least twice its tau = 1 mean error;
2. per tau: held if EAMSGD's mean error is the lowest in the panel (the methods at that tau
   and those without a tau, e.g. MSGD and MDOWNPOUR, shown in every panel); the margin to
   the runner-up is given next to the larger of the two standard deviations;
3. per method and axis (tau at p = 4; p at tau = 10): "held" if the mean error does not
   increase from one value to the next (within the larger standard deviation of the two),
   "partly" if some larger value beats the smallest, "not held" otherwise. Judged again on
   the 2000-step grids "long_tau" and "long_p" when the sweep has them ("3 (2000 steps)").

Every verdict also says whether the data SUPPORT it (issue 33): the two settings it rests on
compared seed by seed (:func:`easgd_jax.experiments.stats.paired_test`: a paired t test on
the seeds both ran, the same seed drawing the same initialisation and data order; Welch's
t test when the seeds do not pair), "supported" when p < 0.05 in the verdict's direction,
"not supported at n = N" otherwise. Finding 1: the lowest-error tau against tau 64 (or 16);
finding 2: EAMSGD against the runner-up (or the best); finding 3: the smallest value of the
axis against the largest. Errors carry their sample std (ddof 1) and the bootstrap 95%
interval of the mean where the summary has it.

The grids are those the sweep config declares in ``report.findings``
(:class:`easgd_jax.experiments.report_spec.FindingsSpec`; the names above by default). The
sweep's report writes them to ``report/findings.md`` (:func:`report.write_report`), and
with ``--compare OLD_SUMMARY_CSV`` a table finding | old verdict | new verdict | numbers
(:func:`compare_markdown`) to ``report/findings_compare.md``:

    python -m easgd_jax.experiments.report --workdir SWEEP_DIR \
        --compare docs/mnist1d_paper/summary.csv
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import Any

from easgd_jax.experiments.report_spec import PAPER_FINDINGS, FindingsSpec
from easgd_jax.experiments.stats import SIGNIFICANCE, compare_rows

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


def support(better: Row | None, worse: Row | None) -> str:
    """Whether ``better``'s lower mean error than ``worse``'s is significant: "supported (TEST
    p = ...)" when the seed-by-seed test (:func:`stats.paired_test`) gives p < 0.05 and the
    difference has that sign, "contradicted: the opposite is significant (...)" when it
    has the other sign, else "not supported at n = N (...)"; "" when a row has no per-seed
    errors (a summary from before issue 33)."""
    c = None if better is None or worse is None else compare_rows(better, worse)
    if c is None:
        return ""
    if c.p_value is not None and c.p_value < SIGNIFICANCE:
        if c.difference < 0:
            return f"supported ({c.text()})"
        if c.difference > 0:
            return f"contradicted: the opposite is significant ({c.text()})"
    return f"not supported at n = {c.n} ({c.text()})"


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.2f}"


@dataclasses.dataclass
class Judgement:
    """One verdict: its finding ("1", "2", "3", "3 (2000 steps)"), what it is about (a
    method, a tau, a method and axis), the verdict, its numbers in short and its Markdown
    line."""

    finding: str
    item: str
    verdict: str
    numbers: str
    line: str
    support: str = ""  # :func:`support` of the comparison the verdict rests on


def _failed(row: Row) -> str:
    """", 1/3 failed" (this version's rows) or " (2 finished)" (issue 10's: failures left
    out of the mean)."""
    if row.get("failed_seeds") is None:
        return f" ({row.get('seeds') or row.get('seeds_at_best_lr')} finished)"
    return f", {row['failed_seeds']}/{row['seeds']} failed"


def _cell(row: Row | None) -> str:
    """mean +- std, failures [finished mean] [best], or the failure."""
    if row is None:
        return "not run"
    if math.isnan(_mean(row)):
        return "all diverged" if row["diverged"] == row["runs"] else "no finished run"
    text = f"{_pct(_mean(row))} +- {_pct(_std(row))}{_failed(row)}"
    if row.get("ci95_low") is not None:
        text += f" [95% CI {_pct(float(row['ci95_low']))}-{_pct(float(row['ci95_high']))}]"
    if row.get("rate_edge") in ("top", "bottom"):
        text += f" [lr {row['chosen_learning_rate']:g}: {row['rate_edge']} of the grid]"
    finished = row.get("finished_mean_final_test_error")
    if row.get("failed_seeds") and finished is not None:
        text += f" [finished {_pct(float(finished))}]"
    if row.get("best_test_error") is not None:
        text += f" [best {_pct(float(row['best_test_error']))}]"
    if row["diverged"]:
        text += f", diverged: lr {row['diverged_learning_rates']}"
    return text


def _short(row: Row | None) -> str:
    """The mean and its failures, for the comparison table."""
    if row is None:
        return "not run"
    if math.isnan(_mean(row)):
        return "no finished run"
    if row.get("failed_seeds") is None:
        return f"{_pct(_mean(row))} ({row.get('seeds')} fin.)"
    return f"{_pct(_mean(row))} ({row['failed_seeds']}/{row['seeds']} failed)"


def _diverged_rates(row: Row) -> set[str]:
    return set((row.get("diverged_learning_rates") or "").split())


def downpour_finding(summary: Sequence[Row], grid: str = "tau") -> list[Judgement]:
    """Finding 1: a verdict per DOWNPOUR variant present in ``grid``."""
    judgements = []
    for method in DOWNPOUR_VARIANTS:
        rows = {r["tau"]: r for r in _rows(summary, grid, method)}
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
        verdict = "held" if best_tau is not None and best_tau <= 4 and unstable else "not held"
        large = rows.get(64, rows.get(16))
        backing = support(rows.get(best_tau), large) if best_tau in (1, 4) else ""
        line = (f"- **{method}: {verdict}.** "
                + "; ".join(f"tau {t}: {_cell(rows[t])}" for t in sorted(rows))
                + f". Lowest mean error at tau {best_tau}; "
                + ("instability: " + "; ".join(unstable) if unstable
                   else "no instability at tau 16/64 by the rule") + "."
                + (f" tau {best_tau} below tau {large['tau']}: {backing}." if backing else ""))
        numbers = ", ".join(f"tau {t}: {_short(rows[t])}" for t in sorted(rows))
        judgements.append(Judgement("1", method, verdict, numbers, line, backing))
    return judgements


def eamsgd_finding(summary: Sequence[Row], grid: str = "tau") -> list[Judgement]:
    """Finding 2: per tau, is EAMSGD's mean error the lowest of the panel?"""
    rows = [r for r in summary if r["grid"] == grid]
    taus_of: dict[str, set] = {}
    for r in rows:
        taus_of.setdefault(r["method"], set()).add(r["tau"])
    everywhere = {m for m, taus in taus_of.items() if len(taus) == 1}  # MSGD, MDOWNPOUR
    judgements = []
    for tau in sorted(taus_of.get("eamsgd", set())):
        panel = [r for r in rows if r["tau"] == tau and r["method"] not in everywhere]
        panel += [r for r in rows if r["method"] in everywhere]
        eamsgd = next(r for r in panel if r["method"] == "eamsgd")
        others = sorted((r for r in panel if r["method"] != "eamsgd"
                         and not math.isnan(_mean(r))), key=_mean)
        if math.isnan(_mean(eamsgd)) or not others:
            continue
        runner_up = others[0]
        verdict = "held" if _mean(eamsgd) < _mean(runner_up) else "not held"
        margin = _mean(runner_up) - _mean(eamsgd)
        noise = max(_std(eamsgd), _std(runner_up))
        backing = (support(eamsgd, runner_up) if verdict == "held"
                   else support(runner_up, eamsgd))
        ranking = ", ".join(f"{r['method']} {_pct(_mean(r))}"
                            for r in sorted(panel, key=lambda r: (math.isnan(_mean(r)),
                                                                  _mean(r))))
        line = (f"- **tau {tau}: {verdict}** (mean error, %: {ranking}). "
                f"EAMSGD {_cell(eamsgd)}; {'runner-up' if verdict == 'held' else 'best'} "
                f"{runner_up['method']} {_cell(runner_up)}; margin {100 * margin:+.2f} points "
                f"against a std of {100 * noise:.2f}"
                + (f"; {'EAMSGD' if verdict == 'held' else runner_up['method']} lower: "
                   f"{backing}." if backing else "."))
        numbers = (f"eamsgd {_short(eamsgd)} vs {runner_up['method']} {_short(runner_up)}")
        judgements.append(Judgement("2", f"tau {tau}", verdict, numbers, line, backing))
    return judgements


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


def scaling_finding(summary: Sequence[Row], tau_grid: str = "tau", p_grid: str = "p",
                    finding: str = "3") -> list[Judgement]:
    """Finding 3: error against tau (``tau_grid``, p = 4) and against p (``p_grid``, tau =
    10)."""
    judgements = []
    for method in ELASTIC:
        for grid, key, label in ((tau_grid, "tau", "tau (p = 4)"),
                                 (p_grid, "p", "p (tau = 10)")):
            rows = [r for r in _rows(summary, grid, method)
                    if key != "p" or r["tau"] == 10]
            if len(rows) < 2:
                continue
            points = sorted(((r[key], r) for r in rows), key=lambda x: x[0])
            verdict = _trend(points)
            times = "; ".join(
                f"{key} {k}: {_cell(r)}, time to threshold {_fmt_time(r)}" for k, r in points)
            item = f"{method}, larger {label}"
            numbers = ", ".join(f"{key} {k}: {_short(r)}" for k, r in points)
            backing = support(points[-1][1], points[0][1])
            tail = (f" {key} {points[-1][0]} below {key} {points[0][0]}: {backing}."
                    if backing else "")
            judgements.append(Judgement(finding, item, verdict, numbers,
                                        f"- **{item}: {verdict}.** {times}.{tail}", backing))
    return judgements


def _fmt_time(row: Row) -> str:
    seconds = row.get("time_to_threshold_s")
    steps = row.get("steps_to_threshold")
    if seconds is None:
        return "not reached"
    return f"{float(seconds):.2f} s wall-clock ({steps:g} steps)"


def judge(summary: Sequence[Row], spec: FindingsSpec = PAPER_FINDINGS) -> list[Judgement]:
    """Every verdict of the three findings on ``spec``'s grids, finding 3 also on the
    long-run grids."""
    return [*downpour_finding(summary, spec.downpour_grid or spec.tau_grid),
            *eamsgd_finding(summary, spec.tau_grid),
            *scaling_finding(summary, spec.tau_grid, spec.p_grid),
            *scaling_finding(summary, spec.long_tau_grid, spec.long_p_grid,
                             f"3 ({spec.long_label})")]


def verdict_table(judgements: Sequence[Judgement]) -> str:
    """Every verdict in one Markdown table: finding, item, verdict, its numbers, and whether
    the comparison it rests on is significant ("yes", "no", or "-" with no test)."""
    lines = ["| finding | item | verdict | numbers (mean error %, failed/seeds) | "
             "significant (p < 0.05)? |", "|---|---|---|---|---|"]
    for j in judgements:
        test = j.support.split(" (", 1)[-1][:-1] if j.support else ""
        significant = ("-" if not j.support else
                       f"**yes** ({test})" if j.support.startswith("supported") else
                       f"no, **the opposite is** ({test})"
                       if j.support.startswith("contradicted") else f"no ({test})")
        lines.append(f"| {j.finding} | {j.item} | {j.verdict} | {j.numbers} | {significant} |")
    return "\n".join(lines)


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


def _protocol(summary: Sequence[Row]) -> str:
    """How the rows' rates were chosen and what their means hold (stats.summary_row's
    ``selection`` and ``select_on``)."""
    if summary and summary[0].get("failed_seeds") is None:
        return ("the rate chosen on seed 0, failed seeds left out of the mean (n finished); "
                "time to threshold of the best run")
    split = ("VALIDATION error (held out from the training set; the test error is reported "
             "once, at that rate)" if summary and summary[0].get("select_on") == "validation"
             else "TEST error (no validation split)")
    rules = {r.get("selection") or "all_seeds" for r in summary}
    rule = (f"the rate chosen on the mean final {split} over all seeds with a diverged or "
            "failed seed counted as chance error")
    if rules - {"all_seeds"}:
        rule += (" where every rate ran on every seed, elsewhere on the first seed's final "
                 f"{split.split(' (')[0]} alone (the summary's selection column says which)")
    return (f"{rule}; the mean includes the failed seeds as chance (k/n failed; [finished: "
            "the mean without them]); time to threshold: median over the seeds at that rate")


def findings_markdown(summary: Sequence[Row], threshold: float,
                      spec: FindingsSpec = PAPER_FINDINGS) -> str:
    """The three findings with their verdicts and numbers on ``spec``'s grids, and its extra
    comparisons."""
    out = ["Errors are center test errors in %: mean +- sample std over seeds at the chosen "
           f"learning rate [bootstrap 95% CI of the mean] [best of any run]; "
           f"{_protocol(summary)}. Significance: a seed-by-seed (paired) t test, p < "
           f"{SIGNIFICANCE:g}. Rules: "
           "easgd_jax/experiments/findings.py. Time to threshold: first evaluation at <= "
           f"{100 * threshold:g}% test error, compilation excluded.", ""]
    judgements = judge(summary, spec)
    if judgements:
        out += ["Every verdict at a glance (each one's numbers and test below):", "",
                verdict_table(judgements), ""]

    def of(finding: str) -> tuple[list[str], list[str]]:
        chosen = [j for j in judgements if j.finding == finding]
        return [j.line for j in chosen], [j.verdict for j in chosen]

    def backed(finding: str) -> str:
        chosen = [j for j in judgements if j.finding == finding and j.verdict == "held"]
        if not any(j.support for j in chosen):
            return ""
        n = sum(j.support.startswith("supported") for j in chosen)
        return f" ({n} of the {len(chosen)} held significant at p < {SIGNIFICANCE:g})"

    lines, verdicts = of("1")
    out += [f"### 1. DOWNPOUR variants best at small tau, unstable at tau 16/64: "
            f"held for {verdicts.count('held')} of {len(verdicts)}{backed('1')}", "",
            *lines, ""]
    lines, verdicts = of("2")
    out += [f"### 2. EAMSGD beats all comparators at every tau: held at "
            f"{verdicts.count('held')} of {len(verdicts)} values of tau{backed('2')}", "",
            *lines, ""]
    for finding, title in (("3", "3. Larger tau and larger p give EASGD/EAMSGD lower test "
                                 "error"),
                           (f"3 ({spec.long_label})", f"3, at {spec.long_label} (grids "
                            f"{spec.long_tau_grid}, {spec.long_p_grid})")):
        lines, verdicts = of(finding)
        if not lines and finding != "3":
            continue
        counts = ", ".join(f"{v}: {verdicts.count(v)}" for v in ("held", "partly", "not held")
                           if verdicts.count(v))
        out += [f"### {title}: {counts}{backed(finding)}", "", *lines, ""]
    for grid, title in spec.comparisons:
        lines = comparison(summary, grid)
        if lines:
            out += [f"### {title}", "", *lines, ""]
    return "\n".join(out)


def compare_findings(old: Sequence[Row], new: Sequence[Row],
                     spec: FindingsSpec = PAPER_FINDINGS) -> list[dict[str, str]]:
    """finding | item | old verdict | new verdict | old numbers | new numbers, for every
    verdict of either summary on ``spec``'s grids ("-" where one has none)."""
    olds = {(j.finding, j.item): j for j in judge(old, spec)}
    news = {(j.finding, j.item): j for j in judge(new, spec)}
    table = []
    for key in [*olds, *(k for k in news if k not in olds)]:
        o, n = olds.get(key), news.get(key)
        table.append({"finding": key[0], "item": key[1],
                      "old_verdict": o.verdict if o else "-",
                      "new_verdict": n.verdict if n else "-",
                      "new_support": (n.support or "-") if n else "-",
                      "old_numbers": o.numbers if o else "-",
                      "new_numbers": n.numbers if n else "-"})
    return table


def compare_markdown(old: Sequence[Row], new: Sequence[Row],
                     spec: FindingsSpec = PAPER_FINDINGS) -> str:
    """:func:`compare_findings` as a Markdown table, each protocol stated."""
    lines = [f"Old: {_protocol(old)}. New: {_protocol(new)}. Numbers: mean final center test "
             "error (%) at the chosen rate.", "",
             "| finding | item | old verdict | new verdict | new: significant? | old numbers | "
             "new numbers |",
             "|---|---|---|---|---|---|---|"]
    for r in compare_findings(old, new, spec):
        changed = " (changed)" if "-" not in (r["old_verdict"], r["new_verdict"]) and r[
            "old_verdict"] != r["new_verdict"] else ""
        lines.append(f"| {r['finding']} | {r['item']} | {r['old_verdict']} | "
                     f"{r['new_verdict']}{changed} | {r['new_support']} | {r['old_numbers']} | "
                     f"{r['new_numbers']} |")
    return "\n".join(lines) + "\n"
