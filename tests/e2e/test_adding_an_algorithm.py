"""docs/adding_an_algorithm.md runs as written: a new algorithm is one function, one
registration and one config, and the training loop runs it without any other change."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from easgd_jax.algorithms import registry

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_the_documented_algorithm_registers_and_trains(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_SPECS", dict(registry._SPECS))  # unregistered after
    with open(os.path.join(ROOT, "docs", "adding_an_algorithm.md"), encoding="utf-8") as f:
        (example,) = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    example = example.replace("/tmp/easgd_local_sgd", str(tmp_path))
    namespace: dict = {}
    exec(compile(example, "adding_an_algorithm.md", "exec"), namespace)  # noqa: S102
    assert "local_sgd" in registry.algorithm_names()
    assert namespace["metrics"]["test_accuracy"] > 0.6  # 10 classes; it learned

    # The rule as documented: after the step at a multiple of tau the workers agree and equal
    # the mean of their SGD steps.
    tx = namespace["local_sgd"](0.5, 2, axis_name="w")
    x = jnp.arange(6.0).reshape(3, 2)
    g = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    state = jax.vmap(tx.init)(x)
    updates, _ = jax.vmap(tx.update, axis_name="w")(g, state, x)
    expected = np.mean(np.asarray(x - 0.5 * g), axis=0)
    np.testing.assert_allclose(np.asarray(x + updates), np.broadcast_to(expected, (3, 2)))
