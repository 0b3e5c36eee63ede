"""Default main job: EAMSGD, p = 4 workers, period tau = 10, on MNIST-1D (embedded data),
one worker per simulated CPU device.

    python launch.py --config configs/default.py --workdir /tmp/run
    python launch.py --config configs/default.py --workdir /tmp/run \
        --config.algorithm.period=1 --config.algorithm.moving_rate=0.0
"""

import ml_collections
from ml_collections import config_dict

from easgd_jax import async_train


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.num_workers = 4  # p
    # Devices to spread the workers over (0 = all available). On CPU, launch.py creates this
    # many simulated devices before jax starts.
    config.num_devices = 4
    # Groups of workers on a 2-D (groups x workers) layout, for multi-leader LSGD.
    config.num_groups = 1

    config.data = ml_collections.ConfigDict()
    config.data.name = "mnist1d"
    config.data.data_dir = config_dict.placeholder(str)

    config.model = ml_collections.ConfigDict()
    config.model.name = "cnn1d"
    config.model.kwargs = ml_collections.ConfigDict()

    config.algorithm = ml_collections.ConfigDict()
    config.algorithm.name = "eamsgd"
    config.algorithm.learning_rate = 0.1
    config.algorithm.momentum = 0.9
    # alpha = beta / p with the paper's beta = 0.9: set it anew when changing num_workers.
    config.algorithm.moving_rate = 0.9 / config.num_workers
    config.algorithm.period = 10

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 128  # per worker
    config.train.num_steps = 2000  # local steps per worker
    config.train.steps_per_round = 0  # 0: one round = one period
    config.train.eval_every = 250
    config.train.weight_decay = 1e-4
    # dtype of the parameters, the optimizer state and the batches: "float32", or "float64"
    # (exact comparisons; launch.py then turns on jax_enable_x64 before jax starts).
    config.train.param_dtype = "float32"

    # How the workers run: "sync" (SPMD rounds, train.py), "simulated_async" (seeded simulated
    # asynchrony) or "threads" (a parameter server, one thread per worker): async_train.py.
    config.executor = "sync"
    config.asynchrony = async_train.default_asynchrony()  # schedule, staleness, shards

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every = 1000  # steps between checkpoints (0: only at the end)
    config.checkpoint.max_to_keep = 3
    config.tensorboard = True  # event files in workdir/tensorboard besides metrics.jsonl

    # Several processes (hosts): set a coordinator here, or run under SLURM / Open MPI /
    # JAX_COORDINATOR_ADDRESS and JAX finds it. num_devices then counts all processes'
    # devices (on CPU each process simulates num_devices / num_processes).
    config.distributed = ml_collections.ConfigDict()
    config.distributed.coordinator_address = ""  # "host:port" of process 0
    config.distributed.num_processes = 1
    config.distributed.process_id = 0
    return config
