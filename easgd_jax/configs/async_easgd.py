r"""Asynchronous EASGD (Algorithm 1 of Zhang, Choromanska & LeCun, NIPS 2015): p = 4 workers on
MNIST-1D, period tau = 10, alpha = 0.9 / p, under seeded simulated asynchrony.

Worker i, on its own clock t_i: if tau | t_i, x_i <- x_i - alpha (x_i - x~) and the master
x~ <- x~ + alpha (x_i - x~) (one worker at a time, in arrival order); then x_i <- x_i - eta g.

Executors: ``simulated_async`` (default; schedule ``clocks``: workers of different speeds,
``round_robin``: worker t mod p at tick t) or ``threads`` (a real parameter server, one thread
per worker, the center in ``asynchrony.num_shards`` locked shards):

    python launch.py --config configs/async_easgd.py --workdir /tmp/async_easgd
    python launch.py --config configs/async_easgd.py --workdir /tmp/async_easgd_threads \
        --config.executor=threads --config.asynchrony.num_shards=4
"""

import ml_collections

from easgd_jax.configs import default, tuned


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.executor = "simulated_async"

    config.algorithm = tuned.algorithm("async_easgd", config.num_workers)
    return config
