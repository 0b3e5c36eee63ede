"""LSGD, single leader (Teng et al., NeurIPS 2019): p = 4 workers on MNIST-1D, period tau = 4.

The default job (configs/default.py) with the algorithm replaced by Leader SGD over
Nesterov momentum in torch's convention, the authors' local optimizer:

    x_i <- x_i + nesterov_step(g_i) - c * (x_i - x_L) * [tau | t],
    L = the worker with the lowest mean of its last W mini-batch losses.

Author defaults: c = 0.1, momentum 0.9, W = 10 (their CIFAR-10 setting); tau = 4 is their
local period for tau_G = 16. The learning rate is tuned for MNIST-1D.

    python launch.py --config configs/lsgd.py --workdir /tmp/lsgd
"""

import ml_collections

from easgd_jax.configs import default, tuned


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()

    # lr 0.2, momentum 0.9, c = 0.1, tau = 4, W = 10 (tuned.py, with the tuning runs)
    config.algorithm = tuned.algorithm("lsgd", config.num_workers)

    # One compiled round = one period, so the metrics record the leader of every
    # communication round; 4 divides num_steps (2000) and eval_every (200).
    config.train.steps_per_round = 0
    config.train.eval_every = 200
    return config
