"""The decoder-only transformer: causal, RoPE relative, every parameter named by logical
axes, tied embeddings, registered by name; the per-token loss and evaluation; a config whose
model cannot read its data is refused in one line."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from easgd_jax import models
from easgd_jax.configs import default
from easgd_jax.data.synthetic_lm import token_dataset
from easgd_jax.models.transformer import LOGICAL_AXES, rope
from easgd_jax.training import common
from easgd_jax.training import config as config_lib
from easgd_jax.training.common import init_params, make_evaluator

V, T = 16, 8


def small(**kwargs):
    return models.get_model("transformer", V, **{"width": 16, "depth": 2, "num_heads": 2,
                                                 **kwargs})


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_logits_depend_on_the_past_only(positions):
    """Changing token t changes the logits of positions >= t and none before it."""
    model = small(positions=positions, max_length=T)
    params = init_params(model, (T,), jax.random.PRNGKey(0))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, V, (1, T)))
    changed = tokens.at[0, 5].set((tokens[0, 5] + 1) % V)
    apply = jax.jit(lambda x: model.apply({"params": params}, x))
    a, b = apply(tokens), apply(changed)
    assert a.shape == (1, T, V)
    np.testing.assert_array_equal(a[0, :5], b[0, :5])
    assert np.all(np.abs(np.asarray(a[0, 5:] - b[0, 5:])).max(axis=-1) > 1e-6)


def test_rope_scores_depend_on_the_offset_only():
    """<rope(q)_s, rope(k)_t> is a function of s - t (Su et al. 2021, eq. 16)."""
    rng = np.random.default_rng(0)
    q1, k1 = rng.standard_normal((2, 1, 1, 1, 8))
    q = jnp.asarray(np.broadcast_to(q1, (1, 12, 1, 8)))  # the same vector at every position
    k = jnp.asarray(np.broadcast_to(k1, (1, 12, 1, 8)))
    scores = np.einsum("bshd,bthd->st", rope(q), rope(k))
    for offset in range(-3, 4):
        diagonal = np.diagonal(scores, offset)
        np.testing.assert_allclose(diagonal, diagonal[0], rtol=1e-5, atol=1e-5)
    assert abs(scores[0, 1] - scores[0, 3]) > 1e-3  # and it does depend on the offset


@pytest.mark.parametrize("tie", [True, False])
def test_every_parameter_has_logical_axis_names(tie):
    model = small(tie_embeddings=tie, positions="learned", max_length=T)
    specs = models.logical_axes(model, (T,))
    shapes = jax.eval_shape(lambda: init_params(model, (T,), jax.random.PRNGKey(0)))
    flat_specs = jax.tree.leaves(specs, is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec))
    flat_shapes = jax.tree.leaves(shapes)
    assert len(flat_specs) == len(flat_shapes) > 0
    for spec, shape in zip(flat_specs, flat_shapes, strict=True):
        assert isinstance(spec, jax.sharding.PartitionSpec)
        assert len(spec) == len(shape.shape) and set(spec) <= set(LOGICAL_AXES), spec
    # ... and the training code holds plain arrays (the names dropped at init).
    assert not any(isinstance(x, nn.meta.AxisMetadata) for x in jax.tree.leaves(
        shapes, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata)))
    # A layout maps them to mesh axes with flax's logical axis rules.
    rules = (("embed", "fsdp"), ("mlp", None), ("vocab", None), ("heads", None),
             ("kv", None), ("length", None))
    mesh_specs = nn.logical_to_mesh(specs, rules)
    assert mesh_specs["embed"]["embedding"] == jax.sharding.PartitionSpec(None, "fsdp")


def test_tied_embeddings_share_the_output_layer():
    tied, untied = (jax.eval_shape(lambda m=m: init_params(m, (T,), jax.random.PRNGKey(0)))
                    for m in (small(), small(tie_embeddings=False)))
    count = lambda p: sum(a.size for a in jax.tree.leaves(p))  # noqa: E731
    assert "head" not in tied and untied["head"]["kernel"].shape == (16, V)
    assert count(untied) - count(tied) == 16 * V + V


def test_bad_shapes_and_kwargs_are_refused():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        small(width=18, num_heads=4)
    with pytest.raises(ValueError, match="positions must be one of rope, learned"):
        small(positions="alibi")
    with pytest.raises(ValueError, match="does not take heads"):
        models.get_model("transformer", V, heads=2)


def test_loss_and_evaluation_are_per_token(monkeypatch):
    """cross_entropy over [batch, length, V] logits is the mean over every token, and the
    evaluator's test loss over windows equals it (float64), in batches of 3 windows (the
    last one padded, the padding excluded)."""
    monkeypatch.setattr(common, "EVAL_BATCH_SIZE", 3)
    rng = np.random.default_rng(0)
    windows = rng.integers(0, V, (7, T + 1))
    dataset = token_dataset("t", windows, windows, V)
    model = small()
    params = init_params(model, (T,), jax.random.PRNGKey(1))
    logits = np.asarray(jax.jit(model.apply)({"params": params}, dataset.test_x), np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.mean(np.take_along_axis(log_probs, dataset.test_y[..., None], -1))
    assert float(models.cross_entropy(jnp.asarray(logits), jnp.asarray(dataset.test_y))) \
        == pytest.approx(expected, rel=1e-6)
    loss, accuracy = make_evaluator(model)(params, dataset.test_x, dataset.test_y)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert accuracy == pytest.approx(np.mean(logits.argmax(-1) == dataset.test_y))


def test_a_model_that_cannot_read_the_data_is_refused():
    config = default.get_config()
    config.data.name = "synthetic_lm"
    with pytest.raises(ValueError, match=r"config.model.name 'cnn1d' takes 1-D signals .*"
                                         r"'synthetic_lm' has token sequences \[length\]: set "
                                         r"config.model.name to 'transformer'"):
        config_lib.validate(config)
    config = default.get_config()
    config.model.name = "transformer"
    with pytest.raises(ValueError, match="'transformer' takes token sequences"):
        config_lib.validate(config)
    config.data.name = "synthetic_lm"
    config.data.kwargs.contxt = 8
    with pytest.raises(ValueError, match="config.data.kwargs: data set 'synthetic_lm' does not "
                                         "take contxt"):
        config_lib.validate(config)


def test_a_workdir_written_before_data_kwargs_existed_still_resumes(tmp_path):
    """A config.json without the data.kwargs section (added with the LM data) is the same
    config as one with it empty; one that states kwargs is not."""
    import json

    from easgd_jax.training.common import WorkdirConfigError, prepare_workdir

    config = default.get_config()
    saved = json.loads(config.to_json_best_effort())
    del saved["data"]["kwargs"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    prepare_workdir(config, str(tmp_path), overwrite=False)
    config.data.kwargs.context = 8
    with pytest.raises(WorkdirConfigError, match="data.kwargs.context: '<missing>'"):
        prepare_workdir(config, str(tmp_path), overwrite=False)


def test_a_workdir_written_before_a_field_was_added_resumes_at_its_default(tmp_path):
    """A config.json without a field the schema gained since (cluster.intra_bandwidth_gbit_s)
    is the same config while the run leaves that field at its default; set otherwise, it is
    a different run."""
    import json

    from easgd_jax.training.common import WorkdirConfigError, prepare_workdir

    config = default.get_config()
    saved = json.loads(config.to_json_best_effort())
    del saved["cluster"]["intra_bandwidth_gbit_s"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    prepare_workdir(config, str(tmp_path), overwrite=False)
    (tmp_path / "config.json").write_text(json.dumps(saved))
    config.cluster.intra_bandwidth_gbit_s = 100.0
    with pytest.raises(WorkdirConfigError,
                       match=r"cluster.intra_bandwidth_gbit_s: '<missing>' in the workdir, "
                             r"100.0 now"):
        prepare_workdir(config, str(tmp_path), overwrite=False)
