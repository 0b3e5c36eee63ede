"""One run per workdir: an exclusive lock held for the whole run.

Two launches into one workdir would interleave their metrics lines and delete each other's
checkpoints. :func:`workdir_lock` takes ``workdir/.lock`` (process 0 of a run; process i > 0
takes ``.lock.process-i``) with ``flock`` and writes the holder into it (pid, host, start
time). A second launch fails at once naming the holder. The kernel releases the lock when
its process dies, even by ``kill -9``: the next launch takes the lock over and says whose it
was. The executors take it (``sync.train``, ``asynchronous.train_and_evaluate``); it is not
re-entrant, so a second run into the same workdir is refused from the same process too.
A lock that cannot be written (a full disk) leaves no workdir holding only ``.lock``; a
workdir that cannot be written at all (read-only) is used without a lock, since no run can
change it: a finished run is reported, anything else stops at its first write.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator

import jax
from absl import logging

# The errors of a workdir that cannot be written (a read-only file system, no permission).
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


class WorkdirBusyError(RuntimeError):
    """Another live run (another process, or this one) holds the workdir's lock."""


def lock_path(workdir: str, process_index: int | None = None) -> str:
    index = jax.process_index() if process_index is None else process_index
    return os.path.join(workdir, ".lock" if index == 0 else f".lock.process-{index}")


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode(errors="replace").strip()
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {"unreadable": text[:200]}


def _describe(holder: dict) -> str:
    if "pid" not in holder:
        return "another process (no holder recorded)"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder['pid']} on host {holder.get('host', '?')} (since {started})"


def held_by(path: str) -> str | None:
    """Who holds the lock file at ``path`` ("pid P on host H (since T)"), None when no
    live process holds it (or there is no such file). Takes the lock for an instant when it
    is free."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _describe(_read_holder(fd))
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def workdir_lock(workdir: str, name: str | None = None) -> Iterator[str]:
    """Holds the workdir's lock for the body; raises :class:`WorkdirBusyError` naming the
    holder if another process has it. Yields the lock file's path. ``name``: the lock
    file's name in ``workdir`` (default: a run's, :func:`lock_path`; a sweep holds
    ``.sweep.lock`` on its workdir, whose runs each lock their own)."""
    created = not os.path.isdir(workdir)
    os.makedirs(workdir, exist_ok=True)
    path = os.path.realpath(os.path.join(workdir, name) if name else lock_path(workdir))
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        if created or e.errno not in _READ_ONLY:
            raise
        # Nothing can be written here, by this run or another: no lock is needed to report
        # a finished run (exit 0); anything else stops at its first write, naming the file.
        logging.warning("workdir %s cannot be written (%s): no lock taken.", workdir,
                        e.strerror)
        yield path
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkdirBusyError(
                f"workdir {workdir} is in use by {_describe(_read_holder(fd))} (lock {path}). "
                "Wait for that run to finish or stop it, or use another workdir.") from None
        try:
            previous = _read_holder(fd)
            if previous:
                logging.warning("took over the lock of %s, which no longer holds it (it died "
                                "or was killed); resuming in %s", _describe(previous), workdir)
            me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(me).encode())  # (a full disk fails here: cleaned up below)
            os.fsync(fd)
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # released cleanly: nobody to take over from
            if created and os.listdir(workdir) == [os.path.basename(path)]:
                # A run that failed before writing anything (bad input found late, e.g. a
                # data set that is not prepared, or the lock's own write on a full disk)
                # leaves no workdir holding only its lock behind.
                os.remove(path)
                os.rmdir(workdir)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
