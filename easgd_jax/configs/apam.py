r"""APAM, asynchronous parallel AMSGrad (Xu et al., arXiv 2002.09095): p = 4 workers on
MNIST-1D. The master holds x, m, v, v_hat and applies one AMSGrad step per arriving gradient,
in arrival order, with no delay compensation; each worker computes its gradient at the x it
last read (easgd_jax/algorithms/adaptive.py).

``algorithm.form``: "paper" (x <- x - a m / sqrt(v_hat)), "authors" (their code: Adam bias
correction, + eps) or "optax" (optax.amsgrad). Baseline: configs/amsgrad_sync.py.

    python launch.py --config configs/apam.py --workdir /tmp/apam
    python launch.py --config configs/apam.py --workdir /tmp/apam_delay \
        --config.asynchrony.schedule=random_delay --config.asynchrony.max_staleness=16
    python launch.py --config configs/apam.py --workdir /tmp/apam_threads \
        --config.executor=threads --config.asynchrony.num_shards=4
"""

import ml_collections

from easgd_jax.configs import default, tuned


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.executor = "simulated_async"

    config.algorithm = tuned.algorithm("apam", config.num_workers)
    return config
