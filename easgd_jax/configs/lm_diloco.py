"""DiLoCo on the generated language (Douillard et al. 2023, arXiv 2311.08105), scaled down:
inner AdamW (peak 3e-3, 50 warm-up steps, cosine decay to 3e-4 over the 1000 steps, b2 0.95,
decoupled weight decay 0.1), outer Nesterov (0.7, momentum 0.9), H = 50; p = 4 workers.
The rates: configs/tuned.py, row "lm_diloco".

Common setup (transformer, synthetic_lm, batch 16 x 64 tokens per worker): lm_common.py.

    python launch.py --config configs/lm_diloco.py --workdir /tmp/lm_diloco
    python launch.py --config configs/lm_diloco.py:tiny_shakespeare --workdir /tmp/lm_diloco_ts \\
        --config.data.data_dir=DIR
"""

import ml_collections

from easgd_jax.configs import lm_common, tuned


def get_config(data: str = "synthetic_lm") -> ml_collections.ConfigDict:
    return lm_common.base(tuned.algorithm("lm_diloco", lm_common.NUM_WORKERS), data=data)
