"""Crops for the EASGD paper's input pipelines (Zhang et al. 2015, arXiv 1412.6651, Sec. 5.1):
random crops of each training image at every step (CIFAR-10: 28x28 out of 32x32; ImageNet:
221x221), the centre crop at test time.

Images are ``[..., height, width, channels]`` numpy arrays; a crop keeps the leading axes.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def _check(images: np.ndarray, size: int) -> tuple[int, int]:
    if images.ndim < 3:
        raise ValueError(
            f"crops need images [..., height, width, channels], got shape {images.shape}.")
    height, width = images.shape[-3:-1]
    if not 1 <= size <= min(height, width):
        raise ValueError(f"crop size {size} must be in [1, {min(height, width)}] for "
                         f"{height}x{width} images.")
    return height, width


def center_crop(images: np.ndarray, size: int) -> np.ndarray:
    """The central ``size x size`` window (rounded towards the top left when uneven)."""
    height, width = _check(images, size)
    top, left = (height - size) // 2, (width - size) // 2
    return images[..., top:top + size, left:left + size, :]


@dataclasses.dataclass(frozen=True)
class RandomCrop:
    """``RandomCrop(size)(batch, rng)``: an independent uniformly placed ``size x size``
    window of each image of ``batch`` ``[n, height, width, channels]``; the
    :class:`~easgd_jax.data.sampler.WorkerSampler` augmentation hook."""

    size: int

    def offsets(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The ``[n, 2]`` top-left corners (row, column) of the windows ``rng`` draws."""
        height, width = _check(batch, self.size)
        high = np.array([height - self.size, width - self.size]) + 1
        return rng.integers(0, high, size=(len(batch), 2))

    def __call__(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if batch.ndim != 4:
            raise ValueError(f"RandomCrop takes [n, height, width, channels], got {batch.shape}.")
        corners = self.offsets(batch, rng)
        window = np.arange(self.size)
        rows = (corners[:, 0, None] + window)[:, :, None]  # [n, size, 1]
        cols = (corners[:, 1, None] + window)[:, None, :]  # [n, 1, size]
        return batch[np.arange(len(batch))[:, None, None], rows, cols]
