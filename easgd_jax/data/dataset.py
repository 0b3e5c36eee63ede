"""The in-memory form every data source is brought to."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A classification data set held as numpy arrays.

    ``train_x``/``test_x`` are float32 of shape ``[n, *example_shape]``; the labels are int32
    in ``[0, num_classes)``.
    """

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if len(x) != len(y) or len(x) == 0:
                raise ValueError(
                    f"{self.name}: {split} has {len(x)} inputs and {len(y)} labels.")

    @property
    def example_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])
