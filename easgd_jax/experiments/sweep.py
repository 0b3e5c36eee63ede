r"""Sweeps over algorithm x tau x p x learning rate x seed, as in the EASGD paper's experiments
(Zhang, Choromanska & LeCun, NIPS 2015, arXiv 1412.6651, Section 5: p = 4 with tau in
{1, 4, 16, 64}, then p in {4, 8, 16} at tau = 10 (EASGD, EAMSGD) and tau = 1 (DOWNPOUR,
MDOWNPOUR); the best learning rate per method and setting, several runs each).

    python -m easgd_jax.experiments.sweep --config sweeps/smoke --workdir /tmp/sweep
    python -m easgd_jax.experiments.sweep --config configs/sweeps/smoke.py --workdir /tmp/sweep \
        --dry_run
    python -m easgd_jax.experiments.report --workdir /tmp/sweep     # the table and plots again

A sweep config's ``get_config()`` returns a ConfigDict with

    methods     {label: {config, learning_rates, overrides, num_workers, tau}}: ``config`` is
                a config file (``configs/NAME.py`` by name, or a path) whose algorithm the
                method runs; ``overrides`` (nested dict) are applied to it last;
                ``num_workers`` > 0 fixes p (e.g. 1 for the sequential MSGD);
                ``tau`` labels a method without a period (MDOWNPOUR: 1).
    grids       a list of {name, methods, periods, num_workers[, overrides, tag,
                learning_rates]}: each grid crosses its methods with its periods (tau) and
                worker counts (p); a method without a ``period`` hyperparameter ignores the
                periods. A grid's ``overrides`` (nested dict, e.g. {"train": {"num_steps":
                2000}}) are applied over sweep.overrides and before the method's; a grid with
                overrides needs a ``tag`` (letters, digits, "_"), appended to its run names
                ("easgd_tau1_p4_lr0.5_seed0_steps2000") so that its runs are not taken for
                the other grids' runs of the same setting; grids with the same tag share runs.
                ``learning_rates`` ({method: [rates]}) replaces the methods' rate grids in
                this grid; ``learning_rate_selection`` replaces the sweep's rule in this
                grid (grids of one name share one rule; a run of several grids trains when
                any of their rules needs it).
    seeds       the seeds of every setting.
    learning_rate_selection
                "all_seeds" (default): every seed runs with every learning rate;
                "first_seed": every learning rate runs with the first seed, and the other
                seeds run only with the learning rate whose first-seed run reached the
                lowest center test error (with select_on "validation": ended at the lowest
                validation error; a setting whose first-seed runs all diverged runs no
                other seed). Same seeds, fewer runs: (L + S - 1) per setting, not L * S.
                "first_seed_checked": as "first_seed", except that a setting whose
                first seed chose the top or bottom rate of its grid, or a rate at which
                another seed's run then failed, runs every rate on every seed and is chosen
                by the "all_seeds" rule (a better or stabler rate may lie beyond an edge;
                one seed near the edge of the stable range chose rates at which other seeds
                diverge: issue 33). A failure found late selects the earlier seeds' other
                rates too: the sweep passes over its runs until a pass trains nothing.
                The report chooses each setting's rate by the same rule as the sweep ran:
                with "all_seeds", the rate of the lowest mean final center test error over
                all seeds, a diverged (or failed) run counted as chance error
                (:func:`easgd_jax.experiments.report.choose_learning_rate`).
    select_on   "test" (default) or "validation": the split whose mean final error chooses
                each setting's rate in the report (validation: the runs hold out
                ``data.kwargs.validation_size`` training examples and record ``val_accuracy``;
                the test error is then reported once, at that rate; issue 33).
    beta        moving_rate = beta / p for the algorithms that take a moving_rate.
    overrides   (nested dict) applied to every run's config before the method's.
    metric      "test_error" (default) or "loss_gap": what the report chooses rates on,
                averages and thresholds (:mod:`easgd_jax.experiments.metric`): the center's
                test error, or its gap to the data's exact optimum in nats per token
                (synthetic_lm; the validation split's own gap, ``val_loss_gap``, chooses
                the rate).
    threshold   the metric's value (test error, or gap in nats/token) whose first crossing
                gives the time and steps to it.
    compilation_cache   (default True) JAX's persistent compilation cache in
                WORKDIR/jax_cache: the seeds of a setting compile the same programs.
    max_devices devices a run may use (0: all of them); num_devices is the largest divisor
                of p within that budget, so p = 16 runs 4 workers per device on 4 GPUs.

Runs are trained one after another in this process with ``training.train_and_evaluate``, each
in ``WORKDIR/runs/NAME`` (NAME = method, tau, p, learning rate and seed). The sweep is
resumable: a run with ``final_metrics.json`` is finished and skipped, one that diverged
(``training.NonFiniteError``) is recorded in ``failed.json`` as such and skipped too (unless
``--retry_failed``); an unfinished run starts afresh, so that its wall-clock curve is one
uninterrupted segment (``--resume_unfinished`` resumes it from its checkpoint instead). Any
other exception is recorded as an error and retried on the next invocation. SIGINT/SIGTERM
stop the current run at a checkpoint (or, landing after its last step, the sweep before its
next run) and end the sweep with exit status 75 (launch.py's for a stopped run), so that a
script chaining sweeps stops too. One sweep at a time per workdir: the
sweep holds ``WORKDIR/.sweep.lock`` (:mod:`easgd_jax.training.lock`; a second is refused at
once, naming the holder), unless it is split: ``--shard K/N`` trains the K-th of N parts
(whole settings) beside the other parts' processes (:mod:`easgd_jax.experiments.shards`).
The results go to WORKDIR/report (see :mod:`easgd_jax.experiments.report`).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import time
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

import ml_collections
from absl import flags, logging

from easgd_jax import training
from easgd_jax.experiments import cli, shards, stats
from easgd_jax.experiments import report as sweep_report
from easgd_jax.experiments.config_files import (  # noqa: F401  (their old home)
    CONFIGS_DIR,
    config_file_path,
    load_config_file,
)
from easgd_jax.experiments.report import run_status as status
from easgd_jax.experiments.sweep_plan import (  # noqa: F401  (their old home)
    GRID_KEYS,
    Run,
    apply_overrides,
    largest_divisor,
    plan,
    run_name,
)
from easgd_jax.training import common
from easgd_jax.training import config as config_lib
from easgd_jax.training.config import config_differences

RUNS = "runs"
SELECTIONS = stats.SELECTIONS
NOT_SELECTED = "not selected"
SWEEP_LOCK = shards.SWEEP_LOCK
# The command line's exit status when SIGTERM/SIGINT stopped the sweep: launch.py's for a
# stopped run (sysexits.h EX_TEMPFAIL), so that a script that chains sweeps stops too.
EXIT_STOPPED = 75


def _read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def _write_json(path: str, value: Any) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def check_finished_runs(runs: Sequence[Run], workdir: str) -> None:
    """Refuses a sweep workdir whose finished runs were made with other configs (they would
    be skipped and reported as if they were this sweep's)."""
    for run in runs:
        rundir = os.path.join(workdir, RUNS, run.name)
        saved = _read_json(os.path.join(rundir, "config.json"))
        if saved is None or not os.path.exists(os.path.join(rundir, "final_metrics.json")):
            continue
        differences = config_differences(saved, json.loads(run.config.to_json_best_effort()),
                                         config_lib.RESUMABLE_CHANGES)
        if differences:
            raise ValueError(
                f"{rundir} holds a finished run of another config ({'; '.join(differences)}); "
                "use another sweep workdir.")


def _setting(run: Run) -> tuple:
    return (run.method, run.tau, run.num_workers, run.tag)


def chosen_learning_rate(runs: Sequence[Run], setting: tuple, seed: int, workdir: str,
                         select_on: str = "test", metric: str | None = None) -> float | None:
    """The learning rate the ``seed`` runs of ``setting`` (method, tau, p, tag) choose, by the
    report's own "first_seed" rule (:func:`easgd_jax.experiments.stats.choose_learning_rate`
    on ``select_on``'s split: on "test" the lowest center test error reached, on
    "validation" the lowest final validation error); None while one of those runs is not
    done, or when all of them diverged. ``metric``: the sweep's (``sweep.metric``; None: the
    test error)."""
    results = []
    for run in runs:
        if _setting(run) != setting or run.seed != seed:
            continue
        rundir = os.path.join(workdir, RUNS, run.name)
        if status(rundir) not in ("finished", "diverged"):
            return None
        results.append(sweep_report.read_run(rundir, metric))
    if not any(r.status == "finished" and r.test_error for r in results):
        return None
    return stats.choose_learning_rate(results, "first_seed", select_on=select_on)


def selected(run: Run, runs: Sequence[Run], workdir: str, first_seed: int,
             select_on: str = "test", metric: str | None = None) -> bool:
    """Whether ``run`` trains under its grids' learning-rate rules: always under
    "all_seeds" and on the first seed; on another seed, at the rate its setting's first seed
    chose (:func:`chosen_learning_rate`), or at any rate when a grid's rule is
    "first_seed_checked" and that choice is an edge of the setting's rates or a run of the
    setting at it failed (diverged, or an error)."""
    if run.seed == first_seed or "all_seeds" in run.selections:
        return True
    setting = _setting(run)
    chosen = chosen_learning_rate(runs, setting, first_seed, workdir, select_on, metric)
    if run.learning_rate == chosen or "first_seed_checked" not in run.selections:
        return run.learning_rate == chosen
    same = [r for r in runs if _setting(r) == setting]
    failed = {r.learning_rate for r in same if r.learning_rate == chosen
              and status(os.path.join(workdir, RUNS, r.name)) in stats.FAILED}
    return stats.escalated(chosen, (r.learning_rate for r in same), failed)


class SweepStopped(Exception):
    """A signal stopped a run: the sweep ends (run it again to go on)."""


def run_one(run: Run, workdir: str, retry_failed: bool = False,
            resume_unfinished: bool = False) -> str:
    """Trains ``run`` in ``workdir/runs/NAME`` unless it is done; returns its status."""
    rundir = os.path.join(workdir, RUNS, run.name)
    before = status(rundir)
    if before == "finished" or (before == "diverged" and not retry_failed):
        return before
    os.makedirs(rundir, exist_ok=True)
    settings = run.settings()
    settings["resumed"] = before == "unfinished" and resume_unfinished
    _write_json(os.path.join(rundir, "run.json"), settings)
    fresh = not settings["resumed"]
    failed_path = os.path.join(rundir, "failed.json")
    if os.path.exists(failed_path):  # retried: until it ends, it is unfinished
        os.remove(failed_path)
    logging.info("sweep run %s (%s)", run.name, "resumed" if not fresh else "fresh start")
    start = time.perf_counter()
    try:
        metrics = training.train_and_evaluate(run.config, rundir, overwrite=fresh)
        outcome: dict[str, Any] | None = None
    except training.NonFiniteError as e:
        outcome = {"status": "diverged", "message": str(e)}
    except Exception as e:  # recorded, and retried by the next invocation
        logging.exception("sweep run %s failed", run.name)
        outcome = {"status": "error", "message": f"{type(e).__name__}: {e}",
                   "traceback": traceback.format_exc(limit=8)}
    finally:
        _cleanup()
    if outcome is not None:
        outcome["wall_time_s"] = time.perf_counter() - start
        _write_json(failed_path, outcome)
        return outcome["status"]
    if "stopped_at_step" in metrics:
        raise SweepStopped(f"run {run.name} stopped at step {metrics['stopped_at_step']}")
    return status(rundir)


def _cleanup() -> None:
    """Frees the compiled functions of a finished run (each run compiles its own)."""
    import jax

    jax.clear_caches()
    gc.collect()


@contextlib.contextmanager
def compilation_cache(path: str | None) -> Iterator[None]:
    """JAX's persistent compilation cache in ``path`` (None: leave it as it is), restored
    afterwards. Runs that differ only in their seed compile the same programs, so on CPU,
    where compiling dominates short runs, all but the first seed of a setting start at once.
    JAX does not write programs that hold a host callback; the synchronous loop's rounds
    hold none (the synchronous executor builds its transformation with
    ``on_disagreement="nan"``: the exchange's replica check marks a disagreement with NaN).
    """
    if path is None:
        yield
        return
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    previous = {name: getattr(jax.config, name) for name in names}
    for name, value in zip(names, (path, 0.0, 0), strict=True):
        jax.config.update(name, value)
    cc.reset_cache()  # (re)initialised with this directory at the next compilation
    try:
        yield
    finally:
        for name, value in previous.items():
            jax.config.update(name, value)
        cc.reset_cache()


def _work(run: Run) -> float:
    """A run's work for :func:`easgd_jax.experiments.shards.split`: steps x workers."""
    return float(run.config.train.num_steps * run.num_workers)


def shard_plan(sweep: ml_collections.ConfigDict, shard: shards.Shard | None,
               device_budget: int = 1) -> list[Run]:
    """The runs of ``sweep`` (:func:`plan`) in ``shard``'s part (all for None): whole
    settings, balanced on steps x workers."""
    return shards.split(plan(sweep, device_budget), shard, _setting, _work)


def run_sweep(sweep: ml_collections.ConfigDict, workdir: str, *, retry_failed: bool = False,
              resume_unfinished: bool = False, report: bool = True,
              shard: shards.Shard | None = None) -> dict[str, str]:
    """Plans ``sweep`` for this process's devices, trains every run not done yet (of
    ``shard``'s part: :mod:`~easgd_jax.experiments.shards`), writes the report; returns {run
    name: status}."""
    import jax

    runs = shard_plan(sweep, shard, device_budget=len(jax.devices()))
    check_finished_runs(runs, workdir)
    with shards.sweep_lock(workdir, shard):  # one sweep (or one split of it) per workdir
        return _run_locked(sweep, runs, workdir, retry_failed, resume_unfinished, report)


def _run_locked(sweep: ml_collections.ConfigDict, runs: Sequence[Run], workdir: str,
                retry_failed: bool, resume_unfinished: bool, report: bool) -> dict[str, str]:
    """:func:`run_sweep`'s body, under the sweep's lock: a second sweep in the workdir
    would start the runs this one trains (each refused by the run's own lock, and recorded
    as an error) and choose first-seed rates from runs not yet done."""
    os.makedirs(os.path.join(workdir, RUNS), exist_ok=True)
    _write_json(os.path.join(workdir, "sweep.json"),
                json.loads(sweep.to_json_best_effort()))
    statuses: dict[str, str] = {}
    cache = os.path.join(workdir, "jax_cache") if sweep.get("compilation_cache", True) else None
    first_seed = sweep.seeds[0]
    select_on = sweep.get("select_on", "test")
    attempted: set[str] = set()  # runs this invocation has run (or found done)
    # A SIGTERM/SIGINT that lands after a run's last look at its stop requests (its final
    # evaluation) is recorded here, not acted on: the sweep stops before its next run.
    signals_seen = len(common.signals_received)
    with compilation_cache(cache):
        stopped, new = False, True
        while new and not stopped:  # a late failure at a chosen rate selects earlier runs
            new = False
            for i, run in enumerate(runs):  # a setting's first-seed runs come first
                if not selected(run, runs, workdir, first_seed, select_on,
                                sweep.get("metric")):
                    statuses[run.name] = NOT_SELECTED
                    continue
                if run.name in attempted:
                    continue
                if len(common.signals_received) > signals_seen:
                    logging.warning("sweep: a stop signal came after the last run's final "
                                    "step; the sweep stops before %s: run it again to go on.",
                                    run.name)
                    stopped = True
                    break
                attempted.add(run.name)
                new = True
                logging.info("sweep: run %d/%d %s", i + 1, len(runs), run.name)
                try:
                    statuses[run.name] = run_one(run, workdir, retry_failed,
                                                 resume_unfinished)
                except SweepStopped as e:
                    logging.warning("%s; the sweep stops here: run it again to go on.", e)
                    statuses[run.name] = "unfinished"
                    stopped = True
                    break
    if report:
        with shards.report_lock(workdir):  # shards end one after another: the last is whole
            sweep_report.write_report(workdir, sweep)
    return statuses


def _dry_run_count(runs: Sequence[Run], first_seed: int) -> str:
    """How many of ``runs`` train: a first-seed run or one of an "all_seeds" grid always;
    of a setting's other runs on one seed, the one at the first seed's choice (none when a
    forced run may be at it, or when the first seed all diverged), or every one under
    "first_seed_checked" when that choice is an edge."""
    others: dict[tuple, list[Run]] = {}
    forced: set[tuple] = set()  # (setting, seed) with a run that trains whatever is chosen
    least = most = 0
    for run in runs:
        if run.seed == first_seed or "all_seeds" in run.selections:
            least, most = least + 1, most + 1
            forced.add((*_setting(run), run.seed))
        else:
            others.setdefault((*_setting(run), run.seed), []).append(run)
    for key, group in others.items():
        least += 0 if key in forced else 1
        most += len(group) if any("first_seed_checked" in r.selections
                                  for r in group) else 1
    settings = len({_setting(run) for run in runs})
    if least == most == len(runs):
        return (f"{len(runs)} runs planned, every learning rate on every seed "
                f"({settings} settings)")
    span = str(most) if least == most else f"between {least} and {most}"
    return (f"{len(runs)} runs planned; learning rates chosen on the first seed where a "
            f"grid says so, so {span} of them train ({settings} settings)")


def required_devices(sweep: ml_collections.ConfigDict) -> int:
    """Devices to simulate on CPU: the largest p of the sweep, capped by max_devices."""
    runs = plan(sweep, device_budget=1)
    most = max(run.num_workers for run in runs)
    return min(most, sweep.max_devices) if sweep.get("max_devices", 0) else most


# The command line's flags, on a FlagValues of their own (importing this module defines
# nothing in absl's global FLAGS, which launch.py's --config owns).
FLAGS = flags.FlagValues()
_CONFIG = flags.DEFINE_string(
    "config", None, "Sweep config: a file, or a name in easgd_jax/configs (sweeps/smoke).",
    flag_values=FLAGS)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the sweep's runs and report.",
                               flag_values=FLAGS)
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "List the runs and their status; train none.",
                             flag_values=FLAGS)
