"""Synchronous parallel AMSGrad, APAM's baseline (Xu et al., arXiv 2002.09095): p = 4
workers on MNIST-1D; every step the p gradients are averaged (one all-reduce) and every
worker applies the same AMSGrad step, so the workers stay identical.

Same hyperparameters and form as configs/apam.py; runs on the synchronous SPMD executor.

    python launch.py --config configs/amsgrad_sync.py --workdir /tmp/amsgrad_sync
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.executor = "sync"

    config.algorithm = ml_collections.ConfigDict()
    config.algorithm.name = "amsgrad_sync"
    config.algorithm.learning_rate = 1e-3
    config.algorithm.b1 = 0.9
    config.algorithm.b2 = 0.999
    config.algorithm.eps = 1e-8
    config.algorithm.form = "paper"
    # One compiled round = 50 steps (the algorithm has no period); divides 2000 and 250.
    config.train.steps_per_round = 50
    return config
