"""Two sweeps' summaries side by side on the settings they share (issue 33, item 3: the
paper's grids asynchronous beside the synchronous ones): for each (method, tau, p) of the
right summary, its mean final error and the left one's at their chosen rates, and the paired
test over the seeds they share (the same seed draws the same initial parameters; the
difference right - left).

    python -m easgd_jax.experiments.side_by_side \\
        --left docs/contested/summary.csv --left_label synchronous \\
        --left_grids f2_tau,easgd_p,dp_tau \\
        --right docs/paper_async/summary.csv --right_label asynchronous
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from absl import flags

from easgd_jax.experiments import cli, stats, tables

Row = dict[str, Any]


def _by_setting(rows: Sequence[Row], grids: Sequence[str] | None = None) -> dict[tuple, Row]:
    """{(method, tau, p): row} of the rows of ``grids`` (None: every grid); grids that share a
    setting share its runs, hence its numbers; a ValueError when two grids hold the same
    setting with other runs (a tagged grid: other data or steps), naming them."""
    out: dict[tuple, Row] = {}
    for r in rows:
        if grids and r["grid"] not in grids:
            continue
        key = (r["method"], r["tau"], r["p"])
        first = out.setdefault(key, r)
        if first.get("seed_errors") != r.get("seed_errors"):
            raise ValueError(f"{key[0]} tau {key[1]} p {key[2]} is in grids {first['grid']!r} "
                             f"and {r['grid']!r} with other runs: choose the grids to compare "
                             "(--left_grids / --right_grids).")
    return out


def _cell(row: Row | None) -> str:
    if row is None:
        return "not run"
    if row["mean_final_test_error"] is None:
        return "no run done"
    return f"{tables.mean_std(row)} {tables.rate_note(row)}"


def compare(left: Sequence[Row], right: Sequence[Row], methods: Sequence[str] | None = None,
            left_grids: Sequence[str] | None = None, right_grids: Sequence[str] | None = None,
            ) -> list[tuple[tuple, Row | None, Row, stats.Comparison | None]]:
    """(setting, left row or None, right row, paired test right - left or None) for each
    setting of ``right`` (of ``methods``; of the named grids on each side), sorted."""
    lefts, rights = _by_setting(left, left_grids), _by_setting(right, right_grids)
    out = []
    for key in sorted(rights, key=lambda k: (k[0], k[1] if k[1] is not None else -1, k[2])):
        if methods and key[0] not in methods:
            continue
        a, b = lefts.get(key), rights[key]
        test = None
        if a is not None and a.get("seed_errors") and b.get("seed_errors"):
            test = stats.paired_test(stats.parse_seed_errors(b["seed_errors"]),
                                     stats.parse_seed_errors(a["seed_errors"]))
        out.append((key, a, b, test))
    return out


def markdown(left: Sequence[Row], right: Sequence[Row], left_label: str, right_label: str,
             methods: Sequence[str] | None = None, left_grids: Sequence[str] | None = None,
             right_grids: Sequence[str] | None = None) -> str:
    """The table of :func:`compare`: errors in % (mean +- sample std, failed seeds counted as
    chance), the difference and its paired test."""
    lines = [f"Center test error (%), mean +- sample std over the seeds at each side's chosen "
             f"rate (a failed seed counted as chance); **{right_label} - {left_label}** in "
             "points with a paired t test over the seeds both have (p < 0.05: the "
             "difference is supported).", "",
             f"| method | tau | p | {left_label} | {right_label} | {right_label} - "
             f"{left_label} | test |", "|---|---|---|---|---|---|---|"]
    for (method, tau, p), a, b, test in compare(left, right, methods, left_grids,
                                                 right_grids):
        diff = "" if test is None else f"{100 * test.difference:+.2f}"
        verdict = "" if test is None else test.text() + (
            " **supported**" if test.p_value is not None and test.p_value < 0.05 else "")
        tau_text = "-" if tau is None else str(tau)
        lines.append(f"| {method} | {tau_text} | {p} | {_cell(a)} | {_cell(b)} | {diff} | "
                     f"{verdict} |")
    return "\n".join(lines) + "\n"


FLAGS = flags.FlagValues()
_LEFT = flags.DEFINE_string("left", None, "A report's summary.csv.", flag_values=FLAGS)
_RIGHT = flags.DEFINE_string("right", None, "Another report's summary.csv.", flag_values=FLAGS)
_LEFT_LABEL = flags.DEFINE_string("left_label", "left", "The left column's name.",
                                  flag_values=FLAGS)
_RIGHT_LABEL = flags.DEFINE_string("right_label", "right", "The right column's name.",
                                   flag_values=FLAGS)
_METHODS = flags.DEFINE_list("methods", [], "Only these methods (default: all).",
                             flag_values=FLAGS)
_LEFT_GRIDS = flags.DEFINE_list("left_grids", [], "Only these grids of --left (default: all).",
                                flag_values=FLAGS)
_RIGHT_GRIDS = flags.DEFINE_list("right_grids", [], "Only these grids of --right (default: "
                                 "all).", flag_values=FLAGS)
flags.mark_flags_as_required(["left", "right"], flag_values=FLAGS)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    print(markdown(tables.read_summary_csv(_LEFT.value), tables.read_summary_csv(_RIGHT.value),
                   _LEFT_LABEL.value, _RIGHT_LABEL.value, _METHODS.value or None,
                   _LEFT_GRIDS.value or None, _RIGHT_GRIDS.value or None), end="")


if __name__ == "__main__":
    cli.run(main, FLAGS, __doc__)
