"""MVADOWNPOUR (EASGD paper baseline): DOWNPOUR whose master keeps a moving average, p = 4.

DOWNPOUR (configs/downpour.py), and after each center update the master sets

    z <- (1 - a) z + a x~          (z_0 = x~_0)

Evaluated on z. a = 0.01 rather than the paper's 0.001: over the default 2000 steps, 0.001
leaves 0.999^2000 = 14% of the weight on the initial point (91.7% test accuracy against
93.5% with 0.01 on MNIST-1D). tau = 1; eta = 0.2 as in configs/downpour.py.

    python launch.py --config configs/mvadownpour.py --workdir /tmp/mvadownpour
"""

import ml_collections

from easgd_jax.configs import default, tuned


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()

    config.algorithm = tuned.algorithm("mvadownpour", config.num_workers)

    # One compiled round = 50 local steps: the communication clock lives in the optimizer
    # state, so a round need not be one period; 50 divides num_steps and eval_every.
    config.train.steps_per_round = 50
    return config
