r"""Asynchronous DOWNPOUR (the EASGD authors' version, Zhang et al., NIPS 2015, Section 5):
p = 4 workers on MNIST-1D, tau = 1 (asynchronous SGD), under seeded simulated asynchrony.

Worker i: d = -eta g(x_i); acc_i += d; if tau | t_i, the master x~ += acc_i, x_i <- x~,
acc_i <- 0; else x_i += d. Each push is applied when it arrives.

    python launch.py --config configs/async_downpour.py --workdir /tmp/async_downpour
    python launch.py --config configs/async_downpour.py --workdir /tmp/async_downpour_delay \
        --config.asynchrony.schedule=random_delay --config.asynchrony.max_staleness=8
    python launch.py --config configs/async_downpour.py --workdir /tmp/async_downpour_threads \
        --config.executor=threads --config.asynchrony.num_shards=4
"""

import ml_collections

from easgd_jax.configs import default, tuned


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.executor = "simulated_async"

    config.algorithm = tuned.algorithm("async_downpour", config.num_workers)
    return config
