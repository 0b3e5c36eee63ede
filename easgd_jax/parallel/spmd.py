"""Synchronous rounds: ``shard_map`` over workers, ``lax.scan`` over the local steps.

The executor runs any per-worker step function; it never knows which algorithm is inside.
A round is

    carry_i, aux_i = scan(step, carry_i, batches_i)     for every worker i, in parallel

with ``carry`` (params, optimizer state, RNG) and ``batches`` stacked along a leading worker
axis. Collectives inside ``step`` (the algorithms' ``psum``) run over
``layout.axis_name``. One worker per device runs the step unbatched, so an algorithm's
``lax.cond`` around its collective stays a real branch and the collective runs only on
communication steps; with several workers per device the workers are vmapped, which turns
the branch into a select (the all-reduce then runs every step, over local workers only
when d = 1), unless the round is built with the period (``make_round(..., period=tau)``):
it then runs in whole periods whose steps know their phase, with no conditional (each step
is called with ``communicate=True`` or ``False``, which it passes on to ``tx.update``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_batching import custom_vmap
from jax.sharding import PartitionSpec

from easgd_jax.algorithms.base import INIT_PER_WORKER
from easgd_jax.parallel.mesh import DATA_AXIS, LOCAL_AXIS, WorkerLayout

StepFn = Callable[[Any, Any], tuple[Any, Any]]


def per_worker(fn: Callable[..., Any], layout: WorkerLayout, donate_argnums=()) -> Callable:
    """Lifts a one-worker function to stacked workers: jit(shard_map(vmap or squeeze(fn))).

    Every argument and output carries a leading axis of size ``layout.num_workers``. When a
    worker spans devices (``layout.spans_devices``) the ``shard_map`` is manual over the
    worker axes only: inside, ``fn`` sees one worker's whole arrays, which XLA shards over
    that worker's devices as their shardings say (:func:`constrain_state`).
    """
    # Manual over the worker axes only when a worker spans devices (its inner axes automatic).
    manual = {"axis_names": frozenset(layout.device_axes)} if layout.spans_devices else {}
    if layout.workers_per_device == 1:  # one worker per device, or per slice of devices
        def body(*args):
            args = jax.tree.map(lambda a: a[0], args)
            return jax.tree.map(lambda a: a[None], fn(*args))
        check_vma = True
    else:
        body = jax.vmap(fn, axis_name=LOCAL_AXIS)
        # vmap turns the algorithms' shared-clock cond into a select whose branches hold
        # collectives; the varying-manual-axes check cannot type that, the program is fine.
        check_vma = False
    mapped = jax.shard_map(
        body, mesh=layout.mesh, in_specs=PartitionSpec(layout.device_axes),
        out_specs=PartitionSpec(layout.device_axes), check_vma=check_vma, **manual)

    def checked(*args):
        _check_stacked(args, layout.num_workers)  # at trace time: shapes only
        return mapped(*args)

    return jax.jit(checked, donate_argnums=donate_argnums)


def unrolled_over_workers(fn: Callable[..., Any], max_chains: int = 8) -> Callable[..., Any]:
    """``fn`` (one worker's computation, no collectives inside) that, under the vmap of
    co-located workers (:func:`per_worker` with several workers per device), runs once per
    worker, unrolled, instead of once on the stacked workers. Outside a vmap it is ``fn``.

    The results are ``jax.vmap(fn)``'s to float32 rounding (each worker's products run
    unbatched, as with one worker per device). Why: XLA:CPU runs a program's independent
    instructions concurrently on its intra-op threads, while the batched form is one chain of
    instructions that a device's thread runs one after the other; for the main job's
    gradient (MNIST-1D ``cnn1d``, 4 workers on one device, batch 128 each) the unrolled form
    keeps 1.8 of the 2 cores busy instead of 1.5 (benchmarks/RESULTS.md, section 5). With
    more than ``max_chains`` workers on a device, they are split into ``max_chains``
    contiguous chains, each vmapped over its workers, so that the program does not grow
    with the number of workers. Not differentiable (``custom_vmap`` has no reverse mode):
    differentiate ``fn`` itself.
    """
    unrolled = custom_vmap(fn)

    @unrolled.def_vmap
    def rule(axis_size: int, in_batched: list, *args):
        in_batched = tuple(in_batched)
        axes = jax.tree.map(lambda batched: 0 if batched else None, in_batched)
        chains = min(axis_size, max_chains)
        bounds = [axis_size * i // chains for i in range(chains + 1)]

        def pick(index):  # the workers ``index`` of the batched arguments
            return jax.tree.map(lambda a, batched: a[index] if batched else a, args, in_batched)

        outs = []
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            if stop - start == 1:
                outs.append(jax.tree.map(lambda a: a[None], fn(*pick(start))))
            else:
                outs.append(jax.vmap(fn, in_axes=axes)(*pick(slice(start, stop))))
        out = jax.tree.map(lambda *parts: jnp.concatenate(parts), *outs)
        return out, jax.tree.map(lambda _: True, out)

    return unrolled


def constrain_state(tree: Any, layout: WorkerLayout) -> Any:
    """One worker's arrays (inside :func:`per_worker`) held to their FSDP layout over the
    worker's devices (:meth:`WorkerLayout.inner_specs`: each param-mirroring leaf of the
    optimizer and algorithm state split as its parameter, by the model's logical axis names
    when the layout has the model's plan, :meth:`WorkerLayout.with_params`); ``tree`` as it
    is when workers do not span devices."""
    if not layout.spans_devices:
        return tree
    return jax.tree.map(lax.with_sharding_constraint, tree, layout.inner_specs(tree))


def constrain_batches(batches: Any, layout: WorkerLayout) -> Any:
    """One worker's round of batches ``[steps, batch, ...]`` (inside :func:`per_worker`)
    split over the worker's ``data`` devices."""
    if layout.data <= 1:
        return batches
    return jax.tree.map(
        lambda a: lax.with_sharding_constraint(a, PartitionSpec(None, DATA_AXIS)), batches)


