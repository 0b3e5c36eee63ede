"""Checkpoints with Orbax: the whole training state, written atomically, verified on restore.

A checkpoint holds every worker's parameters and optimizer state (the center, every counter,
leader and loss buffers are fields of the optimizer state), the workers' RNG keys, and the
host-side loop state (the global step, which is also the data sampler's position, and the
training losses of the rounds since the last evaluation). Orbax writes each step into a
temporary directory and renames it on commit, so an interrupted write is never taken for a
checkpoint.

Every checkpoint also stores a checksum of each saved array and of the metadata (the item
``checksums``). A restore recomputes them: a checkpoint that does not read back or whose
checksums differ (a flipped bit on disk restores without an error in Orbax) is set aside
(renamed, not deleted) and the previous one is tried, with a warning naming the damage. A
run is never resumed from a checkpoint it has not verified; when checkpoints were written
but none verifies, :meth:`Checkpointer.restore_latest` refuses (``CheckpointError``) instead
of starting over, which would rewrite the run's metrics.

Every checkpoint of a run also records the config it was written under (``meta["config"]``:
the resolved config without its per-launch fields, and ``meta["config_sha256"]``, the
SHA-256 of its canonical JSON): a launch whose config differs from it (outside
``train.num_steps``) is refused in one line (:class:`CheckpointConfigError`), with or without
the workdir's ``config.json``, and nothing is moved.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

CHECKSUM_FORMAT = "easgd-jax-fletcher32x2-v1"
SET_ASIDE_PREFIX = "corrupted-step-"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be trusted: unreadable, or its checksums differ."""


class CheckpointConfigError(CheckpointError):
    """A sound checkpoint written under another config (fields other than the resumable
    ones differ): not damage, nothing is set aside; the run refuses to start."""


class CheckpointStructureError(CheckpointError):
    """A sound checkpoint of another state (another algorithm, model or code version): not
    damage, so nothing is set aside; the run refuses to start."""


def _path_key(key: Any) -> str:
    """One step of a ``jax.tree_util`` key path as Orbax names it (dict key, NamedTuple
    field, sequence index)."""
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def _leaf_signature(leaf: Any) -> str:
    shape, dtype = getattr(leaf, "shape", None), getattr(leaf, "dtype", None)
    if shape is None:
        return type(leaf).__name__
    return f"{jnp.dtype(dtype).name}{list(shape)}"


