"""MVASGD (EASGD paper baseline, p = 1): SGD plus a moving average of its iterates, MNIST-1D.

    x_t = x_{t-1} - eta g(x_{t-1});   z_t = (1 - a) z_{t-1} + a x_t,   z_0 = x_0

Evaluated on z. a = 0.01 rather than the paper's 0.001, which over 2000 steps leaves 14% of
the weight on the initial point (see configs/mvadownpour.py). One worker on one device;
eta = 0.5 as in configs/sgd.py.

    python launch.py --config configs/mvasgd.py --workdir /tmp/mvasgd
"""

import ml_collections

from easgd_jax.configs import default, tuned


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.num_workers = 1
    config.num_devices = 1

    config.algorithm = tuned.algorithm("mvasgd", config.num_workers)

    # One compiled round = 50 local steps: the communication clock lives in the optimizer
    # state, so a round need not be one period; 50 divides num_steps and eval_every.
    config.train.steps_per_round = 50
    return config
