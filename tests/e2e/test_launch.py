"""launch.py as a new user meets it, in process (``launch.main(argv)`` returns the exit
status): one line and status 2 for bad input, 75 for a stopped run, configs from any folder,
where the run came from in config.json; and the README's promises about it."""

from __future__ import annotations

import ast
import json
import logging as std_logging
import os
import re
import sys
import warnings

import pytest

import launch
from easgd_jax.configs import default
from easgd_jax.experiments.sweep import load_config_file
from easgd_jax.training import common, metrics
from easgd_jax.training import config as config_lib
from easgd_jax.training.logs import QuietLibraries, quiet_library_logs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT = os.path.join(ROOT, "configs", "default.py")


@pytest.fixture(autouse=True)
def _keep_environment(monkeypatch):
    """main() sizes the simulated devices through XLA_FLAGS / PJRT_NPROC: restore them."""
    for name in ("XLA_FLAGS", "PJRT_NPROC"):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)


def _main(capsys, workdir, *args, config=DEFAULT) -> tuple[int, str]:
    status = launch.main(["launch.py", f"--config={config}", f"--workdir={workdir}", *args])
    return status, capsys.readouterr().err


# ------------------------------------------------------------------ item 8: bad input


@pytest.mark.parametrize("args, message", [
    (["--config.algorithm.moving_rat=0.1"],
     "--config.algorithm.moving_rat=0.1: config.algorithm has no field moving_rat; did you "
     "mean moving_rate? (its fields: learning_rate, momentum, moving_rate, name, period)."),
    (["--config.trian.num_steps=5"], "config has no field trian; did you mean train?"),
    (["--config.num_workers=abc"],
     "--config.num_workers=abc: invalid literal for int() with base 10: 'abc'"),
    (["--config.algorithm.period=0"], "config.algorithm: period must be an integer >= 1, got 0."),
    (["--config.num_workers=6"],
     "config.num_workers (6) must be a multiple of config.num_devices (4)."),
    (["--config.asynchrony.clock_jitter=1.5", "--config.executor=simulated_async"],
     "config.asynchrony.clock_jitter must be a number in [0.0, 1.0), got 1.5."),
    (["--bogus"], "unknown flag or argument: --bogus"),
])
def test_bad_overrides_and_values_are_one_line_and_status_2(capsys, tmp_path, args, message):
    status, err = _main(capsys, tmp_path, *args)
    assert status == launch.EXIT_BAD_INPUT
    assert err.startswith("launch.py: error: ") and message in err, err
    assert err.count("\n") == 1, err
    assert "\\n" not in err and "Traceback" not in err
    assert not os.listdir(tmp_path)  # nothing written, nothing compiled


@pytest.mark.parametrize("source, message", [
    (None, "config file '{path}' not found"),
    ("x = (\n", "config file {path}, line 1: SyntaxError: '(' was never closed"),
    ("import ml_collections\n\nX = 1\n", "config file {path} defines no get_config()"),
    ("\n\nimport no_such_module_anywhere\n",
     "config file {path}, line 3: ModuleNotFoundError: No module named "
     "'no_such_module_anywhere'"),
    ("def get_config():\n    return {'seed': 0}\n",
     "get_config() of config file {path} returned dict, not an ml_collections.ConfigDict"),
])
def test_bad_config_files_are_named_in_one_line(capsys, tmp_path, source, message):
    path = tmp_path / "my_config.py"
    if source is not None:
        path.write_text(source)
    status, err = _main(capsys, tmp_path / "run", config=str(path))
    assert status == launch.EXIT_BAD_INPUT
    assert message.format(path=path) in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_library_callers_still_get_exceptions(tmp_path):
    (tmp_path / "noget.py").write_text("X = 1\n")
    (tmp_path / "broken.py").write_text("x = (\n")
    with pytest.raises(ValueError, match="defines no get_config"):
        load_config_file(str(tmp_path / "noget.py"))
    with pytest.raises(SyntaxError):
        load_config_file(str(tmp_path / "broken.py"))
    config = default.get_config()
    config.algorithm.period = 0
    with pytest.raises(ValueError, match="period must be an integer >= 1"):
        config_lib.validate(config)


