"""The main job against what a PyTorch user would run, side by side on the same CPU (issue 18).

Both sides train the same network (the main job's MNIST-1D ``cnn1d``, ``easgd_jax/models/
small.py``; the PyTorch copy starts from the same initial parameters, and the script checks
that both have the same parameter count and compute the same logits) on the same MNIST-1D
arrays (``easgd_jax.data``, the embedded default), p = 4 workers, 128 examples per worker
per step, communication every 10 steps, learning rate 0.1, momentum 0.9 (Nesterov),
weight decay 1e-4:

- JAX: the main job (``configs/default.py``: EAMSGD, tau = 10) run by its executor's
  compiled round (``training.sync.make_train_round``, rounds of up to 50 steps as the loop
  builds them), fed per-worker random batches drawn by the loop's own sampler
  (``data.WorkerSampler``) on the host while the previous round runs, as ``sync.train``
  does; without evaluations and summary reads. Two layouts: ``4 devices`` (one worker per
  simulated CPU device, the default job) and ``1 device (vmap)`` (the 4 workers vmapped on
  one device). Each layout runs in a process of its own, set up as ``launch.py`` sets up
  its ``num_devices`` (``parallel.use_simulated_cpu_devices``: the simulated devices and
  XLA:CPU's intra-op thread pool, which one process shares between all its devices), so
  that one layout's pool is not the other's.
- PyTorch: 4 processes, the gloo backend, ``torch.set_num_threads(1)`` each; Nesterov SGD
  and ``PeriodicModelAverager(period=10, warmup_steps=0)`` (an all-reduce mean of the
  parameters every 10 steps); each process draws its own random batch every step from the
  same arrays.

Each repetition runs, for each JAX layout, one JAX run and then one PyTorch run (so the two
sides alternate and a ratio compares neighbours in time). A run is ``--steps`` steps from the
initial parameters; only steps ``--skip`` .. ``--steps`` are timed (compilation, process
start and warm-up excluded). examples/s = p * batch * (steps - skip) / seconds; for PyTorch
the seconds are the slowest process's, between two barriers. The 1-minute load average is
printed before and after each run, and the training loss at the end of each (JAX: the last
round's mean over steps and workers; PyTorch: the last step's, mean over processes), to see
that both sides train alike. Measure on a quiet machine:

    python -m benchmarks.vs_pytorch                       # 3 repetitions, steps 1000-3000
    python -m benchmarks.vs_pytorch --steps 20 --skip 10 --reps 1   # a smoke run

PyTorch comes with the optional ``bench`` extra: ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKERS = 4
BATCH = 128
PERIOD = 10
# --layouts name -> (the table's label, num_devices of the JAX side)
LAYOUTS = {"devices": ("4 devices", 4), "vmap": ("1 device (vmap)", 1)}
MISSING_TORCH = ('benchmarks/vs_pytorch.py needs PyTorch, which is not installed: '
                 'pip install -e ".[bench]"')


def check_run_lengths(parser: argparse.ArgumentParser, args: argparse.Namespace,
                      period: int) -> None:
    """``parser.error`` (one line, exit 2) unless ``0 < --skip < --steps``, both multiples
    of the exchange ``period`` (whole rounds), and ``--reps >= 1``."""
    if not 0 < args.skip < args.steps or args.skip % period or args.steps % period:
        parser.error(f"need 0 < --skip < --steps, both multiples of the period {period}; "
                     f"got --skip {args.skip} --steps {args.steps}.")
    if args.reps < 1:
        parser.error(f"--reps must be >= 1, got {args.reps}.")


def require_torch() -> Any:
    """Imports torch; exits with one line naming the ``bench`` extra when it is missing."""
    try:
        import torch
    except ImportError:
        raise SystemExit(MISSING_TORCH) from None
    return torch


def main_config(num_devices: int, steps: int, skip: int):
    """``configs/default.py`` (the main job) on ``num_devices`` devices, with rounds that
    divide both ``skip`` and ``steps``."""
    sys.path.insert(0, ROOT)
    from easgd_jax.configs import default
    from easgd_jax.training import config as config_lib

    config = default.get_config()
    config.num_devices = num_devices
    config.train.num_steps = steps
    config.train.eval_every = math.gcd(steps, skip)
    config.checkpoint.every = 0
    config.tensorboard = False
    config_lib.validate(config)
    return config


class JaxRun:
    """The main job's compiled round on one layout, fed fresh batches every round."""

    def __init__(self, config, params: Any, unroll_workers: bool | None = None):
        """``unroll_workers``: as in ``training.common.make_local_step`` (None: its
        default)."""
        import jax

        from easgd_jax import data, parallel
        from easgd_jax.algorithms import registry
        from easgd_jax.training import config as config_lib
        from easgd_jax.training.common import load_data_and_model
        from easgd_jax.training.sync import TrainState, make_train_round

        self.config = config
        self.layout = parallel.make_worker_layout(config.num_workers, config.num_devices)
        spec = registry.get_spec(config.algorithm.name)
        self.tx = registry.get_algorithm(config.algorithm.name,
                                         axis_name=self.layout.axis_name,
                                         **config_lib.algorithm_hparams(config))
        dataset, model = load_data_and_model(config)
        self.rounds = config_lib.steps_per_round(config)
        self.round = make_train_round(config, model, self.tx, spec, self.layout,
                                      unroll_workers=unroll_workers)
        self.sampler = data.WorkerSampler(dataset.train_x, dataset.train_y,
                                          config.num_workers, config.train.batch_size,
                                          config.seed, block=config_lib.sampling_block(config))
        p = config.num_workers
        # As training.sync starts: every worker at params, per-worker keys.
        _, worker_rng = jax.random.split(jax.random.PRNGKey(config.seed))
        stacked = jax.tree.map(lambda a: np.broadcast_to(a, (p, *a.shape)), params)
        # On the host: the round donates its state, and a device_put of an array already on
        # the right device returns that array, which the first run would then delete.
        self._initial = jax.device_get(TrainState(stacked, jax.vmap(self.tx.init)(stacked),
                                                  jax.random.split(worker_rng, p)))

    def initial_state(self):
        """The initial state on the layout's devices, a fresh copy each call (a round
        donates its state)."""
        import jax

        return jax.device_put(self._initial, self.layout.worker_sharding())

    def batches(self, step: int):
        """The round of batches that starts at global step ``step``, on the devices."""
        import jax

        return jax.device_put(self.sampler.round(step, self.rounds),
                              self.layout.worker_sharding())

    def __call__(self, steps: int, skip: int) -> tuple[float, float]:
        """One run of ``steps`` steps from the initial state; returns (seconds of steps
        ``skip`` .. ``steps``, the mean loss of the last round)."""
        import jax

        state = self.initial_state()
        batches = self.batches(0)
        step, start, previous = 0, None, None
        while step < steps:
            if step == skip:
                jax.block_until_ready(state)
                start = time.perf_counter()
            state, summary = self.round(state, batches)  # dispatched
            if previous is not None:
                # As sync.train reads the previous round's summary: at most two rounds in
                # flight. With more, XLA:CPU (jaxlib 0.10.2) can deadlock: one device's
                # launch of round k waits behind its launch of round k + 1 while the other
                # devices wait in round k's all-reduce for it.
                jax.block_until_ready(previous)
            previous = summary
            step += self.rounds
            if step < steps:
                batches = self.batches(step)  # host work while the round runs
        jax.block_until_ready(state)
        elapsed = time.perf_counter() - start
        return elapsed, float(np.mean(jax.device_get(summary[0])))


