"""The simulated cluster clock (``easgd_jax.parallel.cluster``) against wall time measured here.

The cost model charges t compute + n exchanges x T(bytes) (module docstring there). Where
this machine can play the cluster (one worker per CPU core: p = 1 and p = 2 on 2 simulated
devices; the threaded parameter server with 2 workers), its parameters are measured first,
apart from the runs they then predict:

- ``compute_s``: one worker's local step, measured alone (p = 1) and, for p = 2, as the
  step time of 2 workers on 2 devices that never exchange (EAMSGD with tau = num_steps: one
  exchange in the run), since the 2 workers share the 2 cores' memory and caches;
- the ring's link (synchronous runs): an all-reduce of P and 16 P float32 over the 2 devices,
  timed apart (median of 50); T_ring(b, 2) = 2 latency + b / bandwidth gives both;
- the parameter server's link (threads): fitted on a run that exchanges every step (tau = 1)
  against the threads' no-exchange floor, then used to predict tau = 4 and 10 (each threads
  figure the median of 3 runs: the threads interleave differently every run).

Each run is the main job's model and data (MNIST-1D, cnn1d, batch 128), ``--steps`` local
steps (``--threads_steps`` for the threads), evaluations every third: measured = wall
seconds between the first two evaluations (``step / steps_per_second`` of the metrics
lines); predicted = the simulated time between the same steps (the run's own
``simulated_time_s`` with the measured parameters in ``config.cluster``; for threads,
:func:`cluster.cluster_schedule`).

    python -m benchmarks.cluster_validation [--steps 1200] [--threads_steps 3000]
    python -m benchmarks.cluster_validation --threads_only --threads_reps 5

At p = 2 on one host the exchange is a few percent of a step, so these rows cannot fail a
20% tolerance; ``benchmarks/netns_validation.py`` checks the clock where the exchange is
most of a step (2 processes in 2 network namespaces joined by a bandwidth-limited veth).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

from easgd_jax import parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(algorithm: str, num_workers: int, num_devices: int, period: int | None,
            steps: int, executor: str = "sync"):
    sys.path.insert(0, ROOT)
    from easgd_jax.configs import tuned
    from easgd_jax.training import config as config_lib

    config = config_lib.defaults()
    config.algorithm = tuned.algorithm(algorithm, num_workers)
    if period is not None:
        config.algorithm.period = period
    config.num_workers, config.num_devices, config.executor = num_workers, num_devices, executor
    config.train.num_steps, config.train.eval_every = steps, steps // 3
    if period is not None and period > steps // 3:  # the no-exchange floor: 50-step rounds
        config.train.steps_per_round = 50
    config.checkpoint.every = 0
    config.tensorboard = False
    if executor != "sync":
        config.asynchrony.schedule = "clocks"
    return config


def _measured_and_simulated(config) -> tuple[float, float | None]:
    """(wall seconds, simulated seconds) between the first and the last evaluation."""
    from easgd_jax.training import train_and_evaluate
    from easgd_jax.training.metrics import read_metrics

    with tempfile.TemporaryDirectory() as workdir:
        train_and_evaluate(config, workdir)
        records = read_metrics(workdir)
    # The first two lines: the threads' last line counts its seconds apart (compilation out).
    first, last = records[0], records[1]
    wall = last["step"] / last["steps_per_second"] - first["step"] / first["steps_per_second"]
    simulated = (last["simulated_time_s"] - first["simulated_time_s"]
                 if "simulated_time_s" in last else None)
    return wall, simulated


def _allreduce_seconds(num_floats: int, repeats: int = 50) -> float:
    """Median time of one all-reduce of ``num_floats`` float32 over 2 workers on 2 devices
    (the exchange of EASGD, the gradient all-reduce of data-parallel SGD)."""
    import time

    import jax

    layout = parallel.make_worker_layout(2, 2)
    reduce = parallel.per_worker(lambda v: jax.lax.psum(v, layout.axis_name), layout)
    vector = jax.device_put(np.zeros((2, num_floats), np.float32), layout.worker_sharding())
    jax.block_until_ready(reduce(vector))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(reduce(vector))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _one_worker_step(config) -> float:
    import jax

    from easgd_jax.training import simulated_time
    from easgd_jax.training.common import init_params, load_data_and_model

    dataset, model = load_data_and_model(config)
    params = init_params(model, dataset.example_shape, jax.random.PRNGKey(0))
    return simulated_time._measure_step(model, params, dataset.example_shape,
                                        config.train.batch_size, config.train.weight_decay,
                                        repeats=20)


def _row(name: str, predicted: float, measured: float, steps: int) -> str:
    return (f"| {name} | {1e3 * predicted / steps:.3f} | {1e3 * measured / steps:.3f} | "
            f"{predicted / measured:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--threads_steps", type=int, default=3000)
    parser.add_argument("--threads_reps", type=int, default=3,
                        help="runs per threads figure (their median)")
    parser.add_argument("--threads_only", action="store_true",
                        help="skip the synchronous part")
    args = parser.parse_args()
    parallel.use_simulated_cpu_devices(2)
    import jax

    from easgd_jax.parallel import cluster

    steps, span = args.steps, args.steps // 3
    print(f"load before: {os.getloadavg()[0]:.2f}; {jax.device_count()} devices; "
          f"{steps} steps, measured from step {span} to {2 * span}")
    if not args.threads_only:
        base = _config("eamsgd", 1, 1, 10, steps)
        c1 = _one_worker_step(base)
        floor = _config("eamsgd", 2, 2, steps, steps)
        floor.cluster.compute_s_per_step = c1
        c2 = _measured_and_simulated(floor)[0] / span
        size = 21962  # cnn1d's parameters
        t1, t16 = _allreduce_seconds(size), _allreduce_seconds(16 * size)
        # T = 2 latency + b / bandwidth for p = 2 (b = 4 P bytes).
        bandwidth = 15 * 4 * size / max(t16 - t1, 1e-9)
        latency = max((t1 - 4 * size / bandwidth) / 2, 0.0)
        print(f"calibration: one worker alone {1e3 * c1:.3f} ms/step; two workers on two "
              f"devices without exchanges {1e3 * c2:.3f} ms/step; all-reduce of {4 * size} B "
              f"{1e6 * t1:.1f} us, of {64 * size} B {1e6 * t16:.1f} us -> bandwidth "
              f"{bandwidth / 1e9:.2f} GB/s, latency {1e6 * latency:.1f} us")
        print("\n| configuration | predicted ms/step | measured ms/step | predicted / measured |")
        print("|---|---|---|---|")
        runs = [("sync, p = 1, EAMSGD tau = 10", _config("eamsgd", 1, 1, 10, steps), c1),
                ("sync, p = 2 on 2 devices, EAMSGD tau = 10", _config("eamsgd", 2, 2, 10, steps),
                 c2),
                ("sync, p = 2 on 2 devices, EAMSGD tau = 1", _config("eamsgd", 2, 2, 1, steps), c2),
                ("sync, p = 2 on 2 devices, data-parallel SGD",
                 _config("data_parallel_sgd", 2, 2, None, steps), c2)]
        for name, config, compute in runs:
            config.cluster.compute_s_per_step = compute
            config.cluster.bandwidth_gbit_s = 8 * bandwidth / 1e9
            config.cluster.latency_us = 1e6 * latency
            measured, simulated = _measured_and_simulated(config)
            print(_row(name, simulated, measured, span), flush=True)

    # The threaded parameter server: the floor (no exchange), the link fitted at tau = 1;
    # longer runs (the threads' step times vary more than the compiled rounds').
    tsteps, tspan = args.threads_steps, args.threads_steps // 3
    if args.threads_only:
        print("\n| configuration | predicted ms/step | measured ms/step | predicted / measured |")
        print("|---|---|---|---|")

    def threads(period: int):
        return _config("async_eamsgd", 2, 1, period, tsteps, executor="threads")

    def threads_wall(period: int) -> float:  # the threads interleave anew: a median
        return float(np.median([_measured_and_simulated(threads(period))[0]
                                for _ in range(args.threads_reps)]))

    floor_wall = threads_wall(tsteps)
    c_threads = floor_wall / tspan
    every_wall = threads_wall(1)

    def predict(period: int, hold_s: float) -> float:
        # A link of 1 B/s and no latency: a push and a pull of hold / 2 "bytes" hold it hold_s.
        c = cluster.Cluster(c_threads, 1.0, 0.0, "parameter_server")
        s = cluster.cluster_schedule(c, 2, 2 * tsteps, period, hold_s / 2, seed=0, spread=0.0)
        return float(s.times[2 * 2 * tspan - 1] - s.times[2 * tspan - 1])

    low, high = 0.0, 10 * c_threads  # bisection on the link's hold per exchange
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if predict(1, mid) < every_wall else (low, mid)
    hold = (low + high) / 2
    print(f"| threads, p = 2, no exchange (the floor: compute) | - | {1e3 * c_threads:.3f} "
          "| - |")
    print(f"| threads, p = 2, tau = 1 (fits the link: {1e6 * hold:.1f} us per push + pull) | "
          f"{1e3 * predict(1, hold) / tspan:.3f} | {1e3 * every_wall / tspan:.3f} | fitted |")
    for period in (4, 10):
        measured = threads_wall(period)
        print(_row(f"threads, p = 2, async EAMSGD tau = {period}", predict(period, hold),
                   measured, tspan), flush=True)
    print(f"\nload after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
