"""Algorithms looked up by name, so that a config (or a sweep) is plain data.

ONE table, name -> :class:`~easgd_jax.algorithms.base.Spec`: the synchronous constructor,
the asynchronous rule, the evaluated point, whether it runs on a (groups x workers) layout
and which state fields are reported. It is the only place a name is looked up.

``get_algorithm(name, axis_name=..., **hparams)`` builds the transformation and
``get_async_rule(name, num_workers, **hparams)`` the asynchronous rule; the hparams are checked
against the constructor's signature first, so a misspelled or missing one fails with the list
of accepted names before anything is traced.

Adding an algorithm: one function in its family module, one line here (or a call to
:func:`register` from user code), one config.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import optax

from easgd_jax.algorithms.adaptive import amsgrad_sync, apam
from easgd_jax.algorithms.base import (
    NUM_WORKERS,
    ON_DISAGREEMENT,
    AsyncRule,
    AxisName,
    ConfigCheck,
    EvaluationPoint,
    Spec,
    evaluate_average,
    evaluate_center,
    evaluate_global_leader,
    evaluate_leader,
    evaluate_params,
)
from easgd_jax.algorithms.baselines import (
    asgd,
    data_parallel_adamw,
    data_parallel_sgd,
    msgd,
    mvasgd,
    sgd,
)
from easgd_jax.algorithms.distbelief import (
    adownpour,
    async_downpour,
    downpour,
    mdownpour,
    mvadownpour,
)
from easgd_jax.algorithms.elastic import async_eamsgd, async_easgd, eamsgd, eamsgd_outer, easgd
from easgd_jax.algorithms.leader import async_lsgd_nesterov, lsgd_multi_nesterov, lsgd_nesterov
from easgd_jax.algorithms.outer import adamw_diloco, async_diloco, nesterov_diloco
from easgd_jax.algorithms.rates import check_elastic_stability

PS = "parameter_server"  # DOWNPOUR's master; the others all-reduce over a ring

# Constructors whose arguments are all plain data (a config can hold them): the optimizer-
# wrapping forms (elastic_averaging, lsgd, lsgd_multi, async_lsgd) are for code, not configs.
_SPECS: dict[str, Spec] = {spec.name: spec for spec in (
    # Elastic averaging (Zhang et al., 2015).
    Spec("easgd", easgd, async_easgd, evaluation=evaluate_center,
         config_check=check_elastic_stability),
    Spec("eamsgd", eamsgd, async_eamsgd, evaluation=evaluate_center,
         config_check=check_elastic_stability),
    # The EASGD paper's baselines: DOWNPOUR (Dean et al., 2012) and its variants ...
    Spec("downpour", downpour, async_downpour, evaluation=evaluate_center, topology=PS),
    Spec("mdownpour", mdownpour, None, evaluation=evaluate_center, topology=PS),
    Spec("adownpour", adownpour, None, evaluation=evaluate_average, topology=PS),
    Spec("mvadownpour", mvadownpour, None, evaluation=evaluate_average, topology=PS),
    # ... and the sequential ones, plus synchronous data-parallel SGD.
    Spec("sgd", sgd, None, evaluation=evaluate_params),
    Spec("msgd", msgd, None, evaluation=evaluate_params),
    Spec("asgd", asgd, None, evaluation=evaluate_average),
    Spec("mvasgd", mvasgd, None, evaluation=evaluate_average),
    Spec("data_parallel_sgd", data_parallel_sgd, None, evaluation=evaluate_params),
    # ... and data-parallel AdamW, the language-model baseline.
    Spec("data_parallel_adamw", data_parallel_adamw, None, evaluation=evaluate_params),
    # Leader SGD (Teng et al., 2019).
    Spec("lsgd_nesterov", lsgd_nesterov, async_lsgd_nesterov, evaluation=evaluate_leader,
         reported=("leader",)),
    Spec("lsgd_multi_nesterov", lsgd_multi_nesterov, None, evaluation=evaluate_global_leader,
         grouped=True, reported=("leader", "global_leader")),
    # APAM (Xu et al., 2020), asynchronous only, and its synchronous baseline.
    Spec("apam", None, apam, evaluation=evaluate_center),
    Spec("amsgrad_sync", amsgrad_sync, None, evaluation=evaluate_params),
    # Outer optimizers: DiLoCo (Douillard et al., 2023), the outer step closing each block.
    Spec("diloco", nesterov_diloco, async_diloco, evaluation=evaluate_center,
         exchange_step="last"),
    # ... with the paper's inner AdamW (warm-up, cosine decay), for language models.
    Spec("diloco_adamw", adamw_diloco, None, evaluation=evaluate_center, exchange_step="last"),
    # ... and EAMSGD whose center takes an outer Nesterov step.
    Spec("eamsgd_outer", eamsgd_outer, None, evaluation=evaluate_center),
)}


def get_spec(name: str) -> Spec:
    """The :class:`Spec` registered as ``name``; ValueError naming the known names."""
    try:
        return _SPECS[name]
    except KeyError:
        raise ValueError(
            f"unknown algorithm {name!r}; known: {', '.join(sorted(_SPECS))}.") from None


def register(
    name: str,
    spec_or_constructor: Spec | Callable[..., optax.GradientTransformation],
    *,
    async_rule: Callable[..., AsyncRule] | None = None,
    evaluation: EvaluationPoint | str = "params",
    reported: tuple[str, ...] = (),
    config_check: ConfigCheck | None = None,
) -> Spec:
    """Adds an algorithm: a whole :class:`Spec`, or a synchronous constructor that takes
    ``axis_name`` (and ``group_axis_name`` if it runs on a grouped layout).

    With a constructor the evaluated point cannot be read off it before it runs: it is
    ``evaluation``, a callable ``(opt_state, params) -> (stacked point, worker index)`` or
    the name of one in ``base.EVALUATION_POINTS`` (default ``"params"``, worker 0's; pass
    ``"center"`` for an elastic algorithm whose state holds a ``center``, ``"average"`` for
    one that holds an ``average``), and ``async_rule`` / ``reported`` / ``config_check``
    complete the Spec. Returns the Spec.
    """
    if name in _SPECS:
        raise ValueError(f"algorithm {name!r} is already registered.")
    if isinstance(spec_or_constructor, Spec):
        spec = spec_or_constructor
        if spec.name != name:
            raise ValueError(f"register({name!r}, ...) got the Spec of {spec.name!r}.")
    else:
        grouped = "group_axis_name" in inspect.signature(spec_or_constructor).parameters
        spec = Spec(name, spec_or_constructor, async_rule, evaluation=evaluation,
                    grouped=grouped, reported=tuple(reported), config_check=config_check)
    _SPECS[name] = spec
    return spec


def algorithm_names() -> list[str]:
    """The names with a synchronous form, sorted."""
    return sorted(name for name, spec in _SPECS.items() if spec.sync is not None)


def async_algorithm_names() -> list[str]:
    """The names with an asynchronous rule, sorted."""
    return sorted(name for name, spec in _SPECS.items() if spec.async_rule is not None)


def _form(name: str, asynchronous: bool) -> Spec:
    spec = get_spec(name)
    if asynchronous and spec.async_rule is None:
        raise ValueError(
            f"algorithm {name!r} has no asynchronous rule; asynchronous algorithms: "
            f"{', '.join(async_algorithm_names())}.")
    if not asynchronous and spec.sync is None:
        raise ValueError(
            f"algorithm {name!r} has no synchronous form (it runs asynchronously only); "
            f"synchronous algorithms: {', '.join(algorithm_names())}.")
    return spec


def hyperparameter_names(name: str, asynchronous: bool = False) -> list[str]:
    """The hyperparameters of ``name``'s synchronous form (all its arguments but the axis
    names) or asynchronous rule (all but ``num_workers``)."""
    return _form(name, asynchronous).hyperparameter_names(asynchronous)


def is_grouped(name: str) -> bool:
    """Whether ``name`` runs on a 2-D (groups x workers) layout: takes ``group_axis_name``."""
    return get_spec(name).grouped


def check_hyperparameters(
    name: str, hparams: Mapping[str, Any], asynchronous: bool = False
) -> None:
    """Raises ValueError for hyperparameters ``name``'s form does not take or misses."""
    spec = _form(name, asynchronous)
    label = f"asynchronous algorithm {name!r}" if asynchronous else f"algorithm {name!r}"
    params = inspect.signature(spec.form(asynchronous)).parameters
    allowed = spec.hyperparameter_names(asynchronous)
    unknown = sorted(set(hparams) - set(allowed))
    if unknown:
        raise ValueError(
            f"{label} does not take {', '.join(unknown)}; it takes {', '.join(allowed)}.")
    missing = [p for p in allowed
               if params[p].default is inspect.Parameter.empty and p not in hparams]
    if missing:
        raise ValueError(f"{label} needs {', '.join(missing)}.")


