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

Per setting, wall time: the median seconds per step of each side, every repetition's ratio,
their median with its 95% confidence interval (percentile bootstrap), their interquartile
range (a repetition's ratio compares neighbours in time), the pooled ratio (the loop's
seconds summed over the repetitions over the compiled side's) with its bootstrap interval
(the pairs resampled), and what one evaluation costs alone (the floor holds two per
``2 * span`` steps). On the 2-core machine the machine's own speed drifts by 10-15% within
seconds (benchmarks/RESULTS.md, section 4), so single repetitions spread widely.

CPU time, which says where an overhead would come from with far less noise: the host
(main) thread's CPU seconds per step in the loop and in the compiled side (which only
dispatches and waits), the whole process's (every device thread too), the loop's extra host
work as a share of the whole process's work per step (on a CPU backend the host thread
takes that share of the cores from the device threads), and how many rounds each side
dispatched only after the previous round had finished (the devices then waited for the
host; 0 means the host always kept the next round queued). Each loop repetition is a fresh
``train``, which compiles its programs again; JAX's persistent compilation cache (in a
temporary directory, ``experiments.sweep.compilation_cache``) serves its programs from the
second repetition on (outside the timed window), so that more repetitions fit in the same
time.

    python -m benchmarks.loop_overhead --devices 4 1 --batch_sizes 128 32 --reps 20
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Callable
from unittest import mock

import numpy as np

from easgd_jax import parallel
from easgd_jax.experiments.sweep import compilation_cache
from easgd_jax.training import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(num_devices: int, batch_size: int, span: int):
    sys.path.insert(0, ROOT)
    from easgd_jax.configs import default

    config = default.get_config()
    config.num_devices = num_devices
    config.train.batch_size = batch_size
    config.train.num_steps = 3 * span
    config.train.eval_every = span
    config.checkpoint.every = 0
    config.tensorboard = False
    return config


@dataclasses.dataclass
class Window:
    """One timed window: wall seconds per step, and CPU seconds per step of the main
    (host) thread and of the whole process (every device thread too)."""

    wall: float
    main_cpu: float
    process_cpu: float
    starved: int = 0  # rounds dispatched after the previous round had already finished


def _clocks() -> tuple[float, float, float]:
    return time.perf_counter(), time.thread_time(), time.process_time()


def loop_window(config) -> Window:
    """``train``'s window between its first and last evaluation: seconds per step (from its
    metrics), its CPU seconds per step (clocks read as each evaluation line is written), and
    how many of its rounds were dispatched after the previous round had already finished
    (the devices then waited for the host)."""
    import jax

    from easgd_jax.training import sync
    from easgd_jax.training.metrics import read_metrics

    make_train_round = sync.make_train_round
    marks: dict[int, tuple[float, float, float]] = {}
    starved: list[int] = []

    class TimedWriter(sync.MetricsWriter):
        def write(self, step: int, metrics: dict) -> None:
            marks[step] = _clocks()
            super().write(step, metrics)

    def timed_round(*args, **kwargs):
        round_fn = make_train_round(*args, **kwargs)
        previous: list = []

        def call(state, batches):
            if previous and marks:  # inside the window
                starved.append(int(all(leaf.is_ready() for leaf in previous)))
            state, summary = round_fn(state, batches)
            previous[:] = jax.tree.leaves(summary)
            return state, summary

        return call

    with tempfile.TemporaryDirectory() as workdir, \
            mock.patch.object(sync, "MetricsWriter", TimedWriter), \
            mock.patch.object(sync, "make_train_round", timed_round):
        sync.train(config, workdir)
        records = read_metrics(workdir)
    # steps_per_second is cumulative from the loop's start: t(step) = step / rate.
    first, last = records[0], records[-1]
    t_first = first["step"] / first["steps_per_second"]
    t_last = last["step"] / last["steps_per_second"]
    steps = last["step"] - first["step"]
    (_, main0, cpu0), (_, main1, cpu1) = marks[first["step"]], marks[last["step"]]
    return Window((t_last - t_first) / steps, (main1 - main0) / steps, (cpu1 - cpu0) / steps,
                  sum(starved))


