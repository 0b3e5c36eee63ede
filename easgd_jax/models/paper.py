"""The two convolutional nets of the EASGD paper (Zhang, Choromanska & LeCun, "Deep learning
with Elastic Averaging SGD", NIPS 2015, arXiv 1412.6651, Section 5.1).

In the paper's notation, (c, s) = (channels, spatial size) of each layer's output; C =
convolution + ReLU (VALID, stride 1 unless stated), P = max pooling (window = stride),
D = fully connected + ReLU + dropout 0.5, S = fully connected to the class scores (the
softmax is in the loss):

    CIFAR-10, 7 layers, random 28x28 crops:
        (3,28) C(64,24) P(64,12) C(128,8) P(128,4) C(64,2) D(256,1) S(10,1)
        = conv5x5 -> pool 2 -> conv5x5 -> pool 2 -> conv3x3 -> dense -> dense
    ImageNet, 11 layers, 221x221 inputs:
        (3,221) C(96,108) P(96,36) C(256,32) P(256,16) C(384,14) C(384,13) C(256,12)
        P(256,6) D(4096,1) D(4096,1) S(1000,1)
        = conv7x7/2 -> pool 3 -> conv5x5 -> pool 2 -> conv3x3 -> conv2x2 -> conv2x2
          -> pool 2 -> dense -> dense -> dense

Biases start at 0 (CIFAR) and 0.1 (ImageNet); kernels use Flax's default (LeCun normal).
Dropout is applied to the output of each D layer (after its ReLU) with ``train=True`` only.
Every layer's output is sown into the ``"intermediates"`` collection as ``NAME_output``
(``conv1_output``, ``pool1_output``, ..., ``dense1_output``, ``logits_output``; the
parameters are under ``conv1``, ``dense1``, ``logits``, ...):
``apply(..., mutable=["intermediates"])`` returns them, which the tests use to check every
size above. Every parameter carries logical axis names (:data:`CONV_AXES`, models/axes.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax

from easgd_jax.models.axes import named


class Layer(NamedTuple):
    """One layer of a paper net: ``kind`` in {"conv", "pool", "dense"}."""

    kind: str
    features: int = 0  # conv / dense output channels
    window: int = 0  # conv kernel / pooling window (pooling stride = window)
    stride: int = 1  # conv stride


CIFAR_LAYERS: tuple[Layer, ...] = (
    Layer("conv", 64, 5), Layer("pool", window=2),
    Layer("conv", 128, 5), Layer("pool", window=2),
    Layer("conv", 64, 3),
    Layer("dense", 256),
)
IMAGENET_LAYERS: tuple[Layer, ...] = (
    Layer("conv", 96, 7, stride=2), Layer("pool", window=3),
    Layer("conv", 256, 5), Layer("pool", window=2),
    Layer("conv", 384, 3), Layer("conv", 384, 2), Layer("conv", 256, 2), Layer("pool", window=2),
    Layer("dense", 4096), Layer("dense", 4096),
)


# The logical axis names (models/axes.py) of a convolution's kernel [h, w, in, out]; its bias
# is ("features",), a dense layer's kernel ("features_in", "features"), the S layer's
# ("features_in", "classes").
CONV_AXES = ("window_h", "window_w", "features_in", "features")


def _forward(module: nn.Module, x: jax.Array, layers: Sequence[Layer], num_classes: int,
             bias: float, dropout_rate: float, train: bool) -> jax.Array:
    """Runs ``layers`` then the S layer inside ``module``'s compact ``__call__``."""
    bias_init = nn.initializers.constant(bias)
    counts = {"conv": 0, "pool": 0, "dense": 0}
    for layer in layers:
        counts[layer.kind] += 1
        name = f"{layer.kind}{counts[layer.kind]}"
        if layer.kind == "conv":
            x = nn.Conv(layer.features, (layer.window, layer.window),
                        strides=(layer.stride, layer.stride), padding="VALID",
                        kernel_init=named(nn.linear.default_kernel_init, CONV_AXES),
                        bias_init=named(bias_init, ("features",)), name=name)(x)
            x = nn.relu(x)
        elif layer.kind == "pool":
            window = (layer.window, layer.window)
            x = nn.max_pool(x, window, strides=window, padding="VALID")
        elif layer.kind == "dense":
            if x.ndim > 2:
                x = x.reshape(x.shape[0], -1)
            x = nn.relu(nn.Dense(
                layer.features, name=name,
                kernel_init=named(nn.linear.default_kernel_init, ("features_in", "features")),
                bias_init=named(bias_init, ("features",)))(x))
            x = nn.Dropout(dropout_rate, deterministic=not train)(x)
        else:
            raise ValueError(f"unknown layer kind {layer.kind!r}.")
        module.sow("intermediates", f"{name}_output", x)
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(num_classes, name="logits",
                 kernel_init=named(nn.linear.default_kernel_init, ("features_in", "classes")),
                 bias_init=named(bias_init, ("classes",)))(x)
    module.sow("intermediates", "logits_output", x)
    return x


def _check_input(name: str, x: jax.Array, size: int) -> None:
    if x.ndim != 4 or x.shape[1:3] != (size, size):
        raise ValueError(
            f"{name} takes [batch, {size}, {size}, channels] images (the paper's input size), "
            f"got shape {tuple(x.shape)}. Crop the data to {size} (config.data.crop = {size}) "
            f"or set the model's input_size.")


class CifarCNN(nn.Module):
    """The paper's 7-layer CIFAR-10 net on 28x28 crops (351,946 parameters for 10 classes)."""

    num_classes: int = 10
    dropout_rate: float = 0.5
    bias_init_value: float = 0.0
    input_size: int = 28

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _check_input("cifar_cnn", x, self.input_size)
        return _forward(self, x, CIFAR_LAYERS, self.num_classes, self.bias_init_value,
                        self.dropout_rate, train)


class ImageNetCNN(nn.Module):
    """The paper's 11-layer ImageNet net on 221x221 crops (61,128,808 parameters for 1000
    classes)."""

    num_classes: int = 1000
    dropout_rate: float = 0.5
    bias_init_value: float = 0.1
    input_size: int = 221

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _check_input("imagenet_cnn", x, self.input_size)
        return _forward(self, x, IMAGENET_LAYERS, self.num_classes, self.bias_init_value,
                        self.dropout_rate, train)
