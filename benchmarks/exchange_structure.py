"""Where EAMSGD's per-step overhead comes from, and a round structure without it (a prototype).

    .venv/bin/python benchmarks/exchange_structure.py                  # cnn1d, p = 4
    .venv/bin/python benchmarks/exchange_structure.py --model mlp
    .venv/bin/python benchmarks/exchange_structure.py --devices 1      # p = 4 vmapped

The library's EAMSGD decides at EVERY step, inside the optimizer, whether to exchange
(``lax.cond`` on the shared clock): every step carries the center through the conditional,
returns a zero elastic delta on non-exchange steps and adds it, and the loop carries (and
XLA copies) the center next to the parameters and the velocity. Compared per local step:

- ``floor``: Nesterov alone, no communication;
- ``eamsgd:TAU``: the library (``easgd_jax.eamsgd`` under ``parallel.make_round``);
- ``chunked:TAU``: the SAME algorithm under a round that knows the period (a prototype
  here, not library code): an outer ``lax.scan`` over chunks of TAU steps, each one
  exchange step (``eamsgd`` with period 1: local step + elastic force + the all-reduce)
  followed by an inner ``lax.scan`` of TAU - 1 plain Nesterov steps on the inner state. Its
  non-exchange steps are exactly the floor's program, and under vmap the all-reduce still
  runs once per TAU steps (there is no conditional to turn into a select).

Before timing, one round of ``chunked`` and of the library are run from the same state on
the same batches and their parameters compared (they must agree to float32 rounding).
Timing as in step_cost.py (interleaved, paired ratios, wall and CPU time).
"""

from easgd_jax.parallel import use_simulated_cpu_devices  # sets flags only; jax not started

use_simulated_cpu_devices(8)

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

import easgd_jax  # noqa: E402
from benchmarks import common, hlo  # noqa: E402
from easgd_jax import parallel  # noqa: E402
from easgd_jax.train import TrainState, make_local_step  # noqa: E402


def make_chunked(workload: common.Workload, layout: parallel.WorkerLayout, period: int):
    """``(tx, round)``: EAMSGD(period) run as [exchange step, period - 1 plain steps]*."""
    p = layout.num_workers
    tx = easgd_jax.eamsgd(common.LEARNING_RATE, common.MOMENTUM, 0.9 / p, 1,
                          axis_name=layout.axis_name)
    exchange_step = make_local_step(workload.model, tx, 0.0)
    plain_step = make_local_step(
        workload.model, easgd_jax.nesterov(common.LEARNING_RATE, common.MOMENTUM), 0.0)

    def chunk(carry: TrainState, batch):
        carry, first_loss = exchange_step(carry, jax.tree.map(lambda b: b[0], batch))
        opt = carry.opt_state
        inner = TrainState(carry.params, opt.inner_state, carry.rng)
        inner, losses = lax.scan(plain_step, inner, jax.tree.map(lambda b: b[1:], batch))
        carry = TrainState(inner.params, opt._replace(inner_state=inner.opt_state), inner.rng)
        return carry, jnp.concatenate([first_loss[None], losses])

    def worker_round(carry: TrainState, batches):
        chunks = jax.tree.map(lambda b: b.reshape(-1, period, *b.shape[1:]), batches)
        carry, losses = lax.scan(chunk, carry, chunks)
        return carry, losses.reshape(-1)

    return tx, parallel.per_worker(worker_round, layout, donate_argnums=(0,))


