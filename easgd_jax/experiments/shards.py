"""A sweep split across processes: ``--shard K/N`` trains the K-th of N parts of a sweep's
runs in one workdir, so that N processes (N GPUs, or the cores of a CPU machine) run one
sweep together.

The parts are whole settings (method, tau, p, tag: every rate and seed of a setting in one
part, since a first-seed rule chooses a setting's rate from its own first-seed runs),
assigned by the longest-processing-time rule on each setting's work (its runs' steps x
workers, largest first, each to the part with the least so far): every process computes the
same parts from the same plan. Locks (:mod:`easgd_jax.training.lock`): a shard holds
``.sweep.lock.shard-K-of-N``, an unsharded sweep ``.sweep.lock``; a sweep is refused while a
sweep of another split holds its lock in the workdir (an unsharded one beside shards, or
shards of another N), since their parts overlap. Each shard writes the report when it ends,
one at a time (``.report.lock``): the last to end writes the whole sweep's.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import heapq
import os
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import TypeVar

from easgd_jax.training.lock import WorkdirBusyError, held_by, workdir_lock

SWEEP_LOCK = ".sweep.lock"
REPORT_LOCK = ".report.lock"
Shard = tuple[int, int]  # (K, N): the K-th of N parts, 0 <= K < N
T = TypeVar("T")


def parse(text: str | None) -> Shard | None:
    """``"K/N"`` as (K, N); None for None or ""; ValueError unless 0 <= K < N."""
    if not text:
        return None
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard takes K/N (e.g. 0/2), got {text!r}.") from None
    if not 0 <= k < n:
        raise ValueError(f"--shard {text}: K must be in 0..N-1 (the K-th of N parts).")
    return k, n


def split(items: Sequence[T], shard: Shard | None, key: Callable[[T], Hashable],
          work: Callable[[T], float]) -> list[T]:
    """The ``items`` of ``shard``'s part (all for None), in their order: the groups of equal
    ``key`` dealt by the longest-processing-time rule on their summed ``work`` (ties: the
    group first in ``items``, then the lower part)."""
    if shard is None:
        return list(items)
    k, n = shard
    totals: dict[Hashable, float] = {}
    for item in items:
        totals[key(item)] = totals.get(key(item), 0.0) + work(item)
    first = {g: i for i, g in reversed(list(enumerate(key(item) for item in items)))}
    loads = [(0.0, part) for part in range(n)]
    part_of: dict[Hashable, int] = {}
    for group in sorted(totals, key=lambda g: (-totals[g], first[g])):
        load, part = heapq.heappop(loads)
        part_of[group] = part
        heapq.heappush(loads, (load + totals[group], part))
    return [item for item in items if part_of[key(item)] == k]


def lock_name(shard: Shard | None) -> str:
    return SWEEP_LOCK if shard is None else f"{SWEEP_LOCK}.shard-{shard[0]}-of-{shard[1]}"


@contextlib.contextmanager
def sweep_lock(workdir: str, shard: Shard | None) -> Iterator[str]:
    """Holds the sweep's lock (:func:`lock_name`) on ``workdir``; raises
    :class:`~easgd_jax.training.lock.WorkdirBusyError` when another sweep holds it, or holds
    the lock of another split (an unsharded sweep beside shards, or shards of another N)."""
    with workdir_lock(workdir, lock_name(shard)) as path:
        own = os.path.basename(path)
        same_split = None if shard is None else f"{SWEEP_LOCK}.shard-*-of-{shard[1]}"
        compatible = set(glob.glob(os.path.join(workdir, same_split))) if same_split else set()
        for other in sorted(glob.glob(os.path.join(workdir, SWEEP_LOCK + "*"))):
            if os.path.basename(other) == own or other in compatible:
                continue
            holder = held_by(other)
            if holder is not None:
                raise WorkdirBusyError(
                    f"sweep workdir {workdir} is in use by {holder} ({os.path.basename(other)}"
                    f"), a sweep of another split than {own}: their runs would overlap. "
                    "Wait for it or stop it; shards of one sweep take the same N.")
        yield path


@contextlib.contextmanager
def report_lock(workdir: str) -> Iterator[None]:
    """One report writer at a time in ``workdir`` (blocks until the other is done)."""
    fd = os.open(os.path.join(workdir, REPORT_LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
