"""Each worker samples its own mini-batches from the WHOLE training set (the EASGD paper's
setting: no sharding of the data across workers).

Worker i's batches for the round starting at global step s are drawn i.i.d. uniformly (with
replacement) from a generator seeded by ``(seed, i, s)``: the stream is deterministic, any
round can be regenerated from its step alone (so a resumed run sees the same data), and
different workers see independent samples.
"""

from __future__ import annotations

import numpy as np


class WorkerSampler:
    """Draws ``[p, steps, batch_size, ...]`` rounds of mini-batches for p workers."""

    def __init__(self, x, y: np.ndarray, num_workers: int, batch_size: int, seed: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.x, self.y = x, y
        self.num_workers, self.batch_size, self.seed = num_workers, batch_size, seed

    def indices(self, worker: int, start_step: int, steps: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, worker, start_step])
        return rng.integers(0, len(self.y), size=(steps, self.batch_size))

    def round(
        self, start_step: int, steps: int, workers: range | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batches for global steps ``start_step .. start_step + steps - 1`` of ``workers``
        (default: all), stacked along a leading worker axis."""
        workers = range(self.num_workers) if workers is None else workers
        idx = np.stack([self.indices(w, start_step, steps) for w in workers])
        return np.asarray(self.x[idx]), self.y[idx]
