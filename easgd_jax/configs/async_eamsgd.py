r"""Asynchronous EAMSGD (Algorithm 2 of Zhang, Choromanska & LeCun, NIPS 2015): p = 4 workers
on MNIST-1D, tau = 10, alpha = 0.9 / p, Nesterov momentum delta = 0.9, under seeded simulated
asynchrony (per-worker clocks).

Worker i: snapshot x = x_i; if tau | t_i, x_i <- x_i - alpha (x - x~) and the master
x~ <- x~ + alpha (x - x~); v_i <- delta v_i - eta g(x + delta v_i); x_i <- x_i + v_i.

    python launch.py --config configs/async_eamsgd.py --workdir /tmp/async_eamsgd
    python launch.py --config configs/async_eamsgd.py --workdir /tmp/async_eamsgd_threads \
        --config.executor=threads
"""

import ml_collections

from easgd_jax.configs import default, tuned


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.executor = "simulated_async"
    config.algorithm = tuned.algorithm("async_eamsgd", config.num_workers)
    return config
