"""Training: config -> data, model, algorithm, executor -> metrics and checkpoints.

    from easgd_jax import training
    config = training.config.defaults()          # every field, EAMSGD on MNIST-1D
    metrics = training.train_and_evaluate(config, "/tmp/run")

``config.executor`` picks the executor: ``sync`` (SPMD rounds, :mod:`.sync`) or an
asynchronous one (:mod:`.asynchronous`). Modules: ``config`` (the schema and one
``validate``), ``common`` (workdir, data and model, loss, evaluator), ``sync``,
``asynchronous``, ``checkpoint``, ``metrics``, ``lock`` (one run per workdir), ``plan``
(what a config decides, computed once after its one validation).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from easgd_jax.training import asynchronous, common, config, plan, sync
from easgd_jax.training.common import NonFiniteError
from easgd_jax.training.lock import WorkdirBusyError
from easgd_jax.training.plan import Plan, make_plan


def train_and_evaluate(
    config_: ml_collections.ConfigDict, workdir: str, overwrite: bool = False,
    plan_: Plan | None = None,
) -> dict[str, Any]:
    """Trains with ``config_.executor`` in ``workdir``; returns the final metrics.

    An existing workdir of the same config resumes from its latest checkpoint or, if
    finished, changes nothing; one with a different config is refused unless ``overwrite``;
    one that another run is using (its lock, :mod:`.lock`) is refused at once. ``plan_``:
    the config's :func:`~easgd_jax.training.plan.make_plan` when the caller made it (the
    config is then not validated again).
    """
    if config_.executor == "sync":  # each executor holds the workdir's lock for its run
        return sync.train_and_evaluate(config_, workdir, overwrite, plan_)
    return asynchronous.train_and_evaluate(config_, workdir, overwrite, plan_)


__all__ = ["NonFiniteError", "Plan", "WorkdirBusyError", "asynchronous", "common", "config",
           "make_plan", "plan", "sync", "train_and_evaluate"]
