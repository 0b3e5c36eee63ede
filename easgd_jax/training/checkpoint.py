"""Checkpoints with Orbax: the whole training state, written atomically, restored exactly.

A checkpoint holds every worker's parameters and optimizer state (the center, every counter,
leader and loss buffers are fields of the optimizer state), the workers' RNG keys, and the
host-side loop state (the global step, which is also the data sampler's position, and the
training losses of the rounds since the last evaluation). Orbax writes each step into a
temporary directory and renames it on commit, so an interrupted write is never taken for a
checkpoint; a committed checkpoint that fails to restore (corrupted files) is skipped in
favour of the previous one, and set aside (renamed, not deleted).
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging


class Checkpointer:
    """Saves and restores ``(state, meta)`` pairs under ``workdir/checkpoints``.

    ``state`` is a pytree of (sharded) jax arrays; ``meta`` is JSON data.
    """

    def __init__(self, workdir: str, max_to_keep: int):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False),
            item_names=("state", "meta"),
        )

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
        self.manager.wait_until_finished()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore_latest(self, target: Any) -> tuple[int, Any, dict[str, Any]] | None:
        """Restores the newest checkpoint that reads back; None when there is none.

        ``target`` gives the structure, shapes, dtypes and shardings to restore into.
        """
        for step in reversed(self.steps()):
            try:
                state, meta = self.restore(step, target)
            except Exception as e:  # a corrupted or partial checkpoint: use the previous one
                aside = self._set_aside(step)
                logging.warning("checkpoint at step %d does not restore (%s: %s); moved it to "
                                "%s and trying the previous one", step, type(e).__name__,
                                str(e)[:300], aside)
                continue
            return step, state, meta
        return None

    def restore(self, step: int, target: Any) -> tuple[Any, dict[str, Any]]:
        """Restores the checkpoint at ``step`` into the structure, shapes, dtypes and
        shardings of ``target``; raises if it is missing or does not read back."""
        abstract = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), target)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return restored.state, restored.meta

    def _set_aside(self, step: int) -> str:
        """Renames a bad checkpoint out of the step namespace (kept for inspection), so the
        resumed run can write that step again."""
        aside = os.path.join(self.directory, f"corrupted-step-{step}-{time.time_ns()}")
        os.rename(os.path.join(self.directory, str(step)), aside)
        self.manager.reload()
        return aside

    def close(self) -> None:
        self.manager.close()
