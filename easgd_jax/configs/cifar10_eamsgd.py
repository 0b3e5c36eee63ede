r"""EAMSGD on CIFAR-10 (Zhang et al. 2015, Algorithm 2, Section 5): p = 4, tau = 10,
beta = 0.9, Nesterov momentum delta = 0.99 on each worker.

eta = 0.001: with delta = 0.99 the step is about eta / (1 - delta) = 0.1 per gradient.

Common setup (7-layer net, 28x28 crops, batch 128, l2 1e-4): configs/cifar10_common.py.

    python launch.py --config configs/cifar10_eamsgd.py --workdir /tmp/cifar10_eamsgd \
        --config.data.data_dir=DATA_DIR
"""

import ml_collections

from easgd_jax.configs import cifar10_common as common


def get_config() -> ml_collections.ConfigDict:
    return common.base(common.algorithm(
        "eamsgd", learning_rate=0.001, momentum=common.MOMENTUM,
        moving_rate=common.ELASTIC, period=10))
