"""Training: config -> data, model, algorithm, executor -> metrics and checkpoints.

    from easgd_jax import training
    config = training.config.defaults()          # every field, EAMSGD on MNIST-1D
    metrics = training.train_and_evaluate(config, "/tmp/run")

``config.executor`` picks the executor: ``sync`` (SPMD rounds, :mod:`.sync`) or an
asynchronous one (:mod:`.asynchronous`). Modules: ``config`` (the schema and one
``validate``), ``common`` (workdir, data and model, loss, evaluator), ``sync``,
``asynchronous``, ``checkpoint``, ``metrics``, ``lock`` (one run per workdir).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from easgd_jax.training import asynchronous, common, config, sync
from easgd_jax.training.common import NonFiniteError
from easgd_jax.training.lock import WorkdirBusyError


def train_and_evaluate(
    config_: ml_collections.ConfigDict, workdir: str, overwrite: bool = False
) -> dict[str, Any]:
    """Trains with ``config_.executor`` in ``workdir``; returns the final metrics.

    An existing workdir of the same config resumes from its latest checkpoint or, if
    finished, changes nothing; one with a different config is refused unless ``overwrite``;
    one that another run is using (its lock, :mod:`.lock`) is refused at once.
    """
    if config_.executor == "sync":  # each executor holds the workdir's lock for its run
        return sync.train_and_evaluate(config_, workdir, overwrite)
    return asynchronous.train_and_evaluate(config_, workdir, overwrite)


__all__ = ["NonFiniteError", "WorkdirBusyError", "asynchronous", "common", "config", "sync",
           "train_and_evaluate"]
