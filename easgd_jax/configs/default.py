r"""Default main job: EAMSGD, p = 4 workers, period tau = 10, on MNIST-1D (embedded data),
one worker per simulated CPU device.

    python launch.py --config configs/default.py --workdir /tmp/run
    python launch.py --config configs/default.py --workdir /tmp/run \
        --config.algorithm.period=1 --config.num_workers=8 --config.num_devices=8 \
        --config.algorithm.moving_rate=0.1125

Every field is declared by the schema (``easgd_jax.training.config.defaults()``, with a
comment per field), so a misspelled override is refused; the algorithm's hyperparameters
come from the tuned table (configs/tuned.py); moving_rate is alpha = beta / p, so a run
with another num_workers sets it anew (0.9 / 8 above).
"""

import ml_collections

from easgd_jax.configs import tuned
from easgd_jax.training.config import defaults


def get_config() -> ml_collections.ConfigDict:
    config = defaults()
    config.algorithm = tuned.algorithm("eamsgd", config.num_workers)
    return config
