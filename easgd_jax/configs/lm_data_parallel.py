"""Data-parallel AdamW on the generated language, the baseline of the DiLoCo paper (one
all-reduce of the gradients per step): peak 1e-2, 50 warm-up steps, cosine decay to 1e-3
over the 1000 steps, b2 0.95, decoupled weight decay 0.1; p = 4 workers (a global batch of
4 x 16 windows). The rates: configs/tuned.py, row "lm_data_parallel".

Common setup (transformer, synthetic_lm, batch 16 x 64 tokens per worker): lm_common.py.

    python launch.py --config configs/lm_data_parallel.py --workdir /tmp/lm_data_parallel
    python launch.py --config configs/lm_data_parallel.py:tiny_shakespeare --workdir /tmp/dp_ts \\
        --config.data.data_dir=DIR
"""

import ml_collections

from easgd_jax.configs import lm_common, tuned


def get_config(data: str = "synthetic_lm") -> ml_collections.ConfigDict:
    return lm_common.base(tuned.algorithm("lm_data_parallel", lm_common.NUM_WORKERS), data=data)
