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
lowest test error, and the mean counts failures the same way.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from easgd_jax.experiments.runs import DONE, FAILED, RunResult, setting_key

SELECTIONS = ("all_seeds", "first_seed")
CHANCE_ERROR = 0.9  # 10 classes, when the runs do not say
STATUSES = ("finished", "diverged", "error", "unfinished", "pending")


def best_run(runs: Sequence[RunResult]) -> RunResult | None:
    """The finished run with the lowest test error reached (ties: lower final error)."""
    finished = [r for r in runs if r.status == "finished" and r.test_error]
    if not finished:
        return None
    return min(finished, key=lambda r: (r.best_test_error, r.final_test_error, r.name))


def chance_error(runs: Iterable[RunResult], default: float = CHANCE_ERROR) -> float:
    """The error of a failed run: 1 - 1/classes of the first run that records its number of
    classes, else ``default`` (0.9: 10 classes)."""
    for r in runs:
        if r.num_classes:
            return 1.0 - 1.0 / r.num_classes
    return default


@dataclasses.dataclass
class RateStats:
    """The done runs of one setting at one learning rate."""

    learning_rate: float
    errors: list[float]  # final center test error per done run, failures as chance
    failures: int  # diverged or error
    finished_errors: list[float]

    @property
    def mean(self) -> float:
        """The mean final error over the done runs, failures as chance."""
        return float(np.mean(self.errors))

    @property
    def std(self) -> float:
        """The standard deviation of the same."""
        return float(np.std(self.errors))


def rate_stats(members: Sequence[RunResult], chance: float) -> dict[float, RateStats]:
    """{learning rate: its done runs' final errors, a failed run counted as ``chance``};
    rates with no done run are absent. A finished run without evaluations does not count."""
    stats: dict[float, RateStats] = {}
    for r in sorted(members, key=lambda r: (r.learning_rate, r.seed)):
        if r.status in FAILED:
            error, finished = chance, False
        elif r.status == "finished" and r.test_error:
            error, finished = r.final_test_error, True
        else:
            continue
        s = stats.setdefault(r.learning_rate, RateStats(r.learning_rate, [], 0, []))
        s.errors.append(error)
        s.failures += not finished
        if finished:
            s.finished_errors.append(error)
    return stats


def choose_learning_rate(members: Sequence[RunResult], selection: str = "all_seeds",
                         chance: float = CHANCE_ERROR) -> float | None:
    """The learning rate of one setting's runs (None when no run is done).

    "all_seeds": the rate with the lowest mean over its done seeds of the final center test
    error, a diverged or failed run counted as ``chance``; ties go to fewer failures, then
    to the lower rate. "first_seed": the rate whose first-seed (lowest seed) run reached the
    lowest test error (ties: lower final error, then lower rate), as the sweep ran the other
    seeds; when every first-seed run failed, the "all_seeds" rule.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}; got "
                         f"{selection!r}.")
    stats = rate_stats(members, chance)
    if not stats:
        return None
    if selection == "first_seed":
        first = min(r.seed for r in members)
        finished = [r for r in members if r.seed == first and r.status == "finished"
                    and r.test_error]
        if finished:
            return min((r.best_test_error, r.final_test_error, r.learning_rate)
                       for r in finished)[2]
    return min(stats.values(), key=lambda s: (s.mean, s.failures, s.learning_rate)
               ).learning_rate


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
               stats: dict[float, RateStats], chosen: float | None) -> dict[str, Any]:
    """A setting's summary row with its counts, chosen rate and per-rate means; the
    statistics at the chosen rate and of the best run still None."""
    bytes_per_step = [r.bytes_per_step for r in members if r.bytes_per_step is not None]
    return {
        "grid": grid, "method": members[0].method, "algorithm": members[0].algorithm,
        "tau": members[0].tau, "p": members[0].num_workers, "runs": len(members),
        **{s: sum(r.status == s for r in members) for s in STATUSES},
        "selection": selection, "chance_error": chance,
        "chosen_learning_rate": chosen, "seeds": 0, "failed_seeds": 0,
        "mean_final_test_error": None, "std_final_test_error": None,
        "finished_mean_final_test_error": None,
        "steps_to_threshold": None, "time_to_threshold_s": None,
        "sim_time_to_threshold_s": None, "reached_threshold": 0,
        "best_test_error": None, "final_test_error": None, "best_learning_rate": None,
        "best_seed": None,
        "bytes_per_step": bytes_per_step[0] if bytes_per_step else None,
        "diverged_learning_rates": " ".join(
            f"{lr:g}" for lr in sorted({r.learning_rate for r in members
                                        if r.status == "diverged"})),
        "per_rate": "; ".join(
            f"{lr:g}: {100 * s.mean:.2f} ({s.failures}/{len(s.errors)} failed)"
            for lr, s in sorted(stats.items())),
    }


def _at_rate(s: RateStats, at: Sequence[RunResult], threshold: float) -> dict[str, Any]:
    """The statistics of the done runs ``at`` the chosen rate, whose errors are ``s``."""
    return dict(
        seeds=len(s.errors), failed_seeds=s.failures, mean_final_test_error=s.mean,
        std_final_test_error=s.std,
        finished_mean_final_test_error=(float(np.mean(s.finished_errors))
                                        if s.finished_errors else None),
        steps_to_threshold=time_to_threshold(at, threshold, "steps"),
        time_to_threshold_s=time_to_threshold(at, threshold, "time"),
        sim_time_to_threshold_s=time_to_threshold(at, threshold, "cluster"),
        reached_threshold=sum(r.status == "finished" and r.to_threshold(threshold)[0]
                              is not None for r in at))


def summary_row(grid: str, members: Sequence[RunResult], threshold: float, selection: str,
                chance: float) -> dict[str, Any]:
    """One setting's row: its chosen learning rate, the statistics at it, the best run over
    rates and seeds, the failures."""
    stats = rate_stats(members, chance)
    chosen = choose_learning_rate(members, selection, chance)
    row = _empty_row(grid, members, selection, chance, stats, chosen)
    if chosen is not None:
        at = [r for r in members if r.learning_rate == chosen and r.status in DONE]
        row.update(_at_rate(stats[chosen], at, threshold))
    best = best_run(members)
    if best is not None:
        row.update(best_test_error=best.best_test_error,
                   final_test_error=best.final_test_error,
                   best_learning_rate=best.learning_rate, best_seed=best.seed)
    return row


def summarize(runs: Sequence[RunResult], threshold: float, selection: str = "all_seeds",
              chance: float | None = None) -> list[dict[str, Any]]:
    """One row per (grid, method, tau, p) (:func:`summary_row`), sorted by them.

    ``chance``: the error of a failed run (None: :func:`chance_error` of the runs).
    """
    groups: dict[tuple, list[RunResult]] = {}
    for r in runs:
        for grid in r.grids:
            groups.setdefault((grid, *setting_key(r)), []).append(r)
    if chance is None:
        chance = chance_error(runs)
    return [summary_row(key[0], groups[key], threshold, selection, chance)
            for key in sorted(groups, key=lambda k: (k[0], k[1], k[2], k[3]))]
