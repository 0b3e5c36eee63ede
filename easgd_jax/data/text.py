"""Real text through tfds, byte-level: ``tiny_shakespeare`` and ``lm1b``.

Read from a prepared ``data_dir`` with ``tfds.data_source`` (array_record), as the image
data sets are (:mod:`easgd_jax.data.tfds_data`): nothing is downloaded at run time, and an
unprepared data set fails at once with the command that prepares it, e.g.

    tfds build tiny_shakespeare --data_dir=DATA_DIR --file_format=array_record

Each split's records (tiny_shakespeare: one record holding the whole split; lm1b: one
sentence each, joined by newlines) are UTF-8 bytes, a vocabulary of 256 (no tokenizer, as
byte-level models, e.g. Al-Rfou et al. 2019, arXiv 1808.04444). The byte stream is cut into
windows of ``context + 1`` bytes that overlap by one (every byte but the first is predicted
once): the model reads ``w[:-1]`` and predicts ``w[1:]``. The test split is tiny_shakespeare's
``test`` and lm1b's ``test``. ``max_train_tokens`` / ``max_test_tokens`` read only the first
records up to that many bytes (lm1b's training split holds about 4 GB).
"""

from __future__ import annotations

import numpy as np

from easgd_jax.data.dataset import Dataset
from easgd_jax.data.synthetic_lm import VOCAB_SIZE, token_dataset
from easgd_jax.data.tfds_data import _data_source

TEXT_NAMES = ("tiny_shakespeare", "lm1b")
_SEPARATOR = {"tiny_shakespeare": b"", "lm1b": b"\n"}


def byte_stream(source, max_tokens: int, separator: bytes = b"") -> np.ndarray:
    """The UTF-8 bytes of ``source``'s records (their ``text`` feature, str or bytes), each
    followed by ``separator``, up to ``max_tokens`` bytes, as uint8."""
    parts, total = [], 0
    for i in range(len(source)):
        text = source[i]["text"]
        if isinstance(text, np.ndarray):
            text = text.item()
        raw = (text.encode("utf-8") if isinstance(text, str) else bytes(text)) + separator
        parts.append(raw)
        total += len(raw)
        if total >= max_tokens:
            break
    return np.frombuffer(b"".join(parts)[:max_tokens], np.uint8)


def windows(stream: np.ndarray, context: int) -> np.ndarray:
    """Windows ``[n, context + 1]`` of ``stream`` at a stride of ``context`` (each byte but
    the first predicted once; a tail shorter than a window is dropped)."""
    n = (len(stream) - 1) // context
    if n < 1:
        raise ValueError(f"{len(stream)} bytes hold no window of {context + 1}.")
    index = np.arange(n)[:, None] * context + np.arange(context + 1)[None, :]
    return stream[index]


def load_text(name: str, data_dir: str | None, context: int = 256,
              max_train_tokens: int = 10_000_000, max_test_tokens: int = 1_000_000) -> Dataset:
    """``name`` (one of ``TEXT_NAMES``) from ``data_dir`` as byte windows (module
    docstring); inputs and next-byte labels ``[n, context]`` int32, 256 classes."""
    if name not in TEXT_NAMES:
        raise ValueError(f"unknown text data set {name!r}; known: {', '.join(TEXT_NAMES)}.")
    for field, value in (("context", context), ("max_train_tokens", max_train_tokens),
                         ("max_test_tokens", max_test_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{field} must be an integer >= 1, got {value!r}.")
    splits = [windows(byte_stream(_data_source(name, split, data_dir), limit, _SEPARATOR[name]),
                      context)
              for split, limit in (("train", max_train_tokens), ("test", max_test_tokens))]
    return token_dataset(name, *splits, VOCAB_SIZE)
