"""Notebook-style: train with launch.py on 4 simulated devices, then load the trained center
in a fresh 1-device process and reproduce the run's reported test accuracy.

    python examples/load_center.py [--workdir DIR]

Cell 1 runs ``launch.py`` (EAMSGD, p = 4 workers on 4 simulated CPU devices, the embedded
``digits`` data and an MLP, 300 steps) in a subprocess, as a user would from a shell.
Cell 2 starts a FRESH Python process with ONE device (as a notebook on a laptop) that calls
``easgd_jax.load_center(workdir)``, rebuilds the model with ``models.get_model`` and
evaluates it on the test split, then compares with ``final_metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Cell 2, run in its own process: nothing of the training run is in memory there.
EVALUATE = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    import easgd_jax
    from easgd_jax import data, models

    workdir = sys.argv[1]
    print("devices in this process:", jax.device_count())
    center = easgd_jax.load_center(workdir)                  # the latest checkpoint
    print("center leaves:", {"/".join(str(k.key) for k in path): leaf.shape
                             for path, leaf in jax.tree_util.tree_leaves_with_path(center)})
    config = json.load(open(f"{workdir}/config.json"))
    dataset = data.load_dataset(config["data"]["name"])
    model = models.get_model(config["model"]["name"], dataset.num_classes,
                             **config["model"]["kwargs"])
    logits = model.apply({"params": center}, jnp.asarray(dataset.test_x), train=False)
    correct = int(np.sum(np.argmax(logits, -1) == dataset.test_y))
    accuracy = correct / len(dataset.test_y)
    print(f"{correct} of {len(dataset.test_y)} test examples right")
    print(json.dumps({"test_accuracy": accuracy}))
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="where to train (default: a new "
                        "temporary directory)")
    args = parser.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="easgd_load_center_")

    # Cell 1: train on 4 simulated devices.
    train = [sys.executable, os.path.join(ROOT, "launch.py"),
             "--config", os.path.join(ROOT, "configs", "default.py"), "--workdir", workdir,
             "--config.num_workers=4", "--config.num_devices=4",
             "--config.data.name=digits", "--config.model.name=mlp",
             "--config.train.num_steps=300", "--config.train.eval_every=100",
             "--config.checkpoint.every=100", "--config.tensorboard=False"]
    print("$ python", " ".join(os.path.relpath(a, ROOT) if a.startswith(ROOT) else a
                               for a in train[1:]))
    subprocess.run(train, check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    with open(os.path.join(workdir, "final_metrics.json"), encoding="utf-8") as f:
        reported = json.load(f)
    print(f"run reported (final_metrics.json): step {reported['step']}, "
          f"test_accuracy {reported['test_accuracy']}")

    # Cell 2: a fresh process with one device.
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run([sys.executable, "-c", EVALUATE, workdir], check=True, cwd=ROOT,
                         env=env, capture_output=True, text=True).stdout
    print(out.rstrip())
    loaded = json.loads(out.strip().splitlines()[-1])["test_accuracy"]
    same = loaded == reported["test_accuracy"]
    print(f"same test accuracy as the run: {same} ({loaded} vs {reported['test_accuracy']})")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
