r"""A tiny sweep to check the sweep machinery end to end (EASGD paper, arXiv 1412.6651, Sec. 5,
in miniature): EASGD and DOWNPOUR x tau in {1, 4}, p = 4, one learning rate, one seed, 100
steps each on MNIST-1D (embedded data).

    python -m easgd_jax.experiments.sweep --config configs/sweeps/smoke.py \
        --workdir /tmp/sweep_smoke
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    sweep = ml_collections.ConfigDict()
    sweep.methods = {
        # Learning rates of configs/easgd.py and configs/downpour.py (tuned on MNIST-1D).
        "easgd": {"config": "easgd", "learning_rates": [0.5]},
        "downpour": {"config": "downpour", "learning_rates": [0.2]},
    }
    sweep.grids = [
        {"name": "tau", "methods": ["easgd", "downpour"], "periods": [1, 4], "num_workers": [4]},
    ]
    # The report: curves per tau, error and time against tau, the method x period tables and
    # the paper's findings as far as two methods go (easgd_jax/experiments/report_spec.py).
    sweep.report = {
        "grids": [{"name": "tau", "panels": "tau", "against": ["tau"], "by_period": True}],
        "findings": {"tau_grid": "tau"},
        "speedup": None,
    }
    sweep.seeds = [0]
    sweep.beta = 0.9  # moving_rate = beta / p
    sweep.threshold = 0.6  # test error
    # All 4 workers on one (CPU) device: on a few cores, vmapped workers beat simulated devices.
    sweep.max_devices = 1
    sweep.overrides = {
        "train": {"num_steps": 100, "eval_every": 20, "steps_per_round": 4},
        "checkpoint": {"every": 0},
        "tensorboard": False,
    }
    return sweep
