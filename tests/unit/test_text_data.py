"""tiny_shakespeare and lm1b through the real tfds reading code (tfds.testing.mock_data):
byte-level windows, every byte but the first predicted once; an unprepared data set fails at
once with the command that prepares it."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

from easgd_jax import data
from easgd_jax.data.text import windows

TEXTS = {"train": ["First Citizen:\nBefore we proceed any further, hear me speak.\n",
                   "All:\nSpeak, speak.\u2014 caf\u00e9\n"],
         "test": ["Second Citizen:\nWould you proceed especially against Caius Marcius?\n"]}


def _source(builder, split, **kwargs):
    """A data source of known records: tiny_shakespeare's one record per split (here the
    texts joined), lm1b's one sentence per record."""
    del kwargs
    texts = TEXTS[split]
    if builder.name == "tiny_shakespeare":
        texts = ["".join(texts)]
    return [{"text": t.encode("utf-8")} for t in texts]


@pytest.mark.parametrize("name", ["tiny_shakespeare", "lm1b"])
def test_text_is_read_as_byte_windows(tmp_path, name):
    separator = "\n" if name == "lm1b" else ""
    with tfds.testing.mock_data(as_data_source_fn=_source):
        dataset = data.load_dataset(name, str(tmp_path), context=8)
    expected = {split: np.frombuffer("".join(t + separator for t in texts).encode("utf-8"),
                                     np.uint8) for split, texts in TEXTS.items()}
    assert dataset.num_classes == 256 and dataset.example_shape == (8,)
    assert dataset.optimal_test_loss is None  # unknown for real text
    for split, x, y in (("train", dataset.train_x, dataset.train_y),
                        ("test", dataset.test_x, dataset.test_y)):
        stream = expected[split]
        n = (len(stream) - 1) // 8
        assert x.shape == y.shape == (n, 8) and x.dtype == np.int32
        # inputs are the stream in order; each label is the byte after its input
        np.testing.assert_array_equal(x.reshape(-1), stream[:8 * n])
        np.testing.assert_array_equal(y.reshape(-1), stream[1:8 * n + 1])


def test_max_tokens_reads_only_the_first_records(tmp_path):
    with tfds.testing.mock_data(as_data_source_fn=_source):
        dataset = data.load_dataset("lm1b", str(tmp_path), context=4, max_train_tokens=21)
    assert dataset.train_x.shape == (5, 4)  # 21 bytes: 5 windows of 4 + 1


def test_random_mock_records_decode(tmp_path):
    """tfds's own random mock examples of the Text feature go through the same path."""
    with tfds.testing.mock_data(num_examples=3):
        dataset = data.load_dataset("tiny_shakespeare", str(tmp_path), context=4)
    assert len(dataset.train_x) >= 1 and dataset.train_x.max() < 256


def test_windows_cover_every_byte_once():
    stream = np.arange(11, dtype=np.uint8)
    np.testing.assert_array_equal(windows(stream, 3), [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]])
    with pytest.raises(ValueError, match="hold no window"):
        windows(stream[:3], 3)


@pytest.mark.parametrize("name", ["tiny_shakespeare", "lm1b"])
def test_unprepared_text_fails_at_once_with_the_build_command(tmp_path, name):
    with pytest.raises(data.DatasetNotPreparedError, match=f"tfds build {name} "):
        data.load_dataset(name, str(tmp_path))


@pytest.mark.parametrize("name", ["tiny_shakespeare", "lm1b"])
def test_the_lm_configs_take_real_text_as_their_argument(name):
    from easgd_jax.configs import lm_diloco
    from easgd_jax.training import config as config_lib

    config = lm_diloco.get_config(name)
    config_lib.validate(config)  # its data.kwargs are the text loader's
    assert config.data.name == name and config.model.name == "transformer"
    with pytest.raises(ValueError, match="takes one of synthetic_lm, tiny_shakespeare, lm1b"):
        lm_diloco.get_config("shakespeare")
