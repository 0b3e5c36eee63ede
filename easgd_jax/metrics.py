"""Metrics: one JSON line per evaluation in ``workdir/metrics.jsonl`` and a progress line."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from absl import logging


class MetricsWriter:
    """Appends ``{"step": s, **metrics}`` lines to ``metrics.jsonl`` and logs progress."""

    def __init__(self, workdir: str, total_steps: int):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.total_steps = total_steps
        self.start = time.perf_counter()

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        logging.info("%s", self.progress_line(step, record))

    def progress_line(self, step: int, record: dict[str, Any]) -> str:
        elapsed = time.perf_counter() - self.start
        eta = elapsed / max(step, 1) * (self.total_steps - step)
        shown = ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in record.items() if k != "step")
        return (f"step {step}/{self.total_steps} ({100 * step / self.total_steps:.0f}%) "
                f"{elapsed:.0f}s elapsed, ~{eta:.0f}s left | {shown}")


def _plain(value: Any) -> Any:
    """numpy / jax scalars to Python numbers for JSON."""
    if hasattr(value, "item"):
        return value.item()
    return value


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """The records of ``workdir/metrics.jsonl``, in order."""
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
