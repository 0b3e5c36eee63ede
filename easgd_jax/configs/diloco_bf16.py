r"""DiLoCo with a bfloat16 exchange: p = 4 workers on MNIST-1D, H = 10.

DiLoCo (configs/diloco.py) whose one all-reduce per outer step carries the workers'
displacements from the center cast to bfloat16 (half the bytes: P / H / 2 float32-words
per worker per step); the center and the outer state stay float32. Error feedback is on:
each worker adds the rounding residual of its last cast to its next message,

    r_i = (x_i - x~) + e_i;   w_i = bf16(r_i);   e_i <- r_i - w_i;
    x~ <- x~ + outer(-(sum_i w_i) / p);   x_i <- x~

so what a cast drops is sent at the next outer step instead of lost (the sum of what a
worker sends tracks the sum of its displacements to within one residual), at no extra
bytes on the wire; the cost is one float32 copy of the params per worker in memory.

    python launch.py --config configs/diloco_bf16.py --workdir /tmp/diloco_bf16
    python launch.py --config configs/diloco_bf16.py --workdir /tmp/diloco_bf16_nofb \
        --config.algorithm.error_feedback=False
"""

import ml_collections

from easgd_jax.configs import default, tuned


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.algorithm = tuned.algorithm("diloco_bf16", config.num_workers)
    return config
