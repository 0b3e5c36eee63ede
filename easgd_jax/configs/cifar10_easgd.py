r"""EASGD on CIFAR-10 (Zhang et al. 2015, eqs 5-6, Section 5): p = 4, tau = 10, beta = 0.9.

    x_i <- x_i - eta g_i - alpha (x_i - x~) [tau | t];  x~ <- x~ + alpha sum_i (x_i - x~) [tau | t]

Common setup (7-layer net, 28x28 crops, batch 128, l2 1e-4): configs/cifar10_common.py.

    python launch.py --config configs/cifar10_easgd.py --workdir /tmp/cifar10_easgd \
        --config.data.data_dir=DATA_DIR
"""

import ml_collections

from easgd_jax.configs import cifar10_common as common


def get_config() -> ml_collections.ConfigDict:
    return common.base(common.algorithm(
        "easgd", learning_rate=0.05, moving_rate=common.ELASTIC, period=10))
