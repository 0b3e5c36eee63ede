"""Co-located workers' gradients unrolled (``parallel.unrolled_over_workers``) against one
batched (vmapped) gradient: the main job's compiled round, both forms in one process.

The JAX side of ``benchmarks/vs_pytorch.py`` (EAMSGD, p = 4, tau = 10, MNIST-1D ``cnn1d``,
batch 128 per worker, fresh batches every round, at most two rounds in flight) built twice,
``make_local_step(..., unroll_workers=True)`` and ``=False``, both compiled first, then
``--reps`` repetitions of a pair of runs (the pair's order alternating), examples per second
over steps ``--skip`` .. ``--steps`` of each run. With one worker per device (``--devices
4``) both forms are the same program; with the 4 workers vmapped on one device (the
default) the unrolled form runs their gradients as 4 independent chains.

    python -m benchmarks.unrolled_workers --reps 8
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from easgd_jax import parallel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1100)
    parser.add_argument("--skip", type=int, default=100)
    parser.add_argument("--reps", type=int, default=6)
    args = parser.parse_args()
    parallel.use_simulated_cpu_devices(args.devices)

    from benchmarks import vs_pytorch
    from easgd_jax.training.common import load_data_and_model

    config = vs_pytorch.main_config(args.devices, args.steps, args.skip)
    dataset, model = load_data_and_model(config)
    params = vs_pytorch.initial_params(model, dataset.example_shape, config.seed)
    runs = {"batched": vs_pytorch.JaxRun(config, params, unroll_workers=False),
            "unrolled": vs_pytorch.JaxRun(config, params, unroll_workers=True)}
    for run in runs.values():  # compile
        run(2 * run.rounds, 0)
    examples = (args.steps - args.skip) * config.num_workers * config.train.batch_size
    print(f"{config.num_workers} workers on {args.devices} device(s), batch "
          f"{config.train.batch_size} per worker, steps {args.skip}-{args.steps}; "
          f"load before {os.getloadavg()[0]:.2f}")
    print("| rep | batched examples/s | unrolled examples/s | unrolled / batched | "
          "last loss batched / unrolled |")
    print("|---|---|---|---|---|")
    ratios = []
    for rep in range(args.reps):
        order = list(runs) if rep % 2 == 0 else list(reversed(runs))
        rate, loss = {}, {}
        for name in order:
            seconds, loss[name] = runs[name](args.steps, args.skip)
            rate[name] = examples / seconds
        ratios.append(rate["unrolled"] / rate["batched"])
        print(f"| {rep + 1} | {rate['batched']:,.0f} | {rate['unrolled']:,.0f} | "
              f"{ratios[-1]:.3f} | {loss['batched']:.4f} / {loss['unrolled']:.4f} |",
              flush=True)
    print(f"median unrolled / batched: {np.median(ratios):.3f}; "
          f"load after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
