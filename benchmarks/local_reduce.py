"""The sum over vmapped workers on one device: what a ``psum`` over the vmap axis costs.

    .venv/bin/python benchmarks/local_reduce.py

With several workers per device the algorithms' ``psum`` over the vmapped axis is batched
into a reduction over the leading (worker) axis of a ``[k, P]`` array, then broadcast back.
This times that reduction three ways, each as 200 dependent iterations inside one compiled
``lax.scan`` (dispatch amortized), on ONE device:

- ``sum(axis=0)``: what the psum batching rule produces (``reduce`` over the major axis);
- ``x[0] + ... + x[k-1]``: the same sum as k - 1 elementwise adds;
- ``ones(k) @ x``: the same sum as a matrix-vector product.
"""

from easgd_jax.parallel import use_simulated_cpu_devices  # sets flags only; jax not started

use_simulated_cpu_devices(8)

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from benchmarks import common  # noqa: E402

WAYS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "sum(axis=0)": lambda x: jnp.sum(x, axis=0),
    "unrolled adds": lambda x: sum(x[i] for i in range(1, x.shape[0])) + x[0],
    "ones @ x": lambda x: jnp.ones(x.shape[0], x.dtype) @ x,
}


def seconds(reduce: Callable[[jax.Array], jax.Array], k: int, size: int, repeats: int,
            trials: int) -> float:
    """Median seconds of one ``reduce`` + broadcast back to ``[k, size]``."""
    def body(c, _):
        return jnp.broadcast_to(reduce(c) * (1.0 / k), c.shape), None

    fn = jax.jit(lambda x: lax.scan(body, x, None, length=repeats)[0])
    x = jnp.ones((k, size), jnp.float32)
    jax.block_until_ready(fn(x))
    times = []
    for _ in range(trials):
        start = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append((time.perf_counter() - start) / repeats)
    return float(np.median(times))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--sizes", type=int, nargs="+", default=[21962, 78858],
                        help="vector lengths (default: cnn1d and mlp256x256 parameters)")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args(argv)
    rows = []
    for size in args.sizes:
        for k in args.workers:
            us = {name: 1e6 * seconds(fn, k, size, args.repeats, args.trials)
                  for name, fn in WAYS.items()}
            rows.append([size, k, *[f"{us[name]:.0f}" for name in WAYS],
                         f"{us['sum(axis=0)'] / us['unrolled adds']:.1f}"])
    one, five, fifteen = common.load_average()
    print("## Sum over k vmapped workers of a float32 vector, one device (us per call)\n")
    print(f"Machine: {common.machine_line()}  ")
    print(f"Load: {one:.2f} {five:.2f} {fifteen:.2f} at the end\n")
    print(common.markdown_table(
        ["elements", "k", *WAYS, "sum(axis=0) / unrolled"], rows))


if __name__ == "__main__":
    main()
