"""Shared setup of the EASGD paper's CIFAR-10 experiments (Zhang, Choromanska & LeCun, NIPS
2015, arXiv 1412.6651, Section 5.1), used by configs/cifar10_<algorithm>.py:

    the 7-layer net (models/paper.py, "cifar_cnn") on random 28x28 crops of the per-channel
    normalised 32x32 images (centre crop at test time); minibatch 128 per worker, l2 1e-4,
    p = 4 workers (one per device), beta = 0.9 (moving_rate = 0.9 / p), momentum delta = 0.99.

The data must be prepared once (tfds build cifar10 --file_format=array_record) and passed
with --config.data.data_dir=DIR. Learning rates in the algorithm files are starting points:
the paper picks eta per method and setting from a grid (configs/sweeps/cifar10_paper.py).
Training time: the paper plots about 1-2 hours on GPUs; num_steps here is 100k steps per
worker (~250 epochs of the 4 workers together).
"""

import ml_collections

from easgd_jax.algorithms.rates import moving_rate
from easgd_jax.configs import default

BETA = 0.9
# The moving_rate of an elastic algorithm: base() sets it to beta / p for the job's p.
ELASTIC = None
MOMENTUM = 0.99  # delta


def base(algorithm: ml_collections.ConfigDict, num_workers: int = 4) -> ml_collections.ConfigDict:
    """The CIFAR-10 job with ``algorithm`` (a ConfigDict with its name and hyperparameters)."""
    config = default.get_config()
    config.num_workers = num_workers
    config.num_devices = num_workers  # one worker per GPU; on CPU launch.py simulates them

    config.data.name = "cifar10"
    config.data.crop = 28  # random 28x28 crops for training, the centre crop for testing

    config.model.name = "cifar_cnn"

    config.algorithm = algorithm
    if "moving_rate" in algorithm:  # ELASTIC: alpha = beta / p for this p
        with config.algorithm.ignore_type():
            config.algorithm.moving_rate = moving_rate(BETA, num_workers)

    config.train.batch_size = 128
    config.train.weight_decay = 1e-4
    config.train.num_steps = 100_000
    # Rounds of 10 local steps (a multiple of tau = 10 and of tau = 1): the host builds
    # [p, 10, 128, 28, 28, 3] float32 batches (48 MB at p = 4) per round.
    config.train.steps_per_round = 10
    config.train.eval_every = 1000
    config.checkpoint.every = 5000
    return config


def algorithm(name: str, **hparams) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = name
    config.update(hparams)
    return config
