"""Issue 32, item 5: EASGD and EAMSGD against DiLoCo and its relatives on a language model
whose best achievable loss is known exactly, with issue 33's protocol. DECLARED, NOT RUN
beyond one timed cell (the 2 shared cores were running configs/sweeps/contested.py).

The methods (p = 4 and 8 workers; H = tau = 16, 64, 256; data-parallel AdamW has no H):

    diloco          DiLoCo (Douillard et al. 2023, arXiv 2311.08105): outer Nesterov 0.7 /
                    momentum 0.9 on the averaged pseudo-gradient
    diloco_f4       streaming DiLoCo (Douillard et al. 2025, arXiv 2501.18512): the same,
                    4 fragments, one exchanged every H / 4 steps
    easgd           EASGD (Zhang, Choromanska & LeCun 2015, Algorithm 1, synchronous form)
    eamsgd          EAMSGD (ibid., Algorithm 2)
    eamsgd_outer    EAMSGD whose center takes an outer Nesterov step (0.5 / 0.5)
    local_sgd       local SGD: DiLoCo with outer rate 1 and no outer momentum (averaging)
    lsgd            LSGD (Teng et al. 2019): the workers pulled to the best one (0.1)
    dp_adamw        data-parallel AdamW (the DiLoCo paper's baseline): one all-reduce of the
                    gradients per step, 32 warm-up steps, cosine decay over the run

The same inner optimizer where the method allows it: every worker steps with Nesterov
momentum SGD (momentum 0.9, a constant rate) in diloco, diloco_f4, eamsgd, eamsgd_outer,
local_sgd and lsgd. Two do not: EASGD's rule is plain SGD (Algorithm 1; EAMSGD is its
momentum form), and the data-parallel baseline is AdamW as the issue names it (b2 0.95,
decoupled decay 0.1; DiLoCo as published also steps with AdamW inside, configs/lm_diloco.py:
here its inner optimizer is Nesterov SGD so that it differs from EAMSGD by its exchange
alone). The same tokens per worker: every run is 2048 steps of 16 windows x 32 tokens per
worker (1.05M tokens), evaluated every 64 steps.

The model and data (sized for 2 CPU cores): the transformer of models/transformer.py at
width 32, depth 1, 2 heads, RoPE, tied embeddings, context 32 (20,960 parameters);
``synthetic_lm`` (a seeded 256-state hidden Markov model over bytes, data/synthetic_lm.py),
2M training tokens, of which
512 windows (16384 tokens) are held out as the validation split, with ITS OWN exact optimum
(``val_loss_gap``); 16384 test tokens. 2048 steps give H = 256 eight rounds.

The protocol (issue 33, item 1; ``sweep.metric = "loss_gap"``, easgd_jax/experiments/
metric.py): every rate on the first seed, each setting's rate chosen on that seed's final
VALIDATION gap (``learning_rate_selection = "first_seed"``, as configs/sweeps/paper_async.py:
a third of the runs of every rate on every seed, a noisier choice), the 4 other seeds at that
rate; the test gap (nats/token) then reported once at it over 5 seeds, with the sample std,
bootstrap 95% interval, the mean best gap, the failures (a diverged run counts as the
uniform predictor's gap, ln 256 - optimum) and the rate's place in its grid (an edge that
remains is named: ``edge`` in summary.md). Rate grids: half-decade steps over 1.5 decades.
The threshold, 1.0 nats/token, is a gap the LM configs pass within 1000 steps at width 64
(docs/default_runs.md: lm_eamsgd 0.85, lm_data_parallel 0.59, lm_diloco 1.29) and the timed
cell below did not reach at its one rate (1.49: EAMSGD at eta 0.3 and p = 8 stalled near the
unigram level with its workers 16 apart, so the lower rates of the grid matter).

The clock: the synchronous cluster clock (parallel/cluster.py) with each run's exchange bytes
scaled to a 150M-parameter float32 model (``cluster.model_bytes`` = 600 MB, the DiLoCo
paper's smallest), 100 ms of compute per local step (ASSUMED, not measured: no GPU here), 50
us latency, ring all-reduce, 10 Gb/s as recorded; 1 Gb/s (cross-datacenter) RECOMPUTED from
the recorded steps by the report (``sweep.bandwidths``: each run's clock rebuilt from its own
files and checked against every recorded time, easgd_jax/experiments/bandwidths.py):
cluster_bandwidths.md gives the time to the 1.0 nats/token gap at both, and
GRID_curves_cluster_1gbit.png the curves. Figures of the gap against steps
(GRID_curves_steps.png) and against simulated time (GRID_curves_cluster*.png), seed means
with min-max bands, log axes where the gap spans decades.

Cost, from ONE timed cell (2026-12-07, this repository's 2 CPU cores shared with a running
sweep; ``/usr/bin/time`` of the sweep process, one run, compilation and report included):

    eamsgd tau 64 p 8 lr 0.3 seed 0, 2048 steps:  94.6 CPU-s (90.0 user + 4.6 sys; 4 min
        51 s wall at 32% of a core beside the other sweep; generating the data, compiling
        and the report included); final test gap 1.491 nats/token, validation gap 1.490

``--dry_run`` lists 880 runs (44 settings x 4 rates x 5 seeds); with "first_seed" 44 x (4 +
4) = 352 train, 176 at p = 8 and 176 at p = 4. At the timed cell's cost for every p = 8 run
and about 60 CPU-s for a p = 4 run (its local steps are half of the cell's 8 vmapped
workers; compiling and data the same), about 176 x 95 + 176 x 60 = 27,000 CPU-s: about 7.6
CPU-hours, 3.8 hours on the 2 cores (every rate on every seed: 19 CPU-hours). An upper bound:
the sweep runs in one process (the data generated and the libraries imported once) and the
persistent compilation cache lets the 4 later seeds of a rate skip compiling.

    python -m easgd_jax.experiments.sweep --config configs/sweeps/lm_compare.py --workdir DIR \\
        --dry_run
    python -m easgd_jax.experiments.sweep --config configs/sweeps/lm_compare.py --workdir DIR

The sweep resumes: run it again to go on after a stop (SIGINT/SIGTERM stop at a checkpoint).
"""

