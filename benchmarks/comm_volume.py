"""Communication volume read from the compiled program, checked against the formula.

    .venv/bin/python benchmarks/comm_volume.py                  # cnn1d and mlp, p = 4
    .venv/bin/python benchmarks/comm_volume.py --workers 8 --models cnn1d

For every method the round (``--steps`` local steps in one ``lax.scan``) is compiled and its
HLO text parsed by ``benchmarks/hlo.py``: each collective's opcode, payload (dtype x
elements -> bytes one participant contributes), whether it sits inside a ``conditional``,
and the trip count of the loop around it. A collective inside the conditional runs when the
shared clock says so (``count % period == 0``: once every ``period`` steps, the first step
included); one outside runs every step. Bytes per worker per step from the HLO are then
compared with the formula, P the parameter bytes:

- EASGD / EAMSGD(tau): (P + 8 p) / tau (one all-reduce of the elastic differences per
  exchange, with the 2 p float32 checksums that check the workers' centers agree);
- data-parallel SGD: P (one all-reduce of the gradients per step);
- LSGD(tau): (P + 4 p) / tau (the gather of the p running losses, written as a psum of a
  one-hot float32 vector, then one masked psum of the parameters);
- floor (Nesterov alone): 0.

The periodic methods run as training/sync.py runs them (benchmarks/common.py): in rounds of whole
periods (``parallel.make_round(period=tau)``), where the collective sits in the loop over
periods, no conditional; ``eamsgd-cond:10`` is the per-step ``lax.cond`` form.

Bytes are per participant of the collective, i.e. per device: with one worker per device
that is per worker. With several workers per device (vmap) each device first reduces its
local workers and contributes ONE parameter vector. In the per-step conditional form
(``eamsgd-cond:10``) vmap turns the conditional into a select and the all-reduce runs every
step: the formula (per device, assuming the exchange every tau steps) is then off by a
factor tau; rounds of whole periods keep it at once per period. With d = 1 the all-reduce
has a group of one device and moves nothing (ring wire bytes 0). The vmapped rows are given
for eamsgd:10, eamsgd-cond:10, dp and lsgd:10. Nothing here is timed.
"""

from easgd_jax.parallel import use_simulated_cpu_devices  # sets flags only; jax not started

use_simulated_cpu_devices(8)

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common, hlo  # noqa: E402
from easgd_jax import parallel  # noqa: E402

VMAP_METHODS = ("eamsgd:10", "eamsgd-cond:10", "dp", "lsgd:10")


def formula_bytes(method: str, param_bytes: int, num_workers: int) -> float:
    """Payload bytes per worker per step that the method should send (module docstring)."""
    name, _, arg = method.partition(":")
    name = name.removesuffix("-cond")
    if name == "floor":
        return 0.0
    if name == "dp":
        return float(param_bytes)
    if name in ("easgd", "eamsgd"):
        return (param_bytes + 8 * num_workers) / int(arg)
    if name == "lsgd":
        return (param_bytes + 4 * num_workers) / int(arg)
    raise ValueError(method)


def describe(c: hlo.Collective) -> str:
    where = "cond" if c.inside_conditional else f"{hlo.executions_per_round(c):g}x per round"
    return f"{c.op} {c.dtype}[{c.elements}] ({where})"


def measure(method: str, workload: common.Workload, layout: parallel.WorkerLayout,
            steps: int) -> dict:
    """Collectives of one method's round and the bytes they move per worker per step."""
    runner = common.Runner(method, workload, layout, steps, batch_size=8)
    collectives = hlo.parse_collectives(runner.hlo_text())
    period = common.method_period(method)
    rate = 1.0 / period if period else 1.0
    per_device = hlo.bytes_per_step(collectives, steps, rate)
    per_round = sum(hlo.executions_per_round(c, rate) for c in collectives)
    return {
        "collectives": collectives,
        "per_round": per_round,
        "per_device": per_device,
        "wire_per_device": sum(
            hlo.ring_allreduce_wire_bytes(c.bytes, c.group_size or layout.num_devices)
            * hlo.executions_per_round(c, rate) for c in collectives) / steps,
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["cnn1d", "mlp", "cifar_cnn"],
                        choices=["cnn1d", "mlp", "cifar_cnn"])
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--workers", type=int, default=4, help="p")
    parser.add_argument("--periods", type=int, nargs="+", default=[1, 4, 10, 64])
    parser.add_argument("--lsgd-period", type=int, default=10)
    parser.add_argument("--steps", type=int, default=0,
                        help="local steps per round (default: lcm of the periods and 10)")
    return parser.parse_args(argv)


def main(argv=None) -> list[list]:
    args = parse_args(argv)
    steps = args.steps or math.lcm(*args.periods, args.lsgd_period, 10)  # 10: easgd:10, ...
    p = args.workers
    # One worker per device, then vmapped workers on 2 devices and on 1 device.
    device_counts = [p, *[d for d in (2, 1) if d < p and p % d == 0]]
    layouts = [parallel.make_worker_layout(p, d) for d in device_counts]
    methods = ["floor", *[f"eamsgd:{tau}" for tau in args.periods], "eamsgd-cond:10",
               "easgd:10", "dp", f"lsgd:{args.lsgd_period}"]
    print(f"Machine: {common.machine_line()}\n")
    all_rows = []
    for model_name in args.models:
        workload = common.make_workload(model_name, args.hidden)
        rows = []
        for layout in layouts:
            k = layout.workers_per_device
            label = f"{k}/device" + (" (vmap)" if k > 1 else "")
            for method in methods:
                if k > 1 and method not in VMAP_METHODS:
                    continue
                m = measure(method, workload, layout, steps)
                formula = formula_bytes(method, workload.param_bytes, p)
                ratio = m["per_device"] / formula if formula else float(m["per_device"] > 0)
                rows.append([
                    method, f"{label}, d={layout.num_devices}",
                    "; ".join(describe(c) for c in m["collectives"]) or "none",
                    f"{m['per_round']:g}", f"{m['per_device']:.1f}", f"{formula:.1f}",
                    "yes" if math.isclose(ratio, 1.0) or (formula == 0 == m["per_device"])
                    else f"no (x{ratio:.2f})", f"{m['wire_per_device']:.1f}"])
        print(f"## Communication volume: {workload.name}, {workload.num_params} parameters = "
              f"{workload.param_bytes} bytes (float32), p = {p}, {steps} steps per round\n")
        print(common.markdown_table(
            ["method", "layout", "collectives in the compiled round",
             "collective executions/round", "HLO bytes/step/device",
             "formula bytes/step/device", "agrees", "ring wire bytes/step/device"], rows))
        print()
        all_rows += rows
    return all_rows


if __name__ == "__main__":
    main()
