"""The one quantity a sweep's report chooses rates on, averages, thresholds and draws: its
name, label, unit, direction and how a run's metrics.jsonl records give it (``sweep.metric``).

    "test_error" (default)  the center's classification error, 1 - accuracy, in % (the EASGD
                            paper's metric, Zhang, Choromanska & LeCun 2015, Section 5); a
                            failed run counts as chance error, 1 - 1/classes.
    "loss_gap"              the center's cross-entropy less the data's exact Bayes-optimal
                            cross-entropy, nats per token (issue 32: ``synthetic_lm``, whose
                            optimum the forward algorithm computes, Rabiner 1989): the test
                            split's ``loss_gap`` and the validation split's own
                            ``val_loss_gap``; a failed run counts as the uniform predictor's
                            gap, ln V - optimum (V = 256 bytes unless the run records its
                            vocabulary as ``num_classes``).

The report's statistics (:mod:`easgd_jax.experiments.stats`) are written for the error and
run unchanged on either: :func:`easgd_jax.experiments.runs.read_run` fills a run's
``test_error`` / ``val_error`` curves with the metric's test and validation values, so the
rate is chosen on the validation gap, the threshold is a gap, and a failure counts as
:meth:`Metric.failure_value`. Both metrics are lowered by training: the statistics minimise.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

CHANCE_ERROR = 0.9  # 10 classes, when the runs do not say


class Recorded(Protocol):
    """What a failure's value reads from a run (a :class:`easgd_jax.experiments.runs.RunResult`;
    named here, not imported: runs.py imports this module)."""

    num_classes: int | None
    optimal_loss: float | None

BYTE_VOCABULARY = 256  # the LM data sets here are byte-level


@dataclasses.dataclass(frozen=True)
class Metric:
    """A report's metric (module docstring).

    ``test_key`` / ``val_key``: the metrics.jsonl fields it is read from, ``complement``:
    the value is 1 - the field (accuracy to error); ``scale`` and ``unit``: how a value is
    printed (100 and "%": an error in percent); ``digits``: decimals printed."""

    name: str
    label: str  # "test error", "loss gap to the optimum (nats/token)"
    short: str  # the column's word: "error", "gap"
    unit: str
    scale: float
    digits: int
    test_key: str
    val_key: str
    complement: bool
    lower_is_better: bool = True

    def __post_init__(self) -> None:
        if not self.lower_is_better:
            raise ValueError(f"metric {self.name!r}: the report's statistics minimise; a "
                             "metric that rises with training is not supported.")

    def test_value(self, record: Mapping[str, Any]) -> float:
        """The metric of one evaluation record on the test split."""
        if self.test_key not in record:
            raise ValueError(f"metric {self.name!r} needs {self.test_key!r} in every "
                             f"evaluation record; the run recorded {sorted(record)}.")
        value = float(record[self.test_key])
        return 1.0 - value if self.complement else value

    def val_value(self, record: Mapping[str, Any]) -> float | None:
        """The metric on the validation split (None when the record has none)."""
        if self.val_key not in record:
            return None
        value = float(record[self.val_key])
        return 1.0 - value if self.complement else value

    def fmt(self, value: float | None, digits: int | None = None) -> str:
        """``value`` in the metric's unit, without it ("" for None or nan)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        return f"{self.scale * value:.{self.digits if digits is None else digits}f}"

    def amount(self, value: float) -> str:
        """``value`` with its unit: "20%", "0.05 nats/token" (a threshold)."""
        return f"{self.scale * value:g}{self.unit}" if self.unit == "%" else \
            f"{self.scale * value:g} {self.unit}"

    def reach(self, threshold: float) -> str:
        """The threshold as a goal: "20% test error", "a loss gap to the optimum of 0.05
        nats/token"."""
        amount = self.amount(threshold)
        return f"{amount} {self.label}" if self.unit == "%" else f"a {self.label} of {amount}"

    @property
    def heading(self) -> str:
        """The label with its unit: "test error (%)", "loss gap to the optimum
        (nats/token)"."""
        return f"{self.label} ({self.unit})"

    def failure_value(self, runs: Iterable[Recorded], default: float | None = None) -> float:
        """What a failed (diverged, error) run counts as: ``default`` when given (the sweep's
        ``chance_error``), else chance error 1 - 1/classes (0.9 unless a run records its
        classes) for the error, the uniform predictor's gap ln V - optimum for the gap (the
        optimum recorded by the first run that has one; ValueError when none does)."""
        if default is not None:
            return float(default)
        runs = list(runs)
        if self.name == "test_error":
            return chance_error(runs)
        for r in runs:
            if r.optimal_loss is not None:
                return math.log(r.num_classes or BYTE_VOCABULARY) - r.optimal_loss
        if not runs:
            return math.nan
        raise ValueError(f"metric {self.name!r}: no run records its optimal_loss, so a "
                         "failed run's gap is unknown (set the sweep's chance_error).")


def chance_error(runs: Iterable[Recorded], default: float = CHANCE_ERROR) -> float:
    """The error of a failed run: 1 - 1/classes of the first run that records its number of
    classes, else ``default`` (0.9: 10 classes)."""
    for r in runs:
        if r.num_classes:
            return 1.0 - 1.0 / r.num_classes
    return default


ERROR = Metric("test_error", "test error", "error", "%", 100.0, 2, "test_accuracy",
               "val_accuracy", complement=True)
LOSS_GAP = Metric("loss_gap", "loss gap to the optimum", "gap", "nats/token", 1.0, 4,
                  "loss_gap", "val_loss_gap", complement=False)
METRICS = {m.name: m for m in (ERROR, LOSS_GAP)}


def get(name: str | Metric | None) -> Metric:
    """The metric named ``name`` (None: the test error); a Metric as is."""
    if isinstance(name, Metric):
        return name
    if name is None:
        return ERROR
    if name not in METRICS:
        raise ValueError(f"sweep.metric must be one of {', '.join(METRICS)}; got {name!r}.")
    return METRICS[name]


def of_sweep(sweep: Any) -> Metric:
    """The metric a sweep config (or its sweep.json's dict) declares in ``metric``."""
    return get(sweep.get("metric") if sweep is not None else None)