def test_unprepared_tfds_data_set_is_status_2_with_its_build_line(capsys, tmp_path):
    status, err = _main(capsys, tmp_path / "run", "--config.data.name=mnist",
                        "--config.model.name=mlp", f"--config.data.data_dir={tmp_path}")
    assert status == launch.EXIT_BAD_INPUT
    assert err.startswith("launch.py: error: tfds data set 'mnist' is not prepared")
    assert "tfds build mnist --data_dir=DATA_DIR --file_format=array_record" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------ item 9: data and model


def test_digits_with_the_default_cnn1d_names_the_fix(capsys, tmp_path):
    status, err = _main(capsys, tmp_path, "--config.data.name=digits")
    assert status == launch.EXIT_BAD_INPUT
    assert ("config.model.name 'cnn1d' takes 1-D signals [length], and config.data.name "
            "'digits' has images [height, width, channels]: set config.model.name to 'mlp' "
            "(--config.model.name=mlp)") in err
    config = default.get_config()
    config.data.name, config.model.name = "digits", "mlp"
    config_lib.validate(config)  # the fix it names is accepted
    config.model.name = "cnn1d"
    with pytest.raises(ValueError, match="--config.model.name=mlp"):
        config_lib.validate(config)


def test_every_data_set_and_model_has_an_input_kind():
    from easgd_jax import data, models

    assert set(data.INPUT_KINDS) == set(data.DATASET_NAMES)
    assert set(models.INPUT_KINDS) == set(models.MODEL_NAMES)
    assert data.embedded.digits().train_x.ndim - 1 == 3  # [8, 8, 1]: an image
    assert data.INPUT_KINDS["digits"] == "image"


# ---------------------------------------------------------- item 10: beta = p * alpha


def test_moving_rate_past_the_stability_bound_is_refused(capsys, tmp_path):
    status, err = _main(capsys, tmp_path, "--config.algorithm.moving_rate=0.9")
    assert status == launch.EXIT_BAD_INPUT
    assert ("config.algorithm.moving_rate 0.9 with config.num_workers 4 gives beta = p * "
            "moving_rate = 3.6; synchronous eamsgd diverges for beta >= 2p / (p + 1) = 1.6") in err
    assert "--config.algorithm.moving_rate=0.225" in err


@pytest.mark.parametrize("name", ["easgd", "eamsgd"])
def test_beta_bounds_match_the_synchronous_analysis(name):
    """Refused exactly where the mean system M of analysis/synchronous.py has an eigenvalue
    outside the unit circle for every eta * h (alpha + beta >= 2); a warning for 1 < beta
    below that; the paper's beta = 0.9 passes silently."""
    from analysis.synchronous import sync_spectral_radius
    from easgd_jax.configs import easgd

    config = (easgd if name == "easgd" else default).get_config()
    p = config.num_workers

    def radius(alpha: float) -> float:  # the smallest step is the most stable one
        return float(sync_spectral_radius(eta=1e-4, beta=p * alpha, p=p, h=1.0))

    edge = 2 / (p + 1)  # alpha + beta = 2
    for alpha in (edge + 1e-3, 0.9):
        config.algorithm.moving_rate = alpha
        assert radius(alpha) > 1
        with pytest.raises(ValueError, match="diverges for beta >= 2p / \\(p \\+ 1\\)"):
            config_lib.validate(config)
    for alpha, warned in ((edge - 1e-3, True), (1.2 / p, True), (0.9 / p, False),
                          (1 / p, False)):
        assert radius(alpha) < 1
        config.algorithm.moving_rate = alpha
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            config_lib.validate(config)
        assert any("the center overshoots" in str(w.message) for w in caught) == warned


def test_asynchronous_rules_keep_the_per_worker_condition():
    """Asynchronously each exchange moves the center by alpha alone (Algorithm 1): the
    round-robin condition bounds alpha <= 1, not p * alpha."""
    from easgd_jax.configs import async_eamsgd

    config = async_eamsgd.get_config()
    config.algorithm.moving_rate = 0.9
    config_lib.validate(config)
    config.algorithm.moving_rate = 1.5
    with pytest.raises(ValueError, match="moving_rate"):
        config_lib.validate(config)


# ---------------------------------------------------------------------- item 11: README


