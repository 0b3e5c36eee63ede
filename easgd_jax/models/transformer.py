"""A decoder-only transformer language model (GPT-style, pre-norm), for the LM workloads.

    h_0 = E[x] (+ P, learned positions)
    h_l = h_{l-1} + Attn(LN(h_{l-1}))          causal multi-head self-attention, RoPE on q, k
    h_l = h_l + MLP(LN(h_l))                  Dense(mlp_ratio * d) -> GELU -> Dense(d)
    logits = LN(h_L) @ E^T  (tied)  or  LN(h_L) @ W_out

Pre-norm blocks (Xiong et al. 2020, arXiv 2002.04745, as GPT-2), causal attention
(Vaswani et al. 2017), rotary position embeddings (RoPE: Su et al. 2021, arXiv 2104.09864)
or learned absolute positions, optional tied input/output embeddings (Press & Wolf 2017).

Every parameter carries logical axis names (flax ``nn.with_logical_partitioning``):
``vocab``, ``embed``, ``heads``, ``kv``, ``mlp``, ``length``, so that a sharded-worker layout
can split it with ``nn.logical_axis_rules`` (:func:`easgd_jax.models.logical_axes` reads
them). The training code keeps the params unboxed (``nn.meta.unbox`` in
:func:`easgd_jax.training.common.init_params`); the names live on the model's ``init``.

The model takes ``[batch, length]`` token ids (integers, or floats holding integers: the data
pipeline casts batches to the parameter dtype) and returns ``[batch, length, num_classes]``
next-token logits; ``num_classes`` is the vocabulary size (256 for byte-level text).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

POSITIONS = ("rope", "learned")
# The logical axis names the parameters use, in the order a layout would usually list them.
LOGICAL_AXES = ("vocab", "embed", "heads", "kv", "mlp", "length")


def _init(init: nn.initializers.Initializer, names: tuple[str, ...]) -> Any:
    return nn.with_logical_partitioning(init, names)


def rope(x: jax.Array, base: float = 10000.0) -> jax.Array:
    """Rotary position embedding of ``x`` ``[batch, length, heads, head_dim]`` (RoPE, Su et
    al. 2021, eq. 34): the pairs ``(x_j, x_{j + d/2})`` at position t rotated by the angle
    ``t * base^(-2j/d)``, so that ``<rope(q)_s, rope(k)_t>`` depends on s - t only."""
    length, dim = x.shape[1], x.shape[-1]
    half = dim // 2
    freqs = base ** (-jnp.arange(half, dtype=jnp.float32) * 2.0 / dim)
    angles = jnp.arange(length, dtype=jnp.float32)[:, None] * freqs[None, :]  # [length, half]
    cos = jnp.cos(angles)[None, :, None, :].astype(x.dtype)
    sin = jnp.sin(angles)[None, :, None, :].astype(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def layer_norm(name: str, dtype: Any) -> nn.LayerNorm:
    """``nn.LayerNorm`` whose scale and bias carry the logical axis ``embed``."""
    return nn.LayerNorm(epsilon=1e-5, dtype=dtype, param_dtype=dtype, name=name,
                        scale_init=_init(nn.initializers.ones_init(), ("embed",)),
                        bias_init=_init(nn.initializers.zeros_init(), ("embed",)))


class _HeadsProjection(nn.Module):
    """The parameters of ``nn.DenseGeneral((num_heads, head_dim))`` over the last axis,
    created exactly as that layer creates them (same names, shapes, initializers on the
    flattened ``[width, num_heads * head_dim]`` shape, same RNG stream), without applying
    them: :class:`CausalSelfAttention` applies the query, key and value projections as one
    product."""

    num_heads: int
    head_dim: int

    @nn.compact
    def __call__(self, width: int, dtype: Any) -> tuple[jax.Array, jax.Array]:
        def flat(init: Any, shape: tuple[int, ...]) -> Any:
            def wrapped(rng: jax.Array, full_shape: tuple[int, ...], dtype: Any) -> Any:
                value = init(rng, shape, dtype)
                if isinstance(value, nn.meta.AxisMetadata):
                    return nn.meta.replace_boxed(value, jnp.reshape(value.unbox(), full_shape))
                return jnp.reshape(value, full_shape)
            return wrapped

        features = self.num_heads * self.head_dim
        kernel = self.param(
            "kernel", flat(_init(nn.initializers.lecun_normal(), ("embed", "heads", "kv")),
                           (width, features)), (width, self.num_heads, self.head_dim), dtype)
        bias = self.param(
            "bias", flat(_init(nn.initializers.zeros_init(), ("heads", "kv")), (features,)),
            (self.num_heads, self.head_dim), dtype)
        return kernel, bias


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """``softmax(q k^T / sqrt(head_dim) + causal mask) v`` over ``[batch, length, heads,
    head_dim]`` (Vaswani et al. 2017, eq. 1), the arithmetic of
    ``jax.nn.dot_product_attention(q, k, v, is_causal=True)`` (its XLA path: logits in at
    least float32, scaled after the product, masked with -0.7 * float32 max, softmax in
    float32) without its grouped-query reshape and vmap."""
    head_dim, length = q.shape[-1], q.shape[1]
    logits = jnp.einsum("bthd,bshd->bhts", q, k,
                        preferred_element_type=jnp.promote_types(q.dtype, jnp.float32))
    logits = logits * jnp.asarray(1.0 / np.sqrt(head_dim), logits.dtype)
    mask = jnp.tril(jnp.ones((length, length), bool))
    logits = jnp.where(mask, logits, jnp.asarray(-0.7 * np.finfo(np.float32).max, logits.dtype))
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(k.dtype)
    return jnp.einsum("bhts,bshd->bthd", probs, v)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention; RoPE on queries and keys when ``use_rope``.

    The query, key and value projections keep their own parameters (``query``, ``key``,
    ``value``: ``DenseGeneral`` kernels ``[width, heads, head_dim]``) but run as one product
    with their kernels side by side (one ``[tokens, width] x [width, 3 width]`` matmul and one
    in the backward pass instead of three, and no sum of three input gradients): the same
    numbers up to the order of that sum's terms."""

    num_heads: int
    use_rope: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        head_dim = width // self.num_heads
        kernels, biases = zip(*(
            _HeadsProjection(self.num_heads, head_dim, name=name)(width, x.dtype)
            for name in ("query", "key", "value")), strict=True)
        qkv = lax.dot_general(x, jnp.concatenate(kernels, axis=1), (((x.ndim - 1,), (0,)),
                                                                   ((), ())))
        qkv = qkv + jnp.concatenate(biases, axis=0)
        qk, v = qkv[..., :2 * self.num_heads, :], qkv[..., 2 * self.num_heads:, :]
        if self.use_rope:  # queries and keys rotated together: one RoPE on [b, t, 2 heads, hd]
            qk = rope(qk)
        q, k = jnp.split(qk, 2, axis=-2)  # [b, t, heads, hd] each
        out = causal_attention(q, k, v)
        return nn.DenseGeneral(
            width, axis=(-2, -1), dtype=x.dtype, param_dtype=x.dtype, name="out",
            kernel_init=_init(nn.initializers.lecun_normal(), ("heads", "kv", "embed")),
            bias_init=_init(nn.initializers.zeros_init(), ("embed",)))(out)


