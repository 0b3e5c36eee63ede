"""Shared setup of the language-model configs (issue 32), used by configs/lm_<algorithm>.py:

    a decoder-only transformer (models/transformer.py: width 64, 2 pre-norm blocks, 4 heads,
    RoPE, tied embeddings) on ``synthetic_lm`` (data/synthetic_lm.py: byte-level text from a
    seeded 256-state hidden Markov model, windows of 64 bytes, 2M training tokens), whose
    test split's Bayes-optimal cross-entropy is known exactly: every evaluation reports
    test_loss, optimal_loss and loss_gap (nats per token); p = 4 workers, one per device,
    batch 16 windows (1024 tokens) per worker; no l2 in the gradient (AdamW decays apart).

Sized to finish in under 5 minutes on 4 of the 8 simulated CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8); docs/default_runs.md states the gap
each reached. Real text instead, byte-level (prepared once with ``tfds build tiny_shakespeare
--data_dir=DIR --file_format=array_record``)::

    python launch.py --config configs/lm_diloco.py:tiny_shakespeare --workdir /tmp/lm_ts \\
        --config.data.data_dir=DIR

A larger model on a GPU, e.g.::

    python launch.py --config configs/lm_diloco.py --workdir /tmp/lm_diloco_gpu \\
        --config.model.kwargs.width=512 \\
        --config.model.kwargs.depth=8 --config.model.kwargs.num_heads=8 \\
        --config.data.kwargs.context=256 --config.data.kwargs.train_tokens=100000000 \\
        --config.train.batch_size=64 --config.train.num_steps=20000 \\
        --config.algorithm.decay_steps=20000
"""

import ml_collections

from easgd_jax.configs import default

NUM_WORKERS = 4
NUM_STEPS = 1000  # the AdamW schedules of configs/tuned.py decay over these steps
# data.kwargs of each LM data set (the config argument picks one: lm_diloco.py:lm1b).
DATA_KWARGS = {
    "synthetic_lm": dict(seed=0, context=64, num_states=256, train_tokens=2_000_000,
                         test_tokens=32_768),
    "tiny_shakespeare": dict(context=64),
    "lm1b": dict(context=64, max_train_tokens=20_000_000, max_test_tokens=1_000_000),
}


def base(algorithm: ml_collections.ConfigDict, num_workers: int = NUM_WORKERS,
         data: str = "synthetic_lm") -> ml_collections.ConfigDict:
    """The LM job with ``algorithm`` (a ConfigDict with its name and hyperparameters) on
    ``data``: ``synthetic_lm`` (default), or byte-level ``tiny_shakespeare`` or ``lm1b``
    (prepared with tfds; pass --config.data.data_dir=DIR)."""
    if data not in DATA_KWARGS:
        raise ValueError(f"an LM config takes one of {', '.join(DATA_KWARGS)} as its "
                         f"argument (configs/lm_diloco.py:tiny_shakespeare), got {data!r}.")
    config = default.get_config()
    config.num_workers = num_workers
    config.num_devices = num_workers

    config.data.name = data
    config.data.kwargs = ml_collections.ConfigDict(DATA_KWARGS[data])

    config.model.name = "transformer"
    config.model.kwargs = ml_collections.ConfigDict(dict(
        width=64, depth=2, num_heads=4, positions="rope", tie_embeddings=True))

    config.algorithm = algorithm
    config.train.batch_size = 16
    config.train.weight_decay = 0.0
    config.train.num_steps = NUM_STEPS
    config.train.eval_every = 250
    config.checkpoint.every = 0
    return config

