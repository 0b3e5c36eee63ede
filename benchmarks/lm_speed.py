"""Speed of the language-model step (issue 32, item 6): its model FLOP utilization (MFU)
against this machine's measured float32 matmul peak, and tokens per second against the same
transformer trained with DiLoCo in PyTorch.

The workload is the default LM job, ``configs/lm_diloco.py``: the transformer of
``configs/lm_common.py`` (width 64, 2 pre-norm blocks, 4 heads, RoPE, tied embeddings,
vocabulary 256, 116,480 parameters) on ``synthetic_lm``, windows of 64 tokens, batch 16 per
worker, p = 4 workers, one per simulated CPU device, DiLoCo (inner AdamW, warm-up and cosine
decay; outer Nesterov 0.7 / 0.9; H = 50), run by the executor's compiled rounds
(``benchmarks/vs_pytorch.JaxRun``: fresh per-worker batches every round, drawn on the host
while the previous round runs, as ``training.sync`` does).

**MFU.** Model FLOPs per token, the standard count for a decoder-only transformer (Kaplan et
al. 2020, arXiv 2001.08361, Table 1; PaLM, Chowdhery et al. 2022, arXiv 2204.02311, App. B):

    6 N  +  12 L T d          (forward and backward; N parameters, L blocks, context T, width d)

where ``6 N`` is the parameters' matmuls (2 N forward, 4 N backward; the tied embedding
counts once: its input side is a lookup, its output side a matmul) and ``12 L T d`` the
attention's two products of T x T scores (causal masking not subtracted). Cross-checked
against (a) the matmul FLOPs of the traced forward-backward program (every ``dot_general`` of
its jaxpr: 2 x output size x contraction size) and (b) XLA's cost analysis of the compiled
forward-backward (``compiled.cost_analysis()['flops']``: every op, matmuls, elementwise and
reductions). MFU = model FLOPs per second / peak, where the peak is measured in the same
process, just before each timed run, and the best of these measurements is the peak every
repetition is compared with: chains of dependent dense float32 n x n matmuls in
one compiled ``lax.scan`` (one chain on one device, XLA:CPU's intra-op threads; and one chain
per simulated device, all devices at once), the best over sizes and the two forms. Also
given: the same ratio in process CPU time (model FLOPs per CPU-second of the LM process over
matmul FLOPs per CPU-second of the peak's chain), which other jobs on the machine disturb
much less than wall time.

**PyTorch.** The same network in torch (``torch_transformer``: the Flax parameters copied
in; the script checks equal parameter counts and equal logits), DiLoCo as the paper writes
it: 4 processes, gloo, ``torch.set_num_threads(1)`` each; inner ``torch.optim.AdamW``
(b1 0.9, b2 0.95, eps 1e-8, weight decay 0.1, the rate set every step from the same
warm-up-cosine schedule), every H = 50 steps an all-reduce mean of the parameters, the outer
gradient ``global - mean``, outer ``torch.optim.SGD(lr=0.7, momentum=0.9, nesterov=True)``
on the global copy, every worker restarted from it (its AdamW state kept). Each process draws
its own random windows of the same training tokens. Tokens/s = p x batch x context x
(steps - skip) / seconds of the slowest process between two barriers.

Each repetition: the peak, then a JAX run, then a PyTorch run (neighbours in time; the
ratios are per repetition). After the repetitions, where the step's time goes: a traced run
of the same round, its HLO instructions' times summed by what they compute (matmuls; the
attention's softmax, mask and RoPE; layer norms; GELU; the loss; the rest:
:func:`time_breakdown`). One command prints all three tables:

    python -m benchmarks.lm_speed                               # 3 repetitions
    python -m benchmarks.lm_speed --steps 100 --skip 50 --reps 1 --sizes 256   # a smoke run

PyTorch comes with the optional ``bench`` extra: ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.vs_pytorch import (  # noqa: E402
    JaxProcess,
    check_run_lengths,
    load,
    require_torch,
)

WORKERS = 4
PERIOD = 50  # H of configs/lm_diloco.py (checked)
GOAL_MFU = 0.5
GOAL_RATIO = 2.0


def lm_config(num_devices: int, steps: int, skip: int, model: dict | None = None):
    """``configs/lm_diloco.py`` on ``num_devices`` devices, rounds dividing ``skip`` and
    ``steps``, no evaluation, checkpoint or summaries; ``model`` overrides entries of its
    ``model.kwargs`` (``--width``, ``--depth``, ``--num_heads``)."""
    from easgd_jax.configs import lm_diloco
    from easgd_jax.training import config as config_lib

    config = lm_diloco.get_config()
    config.model.kwargs.update(model or {})
    config.num_devices = num_devices
    config.train.num_steps = steps
    config.train.eval_every = math.gcd(steps, skip)
    config.checkpoint.every = 0
    config.tensorboard = False
    config_lib.validate(config)
    return config


# ---------------------------------------------------------------------------------------------
# FLOPs


def formula_flops_per_token(num_params: int, depth: int, context: int, width: int) -> int:
    """``6 N + 12 L T d``: model FLOPs per token, forward and backward (module docstring)."""
    return 6 * num_params + 12 * depth * context * width


def jaxpr_matmul_flops(jaxpr: Any) -> int:
    """2 x output size x contraction size summed over every ``dot_general`` of a (closed)
    jaxpr, its sub-jaxprs included (each counted once: the step has no loops)."""
    from jax.extend import core as jex_core

    inner = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0
    for eqn in inner.eqns:
        if eqn.primitive.name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2 * int(np.prod(eqn.outvars[0].aval.shape)) * int(
                np.prod([lhs[d] for d in contract]))
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(sub, (jex_core.Jaxpr, jex_core.ClosedJaxpr)):
                    total += jaxpr_matmul_flops(sub)
    return total


def step_flops(config, model, params, dataset) -> dict[str, float]:
    """FLOPs of one worker's forward-backward on one batch: the formula, the jaxpr's matmuls,
    and XLA's cost analysis of the compiled program (all ops)."""
    import jax
    import jax.numpy as jnp

    from easgd_jax.training.common import make_grad_fn

    grad_fn = make_grad_fn(model, 0.0)
    batch = config.train.batch_size
    x = jnp.asarray(dataset.train_x[:batch], jnp.float32)
    y = jnp.asarray(dataset.train_y[:batch])
    key = jax.random.PRNGKey(0)
    num_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    kwargs = config.model.kwargs
    context = x.shape[1]
    tokens = batch * context
    cost = jax.jit(grad_fn).lower(params, (x, y), key).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return {
        "params": num_params, "tokens": tokens,
        "formula": tokens * formula_flops_per_token(num_params, kwargs.depth, context,
                                                    kwargs.width),
        "jaxpr_matmul": jaxpr_matmul_flops(jax.make_jaxpr(grad_fn)(params, (x, y), key)),
        "xla": float(cost["flops"]),
    }


