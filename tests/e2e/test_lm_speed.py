"""benchmarks/lm_speed.py (issue 32, item 6): its FLOP counts are right, its PyTorch copy of
the transformer is the same network, and one command prints both tables at toy length (the
timings themselves are not checked: speed lives in benchmarks/RESULTS.md)."""

import importlib.util
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import lm_speed
from easgd_jax import models
from easgd_jax.training.common import init_params, make_grad_fn


def test_jaxpr_matmul_flops_of_the_transformer_equal_the_formula_less_biases_and_norms():
    """Every matmul of forward and backward is counted (the backward's twice the forward's):
    6 N + 12 L T d counts 6 FLOPs per token for every parameter, biases and LayerNorm
    scales included (13 d per block, 2 d for the final norm), which are no matmuls."""
    vocab, width, depth, context, batch = 32, 16, 2, 8, 3
    model = models.get_model("transformer", vocab, width=width, depth=depth, num_heads=2)
    params = init_params(model, (context,), jax.random.PRNGKey(0))
    num_params = sum(a.size for a in jax.tree.leaves(params))
    x = jnp.zeros((batch, context), jnp.float32)
    y = jnp.zeros((batch, context), jnp.int32)
    jaxpr = jax.make_jaxpr(make_grad_fn(model, 0.0))(params, (x, y), jax.random.PRNGKey(1))
    counted = lm_speed.jaxpr_matmul_flops(jaxpr)
    formula = batch * context * lm_speed.formula_flops_per_token(num_params, depth, context,
                                                                 width)
    assert counted == formula - batch * context * 6 * (13 * width * depth + 2 * width)
    # A matmul inside a nested jit counts once: 2 x 3 x 5 x 4.
    inner = jax.make_jaxpr(lambda a, b: jax.jit(jnp.dot)(a, b))(jnp.ones((3, 4)),
                                                               jnp.ones((4, 5)))
    assert lm_speed.jaxpr_matmul_flops(inner) == 120


def test_the_pytorch_transformer_is_the_same_network_or_the_script_names_the_extra():
    """Where torch is installed its copy has the Flax model's parameter count and logits;
    where it is not, the script stops with the bench extra's one line (no skip)."""
    if importlib.util.find_spec("torch") is None:
        with pytest.raises(SystemExit) as stop:
            lm_speed.main(["--steps", "100", "--skip", "50", "--reps", "1"])
        assert 'pip install -e ".[bench]"' in str(stop.value.code)
        return
    shape = {"vocab": 32, "width": 16, "depth": 2, "num_heads": 2, "mlp_ratio": 4}
    model = models.get_model("transformer", 32, width=16, depth=2, num_heads=2)
    params = jax.tree.map(np.asarray, init_params(model, (8,), jax.random.PRNGKey(0)))
    x = np.random.default_rng(0).integers(0, 32, (3, 8)).astype(np.int64)
    jax_count, torch_count = lm_speed.check_same_network(model, params, x, shape)
    assert jax_count == torch_count == sum(a.size for a in jax.tree.leaves(params))
    # A parameter left out of the copy is seen.
    params["block_1"]["mlp"]["fc"]["bias"] = params["block_1"]["mlp"]["fc"]["bias"] + 0.5
    import torch

    module = lm_speed.torch_transformer(**shape)
    lm_speed.load_flax_params(module, params)
    module.blocks[1].fc.bias.data.zero_()
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    want = np.asarray(model.apply({"params": params}, x.astype(np.int32)))
    assert not np.allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_one_command_prints_the_mfu_and_pytorch_tables(capsys):
    # A toy transformer (the command's own --width/--depth/--num_heads): the tables, not
    # the default model's speed, are under test.
    argv = ["--steps", "100", "--skip", "50", "--reps", "1", "--sizes", "128",
            "--width", "16", "--depth", "1", "--num_heads", "2"]
    if importlib.util.find_spec("torch") is None:
        argv.append("--no-torch")
    rows = lm_speed.main(argv)
    out = capsys.readouterr().out
    assert out.startswith(f"$ python -m benchmarks.lm_speed {' '.join(argv)}\n")
    (mfu,) = rows["mfu"]
    assert 0 < mfu["mfu"] < 1.5 and mfu["peak"] > 0 and np.isfinite(mfu["loss"])
    assert mfu["model_flops"] == pytest.approx(mfu["mfu"] * mfu["peak"])
    assert re.search(r"^\| 1 \| [\d.]+ \(\d+ devices?, n = 128\) \| [\d.]+ \| [\d,]+ \|", out,
                     re.M)
    assert "## MFU of the LM step" in out and "MFU median" in out
    parts = {r["part"]: r["share"] for r in rows["profile"]}
    assert "matmuls (with what XLA fused into them)" in parts
    assert "attention (softmax, mask, RoPE, head reshapes)" in parts
    assert sum(parts.values()) == pytest.approx(1.0)
    assert "| matmuls (with what XLA fused into them) |" in out
    if "--no-torch" not in argv:
        (row,) = rows["torch"]
        assert row["jax"] > 0 and row["torch"] > 0 and np.isfinite(row["torch_loss"])
        assert row["ratio"] == pytest.approx(row["jax"] / row["torch"])
        assert "## easgd-jax against PyTorch DiLoCo" in out and "ratio median" in out
