"""Scaling on one host: p workers, one per (simulated) device or all vmapped on one device.

    .venv/bin/python benchmarks/scaling.py                      # cnn1d, p = 1, 2, 4, 8
    .venv/bin/python benchmarks/scaling.py --model mlp --steps 20

For each p and layout the methods (default: the floor = Nesterov alone, EAMSGD(tau = 10)
and data-parallel SGD) are timed interleaved as in step_cost.py; the table gives examples
per second (p * batch * steps / median round time) and the fraction of time spent in the
exchange, estimated two ways:

- A, with vs without the exchange: 1 - T(floor) / T(method), same layout, same workload.
  This charges the method with everything the exchange costs: the collective, waiting for
  the slowest device at it, and the extra arithmetic of the method (elastic differences,
  the conditional);
- B, isolated collective: the median time of one psum of a parameter-sized float32 vector
  over the same layout (200 dependent psums in one compiled scan, divided by 200) times the
  number of collectives the method runs per round (from its compiled HLO, benchmarks/hlo.py:
  steps / tau in rounds of whole periods, as training/sync.py runs them), divided by T(method).
  It counts the collective alone, with all devices arriving at once.

On simulated CPU devices all "devices" share the host's cores and memory: an all-reduce is a
rendezvous plus memory copies, and p devices on 2 cores cannot run p times faster.
"""

from easgd_jax.parallel import use_simulated_cpu_devices  # sets flags only; jax not started

use_simulated_cpu_devices(8)

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks import common, hlo  # noqa: E402
from easgd_jax import parallel  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="cnn1d", choices=["cnn1d", "mlp", "cifar_cnn"])
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--layouts", nargs="+", default=["device", "vmap"],
                        choices=["device", "vmap"],
                        help="device: one worker per device; vmap: all p on one device")
    parser.add_argument("--methods", nargs="+", default=["floor", "eamsgd:10", "dp"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40, help="local steps per round")
    parser.add_argument("--repetitions", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--max-load", type=float, default=2.5)
    parser.add_argument("--wait", type=float, default=0.0,
                        help="seconds to wait at most, in all, for --max-load (checked before each "
                        "layout)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def collectives_per_round(runner: common.Runner) -> float:
    """How many collectives one round of ``runner`` executes (from its compiled HLO)."""
    period = common.method_period(runner.method)
    rate = 1.0 / period if period else 1.0
    return sum(hlo.executions_per_round(c, rate)
               for c in hlo.parse_collectives(runner.hlo_text()))


def main(argv=None) -> list[list]:
    args = parse_args(argv)
    if "floor" not in args.methods:
        args.methods = ["floor", *args.methods]
    workload = common.make_workload(args.model, args.hidden, args.seed)
    comm_methods = [m for m in args.methods if m != "floor"]
    rows, loads = [], []
    deadline = time.monotonic() + args.wait  # one waiting budget for the whole run
    for layout_kind in args.layouts:
        for p in args.workers:
            if layout_kind == "vmap" and p == 1:
                continue  # the same program as one worker on one device
            layout = parallel.make_worker_layout(p, p if layout_kind == "device" else 1)
            runners = {m: common.Runner(m, workload, layout, args.steps, args.batch_size,
                                        args.seed) for m in args.methods}
            common.compile_all(runners)
            executions = {m: collectives_per_round(runners[m]) for m in comm_methods}
            remaining = max(0.0, deadline - time.monotonic())
            loads.append(f"{layout_kind} p={p}: "
                         + common.wait_for_quiet(args.max_load, remaining))
            times = common.interleaved(runners, args.repetitions, args.warmup, args.seed).wall
            allreduce = common.allreduce_seconds(layout, workload.num_params) if p > 1 else 0.0
            medians = {m: float(np.median(t)) for m, t in times.items()}
            examples = p * args.batch_size * args.steps
            row = [p, f"{layout.workers_per_device}/device x {layout.num_devices}"]
            row += [f"{examples / medians[m]:.0f}" for m in args.methods]
            for m in comm_methods:
                share_a = float(np.median(1.0 - times["floor"] / times[m]))
                share_b = allreduce * executions[m] / medians[m]
                row += [f"{100 * share_a:.1f}%", f"{100 * share_b:.1f}%"]
            row += [f"{allreduce * 1e6:.0f}", ", ".join(f"{executions[m]:g}" for m in comm_methods)]
            rows.append(row)
            print(f"done: {layout_kind} p={p}", flush=True)

    headers = ["p", "layout", *[f"{m} ex/s" for m in args.methods]]
    for m in comm_methods:
        headers += [f"{m} exchange share A", f"{m} collective share B"]
    headers += ["psum us (isolated)", f"collectives/round ({', '.join(comm_methods)})"]
    print(f"\n## Scaling: {workload.name} ({workload.num_params} params), batch "
          f"{args.batch_size} per worker, {args.steps} steps per round, {args.repetitions} "
          f"interleaved repetitions\n")
    print(f"Machine: {common.machine_line()}  ")
    print("Load: " + "; ".join(loads) + "\n")
    print(common.markdown_table(headers, rows))
    return rows


if __name__ == "__main__":
    main()
