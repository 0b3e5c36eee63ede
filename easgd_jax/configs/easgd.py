"""EASGD (Zhang et al., 2015, eqs 5-6): p = 4 workers on MNIST-1D, period tau = 10.

The default job with plain SGD as the local step instead of Nesterov momentum:

    x_i <- x_i - eta g_i - alpha (x_i - x~) [tau | t];  x~ <- x~ + alpha sum_i (x_i - x~) [tau | t]

    python launch.py --config configs/easgd.py --workdir /tmp/easgd
"""

import ml_collections

from easgd_jax.configs import default, tuned


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.algorithm = tuned.algorithm("easgd", config.num_workers)
    return config
