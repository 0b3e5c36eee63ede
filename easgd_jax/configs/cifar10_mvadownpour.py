r"""MVADOWNPOUR on CIFAR-10 (the EASGD paper's baseline): DOWNPOUR (tau = 1, p = 4) whose
master also keeps the moving average z <- (1 - a) z + a x~ with the paper's a = 0.001,
evaluated on z.

Common setup (7-layer net, 28x28 crops, batch 128, l2 1e-4): configs/cifar10_common.py.

    python launch.py --config configs/cifar10_mvadownpour.py --workdir /tmp/cifar10_mvadownpour \
        --config.data.data_dir=DATA_DIR
"""

import ml_collections

from easgd_jax.configs import cifar10_common as common


def get_config() -> ml_collections.ConfigDict:
    return common.base(common.algorithm(
        "mvadownpour", learning_rate=0.0125, moving_average_rate=0.001, period=1))