def get_algorithm(
    name: str, *, axis_name: AxisName = "workers", group_axis_name: AxisName | None = None,
    on_disagreement: str = "nan", **hparams: Any
) -> optax.GradientTransformation:
    """Builds the synchronous form of ``name`` with ``hparams`` over ``axis_name``.

    ``group_axis_name`` is passed to grouped algorithms only (their ``axis_name`` then spans
    the workers of one group). ``on_disagreement`` (``"nan"`` (default) or ``"raise"``, see
    :func:`~easgd_jax.algorithms.collectives.check_on_disagreement`), like the axis names
    not a hyperparameter, is passed to every constructor that takes it (all registered here).
    """
    spec = _form(name, asynchronous=False)
    check_hyperparameters(name, hparams)
    axes: dict[str, Any] = {"axis_name": axis_name}
    if spec.grouped and group_axis_name is not None:
        axes["group_axis_name"] = group_axis_name
    if ON_DISAGREEMENT in inspect.signature(spec.form()).parameters:
        axes[ON_DISAGREEMENT] = on_disagreement
    return spec.form()(**axes, **hparams)


def get_async_rule(name: str, num_workers: int, **hparams: Any) -> AsyncRule:
    """Builds the asynchronous rule of ``name`` with the same hyperparameters as its
    synchronous form (``config.algorithm``); ``num_workers`` goes to the rules that take it
    (LSGD's total-iteration clock). ValueError for unknown names or hyperparameters."""
    spec = _form(name, asynchronous=True)
    check_hyperparameters(name, hparams, asynchronous=True)
    rule = spec.form(asynchronous=True)
    if NUM_WORKERS in inspect.signature(rule).parameters:
        hparams = {**hparams, NUM_WORKERS: num_workers}
    return rule(**hparams)
