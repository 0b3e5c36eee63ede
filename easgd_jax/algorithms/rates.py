"""Derived rates and the checks on them: the one place where beta becomes alpha.

The EASGD paper (Zhang, Choromanska & LeCun, NIPS 2015, arXiv 1412.6651, Section 3) states
the elastic strength per worker as alpha = eta rho and the center's as beta = p alpha: the
center moves as x~ <- (1 - beta) x~ + beta * mean_i x_i. The transformations take
``moving_rate`` (alpha); a config or a sweep may state beta instead, and
:func:`moving_rate` turns it into alpha for p workers (the paper's beta = 0.9 gives
alpha = 0.9 / p).

:func:`check_elastic_stability` is the config check of synchronous EASGD / EAMSGD (their
registry Specs carry it): it refuses an alpha whose beta makes the center's mean dynamics
diverge on every quadratic, and warns where the center overshoots the workers' mean.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

BETA = "beta"
MOVING_RATE = "moving_rate"


def moving_rate(beta: float, num_workers: int) -> float:
    """alpha = beta / p: the per-worker elastic rate of the center strength ``beta`` shared by
    ``num_workers`` workers (the EASGD paper's beta = p alpha)."""
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be an integer >= 1, got {num_workers!r}.")
    return beta / num_workers


def resolve_beta(hparams: Mapping[str, Any], num_workers: int,
                 takes_moving_rate: bool) -> dict[str, Any]:
    """``hparams`` with a stated ``beta`` replaced by ``moving_rate = beta / p``
    (:func:`moving_rate`); ValueError when both are stated or the algorithm takes no
    moving_rate. Without ``beta``, ``hparams`` unchanged (a copy)."""
    out = dict(hparams)
    if BETA not in out:
        return out
    if not takes_moving_rate:
        raise ValueError("beta (the center's elastic strength, moving_rate = beta / p) is "
                         "stated for an algorithm that takes no moving_rate.")
    if MOVING_RATE in out:
        raise ValueError(f"state beta or moving_rate, not both (moving_rate = beta / p; got "
                         f"beta {out[BETA]!r} and moving_rate {out[MOVING_RATE]!r}).")
    out[MOVING_RATE] = moving_rate(out.pop(BETA), num_workers)
    return out


def check_elastic_stability(name: str, hparams: Mapping[str, Any], num_workers: int) -> None:
    """Synchronous EASGD/EAMSGD: refuses beta = p * alpha where the center's mean dynamics
    diverge on every quadratic; warns (a UserWarning) where the center is no longer a moving
    average.

    The worker mean y and the center x~ follow z <- M z with M = [[1 - alpha - eta h, alpha],
    [beta, 1 - beta]] (the paper's supplement; analysis/synchronous.py). Its eigenvalues lie
    inside the unit circle only if (2 - alpha - eta h)(2 - beta) > alpha beta, which fails for
    every eta h > 0 once alpha + beta >= 2, i.e. beta >= 2p / (p + 1). For 1 < beta below
    that, x~ <- (1 - beta) x~ + beta * mean_i x_i overshoots the workers' mean (the paper
    takes 0 <= beta <= 1, beta = 0.9) and is stable only for small enough eta h: a warning.
    """
    if MOVING_RATE not in hparams:
        return
    p, alpha = num_workers, float(hparams[MOVING_RATE])
    beta = p * alpha
    if not math.isfinite(beta) or beta <= 1:
        return
    fix = (f"set config.algorithm.moving_rate <= 1 / p = {1 / p:.4g} (the paper's beta = 0.9: "
           f"--config.algorithm.moving_rate={moving_rate(0.9, p):.4g})")
    stated = (f"config.algorithm.moving_rate {alpha:g} with config.num_workers {p} gives "
              f"beta = p * moving_rate = {beta:.4g}")
    if alpha + beta >= 2:
        raise ValueError(
            f"{stated}; synchronous {name} diverges for beta >= 2p / (p + 1) "
            f"= {2 * p / (p + 1):.4g} (the center's update x~ <- (1 - beta) x~ + beta * "
            f"mean_i x_i is a moving average for 0 <= beta <= 1): {fix}.")
    warnings.warn(f"{stated} > 1: the center overshoots the workers' mean (the paper takes "
                  f"0 <= beta <= 1) and is stable only for a small enough learning rate; {fix}.",
                  UserWarning, stacklevel=4)