import ml_collections

SEEDS = list(range(5))
NUM_STEPS = 2048
EVAL_EVERY = 64
PERIODS = [16, 64, 256]
WORKERS = [4, 8]
THRESHOLD = 1.0  # nats/token of gap to the optimum
SGD_RATES = [0.03, 0.1, 0.3, 1.0]  # Nesterov momentum SGD, momentum 0.9


def run_overrides() -> dict:
    """Every run: the tiny transformer on synthetic_lm with its validation split, the same
    tokens per worker, the assumed cluster."""
    return {
        "model": {"name": "transformer",
                  "kwargs": {"width": 32, "depth": 1, "num_heads": 2, "positions": "rope",
                             "tie_embeddings": True}},
        "data": {"name": "synthetic_lm",
                 "kwargs": {"seed": 0, "context": 32, "num_states": 256,
                            "train_tokens": 2_000_000, "test_tokens": 16_384,
                            "validation_size": 512}},
        "train": {"batch_size": 16, "num_steps": NUM_STEPS, "eval_every": EVAL_EVERY,
                  "steps_per_round": EVAL_EVERY, "weight_decay": 0.0},
        "checkpoint": {"every": 1024},
        "cluster": {"compute_s_per_step": 0.1, "model_bytes": 600_000_000,
                    "bandwidth_gbit_s": 10.0, "latency_us": 50.0},
    }


def get_config() -> ml_collections.ConfigDict:
    sweep = ml_collections.ConfigDict()
    sweep.methods = {
        "diloco": {"config": "diloco", "learning_rates": SGD_RATES},
        "diloco_f4": {"config": "diloco_streaming", "learning_rates": SGD_RATES},
        "easgd": {"config": "easgd", "learning_rates": [0.1, 0.3, 1.0, 3.0]},
        "eamsgd": {"config": "default", "learning_rates": SGD_RATES},
        "eamsgd_outer": {"config": "eamsgd_outer", "learning_rates": SGD_RATES},
        "local_sgd": {"config": "local_sgd", "learning_rates": SGD_RATES},
        "lsgd": {"config": "lsgd", "learning_rates": SGD_RATES},
        "dp_adamw": {"config": "lm_data_parallel", "learning_rates": [1e-3, 3e-3, 1e-2, 3e-2],
                     "overrides": {"algorithm": {"warmup_steps": 32,
                                                 "decay_steps": NUM_STEPS}}},
    }
    methods = list(sweep.methods)
    sweep.grids = [{"name": f"p{p}", "periods": PERIODS, "num_workers": [p],
                    "methods": methods} for p in WORKERS]
    sweep.seeds = SEEDS
    sweep.learning_rate_selection = "first_seed"  # the budget's choice (docstring)
    sweep.select_on = "validation"
    sweep.metric = "loss_gap"
    sweep.threshold = THRESHOLD
    sweep.bandwidths = [1.0]
    sweep.beta = 0.9
    sweep.max_devices = 1
    sweep.compilation_cache = True
    sweep.overrides = run_overrides()
    sweep.report = {
        "grids": [{"name": f"p{p}", "panels": "tau", "against": ["tau"], "by_period": True}
                  for p in WORKERS],
        "findings": None,
        "speedup": None,
    }
    return sweep
