"""Streaming DiLoCo (Douillard et al. 2025, arXiv 2501.18512): p = 4 workers on MNIST-1D,
H = 20, F = 4 fragments.

DiLoCo (configs/diloco.py) with the parameters cut into F = 4 contiguous slices of about
P / 4 numbers; fragment f takes its outer Nesterov step (its own outer state) at the steps
where the unfragmented one would, shifted by f H / F, so one fragment is exchanged every
H / F = 5 steps:

    x_i <- x_i + nesterov_step(g_i);  if (t + 1) mod 5 == 0, f = ((t + 1) / 5) mod 4:
        x~_f <- x~_f + outer_f(x~_f - mean_i x_{i,f});  x_{i,f} <- x~_f

Same bytes per step as unfragmented DiLoCo at H = 20, with a 4-fold smaller peak; the rates
are DiLoCo's. F must divide H, and no multiple of 4 divides the default job's eval_every
(250), so the rounds are set to 50 local steps (the exchange clock lives in the optimizer
state): H / F = 5 divides them, so every round has its exchanges at known steps.

    python launch.py --config configs/diloco_streaming.py --workdir /tmp/diloco_streaming
"""

import ml_collections

from easgd_jax.configs import default, tuned


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.algorithm = tuned.algorithm("diloco_streaming", config.num_workers)
    config.train.steps_per_round = 50  # divides num_steps, eval_every and checkpoint.every
    return config
