"""The transformer's attention, sped up (issue 32, item 6), computes what the layers it
replaced computed: three ``nn.DenseGeneral`` projections, ``jax.nn.dot_product_attention(...,
is_causal=True)`` and the output ``DenseGeneral``. Same parameters bit for bit (names, shapes,
initial values), same loss and gradients in float64 up to the order of a sum's terms."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from easgd_jax.models import transformer


class ReferenceAttention(nn.Module):
    """The attention as models/transformer.py wrote it before the fused projection."""

    num_heads: int
    use_rope: bool = True

    @nn.compact
    def __call__(self, x):
        width = x.shape[-1]
        head_dim = width // self.num_heads
        init = transformer._init

        def dense(name):
            return nn.DenseGeneral(
                (self.num_heads, head_dim), dtype=x.dtype, param_dtype=x.dtype, name=name,
                kernel_init=init(nn.initializers.lecun_normal(), ("embed", "heads", "kv")),
                bias_init=init(nn.initializers.zeros_init(), ("heads", "kv")))

        q, k, v = dense("query")(x), dense("key")(x), dense("value")(x)
        if self.use_rope:
            q, k = transformer.rope(q), transformer.rope(k)
        out = jax.nn.dot_product_attention(q, k, v, is_causal=True)
        return nn.DenseGeneral(
            width, axis=(-2, -1), dtype=x.dtype, param_dtype=x.dtype, name="out",
            kernel_init=init(nn.initializers.lecun_normal(), ("heads", "kv", "embed")),
            bias_init=init(nn.initializers.zeros_init(), ("embed",)))(out)


@pytest.mark.parametrize("use_rope", [True, False])
def test_fused_attention_equals_dense_general_and_dot_product_attention(use_rope):
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 12), jnp.float64)
        fast = transformer.CausalSelfAttention(3, use_rope)
        reference = ReferenceAttention(3, use_rope)
        boxed = fast.init(jax.random.PRNGKey(0), x)["params"]
        ref_boxed = reference.init(jax.random.PRNGKey(0), x)["params"]
        # The same parameters: tree, logical axis names and initial values, bit for bit.
        names = lambda tree: jax.tree.map(lambda b: b.names, tree,  # noqa: E731
                                          is_leaf=lambda b: isinstance(b, nn.Partitioned))
        assert names(boxed) == names(ref_boxed)
        params, ref_params = nn.meta.unbox(boxed), nn.meta.unbox(ref_boxed)
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params), strict=True):
            assert a.dtype == b.dtype == jnp.float64
            np.testing.assert_array_equal(a, b)
        # Nonzero biases, so that every parameter's gradient matters.
        params = jax.tree.map(lambda p: p + 0.1 * jnp.cos(jnp.arange(p.size).reshape(p.shape)),
                              params)
        target = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 12), jnp.float64)

        def loss(module, p):
            return jnp.sum(jnp.sin(module.apply({"params": p}, x)) * target)

        value, grads = jax.jit(jax.value_and_grad(lambda p: loss(fast, p)))(params)
        ref_value, ref_grads = jax.jit(jax.value_and_grad(lambda p: loss(reference, p)))(params)
        np.testing.assert_allclose(value, ref_value, rtol=1e-13)
        for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
            np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-13)
