"""The synchronous training loop's cost per step against its compiled programs' alone.

``training.sync.train`` samples every round's batches on the host, has the devices gather
them, reads each round's summary (losses, NaN flags, reported state) and evaluates; its
compiled programs (``training.sync.make_train_round``, the round: same algorithm, model,
batch, layout and round length; ``training.sync.make_evaluation``) run back to back on
device-resident batches are the floor. The ratio is the loop's overhead: the loop
dispatches round k + 1 before it reads round k's summary, builds the next batches while a
round runs and, between checkpoints, enqueues an evaluation before the next round and
reads it after, so it should stay near 1.

Interleaved in one process, ``--reps`` repetitions of a pair (loop, compiled round), the
pair's order alternating (loop first in even repetitions), so that a slow drift of the
machine's speed weighs on both sides alike:

- loop: ``train`` on the default job (EAMSGD, p = 4, tau = 10, MNIST-1D, 50-step rounds)
  with ``3 * span`` steps, evaluations every ``span`` steps, no checkpoints, no TensorBoard;
  seconds per step between the first and the last evaluation (compilation and the first
  ``span`` steps excluded; two evaluations and the summaries of ``2 * span`` steps
  included);
- compiled: the loop's own programs back to back, ``2 * span`` steps of its round on fixed
  device-resident batches and two of its evaluations (enqueued before the next round, as
  the loop does), so that the ratio is what the loop adds: host sampling, the batch
  gathers, reading the summaries, its bookkeeping and any time the device waits on the host.

Per setting: the median seconds per step of each side, every repetition's ratio, their
median with its 95% confidence interval (percentile bootstrap) and their interquartile
range (a repetition's ratio compares neighbours in time), and the
pooled ratio (the loop's seconds summed over the repetitions over the compiled side's),
and what one evaluation costs alone (the floor holds two per ``2 * span`` steps).
On the 2-core machine single repetitions spread by +-15% (the machine's own speed drifts
that much within seconds; benchmarks/RESULTS.md, section 4), hence many short ones. Each
loop repetition is a fresh ``train``, which compiles its programs again; JAX's persistent
compilation cache (in a temporary directory, ``experiments.sweep.compilation_cache``)
serves its programs from the second repetition on (outside the timed window), so that more
repetitions fit in the same time.

    python -m benchmarks.loop_overhead --devices 1 4 --batch_sizes 128 32
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

from easgd_jax import parallel
from easgd_jax.experiments.sweep import compilation_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(num_devices: int, batch_size: int, span: int):
    sys.path.insert(0, ROOT)
    from configs import default

    config = default.get_config()
    config.num_devices = num_devices
    config.train.batch_size = batch_size
    config.train.num_steps = 3 * span
    config.train.eval_every = span
    config.checkpoint.every = 0
    config.tensorboard = False
    return config


def loop_seconds_per_step(config) -> float:
    """Seconds per step of ``train`` between its first and last evaluation."""
    from easgd_jax.training import sync
    from easgd_jax.training.metrics import read_metrics

    with tempfile.TemporaryDirectory() as workdir:
        sync.train(config, workdir)
        records = read_metrics(workdir)
    # steps_per_second is cumulative from the loop's start: t(step) = step / rate.
    first, last = records[0], records[-1]
    t_first = first["step"] / first["steps_per_second"]
    t_last = last["step"] / last["steps_per_second"]
    return (t_last - t_first) / (last["step"] - first["step"])


def compiled_round(config) -> tuple[Callable[[int], float], float]:
    """A function timing ``steps`` steps of the loop's own compiled programs back to back:
    its round on fixed device-resident batches and, every ``config.train.eval_every``
    steps, its evaluation (``sync.make_evaluation``), enqueued before the next round and
    read after it is dispatched, as the loop does between checkpoints; and the seconds of
    one evaluation alone (median of 5)."""
    import jax

    from benchmarks.common import Runner, make_workload
    from easgd_jax.algorithms import registry
    from easgd_jax.training import config as config_lib
    from easgd_jax.training.sync import make_evaluation, make_train_round, read_evaluation

    layout = parallel.make_worker_layout(config.num_workers, config.num_devices)
    spec = registry.get_spec(config.algorithm.name)
    tx = registry.get_algorithm(config.algorithm.name, axis_name=layout.axis_name,
                                **config_lib.algorithm_hparams(config))
    workload = make_workload(config.model.name)
    rounds = config_lib.steps_per_round(config)
    round_fn = make_train_round(config, workload.model, tx, spec, layout)
    evaluation = make_evaluation(spec, workload.model, layout, workload.dataset)
    runner = Runner("eamsgd:10", workload, layout, rounds, config.train.batch_size, tx=tx,
                    round_fn=round_fn)
    runner.state, _ = runner.round(runner.state, runner.batches)  # compile
    read_evaluation(*evaluation(runner.state), [0.0])  # compile
    jax.block_until_ready(runner.state)
    evaluation_times = []
    for _ in range(5):
        start = time.perf_counter()
        read_evaluation(*evaluation(runner.state), [0.0])
        evaluation_times.append(time.perf_counter() - start)

    def seconds_per_step(steps: int) -> float:
        start, previous, dispatched = time.perf_counter(), None, None
        for k in range(steps // rounds):
            runner.state, summary = runner.round(runner.state, runner.batches)
            if previous is not None:  # two rounds in flight at most, as the loop (vs_pytorch)
                jax.block_until_ready(previous)
            if dispatched is not None:
                read_evaluation(*dispatched, [0.0])
                dispatched = None
            previous = summary
            if ((k + 1) * rounds) % config.train.eval_every == 0:
                dispatched = evaluation(runner.state)
        if dispatched is not None:
            read_evaluation(*dispatched, [0.0])
        jax.block_until_ready(runner.state)
        return (time.perf_counter() - start) / steps

    return seconds_per_step, float(np.median(evaluation_times))


def median_interval(values: np.ndarray, level: float = 0.95,
                    resamples: int = 10_000) -> tuple[float, float]:
    """A percentile-bootstrap confidence interval of the median of ``values``."""
    rng = np.random.default_rng(0)
    medians = np.median(rng.choice(values, (resamples, len(values))), axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(medians, [tail, 100 - tail])
    return float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[128, 32])
    parser.add_argument("--span", type=int, default=150)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    parallel.use_simulated_cpu_devices(max(args.devices))
    with tempfile.TemporaryDirectory() as cache, compilation_cache(cache):
        _measure(args)


def _measure(args: argparse.Namespace) -> None:
    print(f"load before: {os.getloadavg()[0]:.2f}")
    print("| devices | batch | loop ms/step | round ms/step | loop / round (per rep) | "
          "median | its 95% CI | IQR | pooled | one evaluation ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for devices in args.devices:
        for batch in args.batch_sizes:
            config = _config(devices, batch, args.span)
            compiled, evaluation_s = compiled_round(config)
            loops, rounds = [], []
            for rep in range(args.reps):
                if rep % 2 == 0:
                    loops.append(loop_seconds_per_step(config))
                    rounds.append(compiled(2 * args.span))
                else:
                    rounds.append(compiled(2 * args.span))
                    loops.append(loop_seconds_per_step(config))
            ratios = np.array(loops) / np.array(rounds)
            low, high = np.percentile(ratios, [25, 75])
            ci = median_interval(ratios)
            print(f"| {devices} | {batch} | {1e3 * np.median(loops):.3f} | "
                  f"{1e3 * np.median(rounds):.3f} | "
                  f"{' '.join(f'{r:.3f}' for r in ratios)} | {np.median(ratios):.3f} | "
                  f"{ci[0]:.3f}-{ci[1]:.3f} | "
                  f"{low:.3f}-{high:.3f} | {np.sum(loops) / np.sum(rounds):.3f} | "
                  f"{1e3 * evaluation_s:.1f} |", flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
