"""Issue 32, item 5: EASGD and EAMSGD against DiLoCo and its relatives on a language model
whose best achievable loss is known exactly, with issue 33's protocol. RUN whole (sessions
14 and 15, 2026-12-07): p = 4 and 8 at every H, 5 seeds, 380 runs; p = 8 column by column
(``lm_compare.py:p8/64``, ``:p8/256``, ``:p8/16``). Results: docs/RESULTS.md, "Language
models", and docs/lm_compare/.

The methods (p = 4 and 8 workers; H = tau = 16, 64, 256; the data-parallel baselines have no H):

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
    dp_nesterov     data-parallel Nesterov SGD (configs/data_parallel_sgd.py): the same
                    all-reduce every step with the others' inner optimizer, so that the
                    exchange and the inner optimizer can be told apart

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
The threshold, 1.25 nats/token, and the grids come from a probe (2026-12-07, every method's
p = 4, H = 64 setting, every rate on seed 0: the first-seed runs the sweep itself runs
first; /tmp/lm_probe.py restricted this file to them). Final test gap (nats/token) per rate:

    diloco       0.03: 1.390  0.1: 1.202  0.3: 1.160  1: diverged
    diloco_f4    0.03: 1.398  0.1: 1.378  0.3: 1.349  1: 1.620
    easgd        0.1: 1.500   0.3: 1.285  1: 1.215    3: 1.256
    eamsgd       0.03: 1.276  0.1: 1.182  0.3: 1.204  1: 1.390
    eamsgd_outer 0.03: 1.275  0.1: 1.181  0.3: 1.209  1: 1.382
    local_sgd    0.03: 1.242  0.1: 1.149  0.3: 1.115  1: 1.170
    lsgd         0.03: 1.282  0.1: 1.214  0.3: 1.177  1: 1.330
    dp_adamw     0.001: 1.266 0.003: 1.148 0.01: 1.000 0.03: 0.962 (the top: the grid now
                 reaches 0.1)

Every best rate but AdamW's sat inside its grid. In the sweep itself (2026-12-07, session
14), EAMSGD and EAMSGD with the outer step at p = 4, H = 256 chose 0.03 on their first seed,
the bottom of the grid (1.398 and 1.402 nats/token, every higher rate worse): their grids
now reach 0.01 (``ELASTIC_RATES``), one more first-seed run per setting.

At this size the model is capacity-limited:
the best gaps lie between 0.96 and 1.35 after 2048 steps, so a 1.0 threshold (the first
choice) was reached by AdamW alone; 1.25 is reached by every method's best rate but
streaming DiLoCo's at H = 64. dp_nesterov was added after the probe (AdamW's lead over every
Nesterov method, 0.15-0.39 nats, mixes the inner optimizer with the exchange).

The clock: the synchronous cluster clock (parallel/cluster.py) with each run's exchange bytes
scaled to a 150M-parameter float32 model (``cluster.model_bytes`` = 600 MB, the DiLoCo
paper's smallest), 100 ms of compute per local step (ASSUMED, not measured: no GPU here), 50
us latency, ring all-reduce, 10 Gb/s as recorded; 1 Gb/s (cross-datacenter) RECOMPUTED from
the recorded steps by the report (``sweep.bandwidths``: each run's clock rebuilt from its own
files and checked against every recorded time, easgd_jax/experiments/bandwidths.py):
cluster_bandwidths.md gives the time to the 1.25 nats/token gap at both, and
GRID_curves_cluster_1gbit.png the curves. Figures of the gap against steps
(GRID_curves_steps.png) and against simulated time (GRID_curves_cluster*.png), seed means
with min-max bands, log axes where the gap spans decades. GRID_ranking.md ranks the methods
at each (p, H), each tested against the best seed by seed (Holm-adjusted within the panel),
and compares the pairs of ``PAIRS`` at every H (easgd_jax/experiments/ranking.py).

Cost, from ONE timed cell (2026-12-07, this repository's 2 CPU cores shared with a running
sweep; ``/usr/bin/time`` of the sweep process, one run, compilation and report included):

    eamsgd tau 64 p 8 lr 0.3 seed 0, 2048 steps:  94.6 CPU-s (90.0 user + 4.6 sys; 4 min
        51 s wall at 32% of a core beside the other sweep; generating the data, compiling
        and the report included); final test gap 1.491 nats/token, validation gap 1.490

``--dry_run`` lists 980 runs (46 settings x 4 rates x 5 seeds, and a fifth rate, 0.01, for
EAMSGD's and EAMSGD-outer's 12 settings); with "first_seed" 46 x (4 + 4) + 12 = 380 train,
190 at p = 8 and 190 at p = 4 (32 of the latter done by the probe). The estimate below was
made for the 368 of the four-rate grids. At the
timed cell's cost for every p = 8 run and the probe's for a p = 4 run (32 runs in 22 min of
wall on about one core beside another sweep: about 40 CPU-s each), about 184 x 95 + 152 x 40
= 23,600 CPU-s: about 6.6 CPU-hours, 3.3 hours on the 2 cores (every rate on every seed:
about 17). An upper bound:
the sweep runs in one process (the data generated and the libraries imported once) and the
persistent compilation cache lets the 4 later seeds of a rate skip compiling.

Measured (session 14, two shards side by side on the 2 cores, niced, beside the test suite
for 12 minutes): 41.7 s of wall per p = 4 run and 88.3 s per p = 8 run (each run's own
``wall_time_s``, about its CPU time), 2.2 hours for the p = 4 grid's 191 runs (the probe's
included) and 1.8 hours for p = 8 at H = 64 (74 runs); session 15 ran the other p = 8
columns: 86.1 s per p = 8 run on average, 4.5 hours for the p = 8 grid's 190 runs, 6.7
CPU-hours for all 380 (the estimate above held).

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
THRESHOLD = 1.25  # nats/token of gap to the optimum (docstring: the probe)
SGD_RATES = [0.03, 0.1, 0.3, 1.0]  # Nesterov momentum SGD, momentum 0.9
# EAMSGD's grids reach a half-decade lower: at p = 4, H = 256 its first seed chose 0.03, the
# bottom of SGD_RATES, as did EAMSGD with the outer step (session 14; docstring).
ELASTIC_RATES = [0.01, *SGD_RATES]
# The comparisons the sweep is run for (GRID_ranking.md): the elastic methods against
# DiLoCo and plain averaging, the outer step on EAMSGD, the inner optimizer of the baseline.
PAIRS = [["eamsgd", "diloco"], ["easgd", "diloco"], ["eamsgd", "local_sgd"],
         ["eamsgd", "lsgd"], ["eamsgd_outer", "eamsgd"], ["local_sgd", "diloco"],
         ["diloco", "diloco_f4"],
         ["dp_adamw", "dp_nesterov"]]


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


def _part(text: str) -> tuple[int, list[int]]:
    """"p8/64,256" -> (8, [64, 256]): one grid's p and some of its periods."""
    grid, _, periods = text.partition("/")
    p = int(grid.removeprefix("p")) if grid.startswith("p") else 0
    taus = [int(t) for t in periods.split(",") if t]
    if p not in WORKERS or not taus or not set(taus) <= set(PERIODS):
        raise ValueError(f"part {text!r}: expected pP/H[,H...] with P in {WORKERS} and H in "
                         f"{PERIODS} (configs/sweeps/lm_compare.py:p8/64).")
    return p, taus


