r"""MSGD on CIFAR-10 (the EASGD paper's sequential baseline, p = 1): Nesterov momentum
delta = 0.99 on one worker, one device.

    v <- delta v - eta g(x + delta v);   x <- x + v

Common setup (7-layer net, 28x28 crops, batch 128, l2 1e-4): configs/cifar10_common.py.

    python launch.py --config configs/cifar10_msgd.py --workdir /tmp/cifar10_msgd \
        --config.data.data_dir=DATA_DIR
"""

import ml_collections

from easgd_jax.configs import cifar10_common as common


def get_config() -> ml_collections.ConfigDict:
    return common.base(common.algorithm(
        "msgd", learning_rate=0.001, momentum=common.MOMENTUM), num_workers=1)
