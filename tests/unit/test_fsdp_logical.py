"""FSDP by the models' logical axis names (issue 30, item 3): every parameter of the shipped
models names its dimensions; a worker's params split over its fsdp devices by the rules
table (parallel/mesh.py ``FSDP_RULES``, flax's ``logical_to_mesh_axes``), every optimizer
and algorithm state leaf that mirrors a parameter takes that parameter's split (read from
the live arrays a compiled round returns), a model without names falls back to the
largest-dimension rule, and a misfit names the logical dimensions fsdp does not divide."""

from __future__ import annotations

import flax.linen as nn
import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from easgd_jax import models, parallel
from easgd_jax.algorithms import registry
from easgd_jax.parallel.mesh import FSDP_AXIS, LayoutError, fsdp_plan
from easgd_jax.training.common import TrainState, make_local_step

SHAPES = {"mlp": (8, 8, 1), "cnn1d": (40,), "cifar_cnn": (28, 28, 3), "imagenet_cnn": (221, 221, 3),
          "transformer": (16,)}


def _padded(spec, ndim: int) -> tuple:
    """A PartitionSpec as a tuple of one entry per dimension (JAX drops trailing Nones)."""
    spec = tuple(spec)
    return spec + (None,) * (ndim - len(spec))


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_every_parameter_of_the_shipped_models_carries_logical_names(name):
    model = models.get_model(name, 10)
    names = models.logical_axes(model, SHAPES[name])  # abstract: nothing computed
    shapes = jax.eval_shape(lambda: nn.meta.unbox(model.init(
        jax.random.PRNGKey(0), jnp.zeros((1, *SHAPES[name])), train=False)["params"]))
    for (path, spec), shape in zip(
            jax.tree_util.tree_leaves_with_path(names, is_leaf=lambda x: x is None),
            jax.tree.leaves(shapes), strict=True):
        assert len(spec) == len(shape.shape) and all(isinstance(n, str) for n in spec), \
            (jax.tree_util.keystr(path), spec)


def test_a_plain_init_of_a_small_model_stays_plain_arrays():
    """The names are attached only while read (models/axes.py): callers that index
    ``params["Dense_0"]["kernel"]`` keep working."""
    model = models.get_model("mlp", 10, hidden=(4,))
    params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 3))))
    leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))
    assert len(leaves) == 4 and all(isinstance(a, jax.ShapeDtypeStruct) for a in leaves)
    with models.axes.naming():  # while read, the same init boxes every parameter
        boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 3))))
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))
    assert len(leaves) == 4 and all(isinstance(a, nn.LogicallyPartitioned) for a in leaves)


def test_the_plan_follows_the_names_in_rule_order_and_falls_back_without_names():
    model = models.get_model("mlp", 10, hidden=(16,))
    params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4))))[
        "params"]
    names = models.logical_axes(model, (4,))
    split = lambda plan: {jax.tree_util.keystr(p): tuple(s)  # noqa: E731
                          for p, (_, s) in plan.specs.items()}
    by_names = split(fsdp_plan(params, 4, names))
    # kernel [4, 16] ("features_in", "features"): features_in first in the rules, 4 | 4;
    # the 10-class bias: fsdp 4 divides no named dimension, whole.
    assert by_names["['Dense_0']['kernel']"] == (FSDP_AXIS, None)
    assert by_names["['Dense_1']['bias']"] == (None,)
    # The rules decide: features before features_in splits the kernel's 16.
    reordered = split(fsdp_plan(params, 4, names, rules=(("features", FSDP_AXIS),
                                                         ("features_in", FSDP_AXIS))))
    assert reordered["['Dense_0']['kernel']"] == (None, FSDP_AXIS)
    # fsdp 8 does not divide features_in (4): the next rule's dimension, features (16).
    assert split(fsdp_plan(params, 8, names))["['Dense_0']['kernel']"] == (None, FSDP_AXIS)
    # Without names: the largest dimension fsdp divides (the 16), and the log says so.
    plain = fsdp_plan(params, 4)
    assert split(plain)["['Dense_0']['kernel']"] == (None, FSDP_AXIS)
    assert "carry no logical axis names" in plain.describe()
    assert "4 of 4 parameters split by their logical axis names" in \
        fsdp_plan(params, 4, names).describe()


def test_a_misfit_names_the_logical_dimensions_fsdp_does_not_divide():
    model = models.get_model("mlp", 10, hidden=(32,))
    params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64))))[
        "params"]
    with pytest.raises(LayoutError, match=r"worker_devices.fsdp \(3\) divides none of the "
                                          r"logical dimensions FSDP splits of the model's "
                                          r"largest parameter, \['Dense_0'\]\['kernel'\] of "
                                          r"shape \(64, 32\): features_in = 64, features = 32"):
        parallel.mesh.check_fsdp(params, 3, models.logical_axes(model, (64,)))


def test_every_optimizer_state_leaf_follows_its_parameters_logical_split():
    """A compiled round of DiLoCo with an AdamW inner step (center, mu, nu, the outer
    momentum: four copies of every parameter) on 2 workers x 4 fsdp devices: each copy's
    live sharding is its parameter's, and the parameter's is the one its names give
    (kernel [4, 16] split on its 4, not its largest dimension); counters stay whole."""
    layout = parallel.make_worker_layout(2, 8, data=1, fsdp=4)
    model = models.get_model("mlp", 10, hidden=(16,))
    one = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))["params"]
    layout = layout.with_params(one, models.logical_axes(model, (4,)))
    spec = registry.get_spec("diloco_adamw")
    tx = spec.build({**helpers.HPARAMS["diloco_adamw"], "period": 2}, layout,
                    on_disagreement="nan")
    stacked = jax.tree.map(lambda a: jnp.broadcast_to(a, (2, *a.shape)), one)
    state = TrainState(stacked, jax.vmap(tx.init)(stacked),
                       jax.random.split(jax.random.PRNGKey(1), 2))
    state = jax.device_put(state, layout.state_shardings(state))
    batches = jax.device_put((jnp.ones((2, 2, 4, 4)), jnp.zeros((2, 2, 4), jnp.int32)),
                             layout.batch_sharding())
    round_fn = parallel.make_round(make_local_step(model, tx, 0.0, unroll_workers=False),
                                   layout, donate=False, period=2,
                                   exchange_step=spec.exchange_step)
    for live in (state, round_fn(state, batches)[0]):  # as built, and as the round returns
        params = {tuple(p): a for p, a in jax.tree_util.tree_leaves_with_path(live.params)}
        kernel = live.params["Dense_0"]["kernel"]
        assert _padded(kernel.sharding.spec, 3) == ("workers", FSDP_AXIS, None)
        followers = 0
        for path, leaf in jax.tree_util.tree_leaves_with_path(live.opt_state):
            owner = next((p for p in params if tuple(path[-len(p):]) == p
                          and leaf.shape == params[p].shape), None)
            got = _padded(leaf.sharding.spec, leaf.ndim)
            if owner is None:  # counters, the agreement flag: whole inside a worker
                assert got == ("workers",) + (None,) * (leaf.ndim - 1), path
                continue
            want = _padded(params[owner].sharding.spec, leaf.ndim)
            assert got == want, (jax.tree_util.keystr(path), got, want)
            followers += 1
        assert followers == 4 * len(params)  # center, mu, nu, outer trace of each
        np.testing.assert_equal(np.isfinite(np.asarray(kernel)).all(), True)
