"""The statistics of a sweep's runs (:mod:`easgd_jax.experiments.runs`): each setting's chosen
learning rate and the summary row at it.

The protocol (:func:`choose_learning_rate`). With ``learning_rate_selection = "all_seeds"``
(every rate on every seed; the default), each setting's learning rate is the one with the
lowest MEAN over seeds of the final center test error, where a run that diverged (or failed
with an error) counts as a failure with chance error, 1 - 1/classes (0.9 for the 10 classes
of MNIST-1D, digits and CIFAR-10: runs do not record their number of classes unless run.json
or final_metrics.json has ``num_classes``; the sweep config may set ``chance_error``); ties go
to fewer failures, then to the lower rate. Runs not done yet are left out. The mean reported
is that same mean, failures counted as chance, next to the number of failed seeds ("6.10 +-
0.30, 1/3 failed": diverged or ended in an error; ``per_rate`` gives every rate's mean and
failures, ``diverged_learning_rates`` the rates with a diverged run) and the mean over the
finished seeds alone. With "first_seed" (issue 10's protocol: the other seeds ran only at
the rate chosen on the first seed), the rate is the one whose first-seed run reached the
lowest test error (with ``select_on = "validation"``: ended at the lowest validation error),
and the mean counts failures the same way. With "first_seed_checked" (issue 33's
asynchronous grids and long runs), the first seed's choice is checked: a setting where it is
an edge of the grid (the top or bottom rate: a better rate, or a stabler one, may lie beyond
it) or where a run at it failed on another seed (the first seed sat near the edge of the
stable range) runs every rate on every seed and is chosen by the "all_seeds" rule; the
others as "first_seed".
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.stats

from easgd_jax.experiments import metric as metric_lib
from easgd_jax.experiments.metric import CHANCE_ERROR, chance_error  # noqa: F401
from easgd_jax.experiments.runs import DONE, FAILED, RunResult, setting_key

SELECTIONS = ("all_seeds", "first_seed", "first_seed_checked")
SELECT_ON = ("test", "validation")
# A summary row's ``selection`` under "first_seed_checked" when its first seed's choice was
# an edge rate or failed on another seed, and every rate then ran on every seed (the row's
# rate: the "all_seeds" rule).
ESCALATED = "all_seeds (first seed's choice at an edge or failing)"
STATUSES = ("finished", "diverged", "error", "unfinished", "pending")


def best_run(runs: Sequence[RunResult]) -> RunResult | None:
    """The finished run with the lowest test error reached (ties: lower final error)."""
    finished = [r for r in runs if r.status == "finished" and r.test_error]
    if not finished:
        return None
    return min(finished, key=lambda r: (r.best_test_error, r.final_test_error, r.name))


@dataclasses.dataclass
class RateStats:
    """The done runs of one setting at one learning rate."""

    learning_rate: float
    errors: list[float]  # final center test error per done run, failures as chance
    failures: int  # diverged or error
    finished_errors: list[float]
    seeds: list[int] = dataclasses.field(default_factory=list)  # of ``errors``, in order
    best_errors: list[float] = dataclasses.field(default_factory=list)  # lowest reached
    val_errors: list[float] = dataclasses.field(default_factory=list)  # [] unless all have

    @property
    def mean(self) -> float:
        """The mean final error over the done runs, failures as chance."""
        return float(np.mean(self.errors))

    @property
    def std(self) -> float | None:
        """The sample standard deviation (ddof = 1) of the same; None with one run."""
        return sample_std(self.errors)

    def mean_on(self, select_on: str) -> float:
        """The mean final error of the split the rate is chosen on (nan without it)."""
        if select_on == "validation":
            return float(np.mean(self.val_errors)) if self.val_errors else math.nan
        return self.mean


def sample_std(values: Sequence[float]) -> float | None:
    """The sample standard deviation (ddof = 1); None for fewer than two values."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float] | None:
    """A percentile bootstrap interval of the mean of ``values`` (``scipy.stats.bootstrap``,
    9999 resamples, seeded); (v, v) when every value is v; None for fewer than two."""
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return None
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    result = scipy.stats.bootstrap((values,), np.mean, confidence_level=confidence,
                                   n_resamples=9999, method="percentile",
                                   rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def t_half_width(values: Sequence[float], confidence: float = 0.95) -> float | None:
    """The Student-t half-width t((1 + c) / 2, n - 1) s / sqrt(n) of the mean; None for n < 2."""
    s = sample_std(values)
    if s is None:
        return None
    n = len(values)
    return float(scipy.stats.t.ppf((1 + confidence) / 2, n - 1) * s / math.sqrt(n))


def parse_seed_errors(text: str | None) -> dict[int, float]:
    """{seed: error} of a summary row's ``seed_errors`` ("0:0.123 1:0.9"); {} for none."""
    out = {}
    for item in (text or "").split():
        seed, _, error = item.partition(":")
        out[int(seed)] = float(error)
    return out


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Two settings' errors compared: the mean difference a - b, the test's name, its
    two-sided p-value (None when it cannot be computed) and the number of seeds used."""

    difference: float
    test: str
    p_value: float | None
    n: int

    def text(self) -> str:
        p = "n/a" if self.p_value is None else f"{self.p_value:.3g}"
        return f"{self.test} p = {p} (n = {self.n})"


def paired_test(a: Mapping[int, float], b: Mapping[int, float]) -> Comparison:
    """The errors ``a`` and ``b`` ({seed: error}) compared: a paired t test
    (``scipy.stats.ttest_rel``) on the seeds both have when there are at least 2 (the same
    seed draws the same initial parameters and data order, so seeds pair), with the
    Wilcoxon signed-rank p beside it when n >= 6 (below that its smallest two-sided p is
    >= 0.0625); else Welch's t test on all of each. Identical differences give p None."""
    common = sorted(set(a) & set(b))
    if len(common) >= 2:
        x = np.array([a[s] for s in common], np.float64)
        y = np.array([b[s] for s in common], np.float64)
        d = x - y
        if np.all(d == d[0]):
            return Comparison(float(np.mean(d)), "paired t", None, len(common))
        p = float(scipy.stats.ttest_rel(x, y).pvalue)
        name = "paired t"
        if len(common) >= 6 and np.any(d != 0):
            p_w = float(scipy.stats.wilcoxon(x, y).pvalue)
            name = f"paired t (Wilcoxon p = {p_w:.3g})"
        return Comparison(float(np.mean(d)), name, p, len(common))
    x, y = np.array(list(a.values()), np.float64), np.array(list(b.values()), np.float64)
    if len(x) < 2 or len(y) < 2 or (np.std(x) == 0 and np.std(y) == 0):
        return Comparison(float(np.mean(x) - np.mean(y)) if len(x) and len(y) else math.nan,
                          "Welch t", None, min(len(x), len(y)))
    p = float(scipy.stats.ttest_ind(x, y, equal_var=False).pvalue)
    return Comparison(float(np.mean(x) - np.mean(y)), "Welch t", p, min(len(x), len(y)))


SIGNIFICANCE = 0.05  # the level every verdict of the reports is judged at


def compare_rows(a: Mapping[str, Any], b: Mapping[str, Any]) -> Comparison | None:
    """Two summary rows' per-seed values (``seed_errors``) compared, a - b
    (:func:`paired_test`); None when either row has none (a summary from before issue 33)."""
    x, y = parse_seed_errors(a.get("seed_errors")), parse_seed_errors(b.get("seed_errors"))
    if not x or not y:
        return None
    return paired_test(x, y)


def rate_stats(members: Sequence[RunResult], chance: float) -> dict[float, RateStats]:
    """{learning rate: its done runs' final errors, a failed run counted as ``chance``};
    rates with no done run are absent. A finished run without evaluations does not count.
    The validation errors are kept when every done run of the rate has them."""
    stats: dict[float, RateStats] = {}
    with_val: dict[float, bool] = {}
    for r in sorted(members, key=lambda r: (r.learning_rate, r.seed)):
        if r.status in FAILED:
            error, best, val, finished = chance, chance, chance, False
        elif r.status == "finished" and r.test_error:
            error, best, finished = r.final_test_error, r.best_test_error, True
            val = r.final_val_error
        else:
            continue
        s = stats.setdefault(r.learning_rate, RateStats(r.learning_rate, [], 0, []))
        s.errors.append(error)
        s.seeds.append(r.seed)
        s.best_errors.append(best)
        s.failures += not finished
        with_val[r.learning_rate] = with_val.get(r.learning_rate, True) and not math.isnan(val)
        s.val_errors.append(val)
        if finished:
            s.finished_errors.append(error)
    for lr, s in stats.items():
        if not with_val[lr] or all(r.status in FAILED for r in members
                                   if r.learning_rate == lr and r.status in DONE):
            s.val_errors = []
    return stats


def choose_learning_rate(members: Sequence[RunResult], selection: str = "all_seeds",
                         chance: float = CHANCE_ERROR, select_on: str = "test") -> float | None:
    """The learning rate of one setting's runs (None when no run is done).

    "all_seeds": the rate with the lowest mean over its done seeds of the final center
    error on ``select_on``'s split ("test", or "validation": the held-out part of the
    training set), a diverged or failed run counted as ``chance``; ties go to fewer
    failures, then to the lower rate. With "validation", a rate whose runs record no
    validation error cannot be chosen (ValueError when no rate has one). "first_seed": the
    choice the sweep made before it ran the other seeds, from the first-seed (lowest seed)
    runs alone: on "test", the rate whose run reached the lowest test error (ties: lower
    final error, then lower rate; when every first-seed run failed, the "all_seeds" rule);
    on "validation", the rate of the lowest final validation error among them (ties: lower
    rate; None when every first-seed run failed). "first_seed_checked": the
    "first_seed" choice, unless it is the top or bottom rate of the setting's grid (the rates
    of ``members``) or a run at it failed: then the "all_seeds" choice over every seed
    (:func:`escalated`).
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}; got "
                         f"{selection!r}.")
    if select_on not in SELECT_ON:
        raise ValueError(f"select_on must be one of {', '.join(SELECT_ON)}; got "
                         f"{select_on!r}.")
    if selection == "first_seed_checked":
        return _checked_choice(members, chance, select_on)[0]
    stats = rate_stats(members, chance)
    if not stats:
        return None
    first = min(r.seed for r in members)
    first_finished = [r for r in members if r.seed == first and r.status == "finished"]
    if select_on == "validation":
        if selection == "first_seed":
            stats = rate_stats(first_finished, chance)
            if not stats:
                return None
        stats = {lr: s for lr, s in stats.items() if s.val_errors}
        if not stats:
            raise ValueError(f"select_on = 'validation', but no run of "
                             f"{members[0].method} records a validation error (set "
                             "data.kwargs.validation_size).")
        return min(stats.values(), key=lambda s: (s.mean_on(select_on), s.failures,
                                                  s.learning_rate)).learning_rate
    if selection == "first_seed":
        finished = [r for r in first_finished if r.test_error]
        if finished:
            return min((r.best_test_error, r.final_test_error, r.learning_rate)
                       for r in finished)[2]
    return min(stats.values(), key=lambda s: (s.mean, s.failures, s.learning_rate)
               ).learning_rate


def rate_edge(chosen: float | None, rates: Iterable[float]) -> str:
    """Where ``chosen`` sits in the setting's grid of ``rates``: "top", "bottom", "single"
    (a grid of one rate: no choice was made) or "" (inside)."""
    rates = sorted(set(rates))
    if chosen is None:
        return ""
    if len(rates) == 1:
        return "single"
    return "top" if chosen == rates[-1] else "bottom" if chosen == rates[0] else ""


def escalated(first_choice: float | None, rates: Iterable[float],
              failed_rates: Iterable[float] = ()) -> bool:
    """Whether "first_seed_checked" runs every rate on every seed of a setting whose
    first seed chose ``first_choice`` from its grid of ``rates``: when that choice is the
    grid's top or bottom rate (a grid of one rate never escalates), or is among
    ``failed_rates`` (the rates with a diverged or failed run, any seed)."""
    return (rate_edge(first_choice, rates) in ("top", "bottom")
            or (first_choice is not None and first_choice in set(failed_rates)))


def _failed_rates(members: Sequence[RunResult]) -> set[float]:
    return {r.learning_rate for r in members if r.status in FAILED}


def _checked_choice(members: Sequence[RunResult], chance: float,
                    select_on: str) -> tuple[float | None, str]:
    """"first_seed_checked"'s (rate, the rule that chose it): the "first_seed" choice and
    "first_seed", or, when :func:`escalated`, the "all_seeds" choice and ESCALATED."""
    first_choice = choose_learning_rate(members, "first_seed", chance, select_on)
    if escalated(first_choice, (r.learning_rate for r in members), _failed_rates(members)):
        return choose_learning_rate(members, "all_seeds", chance, select_on), ESCALATED
    return first_choice, "first_seed"


def _median_or_none(values: Sequence[float]) -> float | None:
    """The median, None when it is not reached (inf) or there are no values."""
    if not values:
        return None
    median = float(np.median(values))
    return None if math.isinf(median) or math.isnan(median) else median


def time_to_threshold(runs: Sequence[RunResult], threshold: float,
                      clock: str) -> float | None:
    """The median over ``runs`` of the steps (clock "steps", an int when whole) or time to
    threshold; a failed run or one that never reached it counts as not reached (inf)."""
    values = []
    for r in runs:
        steps, seconds = r.to_threshold(threshold, clock)
        value = steps if clock == "steps" else seconds
        values.append(math.inf if r.status != "finished" or value is None else float(value))
    median = _median_or_none(values)
    if clock == "steps" and median is not None and median.is_integer():
        return int(median)
    return median


def _empty_row(grid: str, members: Sequence[RunResult], selection: str, chance: float,
               stats: dict[float, RateStats], chosen: float | None,
               select_on: str = "test",
               metric: metric_lib.Metric = metric_lib.ERROR) -> dict[str, Any]:
    """A setting's summary row with its counts, chosen rate and per-rate means; the
    statistics at the chosen rate and of the best run still None."""
    bytes_per_step = [r.bytes_per_step for r in members if r.bytes_per_step is not None]
    return {
        "grid": grid, "method": members[0].method, "algorithm": members[0].algorithm,
        "tau": members[0].tau, "p": members[0].num_workers, "runs": len(members),
        **{s: sum(r.status == s for r in members) for s in STATUSES},
        "selection": selection, "select_on": select_on, "chance_error": chance,
        "chosen_learning_rate": chosen,
        "rate_edge": rate_edge(chosen, (r.learning_rate for r in members)),
        "seeds": 0, "failed_seeds": 0,
        "mean_final_test_error": None, "std_final_test_error": None,
        "ci95_low": None, "ci95_high": None, "t95_half_width": None,
        "mean_best_test_error": None, "mean_final_val_error": None, "seed_errors": "",
        "finished_mean_final_test_error": None,
        "steps_to_threshold": None, "time_to_threshold_s": None,
        "sim_time_to_threshold_s": None, "sim_time_recorded": False, "reached_threshold": 0,
        "best_test_error": None, "final_test_error": None, "best_learning_rate": None,
        "best_seed": None,
        "bytes_per_step": bytes_per_step[0] if bytes_per_step else None,
        "diverged_learning_rates": " ".join(
            f"{lr:g}" for lr in sorted({r.learning_rate for r in members
                                        if r.status == "diverged"})),
        "per_rate": "; ".join(
            f"{lr:g}: {metric.fmt(s.mean)} ({s.failures}/{len(s.errors)} failed)"
            for lr, s in sorted(stats.items())),
    }


def _at_rate(s: RateStats, at: Sequence[RunResult], threshold: float) -> dict[str, Any]:
    """The statistics of the done runs ``at`` the chosen rate, whose errors are ``s``."""
    ci = bootstrap_ci(s.errors)
    return dict(
        seeds=len(s.errors), failed_seeds=s.failures, mean_final_test_error=s.mean,
        std_final_test_error=s.std, ci95_low=ci[0] if ci else None,
        ci95_high=ci[1] if ci else None, t95_half_width=t_half_width(s.errors),
        mean_best_test_error=float(np.mean(s.best_errors)),
        mean_final_val_error=float(np.mean(s.val_errors)) if s.val_errors else None,
        seed_errors=" ".join(f"{seed}:{e:.6g}" for seed, e in zip(s.seeds, s.errors,
                                                                 strict=True)),
        finished_mean_final_test_error=(float(np.mean(s.finished_errors))
                                        if s.finished_errors else None),
        steps_to_threshold=time_to_threshold(at, threshold, "steps"),
        time_to_threshold_s=time_to_threshold(at, threshold, "time"),
        sim_time_to_threshold_s=time_to_threshold(at, threshold, "cluster"),
        sim_time_recorded=all(bool(r.sim_time_s) for r in at if r.status == "finished"),
        reached_threshold=sum(r.status == "finished" and r.to_threshold(threshold)[0]
                              is not None for r in at))


def summary_row(grid: str, members: Sequence[RunResult], threshold: float, selection: str,
                chance: float, select_on: str = "test",
                metric: metric_lib.Metric = metric_lib.ERROR) -> dict[str, Any]:
    """One setting's row: its chosen learning rate (on ``select_on``'s split), the
    statistics at it, the best run over rates and seeds, the failures; the "error" columns
    hold ``metric``'s values (the runs' ``test_error`` curves, :mod:`~easgd_jax.experiments.
    metric`), ``per_rate`` printed in its unit."""
    stats = rate_stats(members, chance)
    if selection == "first_seed_checked":  # the row names the rule that chose its rate
        chosen, selection = _checked_choice(members, chance, select_on)
    else:
        chosen = choose_learning_rate(members, selection, chance, select_on)
    row = _empty_row(grid, members, selection, chance, stats, chosen, select_on, metric)
    if chosen is not None:
        at = [r for r in members if r.learning_rate == chosen and r.status in DONE]
        row.update(_at_rate(stats[chosen], at, threshold))
    best = best_run(members)
    if best is not None:
        row.update(best_test_error=best.best_test_error,
                   final_test_error=best.final_test_error,
                   best_learning_rate=best.learning_rate, best_seed=best.seed)
    return row


def summarize(runs: Sequence[RunResult], threshold: float,
              selection: str | Mapping[str, str] = "all_seeds",
              chance: float | None = None, select_on: str = "test",
              metric: metric_lib.Metric | str | None = None) -> list[dict[str, Any]]:
    """One row per (grid, method, tau, p) (:func:`summary_row`), sorted by them.

    ``selection``: the learning-rate rule of every grid, or {grid name: rule} (a grid not
    named: "all_seeds"; :func:`grid_selections` reads it from a sweep config).
    ``chance``: the error of a failed run (None: :func:`chance_error` of the runs; with
    ``metric`` "loss_gap", the uniform predictor's gap, :meth:`~easgd_jax.experiments.
    metric.Metric.failure_value`). ``metric``: the quantity the runs' ``test_error`` /
    ``val_error`` curves hold (None: the test error; the runs must be read with the same,
    :func:`easgd_jax.experiments.runs.collect`).
    ``select_on``: the split each rate is chosen on ("test" or "validation").
    """
    groups: dict[tuple, list[RunResult]] = {}
    for r in runs:
        for grid in r.grids:
            groups.setdefault((grid, *setting_key(r)), []).append(r)
    metric = metric_lib.get(metric)
    chance = metric.failure_value(runs, chance)
    def rule(grid: str, default: str) -> str:
        return (selection.get(grid, default) if isinstance(selection, Mapping)
                else selection)

    return [summary_row(key[0], groups[key], threshold, rule(key[0], "all_seeds"), chance,
                        select_on, metric)
            for key in sorted(groups, key=lambda k: (k[0], k[1], k[2], k[3]))]


def grid_selections(sweep: Mapping[str, Any]) -> dict[str, str]:
    """{grid name: learning-rate rule} of a sweep config (a plain dict, as sweep.json): a
    grid's own ``learning_rate_selection``, else the sweep's (default "all_seeds")."""
    default = sweep.get("learning_rate_selection", "all_seeds")
    return {grid["name"]: grid.get("learning_rate_selection", default)
            for grid in sweep.get("grids", [])}
