"""The in-memory form every data source is brought to."""

from __future__ import annotations

import dataclasses

import numpy as np

from easgd_jax.data.sampler import Augment


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A classification data set held as numpy arrays.

    ``train_x``/``test_x`` are float32 of shape ``[n, *example_shape]``; the labels are int32
    in ``[0, num_classes)``. ``augment`` (or None): the training-time augmentation that
    brings a batch of ``train_x`` to ``example_shape`` (e.g. random crops, with ``test_x``
    already centre-cropped); pass it to :class:`~easgd_jax.data.WorkerSampler`.
    """

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    augment: Augment | None = None

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if len(x) != len(y) or len(x) == 0:
                raise ValueError(
                    f"{self.name}: {split} has {len(x)} inputs and {len(y)} labels.")

    @property
    def example_shape(self) -> tuple[int, ...]:
        """The shape of one model input (after augmentation): that of a test example."""
        return tuple(self.test_x.shape[1:])
