"""The training log: what launch.py and the sweeps show of the libraries' logging."""

from __future__ import annotations

import logging as std_logging

from absl import logging


class QuietLibraries(std_logging.Filter):
    """Drops the INFO lines of Orbax (one set per checkpoint save or restore) from a log;
    its warnings and errors still show. Orbax logs through absl, so its records reach the
    absl handler with Orbax's files as their ``pathname``."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


def quiet_library_logs() -> None:
    """Keeps Orbax's INFO lines out of absl's log handler (idempotent)."""
    handler = logging.get_absl_handler()
    if not any(isinstance(f, QuietLibraries) for f in handler.filters):
        handler.addFilter(QuietLibraries())
