"""Two sweeps' summaries side by side (easgd_jax/experiments/side_by_side.py): matched on
(method, tau, p), the difference right - left with its paired test over shared seeds."""

from __future__ import annotations

import pytest

from easgd_jax.experiments import side_by_side


def _row(method, tau, p, errors, lr=0.1, grid="g", edge="", failed=0):
    mean = sum(errors) / len(errors)
    std = (sum((e - mean) ** 2 for e in errors) / (len(errors) - 1)) ** 0.5
    return {"grid": grid, "method": method, "tau": tau, "p": p, "chosen_learning_rate": lr,
            "rate_edge": edge, "mean_final_test_error": mean, "std_final_test_error": std,
            "seeds": len(errors), "failed_seeds": failed,
            "seed_errors": " ".join(f"{s}:{e}" for s, e in enumerate(errors))}


def test_settings_are_matched_and_the_difference_is_right_minus_left():
    sync = [_row("eamsgd", 4, 4, [0.10, 0.11, 0.12, 0.10]),
            _row("eamsgd", 4, 4, [0.10, 0.11, 0.12, 0.10], grid="other"),  # same runs
            _row("msgd", None, 1, [0.08, 0.08, 0.09, 0.08])]
    asynchronous = [_row("eamsgd", 4, 4, [0.20, 0.22, 0.23, 0.21], lr=0.4, edge="top"),
                    _row("eamsgd", 16, 4, [0.05, 0.06, 0.05, 0.07]),
                    _row("msgd", None, 1, [0.08, 0.08, 0.09, 0.08])]
    rows = side_by_side.compare(sync, asynchronous)
    assert [key for key, *_ in rows] == [("eamsgd", 4, 4), ("eamsgd", 16, 4), ("msgd", None, 1)]
    (_, left, right, test), (_, missing, _, none), (_, _, _, same) = rows
    assert left is sync[0] and right is asynchronous[0] and missing is None and none is None
    assert test.difference > 0 and test.difference == sum(
        b - a for a, b in zip([0.10, 0.11, 0.12, 0.10], [0.20, 0.22, 0.23, 0.21],
                              strict=True)) / 4
    assert test.p_value < 0.05 and same.p_value is None  # identical seeds: no test
    text = side_by_side.markdown(sync, asynchronous, "synchronous", "asynchronous")
    assert ("| eamsgd | 4 | 4 | 10.75 +- 0.96 (0/4 failed, lr 0.1) | 21.50 +- 1.29 (0/4 failed,"
            " lr 0.4, top of grid) | +10.75 |") in text
    assert "| eamsgd | 16 | 4 | not run |" in text and "| msgd | - | 1 |" in text
    assert "**supported**" in text.splitlines()[4] and "asynchronous - synchronous" in text
    assert [r[0] for r in side_by_side.compare(sync, asynchronous, ["msgd"])] == [
        ("msgd", None, 1)]


def test_a_setting_two_grids_hold_with_other_runs_must_be_chosen():
    """n40k (40k examples) holds EASGD at tau 16, p 4 as the asynchronous grid does: not
    the same data; the comparison refuses to pick one, and takes the grid it is given."""
    sync = [_row("easgd", 16, 4, [0.10, 0.11], grid="f2_tau"),
            _row("easgd", 16, 4, [0.05, 0.06], grid="n40k")]
    asynchronous = [_row("easgd", 16, 4, [0.09, 0.13], grid="async_tau")]
    with pytest.raises(ValueError, match="in grids 'f2_tau' and 'n40k' with other runs"):
        side_by_side.compare(sync, asynchronous)
    (_, left, _, _), = side_by_side.compare(sync, asynchronous, left_grids=["f2_tau"])
    assert left is sync[0]
