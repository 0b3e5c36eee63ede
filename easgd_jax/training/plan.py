"""A run's plan: what its config decides, computed once, after the one validation.

The executors read the plan instead of the config's fields: the algorithm's registry Spec
and its hyperparameters (derived rates resolved), the exchange clock as the Spec states it,
the length of a compiled round, the block the data stream is drawn in, and the cadences of
evaluation and checkpoints.

    plan = make_plan(config)          # validates the config (once), builds nothing
    plan.round_steps, plan.round_period, plan.evaluates(step), plan.saves(step)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from easgd_jax.algorithms import registry
from easgd_jax.algorithms.base import Spec
from easgd_jax.training import config as config_lib


@dataclasses.dataclass(frozen=True)
class Plan:
    """The decisions of one run's config.

    Attributes:
        spec: the algorithm's registry entry (``config.algorithm.name``).
        hparams: its constructor's keyword arguments (``Spec.hyperparameters``: a stated
            beta is ``moving_rate = beta / p``).
        num_workers: p.
        num_steps: local steps per worker.
        round_steps: local steps per compiled round (``config.steps_per_round``).
        round_period: the exchange interval the rounds are traced in, or None when the
            steps decide at run time (``config.round_period``).
        sampling_block: the block of local steps the data stream is drawn in.
        eval_every: steps between evaluations (and the last step).
        checkpoint_every: steps between checkpoints (0: only at the end).
    """

    spec: Spec
    hparams: dict[str, Any]
    num_workers: int
    num_steps: int
    round_steps: int
    round_period: int | None
    sampling_block: int
    eval_every: int
    checkpoint_every: int

    @property
    def report_every(self) -> int:
        """Steps between two records of the reported state (LSGD's leader): each exchange
        interval when the rounds know it, else each round."""
        return self.round_period or self.round_steps

    @property
    def models_exchanged_per_step(self) -> float:
        """Model-sized exchanges per local step (``Spec.models_exchanged_per_step``)."""
        return self.spec.models_exchanged_per_step(self.hparams)

    def evaluates(self, step: int) -> bool:
        """Whether the run evaluates after ``step`` local steps."""
        return step % self.eval_every == 0 or step == self.num_steps

    def saves(self, step: int) -> bool:
        """Whether the run saves a checkpoint after ``step`` local steps."""
        every = self.checkpoint_every
        return bool(every and step % every == 0) or step == self.num_steps


def make_plan(config: ml_collections.ConfigDict) -> Plan:
    """The plan of ``config``, validated first (:func:`easgd_jax.training.config.validate`,
    ValueError naming the first bad field); nothing is built or traced."""
    config_lib.validate(config)
    return Plan(
        spec=registry.get_spec(config.algorithm.name),
        hparams=config_lib.algorithm_hparams(config),
        num_workers=config.num_workers,
        num_steps=config.train.num_steps,
        round_steps=config_lib.steps_per_round(config),
        round_period=config_lib.round_period(config),
        sampling_block=config_lib.sampling_block(config),
        eval_every=config.train.eval_every,
        checkpoint_every=config.checkpoint.every,
    )
