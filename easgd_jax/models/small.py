"""Small Flax models for the embedded data sets, cheap enough for simulated CPU devices."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from easgd_jax.models.axes import named


class MLP(nn.Module):
    """Flatten -> [Dense -> ReLU] * len(hidden) -> Dense(num_classes).

    Logical axis names (models/axes.py): each kernel ``("features_in", "features")``, its
    bias ``("features",)``; the output layer's ``("features_in", "classes")``, ``("classes",)``.
    """

    num_classes: int
    hidden: Sequence[int] = (256, 256)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        x = x.reshape(x.shape[0], -1)
        for width in self.hidden:
            x = nn.relu(_dense(width, "features")(x))
        return _dense(self.num_classes, "classes")(x)


def _dense(features: int, out: str) -> nn.Dense:
    """``nn.Dense(features)`` (Flax's default initializers) whose kernel is named
    ``("features_in", out)`` and bias ``(out,)``."""
    return nn.Dense(features,
                    kernel_init=named(nn.linear.default_kernel_init, ("features_in", out)),
                    bias_init=named(nn.initializers.zeros_init(), (out,)))


@jax.custom_vjp
def patch_matmul(patches: jax.Array, kernel: jax.Array) -> jax.Array:
    """``patches @ kernel`` (``[..., m, k] @ [k, n]``) whose kernel gradient runs as a
    canonical matrix product.

    The gradient is autodiff's, ``d_patches = g @ kernel^T`` and ``d_kernel = patches^T @ g``
    summed over every leading axis, to float32 rounding; only the kernel gradient is
    computed as ``(g^T @ patches)^T`` with ``g^T`` materialised. Autodiff's form contracts
    both operands over their major axis, a dot XLA:CPU's YNNPACK does not take, so it ran in
    Eigen, whose intra-op threads compete with the simulated devices' threads: with this
    form the main job's compiled round runs 1.19x as many examples per second on 4 devices
    and 1.06x with the 4 workers vmapped on one (medians of 6 interleaved repetitions,
    benchmarks/RESULTS.md, section 5). The optimization barriers keep XLA from folding the
    transposes back into the dot's dimension numbers.

    Reverse mode only (a ``custom_vjp``): ``jax.grad`` of any order works, ``jax.jvp`` and
    ``jax.jacfwd`` through the model do not.
    """
    return patches @ kernel


def _patch_matmul_fwd(patches: jax.Array, kernel: jax.Array):
    return patches @ kernel, (patches, kernel)


def _patch_matmul_bwd(residuals, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    patches, kernel = residuals
    d_patches = g @ kernel.T
    g_t = jax.lax.optimization_barrier(g.reshape(-1, g.shape[-1]).T)  # [n, m]
    d_kernel_t = jax.lax.optimization_barrier(g_t @ patches.reshape(-1, patches.shape[-1]))
    return d_patches, d_kernel_t.T


patch_matmul.defvjp(_patch_matmul_fwd, _patch_matmul_bwd)


class StridedConv1D(nn.Module):
    """A 1-D convolution ("SAME" padding) computed as patches @ kernel.

    Mathematically ``nn.Conv(features, (kernel_size,), strides=(stride,), padding="SAME")``
    with the same parameter shapes; written as one matmul over extracted windows because
    XLA:CPU runs small strided convolutions (and their gradients) far slower than a dot;
    the product's kernel gradient is :func:`patch_matmul`'s.
    """

    features: int
    kernel_size: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, length, channels = x.shape
        out_length = -(-length // self.stride)
        pad = max((out_length - 1) * self.stride + self.kernel_size - length, 0)
        x = jnp.pad(x, ((0, 0), (pad // 2, pad - pad // 2), (0, 0)))
        span = (out_length - 1) * self.stride + 1
        windows = [x[:, i:i + span:self.stride, :] for i in range(self.kernel_size)]
        patches = jnp.concatenate(windows, axis=-1)  # [batch, out_length, k * channels]
        kernel = self.param(
            "kernel", named(nn.initializers.lecun_normal(), ("window", "features_in", "features")),
            (self.kernel_size, channels, self.features))
        bias = self.param("bias", named(nn.initializers.zeros_init(), ("features",)),
                          (self.features,))
        return patch_matmul(patches, kernel.reshape(-1, self.features)) + bias


class CNN1D(nn.Module):
    """A 1-D CNN for MNIST-1D: [Conv1D(stride 2) -> ReLU] * len(features) -> Dense.

    Inputs ``[batch, length]`` (one channel) or ``[batch, length, channels]``. Logical axis
    names: each convolution's kernel ``("window", "features_in", "features")``, its bias
    ``("features",)``; the output layer's as :class:`MLP`'s.
    """

    num_classes: int
    features: Sequence[int] = (32, 64, 64)
    kernel_sizes: Sequence[int] = (5, 3, 3)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        if x.ndim == 2:
            x = x[..., None]
        for width, kernel in zip(self.features, self.kernel_sizes, strict=True):
            x = nn.relu(StridedConv1D(width, kernel, stride=2)(x))
        x = x.reshape(x.shape[0], -1)
        return _dense(self.num_classes, "classes")(x)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy with integer labels: ``logits [..., classes]``, ``labels
    [...]`` (one label per example, or per position: a language model's next tokens, the
    mean over every token).

    The label's log-probability is picked by a one-hot product (exact: one term and zeros),
    not a gather: XLA's SPMD partitioner fails on a gather whose indices are split over the
    data devices of a worker that spans devices (a check failure in jax 0.10)."""
    log_probs = jax.nn.log_softmax(logits)
    picked = jnp.sum(log_probs * jax.nn.one_hot(labels, log_probs.shape[-1],
                                                dtype=log_probs.dtype), axis=-1)
    return -jnp.mean(picked)
