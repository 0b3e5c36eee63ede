"""Sequential Nesterov momentum SGD, MSGD (EASGD paper baseline, p = 1) on MNIST-1D.

    v <- delta v - eta g(x + delta v);   x <- x + v

kept in look-ahead form (the params, which are evaluated, are x + delta v). One worker on
one device. eta = 0.1, delta = 0.9 as in EAMSGD's default (configs/default.py); on
MNIST-1D 0.05 gave 92%.

    python launch.py --config configs/msgd.py --workdir /tmp/msgd
"""

import ml_collections

from easgd_jax.configs import default, tuned


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.num_workers = 1
    config.num_devices = 1

    config.algorithm = tuned.algorithm("msgd", config.num_workers)

    # One compiled round = 50 local steps: the communication clock lives in the optimizer
    # state, so a round need not be one period; 50 divides num_steps and eval_every.
    config.train.steps_per_round = 50
    return config
