"""A sweep's plan: every run of a sweep config (method x grid x tau x p x learning rate x
seed), its name and its full, validated config (:func:`plan`). The sweep
(:mod:`easgd_jax.experiments.sweep`) trains them; the report
(:mod:`easgd_jax.experiments.report`) reads back the runs the plan names and leaves out the
others. The config fields are described in :mod:`easgd_jax.experiments.sweep`.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any

import ml_collections

from easgd_jax.algorithms import rates, registry
from easgd_jax.experiments import metric as metric_lib
from easgd_jax.experiments import stats
from easgd_jax.experiments.config_files import load_config_file
from easgd_jax.training import config as config_lib

SELECTIONS = stats.SELECTIONS


@dataclasses.dataclass
class Run:
    """One training run of a sweep: its settings and its full config."""

    name: str
    method: str
    algorithm: str
    tau: int | None  # None: the method has no period (and sets no tau label)
    num_workers: int
    fixed_workers: bool  # p fixed by the method (e.g. MSGD), not taken from the grid
    learning_rate: float
    seed: int
    grids: list[str]
    config: ml_collections.ConfigDict
    tag: str = ""  # the grid's tag ("" for grids without overrides)
    selections: list[str] = dataclasses.field(default_factory=lambda: ["all_seeds"])
    # its grids' learning-rate rules (learning_rate_selection)

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "method": self.method, "algorithm": self.algorithm,
                "tag": self.tag,
                "tau": self.tau, "num_workers": self.num_workers,
                "fixed_workers": self.fixed_workers, "learning_rate": self.learning_rate,
                "seed": self.seed, "grids": self.grids,
                "num_devices": self.config.num_devices}


def run_name(method: str, tau: int | None, p: int, learning_rate: float, seed: int,
             tag: str = "") -> str:
    tau_part = "na" if tau is None else str(tau)
    name = f"{method}_tau{tau_part}_p{p}_lr{learning_rate:g}_seed{seed}"
    return f"{name}_{tag}" if tag else name


def _plain(value: Any) -> Any:
    if isinstance(value, ml_collections.ConfigDict):
        return value.to_dict()
    return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any] | None,
                    where: str = "") -> None:
    """Sets the (nested) ``overrides`` on ``config``; a field must already exist, except
    inside ``model.kwargs`` and the sections of a new dict."""
    for key, value in (_plain(overrides) or {}).items():
        field = f"{where}{key}"
        if isinstance(value, dict) and isinstance(config.get(key), ml_collections.ConfigDict):
            apply_overrides(config[key], value, field + ".")
            continue
        if key not in config and not field.startswith(("model.kwargs.", "data.")):
            raise ValueError(f"override {field!r}: the config has no such field.")
        with config.ignore_type():
            config[key] = value


def largest_divisor(n: int, at_most: int) -> int:
    """The largest divisor of ``n`` that is <= ``at_most`` (>= 1)."""
    return max(d for d in range(1, max(1, min(n, at_most)) + 1) if n % d == 0)


def _method(sweep: ml_collections.ConfigDict, label: str) -> dict[str, Any]:
    methods = _plain(sweep.methods)
    if label not in methods:
        raise ValueError(f"a grid names method {label!r}, which sweep.methods does not define "
                         f"(defined: {', '.join(methods)}).")
    method = {"overrides": {}, "num_workers": 0, "tau": None, **methods[label]}
    unknown = sorted(set(method) - {"config", "learning_rates", "overrides", "num_workers", "tau"})
    if unknown or "config" not in method or not method.get("learning_rates"):
        raise ValueError(f"sweep.methods.{label} needs config and learning_rates (and may set "
                         f"overrides, num_workers, tau); got {sorted(methods[label])}.")
    return method


GRID_KEYS = ("name", "methods", "periods", "num_workers", "overrides", "tag", "learning_rates",
             "learning_rate_selection")


def _grid(grid: Mapping[str, Any]) -> dict[str, Any]:
    """``grid`` with its defaults, checked: known keys only, a tag (a word) when it has
    overrides, learning_rates only for its own methods."""
    grid = {"periods": [None], "overrides": {}, "tag": "", "learning_rates": {}, **grid}
    name = grid.get("name")
    unknown = sorted(set(grid) - set(GRID_KEYS))
    if unknown or not name or not grid.get("methods") or not grid.get("num_workers"):
        raise ValueError(f"sweep grid {name!r}: a grid has name, methods, num_workers and may "
                         f"set periods, overrides, tag, learning_rates; got {sorted(grid)}.")
    tag = str(grid["tag"])
    if tag and not tag.replace("_", "").isalnum():
        raise ValueError(f"sweep grid {name!r}: tag {tag!r} must be letters, digits and '_'.")
    if grid["overrides"] and not tag:
        raise ValueError(f"sweep grid {name!r} has overrides and no tag: its runs would take "
                         "the names of the other grids' runs of the same settings.")
    if grid.get("learning_rate_selection", SELECTIONS[0]) not in SELECTIONS:
        raise ValueError(f"sweep grid {name!r}: learning_rate_selection must be one of "
                         f"{', '.join(SELECTIONS)}; got {grid['learning_rate_selection']!r}.")
    extra = sorted(set(grid["learning_rates"]) - set(grid["methods"]))
    if extra or not all(grid["learning_rates"].values()):
        raise ValueError(f"sweep grid {name!r}: learning_rates must give a non-empty list for "
                         f"methods of the grid only; got {grid['learning_rates']}.")
    return grid


def _hyperparameter_names(config: ml_collections.ConfigDict) -> list[str]:
    """The hyperparameters of ``config.algorithm`` in the form its executor runs."""
    return registry.hyperparameter_names(config.algorithm.name,
                                         asynchronous=config.executor != "sync")


def _takes_period(config: ml_collections.ConfigDict) -> bool:
    """Whether ``config.algorithm`` has an exchange period (its Spec's ``period``)."""
    hparams = {k: v for k, v in config.algorithm.items() if k != "name"}
    return registry.get_spec(config.algorithm.name).period(hparams) is not None


def plan(sweep: ml_collections.ConfigDict, device_budget: int = 1) -> list[Run]:
    """Every run of ``sweep`` (duplicates across grids merged), each config validated.

    ``device_budget``: the devices a run may use; each run gets the largest divisor of its
    p within it (and within ``sweep.max_devices`` when that is set).
    """
    if sweep.get("max_devices", 0):
        device_budget = min(device_budget, sweep.max_devices)
    metric_lib.get(sweep.get("metric"))  # a ValueError names the known ones
    if sweep.get("learning_rate_selection", "all_seeds") not in SELECTIONS:
        raise ValueError(f"sweep.learning_rate_selection must be one of {', '.join(SELECTIONS)}"
                         f"; got {sweep.learning_rate_selection!r}.")
    runs: dict[str, Run] = {}
    base_configs: dict[str, ml_collections.ConfigDict] = {}
    rules: dict[str, str] = {}
    for grid in _plain(sweep.grids):
        grid = _grid(grid)
        rule = grid.get("learning_rate_selection",
                        sweep.get("learning_rate_selection", "all_seeds"))
        if rules.setdefault(grid["name"], rule) != rule:
            raise ValueError(f"sweep grids named {grid['name']!r} give learning_rate_selection "
                             f"{rules[grid['name']]!r} and {rule!r}; grids of one name share "
                             "one rule (the report's).")
        for label, tau, p, seed in itertools.product(
                grid["methods"], grid["periods"], grid["num_workers"], sweep.seeds):
            method = _method(sweep, label)
            if method["config"] not in base_configs:
                base_configs[method["config"]] = load_config_file(method["config"])
            for lr in grid["learning_rates"].get(label, method["learning_rates"]):
                config = copy.deepcopy(base_configs[method["config"]])
                apply_overrides(config, sweep.get("overrides"))
                try:
                    apply_overrides(config, grid["overrides"])
                except ValueError as e:
                    raise ValueError(f"sweep grid {grid['name']!r}: {e}") from None
                algorithm = config.algorithm.name
                hparams = _hyperparameter_names(config)
                workers = method["num_workers"] or p
                periodic = _takes_period(config)
                run_tau = tau if periodic else method["tau"]
                config.num_workers = workers
                if periodic:
                    if tau is None:
                        raise ValueError(f"grid {grid['name']!r} sets no periods for "
                                         f"{label!r}, whose algorithm takes one.")
                    config.algorithm.period = tau
                if "moving_rate" in hparams:
                    config.algorithm.moving_rate = rates.moving_rate(sweep.beta, workers)
                config.algorithm.learning_rate = float(lr)
                config.seed = seed
                apply_overrides(config, method["overrides"])
                config.num_devices = largest_divisor(workers, device_budget)
                name = run_name(label, run_tau, workers, float(lr), seed, grid["tag"])
                if name in runs:
                    if runs[name].config.to_json_best_effort() != config.to_json_best_effort():
                        raise ValueError(
                            f"sweep run {name}: grids {runs[name].grids[0]!r} and "
                            f"{grid['name']!r} give it different configs; give the grids "
                            "different tags.")
                    if grid["name"] not in runs[name].grids:
                        runs[name].grids.append(grid["name"])
                        runs[name].selections.append(rule)
                    continue
                try:
                    config_lib.validate(config)
                except ValueError as e:
                    raise ValueError(f"sweep run {name}: {e}") from None
                runs[name] = Run(name, label, algorithm, run_tau, workers,
                                 bool(method["num_workers"]), float(lr), seed, [grid["name"]],
                                 config, grid["tag"], [rule])
    return list(runs.values())
