"""Train with a config file: ``python launch.py --config configs/X.py --workdir DIR``.

Any field can be overridden: ``--config.algorithm.period=1 --config.num_workers=8``. The
config file may be given from any folder (``easgd-launch --config ~/easgd-jax/configs/X.py``;
the folder that holds its package is put on ``sys.path``, so that configs import each other)
or by name (``--config lsgd``: ``easgd_jax/configs/lsgd.py``, shipped with the package, so
names work from any folder after ``pip install``; ``configs/`` at the repository root links
to it).
``workdir/config.json`` records the config file, the overrides and the git commit
(``config.launch``; a workdir resumes whatever they are).

Exit status:
    0   the run finished (or had finished already: nothing was changed);
    2   bad input, before anything is compiled: the config file (missing, broken, without
        ``get_config``), an override (unknown field, unparsable value), a field's value
        (``training.config.validate``: also a model that cannot read the data set and a
        moving_rate past the stability bound), a tfds data set that is not prepared; or a
        workdir that cannot be used as it is: another run holds it (its lock), it holds a run
        of another config, or none of its checkpoints verifies (use ``--overwrite`` or
        another workdir). One line (the tfds one adds its ``tfds build`` command) says what
        and how to fix it;
    75  (EX_TEMPFAIL) a worker failed under ``asynchrony.on_worker_failure='stop'`` (threads,
        Ray; saved where the workers stood), or SIGINT or SIGTERM stopped the run: at a
        checkpoint, or at any moment
        outside the training loop (while it starts: the data, compilation, the step-time
        measurement; or during its final evaluation), in one line; the same command resumes
        it (or, when the run had finished, says so and exits 0);
    74  (EX_IOERR) the workdir cannot be written: a full disk, a read-only file system, no
        permission. One line naming the file; free space or fix the permissions and run the
        same command (it resumes from the last checkpoint);
    134 on several processes, a peer process died: the others say so in one line when a
        collective breaks, or JAX's runtime aborts them (SIGABRT, its own log) after
        ``distributed.heartbeat_timeout_s``; run the same command on every process;
    1   anything else (with a traceback).
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags
from ml_collections.config_flags import config_path

EXIT_BAD_INPUT = 2
EXIT_STOPPED = 75  # sysexits.h EX_TEMPFAIL: a temporary failure, run it again
EXIT_IO_ERROR = 74  # sysexits.h EX_IOERR: the workdir cannot be written
EXIT_PEER_LOST = 134  # as JAX's runtime ends a process whose peer died (SIGABRT)
# A stop signal's StopSignal that has not reached main() this long after it was raised was
# caught on the way (a library's bare ``except``): the signal is sent again.
SWALLOWED_AFTER_S = 5.0
# OSErrors of a workdir that cannot be written: one line and EXIT_IO_ERROR, no traceback.
_IO_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)

_CONFIG = flags.DEFINE_string(
    "config", None, "Path to a config file with get_config() (FILE:ARG calls get_config('ARG')); "
    "its fields are overridden by --config.FIELD=VALUE.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for metrics, checkpoints and the saved config. An existing "
    "workdir of the same config is resumed from its latest checkpoint.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Start afresh in a workdir that holds a run with another config.")
_OWN_FLAGS = ("config", "workdir", "overwrite")
_OVERRIDE = re.compile(r"^--?(no)?config\.")


class BadInput(Exception):
    """Input the user can fix: launch.py prints the message alone and exits 2."""


class StopSignal(BaseException):  # noqa: N818 - a signal, not an error
    """SIGTERM/SIGINT outside a training loop (which collects them itself and stops at a
    checkpoint): raised where the program is, so that it unwinds (the checkpoint manager
    and the workdir's lock released) and exits 75 in one line."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """From the first second to the last: SIGTERM and SIGINT raise :class:`StopSignal`
    (once; a second one while the program unwinds is ignored) wherever no training loop
    collects them (:func:`easgd_jax.training.common.stop_requests` takes them over inside,
    and gives them back). In the main thread only; the handlers are restored after."""
    unwinding, raised, dropped, propagated = (threading.Event() for _ in range(4))
    hook, signums = sys.unraisablehook, []

    def handler(signum: int, _frame) -> None:
        if not unwinding.is_set():
            unwinding.set()
            signums.append(signum)
            raised.set()
            raise StopSignal(signum)

    def unraisable(info) -> None:
        if isinstance(info.exc_value, StopSignal):
            dropped.set()  # (printed and dropped by Python: not shown, delivered again)
        else:
            hook(info)

    def redeliver() -> None:
        """A StopSignal that does not reach the with-statement was lost: raised where Python
        drops it (a garbage-collector callback of JAX's, a __del__: the run went on), or
        caught by a library's bare ``except``. Sent again until the main thread raises it
        where it propagates."""
        while True:
            raised.wait()
            wait = 0.1 if dropped.is_set() else SWALLOWED_AFTER_S
            if propagated.wait(wait) or propagated.is_set():
                return
            raised.clear()
            dropped.clear()
            unwinding.clear()
            os.kill(os.getpid(), signums[-1])

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError):  # not the main thread
            previous[sig] = signal.signal(sig, handler)
    watchdog = threading.Thread(target=redeliver, name="stop-signal-redelivery", daemon=True)
    watchdog.start()
    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        propagated.set()
        raised.set()  # (wakes the watchdog: it ends)
        sys.unraisablehook = hook
        for sig, old in previous.items():
            signal.signal(sig, old)


def _known_flags(argv: Sequence[str]) -> list[str]:
    """Parses this program's and absl's flags in ``argv``; returns the rest (``argv[0]``,
    the ``--config.*`` overrides and anything unknown)."""
    for name in _OWN_FLAGS:  # a second call (tests) starts from the defaults
        flags.FLAGS[name].unparse()
    try:
        return flags.FLAGS(list(argv), known_only=True)
    except flags.Error as e:
        raise BadInput(str(e)) from None


def _load(path: str) -> ml_collections.ConfigDict:
    """``get_config()`` of the config file ``path``; BadInput naming the file otherwise."""
    from easgd_jax.experiments.config_files import load_config_file

    try:
        return load_config_file(path)
    except (FileNotFoundError, ValueError) as e:
        raise BadInput(str(e)) from None
    except SyntaxError as e:
        raise BadInput(f"config file {path}, line {e.lineno}: SyntaxError: {e.msg}") from None
    except Exception as e:  # raised by the file's own code: say where in it
        file = os.path.realpath(path.partition(":")[0])
        lines = [frame.lineno for frame in traceback.extract_tb(e.__traceback__)
                 if os.path.realpath(frame.filename) == file]
        line = f", line {lines[-1]}" if lines else ""
        raise BadInput(f"config file {path}{line}: {type(e).__name__}: {e}") from None


def _unknown_field(config: ml_collections.ConfigDict, path: str) -> str:
    """``config.A.B has no field C; did you mean D? (its fields: ...)`` for the first part
    of the dotted ``path`` that ``config`` lacks."""
    node, parents = config, ["config"]
    for part in path.split("."):
        if not isinstance(node, ml_collections.ConfigDict):
            return f"config.{'.'.join(parents[1:])} is a {type(node).__name__}, not a section"
        if part not in node:
            fields = sorted(node.keys())
            close = difflib.get_close_matches(part, fields, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            shown = ", ".join(fields) if fields else "none; add them in the config file"
            return f"{'.'.join(parents)} has no field {part}{hint} (its fields: {shown})"
        node, parents = node[part], [*parents, part]
    return f"config.{path}: cannot be set"


def _apply_overrides(config: ml_collections.ConfigDict,
                     overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """``config`` with the ``--config.FIELD=VALUE`` arguments applied (parsed by
    ml_collections by the field's type; the config is locked: no new fields)."""
    argv = ["launch.py", *overrides]
    flag_values = flags.FlagValues()
    try:  # ml_collections looks the fields up as it defines one flag per override
        config_flags.DEFINE_config_dict("config", config, flag_values=flag_values,
                                        lock_config=True, sys_argv=argv)
        flag_values(argv)
    except (AttributeError, KeyError):  # ml_collections: a field the config does not have
        for arg in overrides:
            path = _OVERRIDE.sub("", arg).split("=", 1)[0]
            try:
                config_path.get_value(path, config)
            except (AttributeError, KeyError):
                raise BadInput(f"{arg}: {_unknown_field(config, path)}.") from None
        raise
    except flags.Error as e:
        raise BadInput(str(e).removeprefix("flag ")) from None
    return flag_values.config


def _git_commit() -> str:
    """HEAD of the easgd-jax checkout that runs (``+dirty`` with local changes), or ""."""
    import easgd_jax

    root = os.path.dirname(os.path.dirname(os.path.realpath(easgd_jax.__file__)))

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        if os.path.realpath(git("rev-parse", "--show-toplevel")) != os.path.realpath(root):
            return ""  # an installed copy inside some other repository
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return git("rev-parse", "HEAD") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def parse_command_line(argv: Sequence[str]) -> tuple[ml_collections.ConfigDict, str, bool]:
    """``(config, workdir, overwrite)`` of the command line ``argv``: the config file loaded,
    the overrides applied, where it came from recorded in ``config.launch``. BadInput for
    anything wrong, before jax starts."""
    rest = _known_flags(argv)
    overrides = [arg for arg in rest[1:] if _OVERRIDE.match(arg)]
    others = [arg for arg in rest[1:] if not _OVERRIDE.match(arg)]
    if others:
        raise BadInput(f"unknown flag or argument: {' '.join(others)} (flags: --config, "
                       "--workdir, --overwrite, --config.FIELD=VALUE; --help lists them)")
    if not _CONFIG.value or not _WORKDIR.value:
        missing = "--config" if not _CONFIG.value else "--workdir"
        raise BadInput(f"{missing} is required: launch.py --config configs/default.py "
                       "--workdir DIR [--config.FIELD=VALUE ...]")
    config = _load(_CONFIG.value)
    if "launch" not in config:  # a config built without the schema's newest section
        from easgd_jax.training.config import defaults

        with config.unlocked():
            config.launch = defaults().launch
    config = _apply_overrides(config, overrides)
    from easgd_jax.experiments.config_files import config_file_path

    file, arg = config_file_path(_CONFIG.value)
    with config.unlocked():
        config.launch.config_file = str(file) + (f":{arg}" if arg else "")
        config.launch.overrides = shlex.join(overrides)
        config.launch.git_commit = _git_commit()
    return config, _WORKDIR.value, _OVERWRITE.value


def main(argv: Sequence[str]) -> int:
    """Runs the command line ``argv`` (``argv[0]``: the program) and returns the exit status
    (see the module docstring); bad input is one line on stderr, not an exception."""
    global _exit_at_once
    prog = os.path.basename(argv[0]) if argv else "launch.py"
    try:
        with stop_signals_raise():
            return _run(argv)
    except BadInput as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StopSignal as e:
        _exit_at_once = True
        print(f"{prog}: stopped by {signal.Signals(e.signum).name} outside the training loop "
              "(while the run started or finished); its last checkpoint and metrics are kept: "
              f"run the same command to resume (exit status {EXIT_STOPPED}).", file=sys.stderr)
        return EXIT_STOPPED
    except Exception as e:
        executor = sys.modules.get("easgd_jax.parallel.executor")  # (loaded if it can be)
        if executor is not None and isinstance(e, executor.WorkerFailedError):
            # on_worker_failure='stop': saved where the workers stood; its message says so.
            print(f"{prog}: {e} (exit status {EXIT_STOPPED})", file=sys.stderr)
            return EXIT_STOPPED
        peer = peer_failure(e)
        if peer is not None:
            _exit_at_once = True  # (JAX's shutdown barrier would wait for the dead peer)
            print(f"{prog}: error: another process of this run died ({peer}); its last "
                  "checkpoint is kept: run the same command on every process to resume "
                  f"(exit status {EXIT_PEER_LOST}).", file=sys.stderr)
            return EXIT_PEER_LOST
        reason = write_failure(e)
        if reason is None:
            raise
        print(f"{prog}: error: cannot write the workdir: {reason}. Free space or fix its "
              "permissions, then run the same command: it resumes from the last checkpoint "
              f"(exit status {EXIT_IO_ERROR}).", file=sys.stderr)
        sys.unraisablehook = lambda _: None  # (Orbax's writes cut short, at the exit)
        return EXIT_IO_ERROR


def peer_failure(error: BaseException) -> str | None:
    """The first line of ``error`` when it is a collective that broke because another
    process of the run died (several processes; gloo's connection reset or closed), else
    None."""
    jax = sys.modules.get("jax")
    if jax is None or jax.process_count() == 1:
        return None
    text = str(error)
    if type(error).__name__ != "JaxRuntimeError" or "Gloo" not in text or not any(
            sign in text for sign in ("Connection reset", "Connection closed", "Read error",
                                      "Broken pipe")):
        return None
    return f"{type(error).__name__}: {text.splitlines()[0][:200]}"


def write_failure(error: BaseException | None) -> str | None:
    """``"reason (file)"`` when ``error``, or an error that caused it, is a failure to write
    (:data:`_IO_ERRNOS`): an OSError, or the same error from Orbax's array store, tensorstore
    (``... [os_error_code='28']``); else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _IO_ERRNOS:
            where = f" ({error.filename})" if error.filename else ""
            return f"{error.strerror or os.strerror(error.errno)}{where}"
        code = re.search(r"os_error_code='(\d+)'", str(error))
        if code and int(code.group(1)) in _IO_ERRNOS:
            file = re.search(r'(?:Failed writing|local file): "([^"]+)"', str(error))
            return os.strerror(int(code.group(1))) + (f" ({file.group(1)})" if file else "")
        error = error.__cause__ or error.__context__
    return None


def _run(argv: Sequence[str]) -> int:
    config, workdir, overwrite = parse_command_line(argv)
    from easgd_jax.training import common

    common.signals_received.clear()  # (this run's: main() may run more than once)
    import jax

    from easgd_jax import data, parallel, training
    from easgd_jax.parallel import distributed
    from easgd_jax.training.checkpoint import CheckpointError
    from easgd_jax.training.common import WorkdirConfigError
    from easgd_jax.training.lock import WorkdirBusyError
    from easgd_jax.training.logs import quiet_library_logs, warnings_to_log

    quiet_library_logs()
    warnings_to_log()
    if config.train.param_dtype == "float64":  # before jax creates any array
        jax.config.update("jax_enable_x64", True)
    try:
        plan = training.make_plan(config)  # validates, once: fail fast on bad input
    except ValueError as e:
        raise BadInput(str(e)) from None
    if config.num_devices:  # simulated CPU devices of this process (ignored on GPUs)
        parallel.use_simulated_cpu_devices(
            config.num_devices // distributed.num_processes(config.distributed))
    distributed.initialize(config.distributed)
    try:
        metrics = training.train_and_evaluate(config, workdir, overwrite=overwrite, plan_=plan)
    except (data.DatasetNotPreparedError, WorkdirBusyError, WorkdirConfigError,
            CheckpointError, parallel.mesh.LayoutError) as e:
        raise BadInput(str(e)) from None
    logging.info("final: %s", {f"{k}[-1]" if isinstance(v, list) else k:
                               round(v, 4) if isinstance(v, float) else
                               (v[-1] if isinstance(v, list) and v else v)
                               for k, v in metrics.items()})
    if "stopped_at_step" in metrics:
        logging.warning("stopped at step %d of %d by a signal; run the same command to resume "
                        "(exit status %d)", metrics["stopped_at_step"], config.train.num_steps,
                        EXIT_STOPPED)
        return EXIT_STOPPED
    if common.signals_received:  # seen by the loop after its last look: the final evaluation
        logging.warning("%s arrived during the final evaluation; the run finished and saved "
                        "its results: the same command confirms it (exit status %d)",
                        signal.Signals(common.signals_received[-1]).name, EXIT_STOPPED)
        return EXIT_STOPPED
    return 0


_exit_at_once = False  # (after a stop outside the loop, or a dead peer)


def run_main() -> None:
    """The ``easgd-launch`` command: absl's flags and logging, then :func:`main`. After a
    stop outside the training loop (compilation, threads of JAX's maybe still running) the
    process ends at once, its output flushed: the interpreter's teardown then once ended in
    a segmentation fault (exit 139 instead of 75)."""

    def run(_: Sequence[str]) -> None:
        status = main(sys.argv)
        if _exit_at_once:
            logging.flush()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
        sys.exit(status)

    app.run(run, flags_parser=_parse_or_exit)


def _parse_or_exit(argv: list[str]) -> list[str]:
    try:
        return _known_flags(argv)
    except BadInput as e:
        print(f"{os.path.basename(argv[0])}: error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


if __name__ == "__main__":
    run_main()
