r"""Time per local step: EAMSGD at several periods vs the no-communication floor and
synchronous data-parallel SGD, same model, same p, one process, interleaved.

    .venv/bin/python benchmarks/step_cost.py                       # cnn1d, p = 4, 4 devices
    .venv/bin/python benchmarks/step_cost.py --model mlp --workers 8

Methods (benchmarks/common.py): ``floor`` = the inner optimizer alone (Nesterov, no
collective); ``eamsgd:TAU``; ``dp`` = all-reduce of the gradients every step, then the same
Nesterov step. Each round is ``--steps`` local steps compiled as one program (a
``lax.scan``); the time per step is round time / steps. The clock of the algorithms runs on
across rounds, so every method exchanges once every TAU steps on average whatever
``--steps`` is. Repetitions are interleaved: every repetition runs every method once, in a
freshly shuffled order. Reported: median, quartiles and min-max of the wall time per step,
and the ratio to the floor as the median (and quartiles) of the per-repetition ratios
method / floor (each pair timed within the same repetition, so slow drift cancels); the
same for the process CPU time, which other jobs on the machine disturb much less.
Also given: the top-level HLO instructions run per step (``hlo.ops_per_iteration``; on
XLA:CPU roughly one thunk each, with a fixed dispatch cost), the diagnostic row
``eamsgd-nocomm:10``, EAMSGD with its all-reduce traced out, which splits the overhead over
the floor into the collective (eamsgd / eamsgd-nocomm) and the rest (eamsgd-nocomm / floor),
and ``eamsgd-cond:10``, the same algorithm with a per-step ``lax.cond`` on its clock (what
runs when a round is not a whole number of periods).

    .venv/bin/python benchmarks/step_cost.py --model cifar_cnn --batch-size 16 \
        --steps 40 --periods 1 4 10 --repetitions 8       # the paper's CIFAR net, fewer steps
"""

from easgd_jax.parallel import use_simulated_cpu_devices  # sets flags only; jax not started

use_simulated_cpu_devices(8)

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from easgd_jax import parallel  # noqa: E402

TARGET_PERIOD = 10
TARGET_OVERHEAD = 0.03


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="cnn1d", choices=["cnn1d", "mlp", "cifar_cnn"])
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256],
                        help="MLP hidden widths")
    parser.add_argument("--workers", type=int, default=4, help="p")
    parser.add_argument("--devices", type=int, default=0,
                        help="devices (default: p, one worker per device)")
    parser.add_argument("--periods", type=int, nargs="+", default=[1, 4, 10, 64])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=320,
                        help="local steps per round (the clock runs on across rounds, so "
                        "each method exchanges every period steps on average; a round "
                        "that is whole periods runs as training/sync.py runs it, see common.py)")
    parser.add_argument("--repetitions", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--max-load", type=float, default=2.5,
                        help="wait until the 1-minute load is at most this")
    parser.add_argument("--wait", type=float, default=0.0,
                        help="seconds to wait at most for --max-load (0: do not wait)")
    parser.add_argument("--no-diagnostic", dest="diagnostic", action="store_false",
                        help=f"leave out eamsgd-nocomm:{TARGET_PERIOD} (EAMSGD without its "
                        "all-reduce, common.py)")
    parser.add_argument("--no-cond", dest="cond", action="store_false",
                        help=f"leave out eamsgd-cond:{TARGET_PERIOD} (the per-step conditional "
                        "on the clock instead of rounds of whole periods, common.py)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def _us(x: float) -> str:
    return f"{x * 1e6:.0f}"


def main(argv=None) -> dict[str, common.Summary]:
    args = parse_args(argv)
    steps = args.steps
    layout = parallel.make_worker_layout(args.workers, args.devices or None)
    workload = common.make_workload(args.model, args.hidden, args.seed)
    methods = ["floor", *[f"eamsgd:{tau}" for tau in args.periods], "dp"]
    if args.diagnostic and TARGET_PERIOD in args.periods:
        methods.append(f"eamsgd-nocomm:{TARGET_PERIOD}")
    if args.cond and TARGET_PERIOD in args.periods:
        methods.append(f"eamsgd-cond:{TARGET_PERIOD}")
    runners = {m: common.Runner(m, workload, layout, steps, args.batch_size, args.seed)
               for m in methods}
    common.compile_all(runners)
    ops = {m: r.ops_per_step() for m, r in runners.items()}
    load = common.wait_for_quiet(args.max_load, args.wait)
    timings = common.interleaved(runners, args.repetitions, args.warmup, args.seed)
    load_end = common.load_average()

    wall = {m: t / steps for m, t in timings.wall.items()}
    cpu = {m: t / steps for m, t in timings.cpu.items()}
    summaries = {m: common.Summary.of(t) for m, t in wall.items()}
    rows = []
    for m in methods:
        s = summaries[m]
        ratio = common.Summary.of(wall[m] / wall["floor"])
        cpu_ratio = common.Summary.of(cpu[m] / cpu["floor"])
        period = common.method_period(m)
        rate = 0.0 if period == 0 or m.startswith("eamsgd-nocomm") else 1.0 / period
        rows.append([
            m, _us(s.median), f"{_us(s.q25)}-{_us(s.q75)}", f"{_us(s.low)}-{_us(s.high)}",
            f"**{ratio.median:.3f}**", f"{ratio.q25:.3f}-{ratio.q75:.3f}",
            _us(float(np.median(cpu[m]))), f"{cpu_ratio.median:.3f}",
            f"{cpu_ratio.q25:.3f}-{cpu_ratio.q75:.3f}", f"{rate:.3g}", f"{ops[m]:.1f}",
            f"{runners[m].final_loss():.3f}"])
    print(f"## Step cost: {workload.name} ({workload.num_params} params, "
          f"{workload.param_bytes} bytes), p = {layout.num_workers} on {layout.num_devices} "
          f"device(s) ({layout.workers_per_device} per device), batch {args.batch_size} per "
          f"worker, {steps} steps per round, {args.repetitions} interleaved repetitions\n")
    print(f"Machine: {common.machine_line()}  ")
    print(f"Load: {load}; {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f} at the end\n")
    print(common.markdown_table(
        ["method", "wall us/step (median)", "IQR", "min-max", "wall ratio to floor",
         "ratio IQR", "CPU us/step", "CPU ratio to floor", "CPU ratio IQR",
         "collectives/step", "HLO ops/step", "final loss"], rows))
    target = f"eamsgd:{TARGET_PERIOD}"
    if target in summaries:
        ratio = float(np.median(wall[target] / wall["floor"]))
        verdict = "met" if ratio <= 1 + TARGET_OVERHEAD else "NOT met"
        print(f"\nTarget (EAMSGD period {TARGET_PERIOD} <= {1 + TARGET_OVERHEAD:.2f} x floor, "
              f"wall): {verdict}, overhead {100 * (ratio - 1):+.1f}%")
    return summaries


if __name__ == "__main__":
    main()