# ---------------------------------------------------------------------------------------------
# The matmul peak


def matmul_peak(sizes: Sequence[int], target_flops: float = 4e9, trials: int = 3
                ) -> dict[str, Any]:
    """The best dense float32 matmul rate of this process: for each n in ``sizes``, a chain
    of dependent n x n products (``c <- (c @ b) / n`` in one ``lax.scan``, about
    ``target_flops`` per call) on one device, and one chain per device on every device at
    once (``shard_map``); the fastest of ``trials`` calls each. Returns the best wall rate
    (FLOP/s), its form, and the best rate per CPU-second of this process."""
    import jax
    import jax.numpy as jnp
    from jax import lax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    devices = jax.devices()
    mesh = jax.make_mesh((len(devices),), ("d",))
    best = {"flops": 0.0, "form": "", "cpu_flops": 0.0}
    for n in sizes:
        reps = max(2, int(target_flops // (2 * n ** 3 * len(devices))))

        def chain(a, b, n=n, reps=reps):
            def body(c, _):
                return (c @ b) * (1.0 / n), None
            return lax.scan(body, a, None, length=reps)[0]

        one = jax.jit(chain)
        every = jax.jit(jax.shard_map(lambda a, b, f=chain: f(a[0], b[0])[None], mesh=mesh,
                                      in_specs=(P("d"), P("d")), out_specs=P("d")))
        ones = jnp.ones((n, n), jnp.float32)
        stacked = jax.device_put(jnp.ones((len(devices), n, n), jnp.float32),
                                 NamedSharding(mesh, P("d")))
        for form, fn, arg, count in (("1 device", one, ones, 1),
                                     (f"{len(devices)} devices", every, stacked, len(devices))):
            jax.block_until_ready(fn(arg, arg))
            for _ in range(trials):
                start, cpu = time.perf_counter(), time.process_time()
                jax.block_until_ready(fn(arg, arg))
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu
                flops = 2.0 * n ** 3 * reps * count
                if flops / wall > best["flops"]:
                    best.update(flops=flops / wall, form=f"{form}, n = {n}")
                best["cpu_flops"] = max(best["cpu_flops"], flops / max(cpu, 1e-9))
    return best


# ---------------------------------------------------------------------------------------------
# Where the time goes

# The part of the model (or of the step) an HLO instruction's JAX op_name points to.
PARTS = (("attention", "attention (softmax, mask, RoPE, head reshapes)"),
         ("ln_", "layer norms"), ("mlp", "MLP (GELU)"),
         ("log_softmax", "loss (log-softmax, one-hot)"), ("one_hot", "loss (log-softmax, one-hot)"),
         ("embed", "embedding"))


def time_breakdown(run, steps: int) -> list[tuple[str, float, float]]:
    """``(part, ms per step summed over the device threads, share)`` of ``steps`` traced
    steps of ``run`` (a :class:`~benchmarks.vs_pytorch.JaxRun`): every HLO instruction the
    CPU runtime executed (``benchmarks.profile_step.thunk_times``), a fusion holding a
    ``dot`` counted as "matmuls (with what XLA fused into them)", any other by the model
    part its op_name names; the rest (residual adds, the optimizer, the exchange) as
    "other"."""
    import collections
    import re

    import jax

    from benchmarks.profile_step import thunk_times

    hlo = run.round.lower(run.initial_state(), run.batches(0)).compile().as_text()
    bodies: dict[str, list[str]] = {}
    current = None
    for line in hlo.splitlines():
        head = re.match(r"^(?:ENTRY )?%(\S+) ", line)
        if head and line.rstrip().endswith("{"):
            current = head[1]
            bodies[current] = []
        elif current is not None:
            bodies[current].append(line)
    parts = {}
    for line in hlo.splitlines():
        m = re.match(r"^\s*(?:ROOT )?%(\S+) = \S+ (\S+?)\((.*)$", line)
        if not m:
            continue
        name, opcode, rest = m.groups()
        called = re.search(r"calls=%([\w.\-]+)", rest)
        body = "\n".join(bodies.get(called[1], [])) if called else ""
        op_name = re.search(r'op_name="([^"]*)"', rest)
        op_name = op_name[1] if op_name else ""
        if opcode == "dot" or " dot(" in body:
            parts[name] = "matmuls (with what XLA fused into them)"
        else:
            parts[name] = next((label for key, label in PARTS if key in op_name), "other")
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
        run(steps, 0)
        jax.profiler.stop_trace()
        totals, _ = thunk_times(trace_dir)
    summed: collections.Counter = collections.Counter()
    for name, us in totals.items():
        if name in parts:
            summed[parts[name]] += us
    total = sum(summed.values())
    return [(part, us / 1e3 / steps, us / total) for part, us in summed.most_common()]


# ---------------------------------------------------------------------------------------------
# The JAX process


def lm_server(num_devices: int, steps: int, skip: int, params: dict, conn,
              model: dict | None = None) -> None:
    """The body of the JAX process (:class:`benchmarks.vs_pytorch.JaxProcess` with this
    server): the LM job's :class:`~benchmarks.vs_pytorch.JaxRun` on ``num_devices`` simulated
    devices; sends ``("ready", facts)`` (machine line, rounds, FLOPs), then answers
    ``("peak", sizes)`` with :func:`matmul_peak`, ``("profile", steps)`` with
    :func:`time_breakdown` and ``(steps, skip)`` with the run's
    ``(seconds, loss, CPU seconds of the whole call, steps in the call)``, until None.
    ``model``: :func:`lm_config`'s overrides of the transformer's kwargs."""
    try:
        from easgd_jax import parallel

        parallel.use_simulated_cpu_devices(num_devices)
        import jax

        from benchmarks.common import machine_line
        from benchmarks.vs_pytorch import JaxRun
        from easgd_jax.training.common import load_data_and_model

        config = lm_config(num_devices, steps, skip, model)
        dataset, network = load_data_and_model(config)
        run = JaxRun(config, params)
        flops = step_flops(config, network, params, dataset)
        conn.send(("ready", {"devices": jax.device_count(), "rounds": run.rounds,
                             "machine": machine_line(), "flops": flops}))
        while (request := conn.recv()) is not None:
            if request[0] == "peak":
                conn.send(("ok", matmul_peak(request[1])))
                continue
            if request[0] == "profile":
                conn.send(("ok", time_breakdown(run, request[1])))
                continue
            cpu = time.process_time()
            seconds, loss = run(*request)
            conn.send(("ok", (seconds, loss, time.process_time() - cpu, request[0])))
    except BaseException:  # noqa: BLE001 - reported to the parent, then re-raised
        conn.send(("error", traceback.format_exc()))
        raise
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# PyTorch side (module level: the worker processes are spawned and import only this module,
# numpy and torch, never jax)


def torch_rope(x, base: float = 10000.0):
    """``models.transformer.rope`` in torch: ``x [batch, length, heads, head_dim]``, the
    pairs ``(x_j, x_{j + d/2})`` at position t rotated by ``t * base^(-2j/d)``."""
    import torch

    length, dim = x.shape[1], x.shape[-1]
    half = dim // 2
    freqs = base ** (-torch.arange(half, dtype=torch.float32) * 2.0 / dim)
    angles = torch.arange(length, dtype=torch.float32)[:, None] * freqs[None, :]
    cos, sin = torch.cos(angles)[None, :, None, :], torch.sin(angles)[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def torch_transformer(vocab: int, width: int, depth: int, num_heads: int, mlp_ratio: int):
    """``models.Transformer`` (RoPE, tied embeddings) in torch: pre-norm blocks of causal
    attention (``scaled_dot_product_attention(is_causal=True)``) and a GELU (tanh) MLP,
    LayerNorm eps 1e-5, logits ``LN(h) @ E^T``."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_attention = nn.LayerNorm(width, eps=1e-5)
            self.query, self.key, self.value, self.out = (nn.Linear(width, width)
                                                          for _ in range(4))
            self.ln_mlp = nn.LayerNorm(width, eps=1e-5)
            self.fc = nn.Linear(width, mlp_ratio * width)
            self.proj = nn.Linear(mlp_ratio * width, width)

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            b, t, _ = h.shape
            x = self.ln_attention(h)
            shape = (b, t, num_heads, width // num_heads)
            q = torch_rope(self.query(x).view(shape))
            k = torch_rope(self.key(x).view(shape))
            v = self.value(x).view(shape)
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                 v.transpose(1, 2), is_causal=True)
            h = h + self.out(out.transpose(1, 2).reshape(b, t, width))
            return h + self.proj(F.gelu(self.fc(self.ln_mlp(h)), approximate="tanh"))

    class Transformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, width)
            self.blocks = nn.ModuleList(Block() for _ in range(depth))
            self.ln_final = nn.LayerNorm(width, eps=1e-5)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            h = self.embed(tokens)
            for block in self.blocks:
                h = block(h)
            return self.ln_final(h) @ self.embed.weight.T

    return Transformer()


def load_flax_params(module, params: dict) -> None:
    """Copies the Flax transformer's parameters into :func:`torch_transformer`'s module:
    a Dense / DenseGeneral kernel ``[in..., out...]`` is Linear's weight ``[out, in]``
    (flattened); LayerNorm scale and bias are its weight and bias."""
    import torch

    def linear(layer, p):
        kernel = np.asarray(p["kernel"])
        fan_out = int(np.prod(np.asarray(p["bias"]).shape))
        layer.weight.copy_(torch.tensor(kernel.reshape(-1, fan_out).T.copy()))
        layer.bias.copy_(torch.tensor(np.asarray(p["bias"]).reshape(-1)))

    def norm(layer, p):
        layer.weight.copy_(torch.tensor(np.asarray(p["scale"])))
        layer.bias.copy_(torch.tensor(np.asarray(p["bias"])))

    with torch.no_grad():
        module.embed.weight.copy_(torch.tensor(np.asarray(params["embed"]["embedding"])))
        for i, block in enumerate(module.blocks):
            p = params[f"block_{i}"]
            norm(block.ln_attention, p["ln_attention"])
            norm(block.ln_mlp, p["ln_mlp"])
            for name in ("query", "key", "value", "out"):
                linear(getattr(block, name), p["attention"][name])
            linear(block.fc, p["mlp"]["fc"])
            linear(block.proj, p["mlp"]["proj"])
        norm(module.ln_final, params["ln_final"])


def torch_worker(rank: int, world: int, init_file: str, params: dict, x: np.ndarray,
                 y: np.ndarray, shape: dict, steps: int, skip: int, hp: dict,
                 results) -> None:
    """One PyTorch DiLoCo worker (module docstring); puts (rank, seconds of steps ``skip``
    .. ``steps``, last loss) on ``results``."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        model = torch_transformer(**shape)
        load_flax_params(model, params)
        inner = torch.optim.AdamW(model.parameters(), lr=hp["rates"][0], betas=hp["betas"],
                                  eps=1e-8, weight_decay=hp["weight_decay"])
        center = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
        outer = torch.optim.SGD(center, lr=hp["outer_learning_rate"],
                                momentum=hp["outer_momentum"], nesterov=True)
        loss_fn = torch.nn.CrossEntropyLoss()
        data_x, data_y = torch.from_numpy(x), torch.from_numpy(y)
        generator = torch.Generator().manual_seed(1000 + rank)
        start = 0.0
        for step in range(steps):
            if step == skip:
                dist.barrier()
                start = time.perf_counter()
            idx = torch.randint(0, len(data_y), (hp["batch_size"],), generator=generator)
            for group in inner.param_groups:
                group["lr"] = hp["rates"][step]
            inner.zero_grad(set_to_none=True)
            logits = model(data_x[idx])
            loss = loss_fn(logits.reshape(-1, logits.shape[-1]), data_y[idx].reshape(-1))
            loss.backward()
            inner.step()
            if (step + 1) % hp["period"] == 0:  # the outer step
                with torch.no_grad():
                    flat = torch.cat([p.reshape(-1) for p in model.parameters()])
                    dist.all_reduce(flat)
                    flat /= world
                    offset = 0
                    for c in center:
                        c.grad = c.detach() - flat[offset:offset + c.numel()].view_as(c)
                        offset += c.numel()
                    outer.step()
                    for p, c in zip(model.parameters(), center, strict=True):
                        p.copy_(c)
        dist.barrier()
        results.put((rank, time.perf_counter() - start, loss.item()))
    finally:
        dist.destroy_process_group()


def torch_run(params: dict, x: np.ndarray, y: np.ndarray, shape: dict, steps: int,
              skip: int, hp: dict) -> tuple[float, float]:
    """One PyTorch DiLoCo run on ``WORKERS`` spawned processes; returns (the slowest
    process's seconds of steps ``skip`` .. ``steps``, the mean of the last losses)."""
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(torch_worker, nprocs=WORKERS, start_method="spawn", join=True,
                           args=(WORKERS, os.path.join(tmp, "init"), params, x, y, shape,
                                 steps, skip, hp, results))
    out = [results.get() for _ in range(WORKERS)]
    return max(t for _, t, _ in out), float(np.mean([loss for _, _, loss in out]))


def check_same_network(model, params: dict, x: np.ndarray, shape: dict) -> tuple[int, int]:
    """The torch copy of the Flax transformer: equal parameter counts and equal logits on
    ``x`` (float32, to 1e-4); returns the two counts (JAX, PyTorch)."""
    import jax
    import torch

    module = torch_transformer(**shape)
    load_flax_params(module, params)
    jax_count = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    torch_count = sum(p.numel() for p in module.parameters())
    if jax_count != torch_count:
        raise AssertionError(f"parameter counts differ: JAX {jax_count}, PyTorch {torch_count}")
    want = np.asarray(jax.jit(model.apply)({"params": params}, x))
    with torch.no_grad():
        got = module(torch.from_numpy(x).long()).numpy()
    if not np.allclose(got, want, rtol=1e-4, atol=1e-4):
        raise AssertionError(f"the two networks' logits differ by up to "
                             f"{np.max(np.abs(got - want)):.3g}")
    return jax_count, torch_count


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400, help="steps per run")
    parser.add_argument("--skip", type=int, default=100,
                        help="untimed steps first (compilation, warm-up)")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024],
                        help="matrix sizes n of the matmul peak")
    for name in ("width", "depth", "num_heads"):
        parser.add_argument(f"--{name}", type=int, default=None,
                            help=f"the transformer's {name} (default: configs/lm_diloco.py's)")
    parser.add_argument("--no-torch", dest="torch", action="store_false",
                        help="the MFU table only")
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="leave out the table of where the step's time goes (a traced "
                        "run of --steps steps after the repetitions)")
    args = parser.parse_args(argv)
    check_run_lengths(parser, args, PERIOD)  # (H of the outer step)
    from easgd_jax.configs import lm_diloco

    shape = {**lm_diloco.get_config().model.kwargs.to_dict(),
             **{k: v for k in ("width", "depth", "num_heads")
                if (v := getattr(args, k)) is not None}}
    if min(shape["width"], shape["depth"], shape["num_heads"]) < 1 or (
            shape["width"] % (2 * shape["num_heads"])):
        parser.error(f"need --width, --depth, --num_heads >= 1 and an even head width (RoPE): "
                     f"width {shape['width']} over {shape['num_heads']} heads, depth "
                     f"{shape['depth']}.")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Parses ``argv``, prints the command, the MFU table and the PyTorch table; returns
    their rows."""
    args = parse_args(argv)
    if args.torch:
        require_torch()  # before anything expensive
    shown = sys.argv[1:] if argv is None else list(argv)
    print(f"$ python -m benchmarks.lm_speed {shlex.join(shown)}".rstrip(), flush=True)
    import jax

    from easgd_jax.algorithms import baselines
    from easgd_jax.training.common import load_data_and_model

    overrides = {name: value for name in ("width", "depth", "num_heads")
                 if (value := getattr(args, name)) is not None}
    config = lm_config(1, args.steps, args.skip, overrides)
    dataset, model = load_data_and_model(config)
    from benchmarks.vs_pytorch import initial_params

    params = initial_params(model, dataset.example_shape, config.seed)
    algorithm, kwargs = config.algorithm, config.model.kwargs
    assert (config.num_workers, algorithm.name, algorithm.period) == (
        WORKERS, "diloco_adamw", PERIOD), "configs/lm_diloco.py is no longer p = 4, H = 50"
    assert kwargs.positions == "rope" and kwargs.tie_embeddings, "the torch copy is RoPE, tied"
    shape = {"vocab": dataset.num_classes, "width": kwargs.width, "depth": kwargs.depth,
             "num_heads": kwargs.num_heads, "mlp_ratio": kwargs.get("mlp_ratio", 4)}
    x = np.ascontiguousarray(dataset.train_x, np.int64)
    y = np.ascontiguousarray(dataset.train_y, np.int64)
    tokens = WORKERS * config.train.batch_size * x.shape[1] * (args.steps - args.skip)
    rows: dict[str, list[dict[str, Any]]] = {"mfu": [], "torch": []}
    server = functools.partial(lm_server, model=overrides)
    with JaxProcess(WORKERS, args.steps, args.skip, params, server=server) as jax_run:
        facts = jax_run.facts
        flops = facts["flops"]
        per_step = WORKERS * flops["formula"]
        print(f"JAX: {facts['machine']}; rounds of {facts['rounds']} steps")
        print(f"Model: transformer, {flops['params']:,} parameters; p = {WORKERS}, "
              f"{flops['tokens']} tokens per worker per step; steps {args.skip}-{args.steps} "
              f"of {args.steps} timed\n")
        print("FLOPs of one worker's forward and backward (one batch):\n")
        print("| count | GFLOP | / formula |\n|---|---|---|")
        for name, label in (("formula", "6 N + 12 L T d per token (model FLOPs)"),
                            ("jaxpr_matmul", "matmuls of the traced program (jaxpr)"),
                            ("xla", "XLA cost analysis of the compiled program (all ops)")):
            print(f"| {label} | {flops[name] / 1e9:.4f} | "
                  f"{flops[name] / flops['formula']:.3f} |")
        if args.torch:
            torch_module = require_torch()
            jax_count, torch_count = check_same_network(model, params, x[:4], shape)
            print(f"\nPyTorch {torch_module.__version__}: the same network, parameters "
                  f"JAX {jax_count:,} = PyTorch {torch_count:,}, logits equal to 1e-4")
        schedule = baselines.warmup_cosine(algorithm.learning_rate, algorithm.warmup_steps,
                                           algorithm.decay_steps)
        hp = {"rates": [float(schedule(t)) for t in range(args.steps)],
              "betas": (algorithm.b1, algorithm.b2), "weight_decay": algorithm.weight_decay,
              "outer_learning_rate": algorithm.outer_learning_rate,
              "outer_momentum": algorithm.outer_momentum, "period": PERIOD,
              "batch_size": config.train.batch_size}
        del jax  # the parent's jax only built the parameters
        mfu_lines, torch_lines = [], []
        for rep in range(1, args.reps + 1):
            peak = jax_run.ask(("peak", args.sizes))
            before = load()
            seconds, loss, cpu, steps_run = jax_run(args.steps, args.skip)
            after = load()
            step_s = seconds / (args.steps - args.skip)
            row = {"rep": rep, "peak": peak["flops"], "peak_form": peak["form"],
                   "step_ms": 1e3 * step_s, "tokens_per_s": tokens / seconds,
                   "model_flops": per_step / step_s,
                   "cpu_model_flops": per_step * steps_run / cpu, "peak_cpu": peak["cpu_flops"],
                   "loss": loss, "load": (before, after)}
            rows["mfu"].append(row)
            print(f"rep {rep}: {row['model_flops'] / 1e9:.1f} model GFLOP/s, peak this rep "
                  f"{peak['flops'] / 1e9:.1f} GFLOP/s", flush=True)
            if args.torch:
                t_before = load()
                t_seconds, t_loss = torch_run(params, x, y, shape, args.steps, args.skip, hp)
                t_after = load()
                t_row = {"rep": rep, "jax": tokens / seconds, "torch": tokens / t_seconds,
                         "jax_loss": loss, "torch_loss": t_loss, "load": (t_before, t_after)}
                t_row["ratio"] = t_row["jax"] / t_row["torch"]
                rows["torch"].append(t_row)
                torch_lines.append(
                    f"| {rep} | {t_row['jax']:,.0f} | {t_row['torch']:,.0f} | "
                    f"**{t_row['ratio']:.2f}** | {before:.2f} / {after:.2f} | "
                    f"{t_before:.2f} / {t_after:.2f} | {loss:.3f} / {t_loss:.3f} |")
                print(f"rep {rep}: JAX / PyTorch {t_row['ratio']:.2f}", flush=True)
        breakdown = jax_run.ask(("profile", args.steps)) if args.profile else []
    # The machine's peak is the best the repetitions measured (other work can only slow a
    # measurement down): every repetition's MFU is against it.
    peak = max(r["peak"] for r in rows["mfu"])
    peak_cpu = max(r["peak_cpu"] for r in rows["mfu"])
    for row in rows["mfu"]:
        row["mfu"] = row["model_flops"] / peak
        row["cpu_mfu"] = row["cpu_model_flops"] / peak_cpu
        mfu_lines.append(
            f"| {row['rep']} | {row['peak'] / 1e9:.1f} ({row['peak_form']}) | "
            f"{row['step_ms']:.2f} | {row['tokens_per_s']:,.0f} | "
            f"{row['model_flops'] / 1e9:.1f} | **{100 * row['mfu']:.1f}%** | "
            f"{100 * row['cpu_mfu']:.1f}% | {row['load'][0]:.2f} / {row['load'][1]:.2f} | "
            f"{row['loss']:.3f} |")
    print("\n## MFU of the LM step (configs/lm_diloco.py, p = 4, one worker per simulated "
          "device)\n")
    print(f"Peak: {peak / 1e9:.1f} GFLOP/s wall, {peak_cpu / 1e9:.1f} GFLOP per CPU-second "
          "(dense float32 matmul chains, the best of every repetition's measurement)\n")
    print("| rep | peak measured this rep, GFLOP/s (form) | ms/step | tokens/s | model "
          "GFLOP/s | MFU | MFU in CPU time | load before / after | loss |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(mfu_lines))
    mfus = [r["mfu"] for r in rows["mfu"]]
    print(f"\nMFU median {100 * np.median(mfus):.1f}% (min {100 * min(mfus):.1f}%); goal "
          f">= {100 * GOAL_MFU:.0f}%: {'met' if min(mfus) >= GOAL_MFU else 'NOT met'} in "
          f"every repetition")
    if breakdown:
        print("\nWhere the step's time goes (a traced run of the same round, every HLO "
              "instruction the CPU runtime ran, summed over the 4 device threads):\n")
        print("| part | ms/step (4 threads) | share |\n|---|---|---|")
        for part, ms, share in breakdown:
            print(f"| {part} | {ms:.2f} | {100 * share:.1f}% |")
    rows["profile"] = [{"part": p, "ms": ms, "share": sh} for p, ms, sh in breakdown]
    if args.torch:
        print(f"\n## easgd-jax against PyTorch DiLoCo (gloo, {WORKERS} processes x 1 thread), "
              "tokens per second\n")
        print("| rep | easgd-jax tokens/s | PyTorch tokens/s | ratio | load JAX before / after "
              "| load PyTorch before / after | loss JAX / PyTorch |")
        print("|---|---|---|---|---|---|---|")
        print("\n".join(torch_lines))
        ratios = [r["ratio"] for r in rows["torch"]]
        print(f"\nratio median {np.median(ratios):.2f} (min {min(ratios):.2f}); goal >= "
              f"{GOAL_RATIO:.0f}x in every repetition: "
              f"{'met' if min(ratios) >= GOAL_RATIO else 'NOT met'}")
    return rows


if __name__ == "__main__":
    main()
