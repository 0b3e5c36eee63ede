"""The EASGD paper's input pipelines (arXiv 1412.6651, Section 5.1) on tfds mock data: random
28x28 CIFAR-10 crops per example and step, the centre crop at test time, per-channel
normalisation, and a data stream that is a pure function of (seed, worker, step)."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from easgd_jax import data, models
from easgd_jax.data import RandomCrop, WorkerSampler, center_crop
from easgd_jax.data.sampler import AUGMENT_STREAM
from easgd_jax.training import sync as train

N = 24  # mock examples per split


def _images(split: str) -> np.ndarray:
    """Mock CIFAR-10 images whose channels (and splits) differ in distribution."""
    rng = np.random.default_rng(0 if split == "train" else 1)
    low, high = (np.array([0, 0, 64]), np.array([256, 128, 192])) if split == "train" else (
        np.array([32, 100, 0]), np.array([96, 256, 64]))
    return rng.integers(low, high, size=(N, 32, 32, 3)).astype(np.uint8)


def _source(builder, split, **kwargs):
    """``tfds.data_source`` of the mock: different images in each split (tfds's default mock
    gives both splits the same ones)."""
    del builder, kwargs
    return [{"image": image, "label": i % 10} for i, image in enumerate(_images(split))]


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """(cropped data set, uncropped data set, raw uint8 train and test images)."""
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    with tfds.testing.mock_data(as_data_source_fn=_source):
        cropped = data.load_dataset("cifar10", data_dir, crop=28)
        full = data.load_dataset("cifar10", data_dir)
    return cropped, full, (_images("train"), _images("test"))


def _position_images(n: int = 5, size: int = 32) -> np.ndarray:
    """Images whose pixel (r, c) of image i, channel k holds 10000 i + 100 r + c + 0.25 k."""
    i, r, c, k = np.meshgrid(np.arange(n), np.arange(size), np.arange(size), np.arange(3),
                             indexing="ij")
    return (10000 * i + 100 * r + c + 0.25 * k).astype(np.float32)


def test_cifar_shapes_and_example_shape(cifar):
    cropped, full, _ = cifar
    assert cropped.train_x.shape == (N, 32, 32, 3)  # crops are drawn per step
    assert cropped.test_x.shape == (N, 28, 28, 3)
    assert cropped.example_shape == (28, 28, 3)
    assert cropped.augment == RandomCrop(28)
    assert full.augment is None and full.example_shape == (32, 32, 3)
    np.testing.assert_array_equal(cropped.train_x, full.train_x)


def test_per_channel_normalisation_with_training_statistics(cifar):
    _, full, (raw_train, raw_test) = cifar
    np.testing.assert_array_equal(full.train_y, np.arange(N) % 10)
    x = full.train_x.reshape(-1, 3)
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=0), 1.0, atol=1e-5)
    # The test split is normalised with the TRAINING split's statistics.
    scaled = raw_train.reshape(-1, 3) / 255.0
    mean, std = scaled.mean(axis=0), scaled.std(axis=0)
    np.testing.assert_allclose(full.test_x, (raw_test / 255.0 - mean) / std, rtol=1e-4,
                               atol=1e-5)
    assert not np.allclose(full.test_x.reshape(-1, 3).mean(axis=0), 0.0, atol=0.1)


def test_centre_crop_at_test_time(cifar):
    cropped, full, _ = cifar
    np.testing.assert_array_equal(cropped.test_x, full.test_x[:, 2:30, 2:30, :])
    images = _position_images(size=32)
    assert center_crop(images, 28)[0, 0, 0, 0] == 2 * 100 + 2
    assert center_crop(images[:, :31, :31], 28)[0, 0, 0, 0] == 1 * 100 + 1  # rounds down


def test_random_crops_stay_in_bounds_and_cover_every_offset():
    images = np.repeat(_position_images(n=1), 2000, axis=0)
    crops = RandomCrop(28)(images, np.random.default_rng(0))
    assert crops.shape == (2000, 28, 28, 3)
    corner = crops[:, 0, 0, 0].astype(int)
    top, left = corner // 100, corner % 100
    assert top.min() == 0 and top.max() == 4 and left.min() == 0 and left.max() == 4
    assert len(set(zip(top.tolist(), left.tolist(), strict=True))) == 25
    # Each crop is one contiguous window of its own image, all channels together.
    expected = np.stack([images[0, t:t + 28, c:c + 28] for t, c in zip(top, left, strict=True)])
    np.testing.assert_array_equal(crops, expected)


def test_crop_errors():
    with pytest.raises(ValueError, match="crop size 33"):
        RandomCrop(33)(np.zeros((2, 32, 32, 3), np.float32), np.random.default_rng(0))
    one_d = data.Dataset("1-D", np.zeros((4, 40), np.float32), np.zeros(4, np.int32),
                         np.zeros((4, 40), np.float32), np.zeros(4, np.int32), num_classes=2)
    with pytest.raises(ValueError, match="crops need images"):
        data.with_crops(one_d, 28)
    with pytest.raises(ValueError, match="crop must be >= 0"):
        data.load_dataset("digits", crop=-1)


def _sampler(dataset, workers=3, batch=16, seed=5):
    return WorkerSampler(dataset.train_x, dataset.train_y, workers, batch, seed,
                         augment=dataset.augment)


def test_sampler_crops_are_a_function_of_seed_worker_and_step():
    images = _position_images(n=40)
    dataset = data.Dataset("positions", images, np.arange(40), images[:, :28, :28],
                           np.arange(40), num_classes=40, augment=RandomCrop(28))
    sampler = _sampler(dataset)
    x, y = sampler.round(start_step=20, steps=4)
    assert x.shape == (3, 4, 16, 28, 28, 3) and y.shape == (3, 4, 16)
    # Inputs stay paired with labels: the crop's corner pixel names its image.
    np.testing.assert_array_equal(x[..., 0, 0, 0] // 10000, y)
    # Exactly the crops drawn by the generator seeded by (seed, worker, step).
    idx = np.stack([sampler.indices(w, 20, 4) for w in range(3)])
    for w in range(3):
        for k in range(4):
            rng = np.random.default_rng([5, w, 20 + k, AUGMENT_STREAM])
            np.testing.assert_array_equal(x[w, k], RandomCrop(28)(images[idx[w, k]], rng))
    # Regenerated from the step alone (exact resume), also for a subset of the workers.
    again, _ = _sampler(dataset).round(start_step=20, steps=4)
    np.testing.assert_array_equal(x, again)
    part, _ = sampler.round(start_step=20, steps=4, workers=range(1, 3))
    np.testing.assert_array_equal(part, x[1:])
    # Different workers, steps and seeds draw different windows.
    corners = x[..., 0, 0, 0] % 10000  # 100 * top + left
    assert not np.array_equal(corners[0], corners[1])
    assert not np.array_equal(corners[0, 0], corners[0, 1])
    other, _ = _sampler(dataset, seed=6).round(start_step=20, steps=4)
    assert not np.array_equal(other, x)


def test_sampler_without_augment_is_unchanged():
    y = np.arange(50)
    plain = WorkerSampler(y * 10, y, num_workers=2, batch_size=8, seed=3)
    x1, y1 = plain.round(start_step=4, steps=2)
    np.testing.assert_array_equal(x1, y1 * 10)
    idx = np.stack([plain.indices(w, 4, 2) for w in range(2)])
    np.testing.assert_array_equal(y1, idx)


def test_sampler_on_cifar(cifar):
    cropped, _, _ = cifar
    x, y = _sampler(cropped, workers=2, batch=8).round(start_step=0, steps=3)
    assert x.shape == (2, 3, 8, 28, 28, 3) and x.dtype == np.float32
    assert y.shape == (2, 3, 8) and y.dtype == np.int32


def test_imagenet_squares_random_crops_and_centre_crop(tmp_path):
    with tfds.testing.mock_data(num_examples=4):
        dataset = data.load_dataset("imagenet2012", str(tmp_path), image_size=40, crop=32)
        squares = data.load_dataset("imagenet2012", str(tmp_path), image_size=40)
        test_squares = squares.test_x[np.arange(4)]
        test_crops = dataset.test_x[np.arange(4)]
    assert squares.augment is None and squares.example_shape == (40, 40, 3)
    assert dataset.example_shape == (32, 32, 3) and dataset.augment == RandomCrop(32)
    assert dataset.train_x.shape == (4, 40, 40, 3)
    np.testing.assert_allclose(test_crops, test_squares[:, 4:36, 4:36], rtol=1e-6)
    with tfds.testing.mock_data(num_examples=4):
        x, _ = _sampler(dataset, workers=1, batch=2).round(start_step=0, steps=1)
    assert x.shape == (1, 1, 2, 32, 32, 3)


@pytest.mark.slow
def test_training_on_cropped_cifar_with_the_paper_net(tmp_path):
    """One step of 2 workers with the paper's net on the cropped pipeline, against a
    computation by hand from the raw mock images: the reported training loss is the mean of
    the workers' first mini-batch losses (random 28x28 windows of the normalised training
    images, dropout on), and with moving_rate = 0 the center stays the initial model, whose
    test loss and accuracy are those on the centre windows of the normalised test images."""
    from easgd_jax.experiments.sweep import load_config_file

    config = load_config_file("default")
    config.data.name, config.data.data_dir = "cifar10", str(tmp_path / "tfds")
    config.data.crop = 28
    config.model.name = "cifar_cnn"
    config.num_workers = config.num_devices = 2
    config.train.update(batch_size=4, num_steps=1, eval_every=1, steps_per_round=1)
    config.algorithm.update(period=1, moving_rate=0.0)
    config.checkpoint.every = 0
    config.tensorboard = False
    # A given step time for the simulated cluster clock: measuring the paper net's step
    # (cluster.compute_s_per_step = 0, test_cluster's business) costs more than this run.
    config.cluster.compute_s_per_step = 1e-3
    with tfds.testing.mock_data(as_data_source_fn=_source):
        final = train.train_and_evaluate(config, str(tmp_path / "run"))

    raw_train, raw_test = _images("train") / 255.0, _images("test") / 255.0
    mean, std = raw_train.reshape(-1, 3).mean(axis=0), raw_train.reshape(-1, 3).std(axis=0)
    train_x = ((raw_train - mean) / std).astype(np.float32)
    test_x = ((raw_test - mean) / std).astype(np.float32)[:, 2:30, 2:30]
    labels = np.arange(N) % 10  # as _source labels them
    model = models.get_model("cifar_cnn", 10)
    init_rng, worker_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    params = jax.jit(lambda rng: model.init(rng, jnp.zeros((1, 28, 28, 3)), train=False))(
        init_rng)["params"]
    apply = jax.jit(model.apply, static_argnames="train")
    losses = []
    for w, key in enumerate(jax.random.split(worker_rng, 2)):
        # Worker w's examples and windows at step 0 (data/sampler.py's seeding).
        idx = np.random.default_rng([config.seed, w, 0]).integers(0, N, size=4)
        corners = np.random.default_rng([config.seed, w, 0, AUGMENT_STREAM]).integers(
            0, 32 - 28 + 1, size=(4, 2))
        x = np.stack([train_x[i, t:t + 28, c:c + 28]
                      for i, (t, c) in zip(idx, corners, strict=True)])
        _, dropout_rng = jax.random.split(key)  # train.make_local_step's split of its key
        logits = apply({"params": params}, x, train=True, rngs={"dropout": dropout_rng})
        losses.append(float(models.cross_entropy(logits, labels[idx])))
    assert final["train_loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    logits = np.asarray(apply({"params": params}, test_x, train=False), np.float64)
    log_probs = logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))
    assert final["test_loss"] == pytest.approx(-np.mean(log_probs[np.arange(N), labels]),
                                               rel=1e-5)
    assert final["test_accuracy"] == np.mean(np.argmax(logits, axis=-1) == labels)