def _target_leaves(target: Any) -> dict[str, str]:
    return {".".join(_path_key(k) for k in path): _leaf_signature(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(target)[0]}


def _saved_leaves(tree: Any, path: tuple[str, ...] = ()) -> dict[str, str]:
    """The leaves of an Orbax metadata tree (nested dicts and lists), by dotted path."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list | tuple):
        items = enumerate(tree)
    else:
        return {} if tree is None else {".".join(path): _leaf_signature(tree)}
    out: dict[str, str] = {}
    for key, child in items:
        out.update(_saved_leaves(child, (*path, str(key))))
    return out


def structure_difference(saved: dict[str, str], wanted: dict[str, str]) -> str | None:
    """None when the saved leaves (dotted path -> dtype[shape]) are the wanted ones; else
    the first differences, named."""
    missing = sorted(set(wanted) - set(saved))
    extra = sorted(set(saved) - set(wanted))
    changed = sorted(k for k in set(saved) & set(wanted) if saved[k] != wanted[k])
    parts = []
    if missing:
        parts.append(f"{len(missing)} array(s) this run has and the checkpoint lacks "
                     f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    if extra:
        parts.append(f"{len(extra)} array(s) the checkpoint has and this run lacks "
                     f"({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''})")
    if changed:
        parts.append(", ".join(f"{k}: saved {saved[k]}, this run {wanted[k]}"
                               for k in changed[:3]))
    return "; ".join(parts) or None


def _as_words(a: jax.Array) -> jax.Array:
    """The array's bits as a flat uint32 vector (64-bit values as two words)."""
    if a.dtype == jnp.bool_:
        return a.reshape(-1).astype(jnp.uint32)
    bits = jax.lax.bitcast_convert_type(a, jnp.dtype(f"uint{a.dtype.itemsize * 8}"))
    if a.dtype.itemsize == 8:
        bits = jax.lax.bitcast_convert_type(bits, jnp.uint32)  # [..., 2]
    return bits.reshape(-1).astype(jnp.uint32)


def _array_checksum(a: jax.Array) -> jax.Array:
    """``[sum w, sum (2k + 1) w_k] mod 2**32`` over the array's 32-bit words ``w``.

    Integer sums wrap, so the result does not depend on the order of summation (the
    layout, the number of devices or processes). One flipped bit changes ``w_k`` by
    ``2**b`` and the weighted sum by ``(2k + 1) 2**b``, never 0 mod 2**32: it is always
    detected; so is a swap of two words.
    """
    words = _as_words(a)
    weights = 2 * jnp.arange(words.shape[0], dtype=jnp.uint32) + 1
    return jnp.stack([jnp.sum(words, dtype=jnp.uint32),
                      jnp.sum(words * weights, dtype=jnp.uint32)])


def state_checksums(state: Any) -> dict[str, list[int]]:
    """``{key path: [two uint32]}`` for every array of ``state``, computed where the arrays
    live (a collective on several processes; every process gets the result)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(state)
    arrays = [jnp.asarray(leaf) for _, leaf in leaves]
    # Replicated results: every process reads its own copy.
    replicated = tuple(NamedSharding(a.sharding.mesh, PartitionSpec())
                       if isinstance(a.sharding, NamedSharding) else None for a in arrays)
    sums = _checksum_program(replicated)(tuple(arrays))
    return {jax.tree_util.keystr(path): [int(v) for v in np.asarray(s.addressable_data(0))]
            for (path, _), s in zip(leaves, sums, strict=True)}


@functools.lru_cache(maxsize=16)
def _checksum_program(out_shardings: tuple) -> Callable:
    """The jitted checksums of a tuple of arrays, one program per output layout (a run
    saves and restores the same layout every time: traced and compiled once, not at every
    checkpoint)."""
    return jax.jit(lambda xs: tuple(_array_checksum(x) for x in xs),
                   out_shardings=out_shardings)


def meta_checksum(meta: dict[str, Any]) -> str:
    """SHA-256 of the metadata's canonical JSON."""
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def config_record(config: Any) -> dict[str, Any]:
    """The config a checkpoint records: ``config`` resolved to JSON data, without the fields
    that differ between the launches or processes of one run
    (:data:`~easgd_jax.training.config.PER_LAUNCH_FIELDS`)."""
    from easgd_jax.training.config import PER_LAUNCH_FIELDS

    record = json.loads(config.to_json_best_effort())

    def prune(node: dict[str, Any], prefix: str) -> dict[str, Any]:
        return {k: prune(v, f"{prefix}{k}.") if isinstance(v, dict) else v
                for k, v in node.items() if f"{prefix}{k}" not in PER_LAUNCH_FIELDS}

    return prune(record, "")


def config_differences_from(recorded: dict[str, Any], config: Any) -> list[str]:
    """What differs between a recorded config and ``config`` (outside the resumable and
    per-launch fields), as ``"field: a in the workdir, b now"``."""
    from easgd_jax.training.config import RESUMABLE_CHANGES, config_differences

    return config_differences(recorded, config_record(config), RESUMABLE_CHANGES)


class Checkpointer:
    """Saves and restores ``(state, meta)`` pairs under ``workdir/checkpoints``.

    ``state`` is a pytree of (sharded) jax arrays; ``meta`` is JSON data.
    """

    def __init__(self, workdir: str, max_to_keep: int, config: Any = None):
        """``config``: the run's config, recorded in every checkpoint saved and compared
        with the one each checkpoint restored recorded (None: neither)."""
        self.config = config
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False),
            # Handlers named up front, so that a fresh process reads an item's metadata
            # (the saved tree, _check_structure) before anything is restored.
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler(),
                           "checksums": ocp.JsonCheckpointHandler()},
        )

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        if self.config is not None:
            record = config_record(self.config)
            meta = {**meta, "config": record, "config_sha256": meta_checksum(record)}
        checksums = {"format": CHECKSUM_FORMAT, "state": state_checksums(state),
                     "meta": meta_checksum(meta)}
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta),
            checksums=ocp.args.JsonSave(checksums)), force=True)
        self.manager.wait_until_finished()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def set_aside(self) -> list[str]:
        """The checkpoints set aside as damaged (their folders)."""
        return sorted(glob.glob(os.path.join(self.directory, SET_ASIDE_PREFIX + "*")))

    def restore_latest(self, target: Any) -> tuple[int, Any, dict[str, Any]] | None:
        """Restores the newest checkpoint that reads back and verifies; None when no
        checkpoint was ever written.

        ``target`` gives the structure, shapes, dtypes and shardings to restore into. Raises
        :class:`CheckpointError` when checkpoints were written but none verifies: starting
        over would silently rewrite the run (start afresh with ``--overwrite``).
        """
        for step in reversed(self.steps()):
            self._check_config(step)  # another config: refuse, move nothing
            try:
                state, meta = self.restore(step, target)
            except CheckpointStructureError:  # not damage: refuse, move nothing
                raise
            except Exception as e:  # unreadable or checksums differ: use the previous one
                aside = self._set_aside(step)
                logging.warning("checkpoint at step %d cannot be used (%s: %s); moved it to "
                                "%s and trying the previous one", step, type(e).__name__,
                                str(e)[:300], aside)
                continue
            return step, state, meta
        damaged = self.set_aside()
        if damaged:
            raise CheckpointError(
                f"no checkpoint in {self.directory} can be verified (set aside as damaged: "
                f"{', '.join(os.path.basename(d) for d in damaged)}). Resuming is "
                "impossible and starting over would rewrite the run's metrics: start afresh "
                "with --overwrite (train_and_evaluate(..., overwrite=True)), or use another "
                "workdir.")
        return None

    def restore(self, step: int, target: Any) -> tuple[Any, dict[str, Any]]:
        """Restores the checkpoint at ``step`` into the structure, shapes, dtypes and
        shardings of ``target`` and verifies its checksums; raises if it is missing, does not
        read back, or differs from what was saved (:class:`CheckpointError`)."""
        self._check_structure(step, target)
        abstract = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), target)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore(),
            checksums=ocp.args.JsonRestore()))
        verify(step, restored.state, restored.meta, restored.checksums)
        return restored.state, restored.meta

    def recorded_config(self, step: int) -> dict[str, Any] | None:
        """The config the checkpoint at ``step`` recorded (its metadata, checked against
        its checksum); None when it recorded none or cannot be read (damage is the
        restore's to find)."""
        try:
            read = self.manager.restore(step, args=ocp.args.Composite(
                meta=ocp.args.JsonRestore(), checksums=ocp.args.JsonRestore()))
            meta, checksums = read.meta, read.checksums
        except Exception:  # noqa: BLE001 - unreadable: the restore sets it aside
            return None
        if (not isinstance(meta, dict) or not isinstance(checksums, dict)
                or meta_checksum(meta) != checksums.get("meta")):
            return None
        return meta.get("config")

    def latest_recorded_config(self) -> tuple[int, dict[str, Any]] | None:
        """``(step, config)`` of the newest checkpoint that recorded its config, or None."""
        for step in reversed(self.steps()):
            recorded = self.recorded_config(step)
            if recorded is not None:
                return step, recorded
        return None

    def _check_config(self, step: int) -> None:
        """Raises :class:`CheckpointConfigError` when the checkpoint at ``step`` recorded
        another config than this run's."""
        if self.config is None:
            return
        recorded = self.recorded_config(step)
        if recorded is None:
            return
        differences = config_differences_from(recorded, self.config)
        if differences:
            raise CheckpointConfigError(
                f"the checkpoint at step {step} in {self.directory} was written under another "
                f"config ({'; '.join(differences)}). Nothing was moved. Resume it with the "
                "config that wrote it, use another workdir, or start afresh with --overwrite.")

    def _check_structure(self, step: int, target: Any) -> None:
        """Raises :class:`CheckpointStructureError` when the checkpoint at ``step`` holds
        another tree than ``target`` (read from its metadata; an unreadable one is left to
        the restore, which treats it as damage)."""
        try:
            metadata = self.manager.item_metadata(step)["state"]
        except Exception:  # unreadable metadata: the restore will tell
            return
        saved = _saved_leaves(getattr(metadata, "tree", metadata))
        if not saved:  # no metadata to compare with: the restore will tell
            return
        difference = structure_difference(saved, _target_leaves(target))
        if difference is not None:
            raise CheckpointStructureError(
                f"the checkpoint at step {step} in {self.directory} holds another state than "
                f"this run's ({difference}): written by another algorithm, model or version "
                "of the code. Nothing was moved. Resume it with the code and config that "
                "wrote it, use another workdir, or start afresh with --overwrite.")

    def _set_aside(self, step: int) -> str:
        """Renames a bad checkpoint out of the step namespace (kept for inspection), so the
        resumed run can write that step again. Process 0 renames; all wait for it."""
        aside = os.path.join(self.directory, f"{SET_ASIDE_PREFIX}{step}-{time.time_ns()}")
        if jax.process_index() == 0:
            os.rename(os.path.join(self.directory, str(step)), aside)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
        self.manager.reload()
        return aside

    def close(self) -> None:
        self.manager.close()


def verify(step: int, state: Any, meta: dict[str, Any], checksums: Any) -> None:
    """Raises :class:`CheckpointError` naming what differs when ``state`` or ``meta`` do
    not match the ``checksums`` saved with them."""
    if not isinstance(checksums, dict) or checksums.get("format") != CHECKSUM_FORMAT:
        raise CheckpointError(f"checkpoint {step} has no valid checksums record")
    if meta_checksum(meta) != checksums.get("meta"):
        raise CheckpointError(f"checkpoint {step}: the metadata's checksum differs")
    saved, now = checksums.get("state", {}), state_checksums(state)
    differ = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if differ:
        raise CheckpointError(
            f"checkpoint {step}: the checksums of {len(differ)} array(s) differ from those "
            f"saved ({', '.join(differ[:5])}{', ...' if len(differ) > 5 else ''})")