def jax_server(num_devices: int, steps: int, skip: int, params: dict, conn) -> None:
    """The body of a :class:`JaxProcess`: sets up ``num_devices`` simulated CPU devices as
    ``launch.py`` does, builds the main job's :class:`JaxRun` on them and sends
    ``("ready", facts)``; then answers every ``(steps, skip)`` received with ``("ok", the
    run's (seconds, loss))`` until it receives None. A failure is sent as ``("error",
    traceback)``."""
    try:
        from easgd_jax import parallel

        parallel.use_simulated_cpu_devices(num_devices)
        import jax

        from benchmarks.common import machine_line

        run = JaxRun(main_config(num_devices, steps, skip), params)
        conn.send(("ready", {"devices": jax.device_count(), "rounds": run.rounds,
                             "machine": machine_line()}))
        while (request := conn.recv()) is not None:
            conn.send(("ok", run(*request)))
    except BaseException:  # noqa: BLE001 - reported to the parent, then re-raised
        conn.send(("error", traceback.format_exc()))
        raise
    finally:
        conn.close()


class JaxProcess:
    """:class:`JaxRun` of the main job on ``num_devices`` devices in a spawned process of its
    own (:func:`jax_server`), compiled when this returns; calling it runs once there. A
    context manager: leaving it stops the process."""

    def __init__(self, num_devices: int, steps: int, skip: int, params: dict,
                 server: Any = None):
        """``server``: the process's body (default :func:`jax_server`), called with
        ``(num_devices, steps, skip, params, conn)``; benchmarks/lm_speed.py passes its own."""
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=server or jax_server,
                                        name=f"jax-{num_devices}-devices",
                                        args=(num_devices, steps, skip, params, child))
        self._process.start()
        child.close()
        try:
            self.facts: dict[str, Any] = self._receive()  # devices, rounds, machine
        except BaseException:
            self.close()
            raise

    def _receive(self) -> Any:
        try:
            kind, value = self._conn.recv()
        except EOFError:
            self._process.join(10.0)
            raise RuntimeError(f"the JAX process {self._process.name} ended without an "
                               f"answer (exit code {self._process.exitcode})") from None
        if kind == "error":
            raise RuntimeError(f"the JAX process {self._process.name} failed:\n{value}")
        return value

    def __call__(self, steps: int, skip: int) -> tuple[float, float]:
        """:meth:`JaxRun.__call__` in the process."""
        self._conn.send((steps, skip))
        return tuple(self._receive())

    def ask(self, request: Any) -> Any:
        """Sends ``request`` to the server and returns its answer."""
        self._conn.send(request)
        return self._receive()

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self._conn.send(None)
            except OSError:
                pass
            self._process.join(60.0)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()
        self._conn.close()

    def __enter__(self) -> JaxProcess:
        return self

    def __exit__(self, *_) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# PyTorch side (module level: the worker processes are spawned and import only this module,
