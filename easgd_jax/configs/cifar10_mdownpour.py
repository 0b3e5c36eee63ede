r"""MDOWNPOUR on CIFAR-10 (the EASGD paper's baseline): p = 4, Nesterov momentum delta =
0.99 on the master, which applies the SUM of the p gradients every step (tau = 1 only).

eta = 0.00025: with delta = 0.99 and the sum of 4 gradients, about 0.1 per mean gradient.

Common setup (7-layer net, 28x28 crops, batch 128, l2 1e-4): configs/cifar10_common.py.

    python launch.py --config configs/cifar10_mdownpour.py --workdir /tmp/cifar10_mdownpour \
        --config.data.data_dir=DATA_DIR
"""

import ml_collections

from easgd_jax.configs import cifar10_common as common


def get_config() -> ml_collections.ConfigDict:
    return common.base(common.algorithm(
        "mdownpour", learning_rate=0.00025, momentum=common.MOMENTUM))
