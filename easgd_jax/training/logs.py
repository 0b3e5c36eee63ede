"""The training log: what launch.py and the sweeps show of the libraries' logging."""

from __future__ import annotations

import logging as std_logging
import warnings

from absl import logging

# Loggers whose INFO lines are the libraries' business, not the run's: JAX's backend probes
# ("Unable to initialize backend 'tpu' ... libtpu.so") and matplotlib's font cache
# ("generated new fontManager").
QUIET_LOGGERS = ("jax", "matplotlib")


class QuietLibraries(std_logging.Filter):
    """Drops the INFO lines of Orbax (one set per checkpoint save or restore), JAX and
    matplotlib from a log, and Orbax's tracebacks of a failed write (the caller reports the
    error); their warnings and errors still show, and absl's verbosity flag
    (``--verbosity=1``: DEBUG) brings every line back. Orbax logs through absl, so its
    records reach the absl handler with Orbax's files as their ``pathname``; JAX and
    matplotlib log through their own loggers, which propagate to it."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        if logging.level_debug():
            return True
        if record.exc_info and "orbax" in record.pathname:
            # Orbax's worker threads log the exception of a failed write with its traceback;
            # the save (synchronous here) raises the same exception in the caller, which
            # reports it (launch.py: one line for a full disk): not shown twice.
            return False
        if record.levelno >= std_logging.WARNING:
            return True
        library = record.name.split(".")[0] in QUIET_LOGGERS or "orbax" in record.pathname
        return not library


def warnings_to_log() -> None:
    """Shows Python warnings (the config's, the data's) as one absl WARNING line each,
    without the file, line and source line that ``warnings`` prints by default."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        del filename, lineno, file, line
        logging.warning("%s: %s", category.__name__, message)

    warnings.showwarning = show


def quiet_library_logs() -> None:
    """Keeps the libraries' INFO lines out of absl's log handler (idempotent)."""
    handler = logging.get_absl_handler()
    if not any(isinstance(f, QuietLibraries) for f in handler.filters):
        handler.addFilter(QuietLibraries())
