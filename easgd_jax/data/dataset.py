"""The in-memory form every data source is brought to."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from easgd_jax.data.sampler import Augment


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A classification data set held as numpy arrays.

    ``train_x``/``test_x`` are float32 of shape ``[n, *example_shape]``; the labels are int32
    in ``[0, num_classes)``. ``augment`` (or None): the training-time augmentation that
    brings a batch of ``train_x`` to ``example_shape`` (e.g. random crops, with ``test_x``
    already centre-cropped); pass it to :class:`~easgd_jax.data.WorkerSampler`.

    A language-model data set holds token windows instead: ``x`` int32 ``[n, context]`` and
    ``y`` int32 ``[n, context]``, the next token of each position (``num_classes`` is the
    vocabulary size). ``optimal_test_loss`` (or None): the exact Bayes-optimal next-token
    cross-entropy of the test split, nats per token, when the source is known
    (``synthetic_lm``); evaluations then report it and the gap to it.

    ``val_x``/``val_y`` (or None): a validation split held out from the training set
    (:func:`hold_out`), evaluated like the test split (``val_loss``, ``val_accuracy``) so
    that a sweep can choose its learning rates on it and report the test error once.
    ``optimal_loss_of`` (or None): the exact Bayes-optimal cross-entropy of any token windows
    ``(x, y)`` of the source (``synthetic_lm``); :func:`hold_out` gives the validation split
    its own optimum with it, ``optimal_val_loss`` (evaluations then report ``val_loss_gap``).
    """

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    augment: Augment | None = None
    optimal_test_loss: float | None = None
    val_x: np.ndarray | None = None
    val_y: np.ndarray | None = None
    optimal_loss_of: Callable[[np.ndarray, np.ndarray], float] | None = None
    optimal_val_loss: float | None = None

    def __post_init__(self):
        if (self.val_x is None) != (self.val_y is None):
            raise ValueError(f"{self.name}: val_x and val_y go together.")
        for split in ("train", "test") + ("val",) * (self.val_x is not None):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if len(x) != len(y) or len(x) == 0:
                raise ValueError(
                    f"{self.name}: {split} has {len(x)} inputs and {len(y)} labels.")

    @property
    def example_shape(self) -> tuple[int, ...]:
        """The shape of one model input (after augmentation): that of a test example."""
        return tuple(self.test_x.shape[1:])


def hold_out(dataset: Dataset, size: int, seed: int = 0) -> Dataset:
    """``dataset`` with ``size`` training examples held out as its validation split: a fixed
    permutation (numpy's ``default_rng(seed)``) of the training set, the first ``size``
    validate, the rest train in their original order. ``size`` 0: ``dataset`` itself (its
    training set, and so every run's batches, unchanged). A source whose optimum is known
    (``dataset.optimal_loss_of``) gives the validation split its exact optimum,
    ``optimal_val_loss``, computed on the held-out windows themselves."""
    if size == 0:
        return dataset
    n = len(dataset.train_x)
    if not 0 < size < n:
        raise ValueError(f"{dataset.name}: validation_size must be in [0, {n}) (the training "
                         f"examples), got {size}.")
    if dataset.val_x is not None:
        raise ValueError(f"{dataset.name} already has a validation split.")
    order = np.random.default_rng(seed).permutation(n)
    val, train = order[:size], np.sort(order[size:])
    val_x, val_y = dataset.train_x[val], dataset.train_y[val]
    optimal_val_loss = (None if dataset.optimal_loss_of is None
                        else float(dataset.optimal_loss_of(val_x, val_y)))
    return dataclasses.replace(dataset, train_x=dataset.train_x[train],
                               train_y=dataset.train_y[train], val_x=val_x, val_y=val_y,
                               optimal_val_loss=optimal_val_loss)


def optimum_metrics(optimal_loss: float | None, test_loss: float,
                    split: str = "test") -> dict[str, float]:
    """``{"optimal_loss", "loss_gap"}`` of an evaluation on data whose best achievable test
    loss is known (``Dataset.optimal_test_loss``, nats per token: ``synthetic_lm``): the
    optimum and ``loss_gap = test_loss - optimal_loss``; empty when it is not known.
    ``split = "val"``: the validation split's (``Dataset.optimal_val_loss``), as
    ``{"optimal_val_loss", "val_loss_gap"}``."""
    if optimal_loss is None:
        return {}
    prefix = "" if split == "test" else f"{split}_"
    return {f"optimal_{prefix}loss": float(optimal_loss),
            f"{prefix}loss_gap": float(test_loss - optimal_loss)}
