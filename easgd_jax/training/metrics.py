"""Metrics: one JSON line per evaluation in ``workdir/metrics.jsonl``, TensorBoard event
files in ``workdir/tensorboard`` (tensorboardX), and a progress line in the log."""

from __future__ import annotations

import json
import numbers
import os
import time
from typing import Any

from absl import logging


class MetricsWriter:
    """Appends ``{"step": s, **metrics}`` lines to ``metrics.jsonl`` and logs progress.

    ``resume_step``: records after it (written by a run that then died) are dropped, so a
    resumed run rewrites them. ``enabled=False`` (processes other than 0) writes nothing.
    """

    def __init__(self, workdir: str, total_steps: int, resume_step: int = 0,
                 enabled: bool = True, tensorboard: bool = True):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.total_steps = total_steps
        self.start, self.start_step = time.perf_counter(), resume_step
        self.enabled = enabled
        self.tensorboard = None
        if not enabled:
            return
        if os.path.exists(self.path):
            kept = [r for r in read_metrics(workdir) if r["step"] <= resume_step]
            with open(self.path + ".tmp", "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)
            os.replace(self.path + ".tmp", self.path)
        if tensorboard:
            from tensorboardX import SummaryWriter

            self.tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"),
                                             purge_step=resume_step + 1 if resume_step else None)

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for name, value in record.items():
                if name == "step":
                    continue
                if isinstance(value, list):  # per-round values: log the last round's
                    value = value[-1] if value else None
                if isinstance(value, list):  # per group
                    for group, v in enumerate(value):
                        self.tensorboard.add_scalar(f"{name}/group{group}", v, step)
                elif isinstance(value, numbers.Real):
                    self.tensorboard.add_scalar(name, value, step)
            self.tensorboard.flush()
        logging.info("%s", self.progress_line(step, record))

    def progress_line(self, step: int, record: dict[str, Any]) -> str:
        elapsed = time.perf_counter() - self.start
        done = max(step - self.start_step, 1)
        eta = elapsed / done * (self.total_steps - step)
        shown = ", ".join(  # a per-round list (LSGD's leaders): its last round only
            f"{k}[-1] {v[-1]}" if isinstance(v, list) and v else
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in record.items() if k != "step")
        return (f"step {step}/{self.total_steps} ({100 * step / self.total_steps:.0f}%) "
                f"{elapsed:.0f}s elapsed, ~{eta:.0f}s left | {shown}")

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def _plain(value: Any) -> Any:
    """numpy / jax scalars to Python numbers for JSON."""
    if hasattr(value, "item"):
        return value.item()
    return value


FINAL_METRICS = "final_metrics.json"


def write_final_metrics(workdir: str, record: dict[str, Any]) -> None:
    """Writes ``workdir/final_metrics.json`` atomically (a temporary file, then a rename):
    a crash mid-write leaves the previous file or none, never a truncated one."""
    path = os.path.join(workdir, FINAL_METRICS)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump({k: _plain(v) for k, v in record.items()}, f, indent=2)
    os.replace(path + ".tmp", path)


def finished_run(workdir: str, num_steps: int) -> dict[str, Any] | None:
    """The final metrics of a run in ``workdir`` that already reached ``num_steps``, or None.

    A finished run is one whose ``final_metrics.json`` says ``step >= num_steps``; running
    it again must change no file (it would otherwise overwrite its results).
    """
    path = os.path.join(workdir, FINAL_METRICS)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        if not isinstance(record, dict):
            raise ValueError(f"a JSON {type(record).__name__}, not an object")
    except ValueError as e:  # JSONDecodeError too: cut by a crash or edited by hand
        aside = f"{path}.damaged-{time.time_ns()}"
        os.replace(path, aside)  # kept for inspection, never deleted
        logging.warning("%s does not parse (%s: %s); moved it to %s. The run's results are "
                        "rebuilt from its last checkpoint and metrics.jsonl.", path,
                        type(e).__name__, e, aside)
        return None
    return record if record.get("step", -1) >= num_steps else None


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """The records of ``workdir/metrics.jsonl``, in order.

    A last line that does not parse (cut by a power loss or a full disk) is dropped with a
    warning naming the file; a resumed run then rewrites the file without it. A bad line
    before the last one is not a cut write: it raises ``ValueError`` naming file and line.
    """
    path = os.path.join(workdir, "metrics.jsonl")
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [(number, line) for number, line in enumerate(f, 1) if line.strip()]
    records = []
    for i, (number, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i < len(lines) - 1:
                raise ValueError(
                    f"{path}, line {number}, is not a metrics record ({e}: {line[:80]!r}); "
                    "only the last line can be cut by a crash. Repair or remove that line, "
                    "or start afresh with --overwrite.") from None
            logging.warning("%s: the last line (%d) is cut (%s: %r); dropped it. A resumed "
                            "run rewrites the file without it.", path, number, e, line[:80])
    return records
