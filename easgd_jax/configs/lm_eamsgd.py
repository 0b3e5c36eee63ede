"""EAMSGD on the generated language (Zhang et al. 2015, Algorithm 2): p = 4, tau = 10,
beta = 0.9 (moving_rate = beta / p), Nesterov momentum delta = 0.9 and eta = 0.3 on each
worker. The rates: configs/tuned.py, row "lm_eamsgd".

Common setup (transformer, synthetic_lm, batch 16 x 64 tokens per worker): lm_common.py.

    python launch.py --config configs/lm_eamsgd.py --workdir /tmp/lm_eamsgd
    python launch.py --config configs/lm_eamsgd.py:tiny_shakespeare --workdir /tmp/lm_eamsgd_ts \\
        --config.data.data_dir=DIR
"""

import ml_collections

from easgd_jax.configs import lm_common, tuned


def get_config(data: str = "synthetic_lm") -> ml_collections.ConfigDict:
    return lm_common.base(tuned.algorithm("lm_eamsgd", lm_common.NUM_WORKERS), data=data)