_RETRY_FAILED = flags.DEFINE_bool("retry_failed", False, "Run diverged runs again.",
                                  flag_values=FLAGS)
_RESUME_UNFINISHED = flags.DEFINE_bool(
    "resume_unfinished", False, "Resume unfinished runs from their checkpoints instead of "
    "starting them afresh (their wall-clock curves are then approximate).", flag_values=FLAGS)
_SHARD = flags.DEFINE_string(
    "shard", None, "K/N: train the K-th of N parts of the sweep (whole settings), so that N "
    "processes share one workdir; each writes the report when it ends.", flag_values=FLAGS)
flags.mark_flags_as_required(["config", "workdir"], flag_values=FLAGS)


def main(argv: list[str]) -> int:
    """Trains the sweep (or, with ``--dry_run``, lists it); returns the exit status: 0, or
    :data:`EXIT_STOPPED` when a stop signal came (the sweep stopped at a run's checkpoint or
    before its next run; the same command goes on)."""
    from absl import app

    from easgd_jax import parallel
    from easgd_jax.training.logs import quiet_library_logs

    quiet_library_logs()  # Orbax's INFO lines, one set per checkpoint of every run
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        sweep = load_config_file(_CONFIG.value)
    except (FileNotFoundError, ValueError) as e:
        raise app.UsageError(str(e)) from None
    workdir = _WORKDIR.value
    try:
        shard = shards.parse(_SHARD.value)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    if _DRY_RUN.value:
        runs = shard_plan(sweep, shard, device_budget=required_devices(sweep))
        for run in runs:
            print(run.name, status(os.path.join(workdir, RUNS, run.name)),
                  f"num_devices={run.config.num_devices}", ",".join(run.grids))
        part = f"shard {shard[0]}/{shard[1]}: " if shard else ""
        print(part + _dry_run_count(runs, sweep.seeds[0]))
        return 0
    parallel.use_simulated_cpu_devices(required_devices(sweep))  # no effect on GPUs
    statuses = run_sweep(sweep, workdir, retry_failed=_RETRY_FAILED.value,
                         resume_unfinished=_RESUME_UNFINISHED.value, shard=shard)
    counts = {s: list(statuses.values()).count(s) for s in sorted(set(statuses.values()))}
    if common.signals_received:
        logging.warning("sweep stopped by %s: %s; report in %s; run the same command to go on "
                        "(exit status %d)", signal.Signals(common.signals_received[-1]).name,
                        counts, os.path.join(workdir, "report"), EXIT_STOPPED)
        return EXIT_STOPPED
    logging.info("sweep done: %s; report in %s", counts, os.path.join(workdir, "report"))
    return 0


def run_main() -> None:
    """The command line: this module's flags (``FLAGS``), then absl's own (``--verbosity``)
    and :func:`main` (:func:`easgd_jax.experiments.cli.run`)."""
    cli.run(main, FLAGS, __doc__)


if __name__ == "__main__":
    run_main()
