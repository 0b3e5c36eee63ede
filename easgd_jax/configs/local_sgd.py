"""Local SGD (periodic model averaging; Zhang et al. 2016, Lin et al. 2020): p = 4 workers on
MNIST-1D, period 10.

DiLoCo (configs/diloco.py) with the outer step optax.sgd(1.0) (outer rate 1.0, outer
momentum 0): the center becomes the workers' mean at the end of every block and every
worker restarts from it (the inner Nesterov state is kept):

    x_i <- x_i + nesterov_step(g_i);  after every 10th step:  x~ <- mean_i x_i;  x_i <- x~

The inner rate 0.2 (configs/tuned.py: 0.1 gave 92.2%, 0.2 93.8%, 0.3 94.8%, 0.5 diverged).

    python launch.py --config configs/local_sgd.py --workdir /tmp/local_sgd
"""

import ml_collections

from easgd_jax.configs import default, tuned


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.algorithm = tuned.algorithm("local_sgd", config.num_workers)
    return config
