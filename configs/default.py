"""Default main job: EAMSGD, p = 4 workers, period tau = 10, on MNIST-1D (embedded data),
one worker per simulated CPU device.

    python launch.py --config configs/default.py --workdir /tmp/run
    python launch.py --config configs/default.py --workdir /tmp/run \
        --config.algorithm.period=1 --config.algorithm.moving_rate=0.0

Every field is declared by the schema (``easgd_jax.training.config.defaults()``, with a
comment per field), so a misspelled override is refused; the algorithm's hyperparameters
come from the tuned table (configs/tuned.py).
"""

import ml_collections

from configs import tuned
from easgd_jax.training.config import defaults


def get_config() -> ml_collections.ConfigDict:
    config = defaults()
    config.algorithm = tuned.algorithm("eamsgd", config.num_workers)
    return config