def _check_stacked(args: tuple, num_workers: int) -> None:
    """ValueError naming the first leaf of ``args`` without a leading worker axis of size
    ``num_workers`` (before ``shard_map``'s own message about in_specs and ranks)."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(args):
        shape = jnp.shape(leaf)
        if not shape or shape[0] != num_workers:
            where = "args" + jax.tree_util.keystr(path)
            hint = (" A scalar there is the mark of an optimizer state built by "
                    f"tx.init(stacked_params): {INIT_PER_WORKER}") if not shape else ""
            raise ValueError(
                f"{where} has shape {tuple(shape)}: every argument of a per-worker round "
                f"is stacked over the workers, with a leading axis of {num_workers}.{hint}")


def make_round(step: StepFn, layout: WorkerLayout, donate: bool = True,
               period: int | None = None,
               summarize: Callable[[Any, Any], Any] | None = None,
               exchange_step: str = "first") -> Callable:
    """Returns ``round(carry, batches) -> (carry, aux)`` over all workers.

    Args:
        step: ``step(carry, batch) -> (carry, aux)`` for ONE worker and ONE local step;
            with a ``period``, ``step(carry, batch, communicate=phase)``, which passes the
            phase on to its ``tx.update(..., communicate=phase)``
            (:mod:`easgd_jax.algorithms.clock`).
        layout: where the workers live.
        donate: donate the carry's buffers to the round (the caller must not reuse them).
        period: None: every step is traced once, and the periodic algorithms inside decide at
            run time (``lax.cond`` on their clock) whether to communicate. tau >= 1: the round
            runs in whole periods, [one communication step, tau - 1 local steps] each (or
            the communication step last, see ``exchange_step``), the first kind traced with
            ``communicate=True`` and the others with ``communicate=False``, so that no step
            carries a conditional and, with vmapped workers, the collectives run once per
            period instead of every step. The caller guarantees that every round starts at a clock
            multiple of tau (rounds of whole periods from step 0 do); the algorithms'
            results are the same as with None.
        summarize: ``summarize(carry, aux) -> aux'``, applied by each worker to its carry
            and its stacked ``aux`` after the round's last step, in the same compiled
            program (one dispatch per round instead of a second one for a summary).
        exchange_step: with a period, which step of each period communicates: ``"first"``
            (t mod tau = 0: EASGD, DOWNPOUR, LSGD) or ``"last"`` ((t + 1) mod tau = 0: the
            outer step that closes a block of DiLoCo). The algorithm's ``Spec`` says which.

    ``batches`` leaves have shape ``[p, steps, ...]``; the number of local steps in the round
    is ``steps`` (a multiple of ``period``). ``aux`` leaves come back as ``[p, steps, ...]``.
    """
    if period is not None and (not isinstance(period, int) or period < 1):
        raise ValueError(f"period must be None or an integer >= 1, got {period!r}.")
    if exchange_step not in ("first", "last"):
        raise ValueError(f"exchange_step must be 'first' or 'last', got {exchange_step!r}.")

    def communication_step(carry, batch):
        return step(carry, batch, communicate=True)

    def local_step(carry, batch):
        return step(carry, batch, communicate=False)

    def one_period(carry, batches):
        if exchange_step == "last":
            carry, rest = lax.scan(local_step, carry, jax.tree.map(lambda b: b[:-1], batches))
            carry, last = communication_step(carry, jax.tree.map(lambda b: b[-1], batches))
            return carry, jax.tree.map(
                lambda r, a: jnp.concatenate([r, a[None]]), rest, last)
        carry, first = communication_step(carry, jax.tree.map(lambda b: b[0], batches))
        carry, rest = lax.scan(local_step, carry, jax.tree.map(lambda b: b[1:], batches))
        return carry, jax.tree.map(
            lambda a, r: jnp.concatenate([a[None], r]), first, rest)

    def worker_round(carry, batches):
        carry = constrain_state(carry, layout)
        carry, aux = scan_round(carry, constrain_batches(batches, layout))
        carry = constrain_state(carry, layout)
        return (carry, aux) if summarize is None else (carry, summarize(carry, aux))

    def scan_round(carry, batches):
        if period is None:
            return lax.scan(step, carry, batches)
        if period == 1:
            return lax.scan(communication_step, carry, batches)
        steps = jax.tree.leaves(batches)[0].shape[0]
        if steps % period:
            raise ValueError(f"a round of {steps} local steps is not a whole number of "
                             f"periods ({period}).")
        chunks = jax.tree.map(
            lambda b: b.reshape(steps // period, period, *b.shape[1:]), batches)
        carry, aux = lax.scan(one_period, carry, chunks)
        return carry, jax.tree.map(lambda a: a.reshape(steps, *a.shape[2:]), aux)

    return per_worker(worker_round, layout, donate_argnums=(0,) if donate else ())
