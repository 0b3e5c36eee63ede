"""Distributed optimizers as optax transformations, one module per family.

Each family module holds its synchronous transformations AND its asynchronous rules:
``elastic`` (EASGD, EAMSGD), ``distbelief`` (DOWNPOUR and its variants), ``baselines`` (SGD,
MSGD, ASGD, MVASGD, data-parallel SGD), ``leader`` (LSGD), ``adaptive`` (AMSGrad, APAM),
``outer`` (DiLoCo: an outer optimizer on the center).
``base`` holds what they share (the asynchronous rule protocol, :class:`Spec`);
``collectives``, ``averages``, ``momentum``, ``clock`` and ``checks`` are their building
blocks, and ``registry`` the one table name -> Spec. The family modules are named so that no
function re-exported here (``downpour``, ``amsgrad``) shadows a module.
"""

from easgd_jax.algorithms.adaptive import ApamMasterState, amsgrad, amsgrad_sync, apam
from easgd_jax.algorithms.base import (
    AsyncRule,
    AsyncWorkerState,
    AxisName,
    CenterState,
    NoExtra,
    Spec,
)
from easgd_jax.algorithms.baselines import (
    AveragedSGDState,
    asgd,
    data_parallel_sgd,
    msgd,
    mvasgd,
    sgd,
)
from easgd_jax.algorithms.collectives import tree_pmean, tree_psum
from easgd_jax.algorithms.distbelief import (
    AdagradDownpourState,
    AdagradMasterState,
    AveragedDownpourState,
    DownpourExtra,
    DownpourState,
    MomentumDownpourState,
    adownpour,
    async_downpour,
    downpour,
    downpour_exchange,
    mdownpour,
    mvadownpour,
)
from easgd_jax.algorithms.elastic import (
    EamsgdExtra,
    ElasticAveragingState,
    async_eamsgd,
    async_easgd,
    center,
    eamsgd,
    easgd,
    elastic_averaging,
    elastic_exchange,
)
from easgd_jax.algorithms.leader import (
    LeaderExtra,
    LeaderMasterState,
    LeaderState,
    MultiLeaderState,
    async_lsgd,
    async_lsgd_nesterov,
    leader_index,
    lsgd,
    lsgd_multi,
    lsgd_multi_nesterov,
    lsgd_nesterov,
)
from easgd_jax.algorithms.momentum import NesterovState, nesterov, nesterov_origin
from easgd_jax.algorithms.outer import DilocoState, diloco, nesterov_diloco
from easgd_jax.algorithms.registry import (
    algorithm_names,
    async_algorithm_names,
    check_hyperparameters,
    get_algorithm,
    get_async_rule,
    get_spec,
    hyperparameter_names,
    is_grouped,
    register,
)

__all__ = [
    "DilocoState",
    "diloco",
    "nesterov_diloco",
    "AdagradDownpourState",
    "AdagradMasterState",
    "adownpour",
    "algorithm_names",
    "amsgrad",
    "amsgrad_sync",
    "apam",
    "ApamMasterState",
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
    "AxisName",
    "center",
    "CenterState",
    "check_hyperparameters",
    "data_parallel_sgd",
    "downpour",
    "downpour_exchange",
    "DownpourExtra",
    "DownpourState",
    "eamsgd",
    "EamsgdExtra",
    "easgd",
    "elastic_averaging",
    "elastic_exchange",
    "ElasticAveragingState",
    "get_algorithm",
    "get_async_rule",
    "get_spec",
    "hyperparameter_names",
    "is_grouped",
    "leader_index",
    "LeaderExtra",
    "LeaderMasterState",
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
    "NoExtra",
    "register",
    "sgd",
    "Spec",
    "tree_pmean",
    "tree_psum",
]
