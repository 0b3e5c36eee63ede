"""Flax models looked up by name from the config."""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from easgd_jax.models.axes import logical_axes
from easgd_jax.models.paper import CifarCNN, ImageNetCNN
from easgd_jax.models.small import CNN1D, MLP, cross_entropy
from easgd_jax.models.transformer import Transformer

_MODELS: dict[str, type[nn.Module]] = {
    "mlp": MLP, "cnn1d": CNN1D,
    # The EASGD paper's nets (Section 5.1).
    "cifar_cnn": CifarCNN, "imagenet_cnn": ImageNetCNN,
    # A decoder-only language model (models/transformer.py).
    "transformer": Transformer,
}
MODEL_NAMES = tuple(sorted(_MODELS))
# The kinds of example each model takes (data.INPUT_KINDS): "signal" ([length] or [length,
# channels]), "image" ([height, width, channels]) or "token" ([length] token ids, the next
# token of each position as its label); the MLP flattens any signal or image.
INPUT_KINDS: dict[str, tuple[str, ...]] = {
    "mlp": ("signal", "image"), "cnn1d": ("signal",),
    "cifar_cnn": ("image",), "imagenet_cnn": ("image",), "transformer": ("token",),
}


def get_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Builds the model ``name`` with ``num_classes`` outputs and keyword hyperparameters."""
    try:
        cls = _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}.") from None
    fields = set(cls.__dataclass_fields__) - {"parent", "name", "num_classes"}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ValueError(
            f"model {name!r} does not take {', '.join(unknown)}; it takes "
            f"{', '.join(sorted(fields))}.")
    return cls(num_classes=num_classes, **kwargs)


__all__ = ["CNN1D", "MLP", "CifarCNN", "ImageNetCNN", "INPUT_KINDS", "MODEL_NAMES", "Transformer",
           "cross_entropy", "get_model", "logical_axes"]
