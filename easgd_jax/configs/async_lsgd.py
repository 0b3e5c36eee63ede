"""Asynchronous single-leader LSGD (Teng et al., NeurIPS 2019) on the total-iteration clock:
p = 4 workers on MNIST-1D, tau = 4, pull c = 0.1, Nesterov momentum 0.9 (torch convention).

A step communicates when the total number of local steps T taken by all workers satisfies
T mod (p tau) < p; the worker reports (x_i, running loss), the master keeps the best reported
worker as the leader, the worker is pulled x_i <- x_i - c (x_i - x_L). The leader's
parameters are evaluated. (easgd_jax/algorithms/leader.py)

    python launch.py --config configs/async_lsgd.py --workdir /tmp/async_lsgd
"""

import ml_collections

from easgd_jax.configs import default, tuned


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.executor = "simulated_async"

    config.algorithm = tuned.algorithm("async_lsgd", config.num_workers)
    return config
