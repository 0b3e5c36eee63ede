"""Distributed optimizers as optax transformations, one module per family."""

from easgd_jax.algorithms.elastic import (
    ElasticAveragingState,
    center,
    eamsgd,
    easgd,
    elastic_averaging,
    elastic_exchange,
)
from easgd_jax.algorithms.evaluation import evaluation_params, reported_state
from easgd_jax.algorithms.momentum import NesterovState, nesterov, nesterov_origin
from easgd_jax.algorithms.registry import (
    algorithm_names,
    check_hyperparameters,
    get_algorithm,
    hyperparameter_names,
    register,
)

__all__ = [
    "ElasticAveragingState",
    "NesterovState",
    "algorithm_names",
    "center",
    "check_hyperparameters",
    "eamsgd",
    "easgd",
    "elastic_averaging",
    "elastic_exchange",
    "evaluation_params",
    "get_algorithm",
    "hyperparameter_names",
    "nesterov",
    "nesterov_origin",
    "register",
    "reported_state",
]