class MLPBlock(nn.Module):
    """Dense(hidden) -> GELU -> Dense(width)."""

    hidden: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        h = nn.Dense(self.hidden, dtype=x.dtype, param_dtype=x.dtype, name="fc",
                     kernel_init=_init(nn.initializers.lecun_normal(), ("embed", "mlp")),
                     bias_init=_init(nn.initializers.zeros_init(), ("mlp",)))(x)
        return nn.Dense(width, dtype=x.dtype, param_dtype=x.dtype, name="proj",
                        kernel_init=_init(nn.initializers.lecun_normal(), ("mlp", "embed")),
                        bias_init=_init(nn.initializers.zeros_init(), ("embed",)))(nn.gelu(h))


class Block(nn.Module):
    """One pre-norm block: ``h + Attn(LN(h))``, then ``h + MLP(LN(h))``."""

    num_heads: int
    mlp_hidden: int
    use_rope: bool = True

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        h = h + CausalSelfAttention(self.num_heads, self.use_rope, name="attention")(
            layer_norm("ln_attention", h.dtype)(h))
        return h + MLPBlock(self.mlp_hidden, name="mlp")(layer_norm("ln_mlp", h.dtype)(h))


class Transformer(nn.Module):
    """Decoder-only transformer LM: tokens ``[batch, length]`` -> logits
    ``[batch, length, num_classes]`` (see the module docstring for the rule).

    Attributes:
        num_classes: the vocabulary size V.
        width: d, the model (embedding) width; a multiple of ``num_heads``.
        depth: the number of blocks L.
        num_heads: attention heads per block (head size d / num_heads, even with RoPE).
        mlp_ratio: the MLP's hidden width over d.
        positions: ``"rope"`` (rotary, no length limit) or ``"learned"`` (absolute position
            embeddings for up to ``max_length`` tokens).
        max_length: the longest context (learned positions only).
        tie_embeddings: the output layer is the input embedding's transpose (no W_out).
    """

    num_classes: int
    width: int = 128
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: int = 4
    positions: str = "rope"
    max_length: int = 512
    tie_embeddings: bool = True

    def __post_init__(self):
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {', '.join(POSITIONS)}; got "
                             f"{self.positions!r}.")
        for field in ("width", "depth", "num_heads", "mlp_ratio", "max_length"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field} must be an integer >= 1, got {value!r}.")
        if self.width % self.num_heads:
            raise ValueError(f"width ({self.width}) must be a multiple of num_heads "
                             f"({self.num_heads}).")
        if self.positions == "rope" and (self.width // self.num_heads) % 2:
            raise ValueError(f"RoPE needs an even head size; width / num_heads = "
                             f"{self.width // self.num_heads}.")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout
        tokens = x.astype(jnp.int32)
        length = tokens.shape[-1]
        embed = nn.Embed(
            self.num_classes, self.width, name="embed",
            embedding_init=_init(nn.initializers.normal(stddev=0.02), ("vocab", "embed")))
        h = embed(tokens)
        if self.positions == "learned":
            if length > self.max_length:
                raise ValueError(f"a context of {length} tokens is longer than max_length "
                                 f"({self.max_length}) of the learned positions.")
            table = self.param("position_embedding",
                               _init(nn.initializers.normal(stddev=0.02), ("length", "embed")),
                               (self.max_length, self.width))
            h = h + table[None, :length].astype(h.dtype)
        for i in range(self.depth):
            h = Block(self.num_heads, self.mlp_ratio * self.width,
                      use_rope=self.positions == "rope", name=f"block_{i}")(h)
        h = layer_norm("ln_final", h.dtype)(h)
        if self.tie_embeddings:
            return embed.attend(h)
        return nn.Dense(self.num_classes, name="head",
                        kernel_init=_init(nn.initializers.lecun_normal(), ("embed", "vocab")),
                        bias_init=_init(nn.initializers.zeros_init(), ("vocab",)))(h)

