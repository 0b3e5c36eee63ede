"""Multi-leader LSGD (Teng et al., NeurIPS 2019): 2 groups x 2 workers on MNIST-1D.

Each group follows its local leader every tau = 4 steps (pull c) and every worker the
global leader every tau_G = 16 steps (pull c_G), over Nesterov momentum 0.9 (the authors'
defaults: c = c_G = 0.1, tau = tau_G / 4, W = 10):

    x_ji <- x_ji + nesterov_step(g_ji) - c * (x_ji - x_{leader_j}) * [tau | t]
                                       - c_G * (x_ji - x_G) * [tau_G | t]

Runs on the grouped 2-D layout (``num_groups``): a (groups, workers) device mesh, one
worker per device; the training loop passes ``axis_name`` = the workers of one group and
``group_axis_name`` = the groups. Worker w sits in group w // 2, so the reported
``global_leader`` g * 2 + k is the flat worker index. Learning rate as configs/lsgd.py
(0.2): 95.0 / 95.1% test accuracy of worker 0 after 2000 steps (seeds 0, 1).

    python launch.py --config configs/lsgd_multi.py --workdir /tmp/lsgd_multi
"""

import ml_collections

from easgd_jax.configs import lsgd, tuned


def get_config() -> ml_collections.ConfigDict:
    config = lsgd.get_config()
    config.num_workers = 4  # n * l
    config.num_groups = 2  # n; l = num_workers / num_groups = 2
    config.num_devices = 4  # one worker per device; each group spans whole devices

    config.algorithm = tuned.algorithm("lsgd_multi", config.num_workers)

    return config
