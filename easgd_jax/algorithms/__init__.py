"""Distributed optimizers as optax transformations, one module per family.

The DOWNPOUR transformation is ``easgd_jax.downpour`` (or ``downpour.downpour`` here): the
name ``easgd_jax.algorithms.downpour`` stays the module.
"""

from easgd_jax.algorithms.amsgrad_async import amsgrad, amsgrad_sync, apam
from easgd_jax.algorithms.asynchronous import (
    AsyncRule,
    AsyncWorkerState,
    async_algorithm_names,
    async_downpour,
    async_eamsgd,
    async_easgd,
    async_lsgd,
    async_lsgd_nesterov,
    get_async_rule,
)
from easgd_jax.algorithms.averaging import (
    AveragedSGDState,
    asgd,
    data_parallel_sgd,
    msgd,
    mvasgd,
    sgd,
    tree_pmean,
)
from easgd_jax.algorithms.downpour import (
    AdagradDownpourState,
    AveragedDownpourState,
    DownpourState,
    MomentumDownpourState,
    adownpour,
    downpour_exchange,
    mdownpour,
    mvadownpour,
)
from easgd_jax.algorithms.elastic import (
    ElasticAveragingState,
    center,
    eamsgd,
    easgd,
    elastic_averaging,
    elastic_exchange,
)
from easgd_jax.algorithms.evaluation import (
    evaluation_params,
    evaluation_worker,
    reported_state,
)
from easgd_jax.algorithms.leader import (
    LeaderState,
    MultiLeaderState,
    leader_index,
    lsgd,
    lsgd_multi,
    lsgd_multi_nesterov,
    lsgd_nesterov,
)
from easgd_jax.algorithms.momentum import NesterovState, nesterov, nesterov_origin
from easgd_jax.algorithms.registry import (
    algorithm_names,
    check_hyperparameters,
    get_algorithm,
    hyperparameter_names,
    register,
)

__all__ = [
    "AdagradDownpourState",
    "adownpour",
    "algorithm_names",
    "amsgrad",
    "amsgrad_sync",
    "apam",
    "asgd",
    "async_algorithm_names",
    "async_downpour",
    "async_eamsgd",
    "async_easgd",
    "async_lsgd",
    "async_lsgd_nesterov",
    "AsyncRule",
    "AsyncWorkerState",
    "AveragedDownpourState",
    "AveragedSGDState",
    "center",
    "check_hyperparameters",
    "data_parallel_sgd",
    "downpour_exchange",
    "DownpourState",
    "eamsgd",
    "easgd",
    "elastic_averaging",
    "elastic_exchange",
    "ElasticAveragingState",
    "evaluation_params",
    "evaluation_worker",
    "get_algorithm",
    "get_async_rule",
    "hyperparameter_names",
    "leader_index",
    "LeaderState",
    "lsgd",
    "lsgd_multi",
    "lsgd_multi_nesterov",
    "lsgd_nesterov",
    "mdownpour",
    "MomentumDownpourState",
    "msgd",
    "MultiLeaderState",
    "mvadownpour",
    "mvasgd",
    "nesterov",
    "nesterov_origin",
    "NesterovState",
    "register",
    "reported_state",
    "sgd",
    "tree_pmean",
]
