"""The EASGD paper's CIFAR-10 and ImageNet nets (arXiv 1412.6651, Section 5.1): every layer
size, exact parameter counts, bias initialisation, dropout, one forward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from easgd_jax import models

# (name, output shape without the batch) in the paper's (channels, size) notation.
CIFAR_SHAPES = [
    ("conv1", (24, 24, 64)), ("pool1", (12, 12, 64)), ("conv2", (8, 8, 128)),
    ("pool2", (4, 4, 128)), ("conv3", (2, 2, 64)), ("dense1", (256,)), ("logits", (10,)),
]
IMAGENET_SHAPES = [
    ("conv1", (108, 108, 96)), ("pool1", (36, 36, 96)), ("conv2", (32, 32, 256)),
    ("pool2", (16, 16, 256)), ("conv3", (14, 14, 384)), ("conv4", (13, 13, 384)),
    ("conv5", (12, 12, 256)), ("pool3", (6, 6, 256)), ("dense1", (4096,)),
    ("dense2", (4096,)), ("logits", (1000,)),
]


def _conv(k, c_in, c_out):
    return k * k * c_in * c_out + c_out


def _dense(n_in, n_out):
    return n_in * n_out + n_out


CIFAR_PARAMS = (_conv(5, 3, 64) + _conv(5, 64, 128) + _conv(3, 128, 64)
                + _dense(64 * 2 * 2, 256) + _dense(256, 10))
IMAGENET_PARAMS = (_conv(7, 3, 96) + _conv(5, 96, 256) + _conv(3, 256, 384)
                   + _conv(2, 384, 384) + _conv(2, 384, 256)
                   + _dense(256 * 6 * 6, 4096) + _dense(4096, 4096) + _dense(4096, 1000))


def _count(params) -> int:
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))


def _shapes(model, size: int, batch: int = 2):
    """Parameter shapes and sown layer outputs, traced only (nothing runs)."""
    x = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    _, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, mutable=["intermediates"]), variables, x)
    sown = {name.removesuffix("_output"): value[0].shape
            for name, value in state["intermediates"].items()}
    return variables["params"], sown


@pytest.fixture(scope="module")
def cifar():
    model = models.get_model("cifar_cnn", 10)
    x = np.random.default_rng(0).normal(size=(4, 28, 28, 3)).astype(np.float32)
    # Random parameters of the right shapes (compiling the real init takes seconds on CPU;
    # the initialisers are checked in test_bias_initialisation).
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x[:1])["params"]
    rng = np.random.default_rng(1)
    params = jax.tree.map(
        lambda s: (rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))).astype(np.float32),
        shapes)
    return model, params, x


def test_parameter_counts_by_hand():
    assert CIFAR_PARAMS == 351_946
    assert IMAGENET_PARAMS == 61_128_808


@pytest.mark.parametrize("name, size, shapes, count, classes", [
    ("cifar_cnn", 28, CIFAR_SHAPES, CIFAR_PARAMS, 10),
    ("imagenet_cnn", 221, IMAGENET_SHAPES, IMAGENET_PARAMS, 1000),
])
def test_every_layer_size_and_parameter_count(name, size, shapes, count, classes):
    params, sown = _shapes(models.get_model(name, classes), size)
    assert sorted(sown) == sorted(n for n, _ in shapes)  # every layer, no other
    for layer, shape in shapes:
        assert sown[layer] == (2, *shape), layer
    assert _count(params) == count
    kinds = sorted(params)
    assert kinds == sorted(n for n, _ in shapes if not n.startswith("pool"))


def test_imagenet_first_conv_has_stride_two():
    params, _ = _shapes(models.get_model("imagenet_cnn", 1000), 221)
    assert params["conv1"]["kernel"].shape == (7, 7, 3, 96)
    assert params["conv4"]["kernel"].shape == (2, 2, 384, 384)
    assert params["dense1"]["kernel"].shape == (256 * 6 * 6, 4096)


def _biases(model, size):
    """The biases of ``model.init``, jitted so that only they are computed: XLA drops the
    kernels and the forward pass whose outputs are not returned (for the ImageNet net, no
    221x221 forward pass runs)."""
    def init(key):
        params = model.init(key, jnp.zeros((1, size, size, 3)))["params"]
        return {name: layer["bias"] for name, layer in params.items()}

    return jax.jit(init)(jax.random.PRNGKey(0))


@pytest.mark.parametrize("name, size, classes, bias", [
    ("cifar_cnn", 28, 10, 0.0), ("imagenet_cnn", 221, 1000, 0.1)])
def test_bias_initialisation(name, size, classes, bias):
    biases = _biases(models.get_model(name, classes), size)
    assert len(biases) == (5 if name == "cifar_cnn" else 8)
    for value in biases.values():
        np.testing.assert_array_equal(np.asarray(value), np.float32(bias))


def test_dropout_only_when_training(cifar):
    model, params, x = cifar
    apply = jax.jit(model.apply, static_argnames="train")
    eval_a = apply({"params": params}, x, train=False)
    eval_b = apply({"params": params}, x, train=False, rngs={"dropout": jax.random.PRNGKey(1)})
    np.testing.assert_array_equal(eval_a, eval_b)  # deterministic, rng ignored
    train_a = apply({"params": params}, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    train_b = apply({"params": params}, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
    assert not np.allclose(train_a, train_b)  # different masks
    assert not np.allclose(train_a, eval_a)
    # Half of the D layer's units are dropped (zeroed), the rest scaled by 2.
    _, state = model.apply({"params": params}, x, train=True, mutable=["intermediates"],
                           rngs={"dropout": jax.random.PRNGKey(1)})
    _, state_eval = model.apply({"params": params}, x, train=False, mutable=["intermediates"])
    dropped = state["intermediates"]["dense1_output"][0]
    kept = state_eval["intermediates"]["dense1_output"][0]
    active = np.asarray(kept) > 0
    zeroed = (np.asarray(dropped) == 0) & active
    assert 0.35 < zeroed.sum() / active.sum() < 0.65
    np.testing.assert_allclose(np.asarray(dropped)[active & ~zeroed],
                               2 * np.asarray(kept)[active & ~zeroed], rtol=1e-5)
    with pytest.raises(Exception, match="dropout"):
        model.apply({"params": params}, x, train=True)  # needs a dropout rng


def test_cifar_forward_pass(cifar):
    model, params, x = cifar
    logits = model.apply({"params": params}, x, train=False)
    assert logits.shape == (4, 10) and np.all(np.isfinite(logits))
    # The output depends on the input: different images, different logits.
    assert not np.allclose(logits[0], logits[1])
    loss = models.cross_entropy(logits, jnp.arange(4))
    assert np.isfinite(loss) and loss > 0


@pytest.mark.parametrize("name, shape", [
    ("cifar_cnn", (1, 32, 32, 3)), ("imagenet_cnn", (1, 224, 224, 3)), ("cifar_cnn", (1, 784))])
def test_wrong_input_size_fails_with_the_fix(name, shape):
    model = models.get_model(name, 10)
    with pytest.raises(ValueError, match="config.data.crop"):
        jax.eval_shape(model.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct(shape, jnp.float32))


def test_registered_with_hyperparameters():
    model = models.get_model("cifar_cnn", 100, dropout_rate=0.2, bias_init_value=0.1)
    assert model.num_classes == 100 and model.dropout_rate == 0.2
    with pytest.raises(ValueError, match="does not take width"):
        models.get_model("imagenet_cnn", 1000, width=3)
    assert {"cifar_cnn", "imagenet_cnn"} <= set(models.MODEL_NAMES)