def compiled_round(config) -> tuple[Callable[[int], Window], float]:
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

    def window(steps: int) -> Window:
        (wall0, main0, cpu0), previous, dispatched, starved = _clocks(), None, None, 0
        for k in range(steps // rounds):
            if previous is not None:
                starved += all(leaf.is_ready() for leaf in jax.tree.leaves(previous))
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
        wall1, main1, cpu1 = _clocks()
        return Window((wall1 - wall0) / steps, (main1 - main0) / steps, (cpu1 - cpu0) / steps,
                      starved)

    return window, float(np.median(evaluation_times))


def bootstrap_interval(statistic: Callable[..., np.ndarray], *samples: np.ndarray,
                       level: float = 0.95, resamples: int = 10_000) -> tuple[float, float]:
    """A percentile-bootstrap confidence interval of ``statistic(*samples)``, the
    repetitions (the samples' rows, together) resampled; ``statistic`` reduces the last
    axis of its ``[resamples, repetitions]`` arguments."""
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(samples[0]), (resamples, len(samples[0])))
    estimates = statistic(*(sample[picks] for sample in samples))
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(estimates, [tail, 100 - tail])
    return float(low), float(high)


def median_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """A percentile-bootstrap confidence interval of the median of ``values``."""
    return bootstrap_interval(lambda v: np.median(v, axis=1), values, level=level)


def pooled_interval(loops: np.ndarray, floors: np.ndarray,
                    level: float = 0.95) -> tuple[float, float]:
    """A percentile-bootstrap confidence interval of ``sum(loops) / sum(floors)``, the
    repetitions' pairs resampled together."""
    return bootstrap_interval(lambda a, b: a.sum(axis=1) / b.sum(axis=1), loops, floors,
                              level=level)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[128, 32])
    parser.add_argument("--span", type=int, default=600)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    parallel.use_simulated_cpu_devices(max(args.devices))
    with tempfile.TemporaryDirectory() as cache, compilation_cache(cache):
        _measure(args)


def _summary(values: np.ndarray) -> str:
    ci = median_interval(values)
    return f"{np.median(values):.4f} ({ci[0]:.4f}-{ci[1]:.4f})"


def _measure(args: argparse.Namespace) -> None:
    print(f"load before: {os.getloadavg()[0]:.2f}")
    wall_rows, cpu_rows = [], []
    for devices in args.devices:
        for batch in args.batch_sizes:
            config = _config(devices, batch, args.span)
            compiled, evaluation_s = compiled_round(config)
            loops, floors = [], []
            for rep in range(args.reps):
                if rep % 2 == 0:
                    loops.append(loop_window(config))
                    floors.append(compiled(2 * args.span))
                else:
                    floors.append(compiled(2 * args.span))
                    loops.append(loop_window(config))
            loop, floor = ({f.name: np.array([getattr(w, f.name) for w in windows])
                            for f in dataclasses.fields(Window)} for windows in (loops, floors))
            ratios = loop["wall"] / floor["wall"]
            low, high = np.percentile(ratios, [25, 75])
            ci = median_interval(ratios)
            pooled = pooled_interval(loop["wall"], floor["wall"])
            wall_rows.append(
                f"| {devices} | {batch} | {1e3 * np.median(loop['wall']):.3f} | "
                f"{1e3 * np.median(floor['wall']):.3f} | "
                f"{' '.join(f'{r:.3f}' for r in ratios)} | {np.median(ratios):.3f} | "
                f"{ci[0]:.3f}-{ci[1]:.3f} | {low:.3f}-{high:.3f} | "
                f"{np.sum(loop['wall']) / np.sum(floor['wall']):.3f} "
                f"({pooled[0]:.3f}-{pooled[1]:.3f}) | "
                f"{1e3 * evaluation_s:.1f} |")
            # The host's extra work as a share of what the devices' threads do per step.
            host_share = (loop["main_cpu"] - floor["main_cpu"]) / floor["process_cpu"]
            cpu_rows.append(
                f"| {devices} | {batch} | {1e3 * np.median(loop['main_cpu']):.4f} | "
                f"{1e3 * np.median(floor['main_cpu']):.4f} | "
                f"{1e3 * np.median(floor['process_cpu']):.3f} | {_summary(host_share)} | "
                f"{_summary(loop['process_cpu'] / floor['process_cpu'])} | "
                f"{int(loop['starved'].sum())} / {int(floor['starved'].sum())} of "
                f"{args.reps * (2 * args.span // config_lib.steps_per_round(config) - 1)} |")
            print(wall_rows[-1], "\n", cpu_rows[-1], flush=True)
    print("\nWall time, loop against its compiled programs (per repetition, loop / round):")
    print("| devices | batch | loop ms/step | round ms/step | loop / round (per rep) | "
          "median | its 95% CI | IQR | pooled (95% CI) | one evaluation ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(wall_rows))
    print("\nCPU time per step (medians over the repetitions; median (its 95% CI)):")
    print("| devices | batch | host thread ms, loop | host thread ms, round | all threads ms, "
          "round | extra host work / all threads' work | all threads, loop / round | "
          "rounds dispatched late, loop / round |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(cpu_rows))
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
