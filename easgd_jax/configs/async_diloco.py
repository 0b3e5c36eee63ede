"""Asynchronous DiLoCo (Liu et al. 2024, "Asynchronous Local-SGD"): p = 4 workers on
MNIST-1D, blocks of H = 10 inner Nesterov steps, under seeded simulated asynchrony.

Worker i, on its own clock t_i: an inner step; after each block it sends its displacement
s_i since it last started from the center, the master takes ONE outer step on -s_i / p and
the worker restarts from the new center. Also ``--config.executor=threads`` or ``ray``.

    python launch.py --config configs/async_diloco.py --workdir /tmp/async_diloco
"""

import ml_collections

from easgd_jax.configs import default, tuned


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.executor = "simulated_async"
    config.algorithm = tuned.algorithm("async_diloco", config.num_workers)
    return config