# numpy and torch, never jax)


def same_padding(length: int, kernel: int, stride: int) -> tuple[int, int]:
    """(left, right) zero padding of ``StridedConv1D`` ("SAME", as XLA/Flax pad)."""
    out = -(-length // stride)
    pad = max((out - 1) * stride + kernel - length, 0)
    return pad // 2, pad - pad // 2


def torch_cnn1d(length: int, num_classes: int, features: Sequence[int] = (32, 64, 64),
                kernel_sizes: Sequence[int] = (5, 3, 3)):
    """``models.CNN1D`` in torch: [pad ("SAME") -> Conv1d(stride 2) -> ReLU] per layer, then
    Linear on the features flattened in Flax's (length, channels) order."""
    import torch
    from torch import nn

    class CNN1D(nn.Module):
        def __init__(self):
            super().__init__()
            layers, channels, size = [], 1, length
            for width, kernel in zip(features, kernel_sizes, strict=True):
                layers += [nn.ConstantPad1d(same_padding(size, kernel, 2), 0.0),
                           nn.Conv1d(channels, width, kernel, stride=2), nn.ReLU()]
                channels, size = width, -(-size // 2)
            self.features = nn.Sequential(*layers)
            self.head = nn.Linear(channels * size, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.features(x[:, None, :])  # [batch, channels, length]
            return self.head(x.transpose(1, 2).flatten(1))  # Flax's [batch, length, channels]

    return CNN1D()


def load_flax_params(module, params: dict) -> None:
    """Copies the Flax ``CNN1D`` parameters into :func:`torch_cnn1d`'s module: a
    ``StridedConv1D`` kernel [k, in, out] is Conv1d's weight [out, in, k]; a Dense kernel
    [in, out] is Linear's weight [out, in]."""
    import torch

    convs = [m for m in module.features if isinstance(m, torch.nn.Conv1d)]
    with torch.no_grad():
        for i, conv in enumerate(convs):
            layer = params[f"StridedConv1D_{i}"]
            conv.weight.copy_(torch.tensor(np.asarray(layer["kernel"]).transpose(2, 1, 0)))
            conv.bias.copy_(torch.tensor(np.asarray(layer["bias"])))
        module.head.weight.copy_(torch.tensor(np.asarray(params["Dense_0"]["kernel"]).T))
        module.head.bias.copy_(torch.tensor(np.asarray(params["Dense_0"]["bias"])))


def torch_trainer(params: dict, x: np.ndarray, y: np.ndarray, num_classes: int, hp: dict,
                  seed: int):
    """One PyTorch worker: :func:`torch_cnn1d` at the Flax ``params``, Nesterov SGD with
    weight decay, its own random batches (``torch.Generator`` seeded ``seed``). Returns
    ``(model, step)``: ``step()`` takes one step and returns its loss tensor."""
    import torch

    model = torch_cnn1d(x.shape[1], num_classes)
    load_flax_params(model, params)
    optimizer = torch.optim.SGD(model.parameters(), lr=hp["learning_rate"],
                                momentum=hp["momentum"], nesterov=True,
                                weight_decay=hp["weight_decay"])
    loss_fn = torch.nn.CrossEntropyLoss()
    data_x, data_y = torch.from_numpy(x), torch.from_numpy(y).long()
    generator = torch.Generator().manual_seed(seed)

    def step():
        idx = torch.randint(0, len(data_y), (hp["batch_size"],), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(data_x[idx]), data_y[idx])
        loss.backward()
        optimizer.step()
        return loss

    return model, step


def torch_worker(rank: int, world: int, init_file: str, params: dict, x: np.ndarray,
                 y: np.ndarray, num_classes: int, steps: int, skip: int, hp: dict,
                 results) -> None:
    """One PyTorch process: ``steps`` Nesterov SGD steps on its own random batches, the
    parameters averaged every ``hp['period']`` steps; puts (rank, seconds of steps
    ``skip`` .. ``steps``, last loss) on ``results``."""
    import torch
    import torch.distributed as dist
    from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        model, train_step = torch_trainer(params, x, y, num_classes, hp, 1000 + rank)
        averager = PeriodicModelAverager(period=hp["period"], warmup_steps=0)
        start = 0.0
        for step in range(steps):
            if step == skip:
                dist.barrier()
                start = time.perf_counter()
            loss = train_step()
            averager.average_parameters(model.parameters())
        dist.barrier()
        results.put((rank, time.perf_counter() - start, loss.item()))
    finally:
        dist.destroy_process_group()


def torch_alone(params: dict, x: np.ndarray, y: np.ndarray, num_classes: int, steps: int,
                skip: int, hp: dict, threads: int) -> float:
    """Seconds per step of one PyTorch worker alone in this process (``threads`` intra-op
    threads, no process group, no averaging): the ceiling of the 4-process run, which
    shares the cores four ways."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _, train_step = torch_trainer(params, x, y, num_classes, hp, 1000)
        start = 0.0
        for step in range(steps):
            if step == skip:
                start = time.perf_counter()
            train_step()
        return (time.perf_counter() - start) / (steps - skip)
    finally:
        torch.set_num_threads(previous)


def torch_run(params: dict, x: np.ndarray, y: np.ndarray, num_classes: int, steps: int,
              skip: int, hp: dict) -> tuple[float, float]:
    """One PyTorch run on ``WORKERS`` spawned processes; returns (the slowest process's
    seconds of steps ``skip`` .. ``steps``, the mean of the last losses)."""
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(torch_worker, nprocs=WORKERS, start_method="spawn", join=True,
                           args=(WORKERS, os.path.join(tmp, "init"), params, x, y,
                                 num_classes, steps, skip, hp, results))
    out = [results.get() for _ in range(WORKERS)]
    return max(t for _, t, _ in out), float(np.mean([loss for _, _, loss in out]))


def initial_params(model, example_shape: tuple[int, ...], seed: int) -> dict:
    """The main job's initial parameters (``training.sync``: ``model.init`` with the first
    half of ``PRNGKey(seed)`` split), as numpy arrays."""
    import jax

    from easgd_jax.training.common import init_params

    init_rng, _ = jax.random.split(jax.random.PRNGKey(seed))
    params = init_params(model, example_shape, init_rng)
    return jax.tree.map(np.asarray, jax.device_get(params))


def check_same_network(model, params: dict, x: np.ndarray, num_classes: int) -> tuple[int, int]:
    """Builds the torch copy of the Flax ``model`` (``cnn1d``) from ``params`` and checks
    that both have the same parameter count and the same logits on ``x``; returns the two
    counts (JAX, PyTorch)."""
    import jax
    import torch

    module = torch_cnn1d(x.shape[1], num_classes)
    load_flax_params(module, params)
    jax_count = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    torch_count = sum(p.numel() for p in module.parameters())
    if jax_count != torch_count:
        raise AssertionError(f"parameter counts differ: JAX {jax_count}, PyTorch {torch_count}")
    want = np.asarray(jax.jit(model.apply)({"params": params}, x))
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    if not np.allclose(got, want, rtol=1e-4, atol=1e-4):
        raise AssertionError(f"the two networks' logits differ by up to "
                             f"{np.max(np.abs(got - want)):.3g}")
    return jax_count, torch_count


def load() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Parses ``argv``, runs the interleaved comparison and prints its table; returns one
    row per (repetition, layout)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000, help="steps per run")
    parser.add_argument("--skip", type=int, default=1000,
                        help="untimed steps first (compilation, warm-up)")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--layouts", nargs="+", choices=list(LAYOUTS), default=list(LAYOUTS),
                        help="JAX layouts: devices (one worker per simulated device, the "
                             "default job), vmap (the 4 workers vmapped on one device)")
    parser.add_argument("--alone_threads", type=int, nargs="*", default=[],
                        help="after the table, time one PyTorch worker alone with each of "
                             "these intra-op thread counts (the 4-process run's ceiling)")
    args = parser.parse_args(argv)
    check_run_lengths(parser, args, PERIOD)
    require_torch()  # before anything expensive
    return compare(args)


def compare(args: argparse.Namespace) -> list[dict[str, Any]]:
    """:func:`main` after its checks: the same network on both sides, one JAX process per
    layout, the interleaved repetitions (one row each, printed as it comes)."""
    import torch

    from easgd_jax.training.common import load_data_and_model

    some = main_config(LAYOUTS[args.layouts[0]][1], args.steps, args.skip)
    dataset, model = load_data_and_model(some)
    params = initial_params(model, dataset.example_shape, some.seed)
    x = np.ascontiguousarray(dataset.train_x, np.float32)
    y = np.asarray(dataset.train_y, np.int64)
    jax_count, torch_count = check_same_network(model, params, x[:64], dataset.num_classes)
    assert (some.num_workers, some.train.batch_size, some.algorithm.period) == (
        WORKERS, BATCH, PERIOD), "configs/default.py no longer is p = 4, batch 128, tau = 10"
    hp = {"learning_rate": some.algorithm.learning_rate, "momentum": some.algorithm.momentum,
          "weight_decay": some.train.weight_decay, "period": PERIOD, "batch_size": BATCH}
    examples = WORKERS * BATCH * (args.steps - args.skip)

    def pair(rep: int, name: str, run: JaxProcess) -> dict[str, Any]:
        """One JAX run, then one PyTorch run; prints and returns their row."""
        jax_load = [load()]
        jax_seconds, jax_loss = run(args.steps, args.skip)
        jax_load.append(load())
        torch_load = [load()]
        torch_seconds, torch_loss = torch_run(params, x, y, dataset.num_classes, args.steps,
                                              args.skip, hp)
        torch_load.append(load())
        row = {"rep": rep, "layout": name, "jax": examples / jax_seconds,
               "torch": examples / torch_seconds, "jax_load": jax_load,
               "torch_load": torch_load, "jax_loss": jax_loss, "torch_loss": torch_loss}
        row["ratio"] = row["jax"] / row["torch"]
        print(f"| {rep} | {name} | {row['jax']:,.0f} | {row['torch']:,.0f} | "
              f"{row['ratio']:.2f} | {jax_load[0]:.2f} / {jax_load[1]:.2f} | "
              f"{torch_load[0]:.2f} / {torch_load[1]:.2f} | "
              f"{jax_loss:.3f} / {torch_loss:.3f} |", flush=True)
        return row

    print(f"torch {torch.__version__} (gloo, {WORKERS} processes x 1 thread); "
          f"cnn1d parameters: JAX {jax_count}, PyTorch {torch_count}; p = {WORKERS}, "
          f"batch {BATCH} per worker, period {PERIOD}; steps {args.skip}-{args.steps} of "
          f"{args.steps} timed")
    with contextlib.ExitStack() as stack:
        jax_runs = {LAYOUTS[name][0]: stack.enter_context(
            JaxProcess(LAYOUTS[name][1], args.steps, args.skip, params))
            for name in args.layouts}
        for name, run in jax_runs.items():
            print(f"JAX {name}, a process of its own, rounds of {run.facts['rounds']} "
                  f"steps: {run.facts['machine']}")
        print()
        print("| rep | layout | JAX examples/s | PyTorch examples/s | ratio | load JAX "
              "before/after | load PyTorch before/after | loss JAX / PyTorch |")
        print("|---|---|---|---|---|---|---|---|")
        rows = [pair(rep, name, run) for rep in range(1, args.reps + 1)
                for name, run in jax_runs.items()]
    for threads in args.alone_threads:
        seconds = torch_alone(params, x, y, dataset.num_classes, args.steps, args.skip, hp,
                              threads)
        print(f"PyTorch alone, 1 process x {threads} thread(s), no averaging: "
              f"{1e3 * seconds:.3f} ms/step, {BATCH / seconds:,.0f} examples/s "
              f"(load {load():.2f})", flush=True)
    return rows


if __name__ == "__main__":
    main()