def _readme() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def test_readme_names_a_config_for_every_algorithm():
    from easgd_jax.algorithms import registry

    rows = re.findall(r"^\| (`[a-z_]+`(?:, `[a-z_]+`)*) \|.*\| ([^|]+) \|$", _readme(), re.M)
    table = {}
    for names, configs in rows:
        files = re.findall(r"`([a-z_0-9]+\.py)`", configs)
        if files:
            table.update(zip(re.findall(r"`([a-z_]+)`", names), files, strict=True))
    assert set(table) == set(registry.algorithm_names()) | {"apam"}
    for name, file in table.items():
        assert load_config_file(os.path.join(ROOT, "configs", file)).algorithm.name == name


def test_readme_override_example_trains_the_center():
    block = re.search(r"```bash\n(\.venv/bin/python launch\.py --config configs/default\.py "
                      r"--workdir /tmp/run2.*?)```", _readme(), re.S).group(1)
    overrides = re.findall(r"--config\.[\w.]+=\S+", block)
    config = launch._apply_overrides(default.get_config(), overrides)
    assert config.algorithm.moving_rate > 0  # 0 leaves the center where it started
    assert config.num_workers * config.algorithm.moving_rate == pytest.approx(0.9)
    config_lib.validate(config)


# ------------------------------------------------------ item 12: configs from anywhere


def test_config_files_load_from_any_folder(monkeypatch, tmp_path):
    """As ``easgd-launch`` runs: neither the repository nor the working directory on
    sys.path, no ``configs`` imported yet."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path
                                      if p not in ("", ".") and os.path.realpath(p or ".")
                                      not in (os.path.realpath(ROOT),)])
    for name in [m for m in sys.modules if m == "configs" or m.startswith("configs.")]:
        monkeypatch.delitem(sys.modules, name)
    config, workdir, overwrite = launch.parse_command_line(
        ["easgd-launch", f"--config={ROOT}/configs/lsgd.py", "--workdir=run",
         "--config.train.num_steps=8"])
    assert config.algorithm.name == "lsgd_nesterov" and config.train.num_steps == 8
    assert (workdir, overwrite) == ("run", False)
    assert config.launch.config_file == os.path.join(ROOT, "easgd_jax", "configs", "lsgd.py")
    assert config.launch.overrides == "--config.train.num_steps=8"
    by_name, _, _ = launch.parse_command_line(["easgd-launch", "--config=lsgd", "--workdir=run"])
    assert by_name.launch.config_file == config.launch.config_file


# ------------------------------------------------------------- item 13: the run's record


def test_a_rerun_from_another_folder_or_commit_resumes(tmp_path):
    """The launch fields are recorded but not compared; a workdir saved before they existed
    resumes too."""
    saved = json.loads(default.get_config().to_json_best_effort())
    current = default.get_config()
    current.launch.config_file = "/elsewhere/configs/default.py"
    current.launch.overrides = "--config.train.num_steps=4000"
    current.launch.git_commit = "0123abcd+dirty"
    current.train.num_steps = 4000
    now = json.loads(current.to_json_best_effort())
    assert common.config_differences(saved, now, config_lib.RESUMABLE_CHANGES) == []
    del saved["launch"]
    assert common.config_differences(saved, now, config_lib.RESUMABLE_CHANGES) == []
    current.seed = 1
    assert common.config_differences(saved, json.loads(current.to_json_best_effort()),
                                     config_lib.RESUMABLE_CHANGES) == [
        "seed: 0 in the workdir, 1 now"]


def test_git_commit_is_head_of_this_checkout():
    import subprocess

    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert launch._git_commit().removesuffix("+dirty") == head


def test_progress_line_shows_the_current_leader_only(tmp_path):
    writer = metrics.MetricsWriter(str(tmp_path), 100, tensorboard=False)
    leaders = [0, 3, 1, 2] * 12 + [1, 3]
    writer.write(50, {"test_accuracy": 0.5, "leader_per_round": leaders})
    line = writer.progress_line(50, {"step": 50, "test_accuracy": 0.5,
                                     "leader_per_round": leaders})
    assert "leader_per_round[-1] 3" in line and "[0, 3" not in line
    assert metrics.read_metrics(str(tmp_path))[-1]["leader_per_round"] == leaders


def test_orbax_info_lines_are_dropped_and_its_warnings_kept():
    def record(level: int, path: str) -> std_logging.LogRecord:
        return std_logging.LogRecord("absl", level, path, 1, "message", None, None)

    orbax = "/venv/site-packages/orbax/checkpoint/_src/checkpointers/async_checkpointer.py"
    quiet = QuietLibraries()
    assert not quiet.filter(record(std_logging.INFO, orbax))
    assert quiet.filter(record(std_logging.WARNING, orbax))
    assert quiet.filter(record(std_logging.INFO, "/repo/easgd_jax/training/metrics.py"))
    from absl import logging

    quiet_library_logs()
    quiet_library_logs()
    assert sum(isinstance(f, QuietLibraries) for f in logging.get_absl_handler().filters) == 1


def test_jax_and_matplotlib_info_lines_are_dropped_unless_verbose():
    """JAX's backend probe and matplotlib's font cache at INFO are dropped (warnings kept);
    absl's ``--verbosity=1`` brings them back."""
    from absl import logging

    def record(name: str, level: int) -> std_logging.LogRecord:
        return std_logging.LogRecord(name, level, f"/site-packages/{name}.py", 1, "m", None, None)

    quiet = QuietLibraries()
    probe = record("jax._src.xla_bridge", std_logging.INFO)
    fonts = record("matplotlib.font_manager", std_logging.INFO)
    assert not quiet.filter(probe) and not quiet.filter(fonts)
    assert quiet.filter(record("jax._src.xla_bridge", std_logging.WARNING))
    assert quiet.filter(record("easgd_jax.training.sync", std_logging.INFO))
    assert quiet.filter(record("jaxtyping_like_user_module", std_logging.INFO))
    absl_logger = logging.get_absl_logger()
    before = absl_logger.level  # (NOTSET: set_verbosity(get_verbosity()) would not restore it)
    logging.set_verbosity(logging.DEBUG)
    try:
        assert quiet.filter(probe) and quiet.filter(fonts)
    finally:
        absl_logger.setLevel(before)