def chunked_ops_per_step(runner: common.Runner, period: int) -> float:
    """Top-level HLO instructions per step of the chunked round (outer body + inner body)."""
    text = runner.hlo_text()
    outer = hlo.ops_per_iteration(text, runner.steps // period)
    inner = hlo.ops_per_iteration(text, period - 1)
    return (sum(outer.values()) + inner.get("body", 0) * (period - 1)) / period


def check_same_algorithm(workload, layout, period, steps, batch_size, seed) -> float:
    """Max |difference| of the parameters after one round, library vs chunked."""
    library = common.Runner(f"eamsgd:{period}", workload, layout, steps, batch_size, seed)
    tx, round_fn = make_chunked(workload, layout, period)
    chunked = common.Runner(f"chunked:{period}", workload, layout, steps, batch_size, seed,
                            tx=tx, round_fn=round_fn)
    library(), chunked()
    diffs = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                         library.state.params, chunked.state.params)
    return max(jax.tree.leaves(diffs))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="cnn1d", choices=["cnn1d", "mlp"])
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--devices", type=int, default=0, help="default: p (one per device)")
    parser.add_argument("--period", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=80, help="a multiple of --period")
    parser.add_argument("--repetitions", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--max-load", type=float, default=2.5)
    parser.add_argument("--wait", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    tau, steps = args.period, args.steps
    if steps % tau:
        raise SystemExit(f"--steps {steps} must be a multiple of --period {tau}")
    layout = parallel.make_worker_layout(args.workers, args.devices or None)
    workload = common.make_workload(args.model, args.hidden, args.seed)
    difference = check_same_algorithm(workload, layout, tau, steps, args.batch_size, args.seed)

    tx, round_fn = make_chunked(workload, layout, tau)
    runners = {
        "floor": common.Runner("floor", workload, layout, steps, args.batch_size, args.seed),
        f"eamsgd:{tau}": common.Runner(f"eamsgd:{tau}", workload, layout, steps,
                                       args.batch_size, args.seed),
        f"chunked:{tau}": common.Runner(f"chunked:{tau}", workload, layout, steps,
                                        args.batch_size, args.seed, tx=tx, round_fn=round_fn),
    }
    common.compile_all(runners)
    ops = {"floor": runners["floor"].ops_per_step(),
           f"eamsgd:{tau}": runners[f"eamsgd:{tau}"].ops_per_step(),
           f"chunked:{tau}": chunked_ops_per_step(runners[f"chunked:{tau}"], tau)}
    collectives = {}
    for name, runner in runners.items():
        found = hlo.parse_collectives(runner.hlo_text())
        rate = 1.0 / tau if name.startswith("eamsgd") else 1.0
        collectives[name] = sum(hlo.executions_per_round(c, rate) for c in found) / steps
    load = common.wait_for_quiet(args.max_load, args.wait)
    timings = common.interleaved(runners, args.repetitions, args.warmup, args.seed)
    load_end = common.load_average()

    rows = []
    for name in runners:
        wall, cpu = timings.wall[name] / steps, timings.cpu[name] / steps
        ratio = common.Summary.of(wall / (timings.wall["floor"] / steps))
        cpu_ratio = common.Summary.of(cpu / (timings.cpu["floor"] / steps))
        rows.append([name, f"{np.median(wall) * 1e6:.0f}", f"**{ratio.median:.3f}**",
                     f"{ratio.q25:.3f}-{ratio.q75:.3f}", f"{cpu_ratio.median:.3f}",
                     f"{cpu_ratio.q25:.3f}-{cpu_ratio.q75:.3f}", f"{collectives[name]:.3g}",
                     f"{ops[name]:.1f}", f"{runners[name].final_loss():.3f}"])
    print(f"## Exchange structure: {workload.name} ({workload.num_params} params), p = "
          f"{layout.num_workers} on {layout.num_devices} device(s) "
          f"({layout.workers_per_device} per device), period {tau}, batch {args.batch_size}, "
          f"{steps} steps per round, {args.repetitions} interleaved repetitions\n")
    print(f"Machine: {common.machine_line()}  ")
    print(f"Load: {load}; {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f} at the end  ")
    print(f"Same algorithm: max |params(chunked) - params(library)| after one round = "
          f"{difference:.2e}\n")
    print(common.markdown_table(
        ["method", "wall us/step", "wall ratio to floor", "ratio IQR", "CPU ratio to floor",
         "CPU ratio IQR", "collectives/step (HLO)", "HLO ops/step", "final loss"], rows))


if __name__ == "__main__":
    main()
