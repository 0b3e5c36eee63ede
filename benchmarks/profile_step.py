"""Where a step of the main job spends its time: the top XLA:CPU thunks of its compiled round.

Runs the main job's compiled round (``benchmarks/vs_pytorch.py``'s JAX side: EAMSGD, p = 4,
tau = 10, MNIST-1D ``cnn1d``, batch 128 per worker) for ``--steps`` steps under
``jax.profiler`` after a warm-up, reads the trace (its Perfetto JSON) and prints one row per
HLO instruction the CPU runtime executed (a fusion, a dot, a YNNPACK fusion, a collective),
summed over every device thread: milliseconds per step, share of the instructions' total,
executions per step, and the instruction's shape, kind and the JAX operation it came from
(from the compiled HLO's metadata). A ``dot`` row is a dot XLA ran in Eigen; a
``ynn_fusion`` row ran in YNNPACK. Times are traced times (tracing adds a little to each).

    python -m benchmarks.profile_step --devices 1 --steps 200 --top 15
    python -m benchmarks.profile_step --devices 4
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile
from collections.abc import Sequence
from typing import Any

from easgd_jax import parallel

# Trace events that are not HLO instructions: the runtime's wrappers and Python frames.
NOT_INSTRUCTIONS = re.compile(r"^(\$|Thunk|Pjit|CommonPjRt|Rendezvous|Wait:|SlinkyThreadPool|"
                              r"PjRt|TfrtCpu|XlaModule|ExecuteHelper|shard_args|Execute)")
INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = (\S+) (\S+?)\((.*)$")


def instruction_table(hlo_text: str) -> dict[str, dict[str, str]]:
    """HLO instruction name -> its shape, opcode (a fusion's kind) and JAX op_name."""
    table = {}
    for line in hlo_text.splitlines():
        m = INSTRUCTION.match(line)
        if not m:
            continue
        name, shape, opcode, rest = m.groups()
        kind = re.search(r"kind=(\w+)", rest)
        op_name = re.search(r'op_name="([^"]*)"', rest)
        table[name] = {"shape": shape.split("{")[0],
                       "opcode": opcode + (f" {kind[1]}" if kind and opcode == "fusion" else ""),
                       "op": op_name[1].split("/")[-1] if op_name else ""}
    return table


def thunk_times(trace_dir: str) -> tuple[collections.Counter, collections.Counter]:
    """Total traced microseconds and number of executions per event name, over every
    thread, from the Perfetto JSON that ``jax.profiler`` writes under ``trace_dir``."""
    (path,) = glob.glob(os.path.join(trace_dir, "plugins", "profile", "*",
                                     "perfetto_trace.json.gz"))
    with gzip.open(path, "rt", encoding="utf-8") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    totals: collections.Counter = collections.Counter()
    counts: collections.Counter = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and not NOT_INSTRUCTIONS.match(event["name"]):
            totals[event["name"]] += event.get("dur", 0)
            counts[event["name"]] += 1
    return totals, counts


def profile(num_devices: int, steps: int) -> tuple[list[dict[str, Any]], float]:
    """Rows (name, ms per step, share, calls per step, shape, opcode, op) for ``steps``
    traced steps of the main job's round, most time first; and the traced wall seconds per
    step."""
    import time

    import jax

    from benchmarks.vs_pytorch import JaxRun, initial_params, main_config
    from easgd_jax.training.common import load_data_and_model

    config = main_config(num_devices, steps, steps // 2)
    dataset, model = load_data_and_model(config)
    run = JaxRun(config, initial_params(model, dataset.example_shape, config.seed))
    run(steps, steps // 2)  # compile and warm up
    hlo = run.round.lower(run.initial_state(), run.batches(0)).compile().as_text()
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
        start = time.perf_counter()
        run(steps, 0)
        wall = time.perf_counter() - start
        jax.profiler.stop_trace()
        totals, counts = thunk_times(trace_dir)
    table = instruction_table(hlo)
    known = {name: us for name, us in totals.items() if name in table}
    total = sum(known.values())
    rows = [{"name": name, "ms_per_step": us / 1e3 / steps, "share": us / total,
             "calls_per_step": counts[name] / steps, **table[name]}
            for name, us in sorted(known.items(), key=lambda kv: -kv[1])]
    return rows, wall / steps


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=1, help="1: the 4 workers vmapped on "
                        "one device; 4: one worker per simulated device")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    parallel.use_simulated_cpu_devices(max(args.devices, 1))
    rows, wall = profile(args.devices, args.steps)
    print(f"main job's round, {args.devices} device(s), {args.steps} traced steps: "
          f"{1e3 * wall:.2f} ms per step (traced); load {os.getloadavg()[0]:.2f}")
    print("| instruction | ms/step | share | calls/step | shape | kind | from |")
    print("|---|---|---|---|---|---|---|")
    for r in rows[:args.top]:
        print(f"| {r['name']} | {r['ms_per_step']:.3f} | {100 * r['share']:.1f}% | "
              f"{r['calls_per_step']:g} | {r['shape']} | {r['opcode']} | {r['op']} |")
    eigen = [r for r in rows if r["opcode"] == "dot"]
    print(f"dots run in Eigen: {len(eigen)}, {100 * sum(r['share'] for r in eigen):.1f}% of "
          "the instructions' time")
    return rows


if __name__ == "__main__":
    main()
