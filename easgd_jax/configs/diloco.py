"""DiLoCo (Douillard et al., 2023, arXiv 2311.08105): p = 4 workers on MNIST-1D, H = 10.

The default job with the elastic exchange replaced by DiLoCo's outer step: every worker
takes H inner Nesterov steps, then the center takes one outer Nesterov step on the outer
gradient x~ - mean_i x_i and every worker restarts from it:

    x_i <- x_i + nesterov_step(g_i);  after every H-th step:
        x~ <- x~ + outer(x~ - mean_i x_i);  x_i <- x~

    python launch.py --config configs/diloco.py --workdir /tmp/diloco
"""

import ml_collections

from easgd_jax.configs import default, tuned


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.algorithm = tuned.algorithm("diloco", config.num_workers)
    return config
