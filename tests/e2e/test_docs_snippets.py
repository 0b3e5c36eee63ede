"""The README's (and the docs site's) Orbax snippet runs as written: a hand-written loop's
state saved mid-run and restored onto the mesh resumes bit for bit.

The snippet continues the README's shard_map example, so both run in one namespace, as a
reader runs them; the uninterrupted reference is the same example run for all 200 steps.
"""

import os
import re

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECTION = "### Checkpointing a hand-written loop with Orbax"


def _readme_blocks() -> tuple[str, str]:
    """The shard_map example and the Orbax snippet that continues it."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    example = next(b for b in blocks if "jax.shard_map" in b)
    section = readme.split(SECTION, 1)[1].split("\n### ", 1)[0]
    (snippet,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return example, snippet


def test_orbax_snippet_resumes_bitwise_on_the_mesh(tmp_path):
    example, snippet = _readme_blocks()
    assert "range(100)" in example and "/tmp/easgd_own_loop" in snippet
    resumed: dict = {}
    exec(compile(example, "README.md", "exec"), resumed)  # noqa: S102
    exec(compile(snippet.replace("/tmp/easgd_own_loop", str(tmp_path / "ckpt")),  # noqa: S102
                 "README.md (Orbax)", "exec"), resumed)
    assert resumed["start"] == 100
    assert os.path.isdir(tmp_path / "ckpt" / "100")

    # The restored state came back onto the mesh, one worker's slice per device, with the
    # algorithm's NamedTuple state types.
    on_mesh = NamedSharding(resumed["mesh"], P("workers"))
    restored = resumed["restored"]
    for leaf in jax.tree.leaves(restored):
        assert leaf.sharding.is_equivalent_to(on_mesh, leaf.ndim), leaf.sharding
    assert type(restored["opt_state"]) is type(resumed["tx"].init({"w": np.zeros(3)}))

    uninterrupted: dict = {}
    exec(compile(example.replace("range(100)", "range(200)"), "README.md",  # noqa: S102
                 "exec"), uninterrupted)
    got = (resumed["params"], resumed["opt_state"])
    want = (uninterrupted["params"], uninterrupted["opt_state"])
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
