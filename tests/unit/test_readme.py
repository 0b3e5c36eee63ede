"""The README's usage example runs as written and does what it says."""

import os
import re

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_readme_shard_map_example_runs_and_trains():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    example = next(b for b in blocks if "jax.shard_map" in b)
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)  # noqa: S102
    center = np.asarray(namespace["center"]["w"])
    # The center is identical on every worker and has moved toward the true weights.
    np.testing.assert_array_equal(center, np.broadcast_to(center[0], center.shape))
    assert np.linalg.norm(center[0] - [1.0, -2.0, 0.5]) < 0.5