def get_config(part: str = "") -> ml_collections.ConfigDict:
    """The whole sweep; ``part`` "pP/H,H" (``lm_compare.py:p8/64``): grid pP at those periods
    alone, with the data-parallel baselines: the same runs under the same names, so that a
    budget can finish one column of a grid first and the whole sweep then finds them done."""
    sweep = ml_collections.ConfigDict()
    sweep.methods = {
        "diloco": {"config": "diloco", "learning_rates": SGD_RATES},
        "diloco_f4": {"config": "diloco_streaming", "learning_rates": SGD_RATES},
        "easgd": {"config": "easgd", "learning_rates": [0.1, 0.3, 1.0, 3.0]},
        "eamsgd": {"config": "default", "learning_rates": ELASTIC_RATES},
        "eamsgd_outer": {"config": "eamsgd_outer", "learning_rates": ELASTIC_RATES},
        "local_sgd": {"config": "local_sgd", "learning_rates": SGD_RATES},
        "lsgd": {"config": "lsgd", "learning_rates": SGD_RATES},
        "dp_adamw": {"config": "lm_data_parallel", "learning_rates": [3e-3, 1e-2, 3e-2, 1e-1],
                     "overrides": {"algorithm": {"warmup_steps": 32,
                                                 "decay_steps": NUM_STEPS}}},
        "dp_nesterov": {"config": "data_parallel_sgd", "learning_rates": SGD_RATES},
    }
    methods = list(sweep.methods)
    grids = {p: PERIODS for p in WORKERS}
    if part:
        p, periods = _part(part)
        grids = {p: periods}
    sweep.grids = [{"name": f"p{p}", "periods": periods, "num_workers": [p],
                    "methods": methods} for p, periods in grids.items()]
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
                  for p in grids],
        "findings": None,
        "speedup": None,
        "ranking": {"grids": [f"p{p}" for p in WORKERS], "pairs": PAIRS},
    }
    return sweep
