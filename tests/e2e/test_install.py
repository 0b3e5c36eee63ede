"""A researcher's install: the wheel built from the repository's tracked files, installed (not
editable) into a fresh virtual environment, runs the launcher, the sweep and the analysis from
an empty folder, with the configs by name.

The fresh environment gets the wheel alone (``--no-deps``); its dependencies (jax, flax, ...)
come from this environment's site-packages through a ``.pth`` file, so the test downloads
nothing. That path file is read after the environment's own site-packages: the installed
wheel, not this checkout, is what runs, which the test checks.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.slow


def _tracked_copy(destination: str) -> str:
    """The repository's files as a clone has them (tracked, or new and not ignored) in
    ``destination``: no virtual environment, build folder or cache comes along."""
    files = subprocess.run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source, target = os.path.join(ROOT, name), os.path.join(destination, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
        elif os.path.isfile(source):
            shutil.copy2(source, target)
    return destination


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(python, bin folder, empty working folder)`` of a fresh venv holding the wheel."""
    base = tmp_path_factory.mktemp("install")
    source = _tracked_copy(str(base / "src"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(base / "dist"), source], check=True)
    wheels = glob.glob(str(base / "dist" / "easgd_jax-*.whl"))
    assert len(wheels) == 1, wheels
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
                    "--no-deps", "--no-index", wheels[0]], check=True)
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], capture_output=True, text=True,
                             check=True).stdout.strip()
    with open(os.path.join(purelib, "zz_test_dependencies.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    work = base / "empty"
    work.mkdir()
    return python, str(venv / "bin"), str(work)


def _run(args: list[str], cwd: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_wheel_is_what_runs_and_carries_configs_and_types(installed):
    python, _, work = installed
    out = _run([python, "-c", "import easgd_jax, launch, easgd_jax.configs.default as d, "
                "easgd_jax.experiments.sweep as s, analysis, os; print(easgd_jax.__file__); "
                "print(launch.__file__); print(analysis.__file__); print(os.path.exists("
                "os.path.join(os.path.dirname(easgd_jax.__file__), 'py.typed')))"], work)
    assert out.returncode == 0, out.stderr
    module, launcher, analysis, typed = out.stdout.split()
    venv = os.path.dirname(os.path.dirname(python))
    for path in (module, launcher, analysis):
        assert path.startswith(venv) and not path.startswith(ROOT), path
    assert typed == "True"


@pytest.mark.parametrize("name, steps", [("default", 20), ("lsgd", 16)])  # lsgd: tau = 4
def test_easgd_launch_runs_a_named_config_from_an_empty_folder(installed, name, steps):
    _, bin_dir, work = installed
    workdir = os.path.join(work, f"run_{name}")
    out = _run([os.path.join(bin_dir, "easgd-launch"), "--config", name, "--workdir", workdir,
                f"--config.train.num_steps={steps}", f"--config.train.eval_every={steps // 2}",
                "--config.checkpoint.every=0", "--config.model.name=mlp",
                "--config.data.name=digits", "--config.train.batch_size=16"], work)
    assert out.returncode == 0, out.stderr[-3000:]
    with open(os.path.join(workdir, "final_metrics.json")) as f:
        assert json.load(f)["step"] == steps
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["launch"]["config_file"].endswith(f"easgd_jax/configs/{name}.py")


def test_the_sweep_and_the_analysis_run_from_an_empty_folder(installed):
    python, _, work = installed
    out = _run([python, "-m", "easgd_jax.experiments.sweep", "--config", "sweeps/smoke",
                "--workdir", os.path.join(work, "sweep"), "--dry_run"], work)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "runs planned" in out.stdout
    out = _run([python, "-m", "analysis", "--help"], work)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "--out OUT" in out.stdout
