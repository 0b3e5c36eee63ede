"""The tuned hyperparameters, one table: each MNIST-1D config (configs/<name>.py) takes its
algorithm section from here (``algorithm(name, num_workers)``), so that a rate is changed
in one place and the sweeps can read the same values.

Tuned on MNIST-1D (CNN1D, batch 128 per worker, 2000 local steps, p = 4 unless the
algorithm is sequential); the notes say what else was tried. The elastic methods store the
paper's beta = p * alpha: ``moving_rate`` is beta / p for the config's p.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from easgd_jax.algorithms.rates import moving_rate

BETA = 0.9  # the EASGD paper's beta; moving_rate = beta / p

# config name -> the algorithm's name and hyperparameters.
TUNED: dict[str, dict[str, Any]] = {
    # EAMSGD, the default job (Algorithm 2): eta 0.1, delta 0.9, tau 10.
    "eamsgd": dict(name="eamsgd", learning_rate=0.1, momentum=0.9, beta=BETA, period=10),
    # EASGD (eqs 5-6): plain SGD local steps.
    "easgd": dict(name="easgd", learning_rate=0.5, beta=BETA, period=10),
    # DOWNPOUR, tau = 1: parameter-server SGD on the SUM of the p gradients. 0.1 gave 89%,
    # 0.3 diverged. DistBelief's master Adagrad is off in the EASGD paper's DOWNPOUR
    # (with server_adagrad: gamma 0.03 gave 91%, 0.01 85%).
    "downpour": dict(name="downpour", learning_rate=0.2, period=1, server_adagrad=False,
                     adagrad_rate=0.03, adagrad_eps=1e-8),
    "mdownpour": dict(name="mdownpour", learning_rate=0.05, momentum=0.9),
    "adownpour": dict(name="adownpour", learning_rate=0.2, period=1),
    "mvadownpour": dict(name="mvadownpour", learning_rate=0.2, moving_average_rate=0.01,
                        period=1),
    # Sequential baselines (p = 1). MSGD: 0.05 gave 92%.
    "sgd": dict(name="sgd", learning_rate=0.5),
    "msgd": dict(name="msgd", learning_rate=0.1, momentum=0.9),
    "asgd": dict(name="asgd", learning_rate=0.5),
    "mvasgd": dict(name="mvasgd", learning_rate=0.5, moving_average_rate=0.01),
    "data_parallel_sgd": dict(name="data_parallel_sgd", learning_rate=0.2, momentum=0.9),
    # Leader SGD (Teng et al. 2019), the authors' defaults c = 0.1, W = 10; tau = 4. MNIST-1D,
    # 2000 steps, test accuracy of the leader: lr 0.05 -> 90.3%, 0.1 -> 93.0%, 0.2 -> 94.1 /
    # 94.4 / 94.4% (seeds 0-2), 0.3 -> 97.5% on seed 0 but diverges on seed 2.
    "lsgd": dict(name="lsgd_nesterov", learning_rate=0.2, momentum=0.9, pull=0.1, period=4,
                 loss_window=10),
    "lsgd_multi": dict(name="lsgd_multi_nesterov", learning_rate=0.2, momentum=0.9, pull=0.1,
                       global_pull=0.1, period=4, global_period=16, loss_window=10),
    # AMSGrad (Xu et al. 2020): synchronous baseline and APAM (asynchronous).
    "amsgrad_sync": dict(name="amsgrad_sync", learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8,
                         form="paper"),
    "apam": dict(name="apam", learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, form="paper"),
    # DiLoCo (Douillard et al. 2023): Nesterov SGD inside and the paper's outer Nesterov
    # step (0.7, 0.9), period 10. Seed 0, 2000 steps: inner 0.05 -> 95.1%; 0.1 reached 93%
    # at step 250, then collapsed (10% at 1250); outer 1.0 / 0.0 (local SGD), inner 0.1: 92.0%.
    "diloco": dict(name="diloco", learning_rate=0.05, momentum=0.9, period=10,
                   outer_learning_rate=0.7, outer_momentum=0.9),
    # Streaming DiLoCo (Douillard et al. 2025, arXiv 2501.18512): DiLoCo's rates, F = 4
    # fragments, one exchanged every H / F steps (same bytes per step as unfragmented at
    # that H, in 4-fold smaller pieces); H = 20: F must divide H, and H / F = 5 divides
    # configs/diloco_streaming.py's 50-step rounds (exchanges at known steps).
    "diloco_streaming": dict(name="diloco", learning_rate=0.05, momentum=0.9, period=20,
                             outer_learning_rate=0.7, outer_momentum=0.9, num_fragments=4),
    # DiLoCo with the displacements all-reduced in bfloat16 (half the bytes), each worker's
    # rounding residual fed into its next message (error feedback: what a cast drops is
    # sent later, not lost; no extra bytes on the wire, one float32 copy of the params
    # per worker in memory).
    "diloco_bf16": dict(name="diloco", learning_rate=0.05, momentum=0.9, period=10,
                        outer_learning_rate=0.7, outer_momentum=0.9, exchange_dtype="bfloat16",
                        error_feedback=True),
    # Local SGD (periodic model averaging, Zhang et al. 2016): DiLoCo with the outer step
    # sgd(1.0), x~ <- mean_i x_i. Inner rate, seed 0, 2000 steps: 0.05 -> 89.2%, 0.1 ->
    # 92.2%, 0.2 -> 93.8%, 0.3 -> 94.8%, 0.5 diverged (step 278); 0.2 keeps a step back from
    # the edge (without DiLoCo's outer momentum, 4x DiLoCo's rate is stable).
    "local_sgd": dict(name="diloco", learning_rate=0.2, momentum=0.9, period=10,
                      outer_learning_rate=1.0, outer_momentum=0.0),
    # EAMSGD with an outer Nesterov step on the center (not tuned: 0.5 and 0.5 keep the
    # center's steady-state rate, beta * 0.5 / (1 - 0.5), at EAMSGD's beta).
    "eamsgd_outer": dict(name="eamsgd_outer", learning_rate=0.1, momentum=0.9, beta=BETA,
                         period=10, outer_learning_rate=0.5, outer_momentum=0.5),
    # Asynchronous forms (seeded simulated asynchrony by default).
    "async_eamsgd": dict(name="eamsgd", learning_rate=0.1, momentum=0.9, beta=BETA, period=10),
    "async_easgd": dict(name="easgd", learning_rate=0.3, beta=BETA, period=10),
    "async_downpour": dict(name="downpour", learning_rate=0.1, period=1),
    # Asynchronous DiLoCo, one outer step per arrival: the synchronous outer Nesterov step
    # (0.7, 0.9) diverged (seed 0, 500 steps: NaN; 0.7 / 0.5: 83.6%); plain averaging of
    # each arrival (1.0, 0.0) reached 88.9% (cf. Liu et al. 2024 on momentum under
    # asynchrony).
    "async_diloco": dict(name="diloco", learning_rate=0.05, momentum=0.9, period=10,
                         outer_learning_rate=1.0, outer_momentum=0.0),
    "async_lsgd": dict(name="lsgd_nesterov", learning_rate=0.05, momentum=0.9, pull=0.1,
                       period=4, loss_window=10),
    # The language-model configs (configs/lm_*.py: transformer on synthetic_lm, p = 4,
    # 1000 steps, seed 0). Not tuned: each rate is the better of two single runs, judged by
    # the test gap to the optimum after 1000 steps (so a little optimistic). DiLoCo as its
    # paper (inner AdamW with warm-up and cosine decay, outer Nesterov 0.7 / 0.9), H = 50:
    # inner 3e-3 -> gap 1.287, 1e-2 -> 1.598, 1e-3 -> 1.327 ...
    "lm_diloco": dict(name="diloco_adamw", learning_rate=3e-3, period=50, warmup_steps=50,
                      decay_steps=1000, b1=0.9, b2=0.95, weight_decay=0.1,
                      outer_learning_rate=0.7, outer_momentum=0.9),
    # ... its baseline, data-parallel AdamW on the same schedule: 3e-3 -> 0.740, 1e-2 -> 0.588
    "lm_data_parallel": dict(name="data_parallel_adamw", learning_rate=1e-2, warmup_steps=50,
                             decay_steps=1000, b1=0.9, b2=0.95, weight_decay=0.1),
    # ... and EAMSGD, tau = 10: eta 0.1 -> 0.990, 0.3 -> 0.853.
    "lm_eamsgd": dict(name="eamsgd", learning_rate=0.3, momentum=0.9, beta=BETA, period=10),
}


def algorithm(config_name: str, num_workers: int) -> ml_collections.ConfigDict:
    """``config.algorithm`` of the tuned setting ``config_name`` for p = ``num_workers``."""
    row = dict(TUNED[config_name])
    beta = row.pop("beta", None)
    section = ml_collections.ConfigDict(row)
    if beta is not None:
        section.moving_rate = moving_rate(beta, num_workers)  # alpha = beta / p
    return section
