"""Workers that span devices: the communication and the memory of the synchronous executor's
compiled round, read from the program XLA compiled (nothing here is timed).

    .venv/bin/python benchmarks/sharded_workers.py                 # EAMSGD, 2 workers
    .venv/bin/python benchmarks/sharded_workers.py --algorithm diloco --period 8

The run is the executor's own (``training.sync``'s layout, transformation, state and round):
``config.worker_devices`` gives each of the 2 workers data x fsdp simulated CPU devices, on
digits with an MLP of hidden (256, 256) (84k parameters). For each layout:

- **communication**: every collective of one compiled round of ``--period`` x 2 local steps
  (``benchmarks/hlo.py``): its opcode, the size of its replica groups and the first group
  (the exchange's all-reduce pairs the same shard across workers: device i of worker 0 with
  device i of worker 1), elements per device, how many times it runs per round. The
  exchange runs once per period and carries (params + checksums) / fsdp numbers per
  device; the collectives inside a worker (FSDP gathers, the data all-reduce) run every
  step;
- **memory**: the per-device bytes of the round's state (params, inner optimizer state,
  center: the state's own shards on device 0) and XLA's memory analysis of the compiled
  round (arguments, outputs, temporaries), against fsdp = 1.
"""

from easgd_jax.parallel import use_simulated_cpu_devices  # sets flags only; jax not started

use_simulated_cpu_devices(8)

import argparse  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import hlo  # noqa: E402
from easgd_jax.configs import default  # noqa: E402
from easgd_jax.training import sync  # noqa: E402
from easgd_jax.training.plan import make_plan  # noqa: E402

LAYOUTS = ((1, 1), (1, 2), (1, 4), (2, 2))  # (data, fsdp) per worker


def _config(algorithm: str, period: int, data: int, fsdp: int):
    config = default.get_config()
    config.algorithm.name = algorithm
    if algorithm == "diloco":
        config.algorithm = {"name": "diloco", "learning_rate": 0.05, "momentum": 0.9,
                            "period": period}
    config.algorithm.period = period
    config.num_workers, config.num_devices = 2, 2 * data * fsdp
    config.worker_devices.data, config.worker_devices.fsdp = data, fsdp
    config.data.name, config.model.name = "digits", "mlp"
    config.model.kwargs = {"hidden": (256, 256)}
    config.train.batch_size = 32
    config.train.steps_per_round = 2 * period
    config.train.num_steps = config.train.eval_every = config.checkpoint.every = 2 * period
    config.cluster.compute_s_per_step = 1e-3
    config.tensorboard = False
    return config


def _first_group(text: str, name: str) -> list[int] | None:
    """The first replica group of collective ``name`` in compiled HLO ``text``: listed
    (``{{0,4},...}``) or in XLA's iota form (``[4,2]<=[2,2,2]T(1,0,2)``)."""
    line = re.search(rf"%{re.escape(name)} = [^\n]*", text)
    if line is None:
        return None
    listed = re.search(r"replica_groups=\{\{([\d,]+)\}", line.group(0))
    if listed:
        return [int(d) for d in listed.group(1).split(",")]
    iota = re.search(r"replica_groups=\[([\d,]+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?",
                     line.group(0))
    if iota is None:
        return None
    groups_shape = [int(d) for d in iota.group(1).split(",")]
    ids = np.arange(math.prod(int(d) for d in iota.group(2).split(",")))
    ids = ids.reshape([int(d) for d in iota.group(2).split(",")])
    if iota.group(3):
        ids = ids.transpose([int(d) for d in iota.group(3).split(",")])
    return ids.reshape(groups_shape)[0].tolist()


def _role(group: list[int] | None, data: int, fsdp: int) -> str:
    """Which axis a replica group spans, from the stride between its devices (the mesh is
    workers x data x fsdp, row-major)."""
    if not group or len(group) < 2:
        return "?"
    stride = group[1] - group[0]
    if stride == data * fsdp:
        return "workers"
    if data > 1 and stride == fsdp:
        return "data"
    return "fsdp" if stride == 1 and fsdp > 1 else "?"


def _state_bytes_on_device0(state) -> int:
    device = jax.devices()[0]
    return sum(shard.data.nbytes for leaf in jax.tree.leaves(state)
               for shard in leaf.addressable_shards if shard.device == device)


def measure(algorithm: str, period: int, data: int, fsdp: int) -> dict:
    config = _config(algorithm, period, data, fsdp)
    with tempfile.TemporaryDirectory() as workdir:
        run = sync._build(config, make_plan(config), workdir, overwrite=True)
        try:
            batches = run.round_batches(0)
            compiled = run.round_fn.lower(run.initial, batches).compile()
        finally:
            run.checkpoints.close()
    text = compiled.as_text()
    collectives = [(c, _first_group(text, c.name)) for c in hlo.parse_collectives(text)]
    memory = compiled.memory_analysis()
    params = sum(a.size for a in jax.tree.leaves(run.params))
    return {"collectives": collectives, "state_bytes": _state_bytes_on_device0(run.initial),
            "memory": memory, "params": params, "params_tree": run.params,
            "steps": 2 * period}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithm", default="eamsgd", choices=("eamsgd", "diloco"))
    parser.add_argument("--period", type=int, default=4)
    args = parser.parse_args(argv)
    print(f"# {args.algorithm}, tau = {args.period}, 2 workers, digits MLP (256, 256); "
          f"one round of {2 * args.period} local steps, compiled on 8 simulated CPU devices\n")
    results = {layout: measure(args.algorithm, args.period, *layout) for layout in LAYOUTS}
    print("## Communication per device, from the compiled round\n")
    print("| data x fsdp | axis | collective | first replica group | elements per device |"
          " runs per round |")
    print("|---|---|---|---|---|---|")
    for (data, fsdp), r in results.items():
        for c, group in sorted(r["collectives"], key=lambda cg: -cg[0].elements):
            print(f"| {data} x {fsdp} | {_role(group, data, fsdp)} | {c.op} {c.dtype} | "
                  f"{group} | {c.elements} | {c.trip_count or 1} |")
    print(f"\nparams: {results[LAYOUTS[0]]['params']} numbers; checksums: 2 x 2 = 4 numbers.\n")
    print("## Memory per device (bytes)\n")
    print("| data x fsdp | state (params, inner state, center) | vs fsdp 1 | XLA arguments |"
          " XLA outputs | XLA temporaries |")
    print("|---|---|---|---|---|---|")
    base = results[LAYOUTS[0]]["state_bytes"]
    for (data, fsdp), r in results.items():
        m = r["memory"]
        print(f"| {data} x {fsdp} | {r['state_bytes']} | {base / r['state_bytes']:.2f}x smaller |"
              f" {m.argument_size_in_bytes} | {m.output_size_in_bytes} | "
              f"{m.temp_size_in_bytes} |")


if __name__ == "__main__":
    main()