def test_tensorboard_viewer_is_an_extra():
    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as f:
        call = next(node for node in ast.walk(ast.parse(f.read()))
                    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup")
    extras = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "extras_require"))
    assert any(r.startswith("tensorboard>=") for r in extras["tensorboard"])
    assert 'pip install -e ".[tensorboard]"' in _readme()


# -------------------------------------------------------------- item 14: exit statuses


@pytest.mark.parametrize("returned, status", [
    ({"test_accuracy": 0.9, "stopped_at_step": 40}, launch.EXIT_STOPPED),
    ({"test_accuracy": 0.9}, 0),
])
def test_a_stopped_run_exits_75_and_a_finished_one_0(monkeypatch, capsys, tmp_path,
                                                     returned, status):
    from easgd_jax import training

    calls = []
    monkeypatch.setattr(training, "train_and_evaluate",
                        lambda config, workdir, overwrite, plan_: calls.append(workdir)
                        or returned)
    assert _main(capsys, tmp_path)[0] == status
    assert calls == [str(tmp_path)]
    assert launch.EXIT_STOPPED == 75 and "| 75 | (`EX_TEMPFAIL`)" in _readme()


@pytest.mark.parametrize("error", ["busy", "other config", "no verified checkpoint"])
def test_an_unusable_workdir_is_one_line_and_status_2(monkeypatch, capsys, tmp_path, error):
    """Another run holds the workdir, it holds a run of another config, or none of its
    checkpoints verifies: one line naming the fix, status 2, no traceback."""
    from easgd_jax import training
    from easgd_jax.training.checkpoint import CheckpointError
    from easgd_jax.training.lock import WorkdirBusyError

    raised = {"busy": WorkdirBusyError("workdir W is in use by pid 7 on host h"),
              "other config": common.WorkdirConfigError("workdir W holds a run with a "
                                                        "different config (x)"),
              "no verified checkpoint": CheckpointError("no checkpoint in W can be verified")
              }[error]

    def train(config, workdir, overwrite, plan_):
        raise raised

    monkeypatch.setattr(training, "train_and_evaluate", train)
    status, err = _main(capsys, tmp_path)
    assert status == 2
    assert err == f"launch.py: error: {raised}\n"
