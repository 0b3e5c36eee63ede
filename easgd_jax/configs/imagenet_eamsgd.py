r"""EAMSGD on ImageNet (Zhang et al. 2015, Algorithm 2, Section 5): the paper's 11-layer net
(models/paper.py, "imagenet_cnn") on 221x221 crops, p = 4 workers (one per GPU), tau = 10,
beta = 0.9 (moving_rate = 0.9 / p), Nesterov momentum delta = 0.99, minibatch 128 per
worker, l2 1e-5, biases initialised to 0.1.

Pipeline: each image resized (shorter side 256) and centre-cropped to 256x256, then random
221x221 windows for training and the centre window for testing. The paper states the
221x221 input only; resize-then-random-crop is the usual practice of the time (OverFeat).
The data set must be prepared once (ILSVRC2012 archives in DATA_DIR/downloads/manual, then
tfds build imagenet2012 --data_dir=DATA_DIR --file_format=array_record).

    python launch.py --config configs/imagenet_eamsgd.py --workdir /tmp/imagenet_eamsgd \
        --config.data.data_dir=DATA_DIR

Images are decoded on the host as the workers sample them (float32, one round of
p x 128 images per step): expect the host pipeline, not the GPUs, to bound the speed.
"""

import ml_collections

from easgd_jax.algorithms.rates import moving_rate
from easgd_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.num_workers = 4
    config.num_devices = 4

    config.data.name = "imagenet2012"
    config.data.image_size = 256  # the squares the crops are taken from
    config.data.crop = 221

    config.model.name = "imagenet_cnn"

    config.algorithm = ml_collections.ConfigDict()
    config.algorithm.name = "eamsgd"
    # A starting point (eta / (1 - delta) = 0.1): the paper picks eta from a grid.
    config.algorithm.learning_rate = 0.001
    config.algorithm.momentum = 0.99  # delta
    config.algorithm.moving_rate = moving_rate(0.9, config.num_workers)  # beta = 0.9
    config.algorithm.period = 10  # tau

    config.train.batch_size = 128
    config.train.weight_decay = 1e-5
    config.train.num_steps = 300_000
    # One local step per round: a round's host batch is p x 128 images of 256x256x3 float32
    # (400 MB at p = 4); the communication clock lives in the optimizer state.
    config.train.steps_per_round = 1
    config.train.eval_every = 5000  # 50,000 validation images decoded per evaluation
    config.checkpoint.every = 5000
    return config
