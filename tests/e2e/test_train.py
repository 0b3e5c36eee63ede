"""The training loop end to end: embedded data, tfds mock data, launch.py and its checks."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds

from easgd_jax import data, models
from easgd_jax.experiments.sweep import load_config_file
from easgd_jax.training import config as validation
from easgd_jax.training import sync as train
from easgd_jax.training.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from easgd_jax.configs import default  # noqa: E402


def _small_config(**train_overrides):
    config = default.get_config()
    config.train.num_steps = 40
    config.train.eval_every = 20
    config.train.update(train_overrides)
    return config


@pytest.mark.slow
def test_train_and_evaluate_on_embedded_data(tmp_path):
    config = _small_config()
    final = train.train_and_evaluate(config, str(tmp_path))
    records = read_metrics(str(tmp_path))
    assert [r["step"] for r in records] == [20, 40]
    for key in ("train_loss", "test_loss", "test_accuracy", "worker_center_distance",
                "worker_spread", "steps_per_second"):
        assert np.isfinite(records[-1][key]), key
    assert final["test_accuracy"] == records[-1]["test_accuracy"]
    # 40 steps of EAMSGD already beat chance (10 classes) on MNIST-1D by far.
    assert records[-1]["test_accuracy"] > 0.3
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["algorithm"]["name"] == "eamsgd"
    assert saved["algorithm"]["moving_rate"] == pytest.approx(0.9 / 4)


@pytest.mark.slow
def test_evaluation_reads_the_center(tmp_path):
    """With moving_rate = 0 the center never moves: its test loss is the initial model's,
    although the workers train."""
    config = _small_config(batch_size=32)
    config.data.name, config.model.name = "digits", "mlp"  # which model is not the point
    config.cluster.compute_s_per_step = 1e-3  # given: no step measured (test_cluster's)
    config.algorithm.moving_rate = 0.0
    train.train_and_evaluate(config, str(tmp_path))
    records = read_metrics(str(tmp_path))
    dataset = data.load_dataset("digits")
    model = models.get_model("mlp", 10)
    init_rng, _ = jax.random.split(jax.random.PRNGKey(config.seed))
    params = model.init(init_rng, dataset.test_x[:1], train=False)["params"]
    loss, acc = train.make_evaluator(model)(params, dataset.test_x, dataset.test_y)
    for record in records:
        assert record["test_loss"] == pytest.approx(loss, rel=1e-5)
        assert record["test_accuracy"] == pytest.approx(acc)
    assert records[-1]["train_loss"] < 0.9 * loss  # the workers did learn
    assert records[-1]["worker_center_distance"] > 0


@pytest.mark.slow
def test_multi_leader_lsgd_trains_and_is_evaluated_on_its_global_leader(tmp_path):
    """lsgd_multi_nesterov through the training loop, 2 groups x 2 workers: the reported test
    loss is that of the global leader G's parameters, not of worker 0's local leader (an
    index within its group; seed 2 makes them differ at the last evaluation)."""
    config = load_config_file("lsgd_multi")
    config.seed = 2
    config.data.name, config.model.name = "digits", "mlp"
    config.model.kwargs.hidden = (32,)
    config.train.update(num_steps=32, eval_every=16, batch_size=32)
    config.checkpoint.every = 0
    config.tensorboard = False
    state, final = train.train(config, str(tmp_path))
    records = read_metrics(str(tmp_path))
    assert [r["step"] for r in records] == [16, 32]
    assert records[-1]["train_loss"] < 0.5 * records[0]["train_loss"]  # it learns
    for record in records:  # tau = 4: four rounds per evaluation, tau_G = 16: one global
        assert len(record["leader_per_round"]) == len(record["global_leader_per_round"]) == 4
    opt_state = jax.device_get(state.opt_state)
    global_leader = int(optax.tree_utils.tree_get(opt_state, "global_leader")[0])
    local_leader = int(optax.tree_utils.tree_get(opt_state, "leader")[0])
    assert records[-1]["global_leader_per_round"][-1] == global_leader
    assert global_leader != local_leader, "the run must tell the two leaders apart"
    dataset = data.load_dataset("digits")
    evaluate = train.make_evaluator(models.get_model("mlp", 10, hidden=(32,)))
    params = jax.device_get(state.params)

    def test_loss_of(worker):
        return evaluate(jax.tree.map(lambda a: a[worker], params), dataset.test_x,
                        dataset.test_y)[0]

    assert final["test_loss"] == pytest.approx(test_loss_of(global_leader), rel=1e-6)
    assert final["test_loss"] != pytest.approx(test_loss_of(local_leader), rel=1e-6)


@pytest.mark.slow
def test_workers_on_fewer_devices_give_the_same_run(tmp_path):
    """4 workers on 4 devices and 2 per device on 2 (vmapped, their gradients unrolled),
    in float64 (the two programs add in other orders): the same run to 1e-10."""
    results = []
    with jax.enable_x64(True):
        for devices in (4, 2):
            config = _small_config(batch_size=32, param_dtype="float64")
            config.data.name, config.model.name = "digits", "mlp"  # the layout is the point
            config.cluster.compute_s_per_step = 1e-3
            config.num_devices = devices
            workdir = tmp_path / str(devices)
            train.train_and_evaluate(config, str(workdir))
            results.append(read_metrics(str(workdir))[-1])
    for key in ("test_loss", "train_loss", "worker_spread"):
        assert results[0][key] == pytest.approx(results[1][key], rel=1e-10), key


MOCK_EXAMPLES = 64  # per split


def _learnable_mock(builder, split, **kwargs):
    """A ``tfds.data_source`` mock in which an image shows its (random) label: rows 2k+4 and
    2k+5 are bright for label k, the rest noise; other images and labels in each split."""
    del kwargs
    shape = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3)}[builder.name]
    rng = np.random.default_rng(0 if split == "train" else 1)
    labels = rng.integers(0, 10, MOCK_EXAMPLES)
    images = rng.integers(0, 64, size=(MOCK_EXAMPLES, *shape)).astype(np.uint8)
    for image, label in zip(images, labels, strict=True):
        image[2 * label + 4:2 * label + 6] = 255
    return [{"image": image, "label": int(label)}
            for image, label in zip(images, labels, strict=True)]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_train_on_tfds_mock_data(tmp_path, name):
    """Through the real tfds reading code (tfds.testing.mock_data): the images must stay
    paired with their labels, and training must generalise to the test split's other
    images; chance is 10%."""
    config = _small_config(num_steps=30, eval_every=10, batch_size=16)
    config.data.name = name
    config.data.data_dir = str(tmp_path / "tfds")
    config.model.name = "mlp"
    config.model.kwargs.hidden = (32,)
    config.algorithm.update(learning_rate=0.02, period=2)
    config.num_workers = 2
    config.num_devices = 2
    config.tensorboard = False
    with tfds.testing.mock_data(as_data_source_fn=_learnable_mock):
        final = train.train_and_evaluate(config, str(tmp_path / "run"))
    records = read_metrics(str(tmp_path / "run"))
    assert records[-1]["train_loss"] < 0.5 * records[0]["train_loss"]
    assert final["test_accuracy"] >= 0.9
    assert final["test_loss"] < 1.0  # log(10) = 2.3 at chance


def test_unprepared_tfds_data_set_fails_at_once(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfds build mnist"):
        data.load_dataset("mnist", str(tmp_path))


def test_embedded_data_sets():
    mnist1d = data.load_dataset("mnist1d")
    assert mnist1d.train_x.shape == (4000, 40) and mnist1d.test_x.shape == (1000, 40)
    assert mnist1d.train_x.dtype == np.float32 and set(np.unique(mnist1d.train_y)) == set(range(10))
    digits = data.load_dataset("digits")
    assert digits.example_shape == (8, 8, 1) and len(digits.train_y) + len(digits.test_y) == 1797
    assert 0.0 <= digits.train_x.min() and digits.train_x.max() <= 1.0


def test_sampler_is_deterministic_per_worker_and_covers_the_whole_set():
    y = np.arange(50)
    sampler = data.WorkerSampler(y * 10, y, num_workers=3, batch_size=40, seed=7)
    x1, y1 = sampler.round(start_step=5, steps=4)
    x2, _ = sampler.round(start_step=5, steps=4)
    assert x1.shape == (3, 4, 40) and y1.shape == (3, 4, 40)
    np.testing.assert_array_equal(x1, x2)  # same step, same data (exact resume)
    np.testing.assert_array_equal(x1, y1 * 10)  # inputs and labels stay paired
    assert not np.array_equal(y1[0], y1[1])  # workers sample independently
    # Every worker samples from the whole set, not a shard of it.
    for w in range(3):
        assert len(np.unique(y1[w])) > 40


@pytest.mark.slow
def test_strided_conv_equals_flax_conv():
    import flax.linen as nn

    from easgd_jax.models.small import StridedConv1D

    for length, kernel, stride, channels in [(40, 5, 2, 1), (20, 3, 2, 4), (7, 3, 2, 2)]:
        x = np.random.default_rng(0).normal(size=(3, length, channels)).astype(np.float32)
        conv = StridedConv1D(6, kernel, stride)
        variables = conv.init(jax.random.PRNGKey(0), x)
        expected = nn.Conv(6, (kernel,), strides=(stride,), padding="SAME").apply(variables, x)
        np.testing.assert_allclose(conv.apply(variables, x), expected, rtol=1e-5, atol=1e-5)


def test_strided_conv_gradients_equal_flax_conv_in_float64():
    """patch_matmul's hand-written VJP (the kernel gradient as (g^T @ patches)^T) gives
    flax.linen.Conv's gradients, per worker under vmap too, and its second-order reverse
    derivatives, to float64 rounding."""
    import flax.linen as nn

    from easgd_jax.models.small import StridedConv1D

    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(2, 3, 20, 4))  # [workers, batch, length, channels]
        cotangent = rng.normal(size=(2, 3, 10, 6))
        conv, reference = StridedConv1D(6, 3, 2), nn.Conv(6, (3,), strides=(2,), padding="SAME")
        params = jax.vmap(lambda k: conv.init(k, x[0]))(jax.random.split(jax.random.PRNGKey(0)))
        params = jax.tree.map(lambda a: a + rng.normal(size=a.shape), params)  # nonzero bias

        def grads(module):
            def one(p, xi, gi):
                return jax.grad(lambda p, xi: jnp.vdot(module.apply(p, xi), gi),
                                argnums=(0, 1))(p, xi)
            return jax.vmap(one)(params, x, cotangent)

        def second_order(module):  # reverse over reverse: the gradient of a gradient norm
            def norm(p):
                g = jax.grad(lambda p: jnp.vdot(module.apply(p, x[0]), cotangent[0]))(p)
                return sum(jnp.sum(leaf ** 2) for leaf in jax.tree.leaves(g))
            return jax.grad(norm)(jax.tree.map(lambda a: a[0], params))

        got, expected = grads(conv), grads(reference)
        assert got[0]["params"]["kernel"].dtype == np.float64
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        for a, b in zip(jax.tree.leaves(second_order(conv)),
                        jax.tree.leaves(second_order(reference)), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("algorithm.period", 0, "period must be an integer >= 1, got 0"),
        ("algorithm.learning_rate", -0.1, "learning_rate must be >= 0, got -0.1"),
        ("algorithm.moving_rate", -0.5, "moving_rate must be in"),
        ("num_workers", 3, "num_workers \\(3\\) must be a multiple of config.num_devices"),
        ("train.batch_size", 0, "config.train.batch_size must be an integer >= 1, got 0"),
        ("train.eval_every", 15, "config.train.eval_every \\(15\\) must be a multiple"),
        ("data.name", "mnist2d", "config.data.name must be one of"),
        ("model.name", "resnet", "config.model.name must be one of"),
        ("algorithm.name", "easdg", "config.algorithm.name must be one of"),
        ("algorithm.momentum", 1.0, "momentum must be < 1"),
        ("seed", -1, "config.seed must be an integer >= 0, got -1"),
        ("num_devices", -2, "config.num_devices must be an integer >= 0, got -2"),
        ("num_workers", 0, "config.num_workers must be an integer >= 1, got 0"),
        ("num_groups", 3, "config.num_groups \\(3\\) must divide config.num_workers"),
        ("train.num_steps", 0, "config.train.num_steps must be an integer >= 1, got 0"),
        ("train.steps_per_round", -1, "config.train.steps_per_round must be an integer >= 0"),
        ("train.weight_decay", -1e-4, "config.train.weight_decay must be a number >= 0"),
        ("checkpoint.every", 15, "config.checkpoint.every \\(15\\) must be a multiple"),
        ("checkpoint.max_to_keep", 0, "config.checkpoint.max_to_keep must be an integer >= 1"),
        ("distributed.process_id", 2, "config.distributed.process_id \\(2\\) must be <"),
        ("model.kwargs", {"width": 3}, "config.model.kwargs: model 'cnn1d' does not take width"),
        ("data.data_dir", 7, "config.data.data_dir must be a path"),
        ("tensorboard", "yes", "config.tensorboard must be True or False"),
    ],
)
def test_bad_config_values_fail_before_training(tmp_path, field, value, message):
    config = default.get_config()
    *path, leaf = field.split(".")
    node = config
    for part in path:
        node = node[part]
    with node.ignore_type():
        node[leaf] = value
    with pytest.raises(ValueError, match=message):
        train.train_and_evaluate(config, str(tmp_path))
    assert not os.path.exists(tmp_path / "metrics.jsonl")


def test_algorithm_hyperparameter_names_are_checked():
    config = default.get_config()
    config.algorithm.momentm = 0.9
    with pytest.raises(ValueError, match="does not take momentm"):
        validation.validate(config)


def test_more_devices_than_available_fails(tmp_path):
    config = default.get_config()
    config.num_devices = 64
    config.num_workers = 64
    config.algorithm.moving_rate = 0.9 / 64
    with pytest.raises(ValueError, match="num_devices must be in"):
        train.train_and_evaluate(config, str(tmp_path))


def _launch_from_elsewhere(tmp_path, *args, timeout=240):
    """``easgd-launch`` as installed: run from ``tmp_path``, with only the package and
    launch.py importable (not the repository, so not ``configs``)."""
    site = tmp_path / "site"
    site.mkdir()
    for name in ("easgd_jax", "launch.py"):
        os.symlink(os.path.join(ROOT, name), site / name)
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, "-c", "import launch; launch.run_main()", *args],
        capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=env)


@pytest.mark.slow
def test_launch_from_another_folder_applies_overrides_and_records_them(tmp_path):
    config_file = os.path.join(ROOT, "configs", "lsgd.py")
    overrides = ["--config.algorithm.period=2", "--config.train.num_steps=20",
                 "--config.train.eval_every=10", "--config.num_workers=2",
                 "--config.num_devices=2", "--config.tensorboard=False",
                 "--config.data.name=digits", "--config.model.name=mlp",
                 "--config.train.batch_size=32"]
    result = _launch_from_elsewhere(tmp_path, f"--config={config_file}", "--workdir=run",
                                    *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["algorithm"]["name"] == "lsgd_nesterov"
    assert saved["algorithm"]["period"] == 2
    assert saved["num_workers"] == 2
    assert saved["launch"]["config_file"] == os.path.realpath(config_file)  # configs/: a link
    assert saved["launch"]["overrides"] == " ".join(overrides)
    assert len(saved["launch"]["git_commit"].removesuffix("+dirty")) == 40
    records = read_metrics(str(tmp_path / "run"))
    assert [r["step"] for r in records] == [10, 20]
    assert len(records[-1]["leader_per_round"]) == 5  # every round in metrics.jsonl
    progress = [line for line in result.stderr.splitlines() if "step 20/20" in line]
    assert f"leader_per_round[-1] {records[-1]['leader_per_round'][-1]}," in progress[0]
    assert "leader_per_round [" not in result.stderr  # not the whole list in the log
    assert "orbax" not in result.stderr.lower()


@pytest.mark.slow
def test_batches_gathered_on_the_devices_equal_the_hosts(tmp_path, monkeypatch):
    """A training set kept on the devices (the host sends indices) gives the run the host's
    batches would: the same final state, bit for bit."""
    config = _small_config(num_steps=20, eval_every=10, batch_size=16)
    config.data.name, config.model.name = "digits", "mlp"
    config.checkpoint.every = 0
    config.tensorboard = False
    config.cluster.compute_s_per_step = 1e-3
    seen = []
    maker = train._batch_maker

    def spy(*args, **kwargs):
        made = maker(*args, **kwargs)
        seen.append(made.__name__)
        return made

    monkeypatch.setattr(train, "_batch_maker", spy)
    on_device, _ = train.train(config, str(tmp_path / "device"))
    monkeypatch.setattr(train, "DEVICE_DATA_MAX_BYTES", 0)
    on_host, _ = train.train(config, str(tmp_path / "host"))
    assert seen == ["on_device", "on_host"]
    for a, b in zip(jax.tree.leaves(on_device), jax.tree.leaves(on_host), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("name", ["default", "downpour", "diloco"])  # default: EAMSGD
def test_the_loops_round_holds_no_host_callback(name):
    """The loop's transformation (``on_disagreement="nan"``, the default): its round
    (``sync.make_train_round``) holds no host callback, so JAX's persistent compilation
    cache keeps it (a sweep's seeds, a resumed run and the tests' launches reuse it); the
    same algorithm built with ``on_disagreement="raise"`` holds one."""
    from easgd_jax import parallel
    from easgd_jax.algorithms import registry
    from easgd_jax.training.common import TrainState, make_local_step

    config = load_config_file(os.path.join(ROOT, "configs", f"{name}.py"))
    config.model.name, config.data.name, config.train.batch_size = "mlp", "digits", 8
    layout = parallel.make_worker_layout(config.num_workers, config.num_workers)
    spec = registry.get_spec(config.algorithm.name)
    tx = registry.get_algorithm(config.algorithm.name, axis_name=layout.axis_name,
                                on_disagreement="nan", **validation.algorithm_hparams(config))
    raising = registry.get_algorithm(config.algorithm.name, axis_name=layout.axis_name,
                                     on_disagreement="raise",
                                     **validation.algorithm_hparams(config))
    model = models.get_model("mlp", 10)
    p, steps = config.num_workers, validation.steps_per_round(config)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64))))["params"]
    stacked = jax.tree.map(lambda a: jax.ShapeDtypeStruct((p, *a.shape), a.dtype), params)
    state = jax.eval_shape(lambda s: TrainState(s, jax.vmap(tx.init)(s),
                                                jax.random.split(jax.random.key(0), p)),
                           stacked)
    batches = (jax.ShapeDtypeStruct((p, steps, 8, 64), jnp.float32),
               jax.ShapeDtypeStruct((p, steps, 8), jnp.int32))
    loop_round = train.make_train_round(config, model, tx, spec, layout)
    assert "callback" not in loop_round.lower(state, batches).as_text()
    plain = parallel.make_round(make_local_step(model, raising, 0.0, spec), layout,
                                period=validation.round_period(config),
                                exchange_step=spec.exchange_step)
    assert "callback" in plain.lower(state, batches).as_text()
