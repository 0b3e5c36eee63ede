"""EAMSGD with an outer Nesterov step on the center: p = 4 workers on MNIST-1D, tau = 10.

The default job whose center moves by an outer optimizer instead of the plain elastic sum
(the workers' side is EAMSGD's):

    if tau | t:  x_i <- x_i - alpha (x_i - x~);  x~ <- x~ + outer(-alpha sum_i (x_i - x~))

    python launch.py --config configs/eamsgd_outer.py --workdir /tmp/eamsgd_outer
"""

import ml_collections

from easgd_jax.configs import default, tuned


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.algorithm = tuned.algorithm("eamsgd_outer", config.num_workers)
    return config
