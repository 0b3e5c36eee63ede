"""ASGD (EASGD paper baseline, p = 1): SGD plus the Polyak average of its iterates, MNIST-1D.

    x_t = x_{t-1} - eta g(x_{t-1});   z_t = (1 - 1/(t+1)) z_{t-1} + 1/(t+1) x_t,  z_0 = x_0

Evaluated on z, the mean of all iterates. One worker on one device. eta = 0.5 as in
configs/sgd.py, so that the comparison isolates the averaging (0.3 gave 89%, 0.7 93%).

    python launch.py --config configs/asgd.py --workdir /tmp/asgd
"""

import ml_collections

from easgd_jax.configs import default, tuned


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.num_workers = 1
    config.num_devices = 1

    config.algorithm = tuned.algorithm("asgd", config.num_workers)

    # One compiled round = 50 local steps: the communication clock lives in the optimizer
    # state, so a round need not be one period; 50 divides num_steps and eval_every.
    config.train.steps_per_round = 50
    return config
