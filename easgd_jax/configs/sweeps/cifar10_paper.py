r"""The EASGD paper's CIFAR-10 sweep (Zhang, Choromanska & LeCun, NIPS 2015, arXiv 1412.6651,
Section 5.2) for GPUs, prepared, not run here:

    grid "tau": p = 4, tau in {1, 4, 16, 64}: EASGD, EAMSGD, DOWNPOUR, ADOWNPOUR, MVADOWNPOUR,
                MDOWNPOUR (tau = 1) and MSGD (p = 1);
    grid "p":   p in {4, 8, 16}: EASGD, EAMSGD at tau = 10; DOWNPOUR, MDOWNPOUR at tau = 1;

3 runs per setting, best reported, a learning-rate grid per method, on the configs
configs/cifar10_<method>.py (7-layer net, 28x28 crops, batch 128, l2 1e-4, delta = 0.99,
beta = 0.9). Each run trains for num_steps (see the overrides) on up to all the GPUs of the
machine (p = 8 and 16 share them: 2 or 4 workers per GPU on 4 GPUs).

    python -m easgd_jax.experiments.sweep --config configs/sweeps/cifar10_paper.py --workdir DIR \
        --config.overrides.data.data_dir=DATA_DIR --dry_run
"""

import ml_collections
from ml_collections import config_dict

from easgd_jax.configs.sweeps import mnist1d_paper


def get_config() -> ml_collections.ConfigDict:
    sweep = ml_collections.ConfigDict()
    # Learning-rate grids: factors of ~3 around the starting points of the config files.
    sweep.methods = {
        "easgd": {"config": "cifar10_easgd", "learning_rates": [0.01, 0.03, 0.1]},
        "eamsgd": {"config": "cifar10_eamsgd", "learning_rates": [0.0003, 0.001, 0.003]},
        "downpour": {"config": "cifar10_downpour", "learning_rates": [0.004, 0.0125, 0.04]},
        "adownpour": {"config": "cifar10_adownpour", "learning_rates": [0.004, 0.0125, 0.04]},
        "mvadownpour": {"config": "cifar10_mvadownpour",
                        "learning_rates": [0.004, 0.0125, 0.04]},
        "mdownpour": {"config": "cifar10_mdownpour",
                      "learning_rates": [0.0001, 0.00025, 0.001], "tau": 1},
        "msgd": {"config": "cifar10_msgd", "learning_rates": [0.0003, 0.001, 0.003],
                 "num_workers": 1},
    }
    sweep.grids = mnist1d_paper.paper_grids()
    sweep.report = mnist1d_paper.paper_report()
    sweep.seeds = [0, 1, 2]
    sweep.beta = 0.9
    sweep.threshold = 0.25  # test error
    sweep.max_devices = 0  # all the GPUs
    sweep.compilation_cache = True
    sweep.overrides = {
        # Set with --config.overrides.data.data_dir=DATA_DIR.
        "data": {"data_dir": config_dict.placeholder(str)},
        "train": {"num_steps": 50_000, "eval_every": 1000, "steps_per_round": 10},
        "checkpoint": {"every": 5000},
        "tensorboard": True,
    }
    return sweep
