"""``easgd_jax.load_center``: the trained evaluation point of a run, in any process.

A run of 4 workers on 4 devices is restored onto ONE device and its center reproduces the
run's reported test loss and accuracy, at the end and at an earlier checkpoint; a fresh
1-device process does the same (slow).
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import small_sync_config as _config  # digits + mlp, test_checkpoint's round

import easgd_jax
from easgd_jax import data, models
from easgd_jax.training import sync
from easgd_jax.training.common import make_evaluator
from easgd_jax.training.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """EAMSGD, 4 workers on 4 devices, digits + the MLP, 40 steps, checkpoints at 20 and
    40: ``(workdir, final state, final metrics)``."""
    config = _config(num_steps=40)
    assert (config.num_workers, config.num_devices) == (4, 4)
    workdir = str(tmp_path_factory.mktemp("load_center"))
    state, final = sync.train(config, workdir)
    return workdir, state, final


def _evaluate(params):
    dataset = data.load_dataset("digits")
    model = models.get_model("mlp", dataset.num_classes)
    return make_evaluator(model)(params, dataset.test_x, dataset.test_y)


def test_load_center_reproduces_the_reported_accuracy(run):
    workdir, state, final = run
    center = easgd_jax.load_center(workdir)
    held = jax.device_get(state.params)
    assert jax.tree.map(np.shape, center) == jax.tree.map(lambda a: a.shape[1:], held)
    held = jax.device_get(easgd_jax.center(state.opt_state, worker=0))
    for a, b in zip(jax.tree.leaves(center), jax.tree.leaves(held), strict=True):
        np.testing.assert_array_equal(a, b)
    assert _evaluate(center) == (final["test_loss"], final["test_accuracy"])
    # An earlier checkpoint: the center at step 20, what the run reported then.
    at_20 = easgd_jax.load_center(workdir, step=20)
    record = next(r for r in read_metrics(workdir) if r["step"] == 20)
    assert _evaluate(at_20) == (record["test_loss"], record["test_accuracy"])
    assert record["test_loss"] != final["test_loss"]


def test_load_center_errors_name_what_is_missing(run, tmp_path):
    workdir, _, _ = run
    with pytest.raises(ValueError, match=r"no checkpoint at step 30; it has steps \[20, 40\]"):
        easgd_jax.load_center(workdir, step=30)
    with pytest.raises(FileNotFoundError, match="config.json does not exist"):
        easgd_jax.load_center(str(tmp_path))


@pytest.mark.slow
def test_load_center_in_a_fresh_one_device_process(run):
    workdir, _, final = run
    script = (
        "import json, sys, jax, easgd_jax\n"
        "from easgd_jax import data, models\n"
        "from easgd_jax.training.common import make_evaluator\n"
        "center = easgd_jax.load_center(sys.argv[1])\n"
        "ds = data.load_dataset('digits')\n"
        "model = models.get_model('mlp', ds.num_classes)\n"
        "loss, acc = make_evaluator(model)(center, ds.test_x, ds.test_y)\n"
        "print(json.dumps({'devices': jax.device_count(), 'loss': loss, 'acc': acc}))\n")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run([sys.executable, "-c", script, workdir], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True, timeout=300)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"devices": 1, "loss": final["test_loss"], "acc": final["test_accuracy"]}
