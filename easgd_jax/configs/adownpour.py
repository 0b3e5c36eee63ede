"""ADOWNPOUR (EASGD paper baseline): DOWNPOUR whose master keeps the Polyak average, p = 4.

DOWNPOUR (configs/downpour.py), and after the k-th center update the master sets

    z <- (1 - 1/(k+1)) z + 1/(k+1) x~         (z_0 = x~_0: z is the mean of x~_0..x~_k)

Evaluated on z. tau = 1; eta = 0.2 as in configs/downpour.py, so that the comparison
isolates the averaging.

    python launch.py --config configs/adownpour.py --workdir /tmp/adownpour
"""

import ml_collections

from easgd_jax.configs import default, tuned


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()

    config.algorithm = tuned.algorithm("adownpour", config.num_workers)

    # One compiled round = 50 local steps: the communication clock lives in the optimizer
    # state, so a round need not be one period; 50 divides num_steps and eval_every.
    config.train.steps_per_round = 50
    return config
