"""Each worker samples its own mini-batches from the WHOLE training set (the EASGD paper's
setting, Zhang et al. 2015, arXiv 1412.6651: no sharding of the data across workers).

Worker i's batches for the round starting at global step s are drawn i.i.d. uniformly (with
replacement) from a generator seeded by ``(seed, i, s)``: the stream is deterministic, any
round can be regenerated from its step alone (so a resumed run sees the same data), and
different workers see independent samples.

Data augmentation (the paper's random 28x28 crops of CIFAR-10) is an ``augment(batch, rng)``
hook applied to each worker's batch of each step, with a numpy generator seeded by
``(seed, worker, step, AUGMENT_STREAM)``: the augmented stream is also a pure function of the
step, independent of how the steps are grouped into rounds.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

# Augment = (one worker's batch of one step [batch, ...], generator) -> augmented batch.
Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]
# Appended to the augmentation seeds so that they never collide with the index seeds.
AUGMENT_STREAM = 1


class WorkerSampler:
    """Draws ``[p, steps, batch_size, ...]`` rounds of mini-batches for p workers.

    ``augment``: applied to every ``[batch_size, ...]`` batch of ``x`` (see the module
    docstring); None draws the examples as they are.
    """

    def __init__(self, x, y: np.ndarray, num_workers: int, batch_size: int, seed: int,
                 augment: Augment | None = None, block: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if block is not None and block < 1:
            raise ValueError(f"block must be None or >= 1, got {block}.")
        if batch_size > len(y):
            warnings.warn(f"a batch of {batch_size} examples per worker is larger than the "
                          f"training set ({len(y)} examples): each batch draws examples again "
                          "(with replacement); did you mean a smaller train.batch_size?",
                          UserWarning, stacklevel=2)
        self.x, self.y = x, y
        self.num_workers, self.batch_size, self.seed = num_workers, batch_size, seed
        self.augment = augment
        self.block = block

    def indices(self, worker: int, start_step: int, steps: int) -> np.ndarray:
        """Example indices ``[steps, batch_size]`` of ``worker``'s global steps
        ``start_step ..``. With ``block`` B, the steps are drawn in blocks [kB, (k+1)B), each
        from a generator seeded by ``(seed, worker, kB)``: the stream is a function of the
        step alone, however the steps are grouped into rounds. Without, one generator seeded
        by ``(seed, worker, start_step)`` draws them all."""
        if self.block is None:
            rng = np.random.default_rng([self.seed, worker, start_step])
            return rng.integers(0, len(self.y), size=(steps, self.batch_size))
        first = start_step // self.block * self.block
        blocks = [np.random.default_rng([self.seed, worker, b]).integers(
                      0, len(self.y), size=(self.block, self.batch_size))
                  for b in range(first, start_step + steps, self.block)]
        offset = start_step - first
        return np.concatenate(blocks)[offset:offset + steps]

    def augment_rng(self, worker: int, step: int) -> np.random.Generator:
        """The generator that augments ``worker``'s batch of global step ``step``."""
        return np.random.default_rng([self.seed, worker, step, AUGMENT_STREAM])

    def worker_round(
        self, worker: int, start_step: int, steps: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``worker``'s batches ``[steps, batch_size, ...]`` for global steps
        ``start_step .. start_step + steps - 1``."""
        idx = self.indices(worker, start_step, steps)
        if self.augment is None:
            return np.asarray(self.x[idx]), self.y[idx]
        x = np.stack([self.augment(np.asarray(self.x[idx[k]]),
                                   self.augment_rng(worker, start_step + k))
                      for k in range(steps)])
        return x, self.y[idx]

    def round_indices(self, start_step: int, steps: int,
                      workers: range | None = None) -> np.ndarray:
        """The example indices ``[workers, steps, batch_size]`` of :meth:`round` (without
        augmentation, ``round`` returns ``x[idx], y[idx]`` of them)."""
        workers = range(self.num_workers) if workers is None else workers
        return np.stack([self.indices(w, start_step, steps) for w in workers])

    def round(
        self, start_step: int, steps: int, workers: range | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batches for global steps ``start_step .. start_step + steps - 1`` of ``workers``
        (default: all), stacked along a leading worker axis."""
        workers = range(self.num_workers) if workers is None else workers
        if self.augment is None:  # one gather for all workers
            idx = self.round_indices(start_step, steps, workers)
            return np.asarray(self.x[idx]), self.y[idx]
        xs, ys = zip(*(self.worker_round(w, start_step, steps) for w in workers), strict=True)
        return np.stack(xs), np.stack(ys)
