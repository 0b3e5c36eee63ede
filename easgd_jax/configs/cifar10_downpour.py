r"""DOWNPOUR on CIFAR-10 (the EASGD paper's baseline, authors' version): p = 4, tau = 1.

Each worker accumulates its steps -eta g_i; every tau steps the master adds the p
accumulations and every worker fetches the center. tau = 1 is parameter-server SGD on the
SUM of the p gradients, hence eta = 0.0125 (0.05 on their mean).

Common setup (7-layer net, 28x28 crops, batch 128, l2 1e-4): configs/cifar10_common.py.

    python launch.py --config configs/cifar10_downpour.py --workdir /tmp/cifar10_downpour \
        --config.data.data_dir=DATA_DIR
"""

import ml_collections

from easgd_jax.configs import cifar10_common as common


def get_config() -> ml_collections.ConfigDict:
    config = common.base(common.algorithm("downpour", learning_rate=0.0125, period=1))
    return config
