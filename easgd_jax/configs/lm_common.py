"""Shared setup of the language-model configs (issue 32), used by configs/lm_<algorithm>.py:

    a decoder-only transformer (models/transformer.py: width 64, 2 pre-norm blocks, 4 heads,
    RoPE, tied embeddings) on ``synthetic_lm`` (data/synthetic_lm.py: byte-level text from a
    seeded 256-state hidden Markov model, windows of 64 bytes, 2M training tokens), whose
    test split's Bayes-optimal cross-entropy is known exactly: every evaluation reports
    test_loss, optimal_loss and loss_gap (nats per token); p = 4 workers, one per device,
    batch 16 windows (1024 tokens) per worker; no l2 in the gradient (AdamW decays apart).

Sized to finish in under 5 minutes on 4 of the 8 simulated CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8); each file states the gap it reached.
A larger model on a GPU, e.g.:

    python launch.py --config configs/lm_diloco.py --workdir /tmp/lm_diloco_gpu \\
        --config.num_devices=4 --config.model.kwargs.width=512 \\
        --config.model.kwargs.depth=8 --config.model.kwargs.num_heads=8 \\
        --config.data.kwargs.context=256 --config.data.kwargs.train_tokens=100000000 \\
        --config.train.batch_size=64 --config.train.num_steps=20000
"""

import ml_collections

from easgd_jax.configs import default

NUM_WORKERS = 4
NUM_STEPS = 1000  # the AdamW schedules of configs/tuned.py decay over these steps


def base(algorithm: ml_collections.ConfigDict,
         num_workers: int = NUM_WORKERS) -> ml_collections.ConfigDict:
    """The LM job with ``algorithm`` (a ConfigDict with its name and hyperparameters)."""
    config = default.get_config()
    config.num_workers = num_workers
    config.num_devices = num_workers

    config.data.name = "synthetic_lm"
    config.data.kwargs = ml_collections.ConfigDict(dict(
        seed=0, context=64, num_states=256, train_tokens=2_000_000, test_tokens=32_768))

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

