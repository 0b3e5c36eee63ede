"""Synchronous data-parallel SGD, p = 4 workers on MNIST-1D: the reference every
communication-saving method is compared with.

Every step one all-reduce averages the p gradients and every worker applies the same
(Nesterov) step, so the workers stay identical (= one worker with batch size p * 128):

    gbar = (1/p) sum_i g_i;   v <- delta v - eta gbar;   x <- x + v    (look-ahead form)

Evaluated on worker 0's params. eta = 0.2, delta = 0.9, tuned on MNIST-1D: 0.1 gave 90%
test accuracy, 0.3 diverged.

    python launch.py --config configs/data_parallel_sgd.py --workdir /tmp/data_parallel_sgd
"""

import ml_collections

from easgd_jax.configs import default, tuned


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()

    config.algorithm = tuned.algorithm("data_parallel_sgd", config.num_workers)

    # One compiled round = 50 local steps: the communication clock lives in the optimizer
    # state, so a round need not be one period; 50 divides num_steps and eval_every.
    config.train.steps_per_round = 50
    return config
