r"""LSGD on CIFAR-10 (Teng et al., NeurIPS 2019; not in the EASGD paper): p = 4 workers pulled
towards the leader (lowest recent loss) every tau = 4 steps, over Nesterov momentum in torch's
convention with the authors' CIFAR-10 settings c = 0.1, momentum 0.9, W = 10.

Common setup (7-layer net, 28x28 crops, batch 128, l2 1e-4): configs/cifar10_common.py.

    python launch.py --config configs/cifar10_lsgd.py --workdir /tmp/cifar10_lsgd \
        --config.data.data_dir=DATA_DIR
"""

import ml_collections

from easgd_jax.configs import cifar10_common as common


def get_config() -> ml_collections.ConfigDict:
    return common.base(common.algorithm(
        "lsgd_nesterov", learning_rate=0.05, momentum=0.9, pull=0.1, period=4, loss_window=10))
