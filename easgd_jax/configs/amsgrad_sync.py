"""Synchronous parallel AMSGrad, APAM's baseline (Xu et al., arXiv 2002.09095): p = 4
workers on MNIST-1D; every step the p gradients are averaged (one all-reduce) and every
worker applies the same AMSGrad step, so the workers stay identical.

Same hyperparameters and form as configs/apam.py; runs on the synchronous SPMD executor.

    python launch.py --config configs/amsgrad_sync.py --workdir /tmp/amsgrad_sync
"""

import ml_collections

from easgd_jax.configs import default, tuned


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.executor = "sync"

    config.algorithm = tuned.algorithm("amsgrad_sync", config.num_workers)
    # One compiled round = 50 steps (the algorithm has no period); divides 2000 and 250.
    config.train.steps_per_round = 50
    return config
