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
when d = 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax import lax
from jax.sharding import PartitionSpec

from easgd_jax.parallel.mesh import LOCAL_AXIS, WorkerLayout

StepFn = Callable[[Any, Any], tuple[Any, Any]]


def per_worker(fn: Callable[..., Any], layout: WorkerLayout, donate_argnums=()) -> Callable:
    """Lifts a one-worker function to stacked workers: jit(shard_map(vmap or squeeze(fn))).

    Every argument and output carries a leading axis of size ``layout.num_workers``.
    """
    if layout.workers_per_device == 1:
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
        out_specs=PartitionSpec(layout.device_axes), check_vma=check_vma)
    return jax.jit(mapped, donate_argnums=donate_argnums)


def make_round(step: StepFn, layout: WorkerLayout, donate: bool = True) -> Callable:
    """Returns ``round(carry, batches) -> (carry, aux)`` over all workers.

    Args:
        step: ``step(carry, batch) -> (carry, aux)`` for ONE worker and ONE local step.
        layout: where the workers live.
        donate: donate the carry's buffers to the round (the caller must not reuse them).

    ``batches`` leaves have shape ``[p, steps, ...]``; the number of local steps in the round
    is ``steps``. ``aux`` leaves come back as ``[p, steps, ...]``.
    """

    def worker_round(carry, batches):
        return lax.scan(step, carry, batches)

    return per_worker(worker_round, layout, donate_argnums=(0,) if donate else ())
