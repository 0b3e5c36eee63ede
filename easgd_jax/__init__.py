"""easgd-jax: Elastic Averaging SGD and its relatives as Optax transformations.

For p workers on the mesh or vmap axis ``"workers"``::

    import easgd_jax
    tx = easgd_jax.eamsgd(learning_rate=0.01, momentum=0.99, moving_rate=0.9 / p,
                          period=10, axis_name="workers")

Reference: Zhang, Choromanska & LeCun, "Deep learning with Elastic Averaging SGD",
NIPS 2015 (arXiv 1412.6651).

``easgd_jax.load_center(workdir)`` (the trained evaluation point of a ``launch.py`` run, in
any process) is imported on first use: it needs the training layer (Orbax, the data sets),
which ``import easgd_jax`` does not load.
"""

from typing import Any

from easgd_jax.algorithms import (
    AdagradDownpourState,
    AveragedDownpourState,
    AveragedSGDState,
    DilocoFeedbackState,
    DilocoState,
    DownpourState,
    ElasticAveragingState,
    ElasticFeedbackState,
    ElasticOuterState,
    LeaderState,
    MomentumDownpourState,
    MultiLeaderState,
    NesterovState,
    adownpour,
    algorithm_names,
    amsgrad_sync,
    apam,
    asgd,
    center,
    check_agreement,
    check_chain_order,
    data_parallel_sgd,
    diloco,
    downpour,
    downpour_exchange,
    eamsgd,
    eamsgd_outer,
    easgd,
    elastic_averaging,
    elastic_exchange,
    get_algorithm,
    lsgd,
    lsgd_multi,
    lsgd_multi_nesterov,
    lsgd_nesterov,
    mdownpour,
    msgd,
    mvadownpour,
    mvasgd,
    nesterov,
    nesterov_origin,
    register,
    replicate,
    sgd,
)
from easgd_jax.algorithms.adaptive import AmsgradMoments

__version__ = "0.1.0"

__all__ = [
    "AdagradDownpourState",
    "AmsgradMoments",
    "AveragedDownpourState",
    "AveragedSGDState",
    "DilocoFeedbackState",
    "DilocoState",
    "DownpourState",
    "eamsgd_outer",
    "ElasticFeedbackState",
    "ElasticOuterState",
    "MomentumDownpourState",
    "adownpour",
    "algorithm_names",
    "amsgrad_sync",
    "apam",
    "asgd",
    "center",
    "check_agreement",
    "check_chain_order",
    "data_parallel_sgd",
    "diloco",
    "downpour",
    "downpour_exchange",
    "eamsgd",
    "easgd",
    "elastic_averaging",
    "elastic_exchange",
    "ElasticAveragingState",
    "get_algorithm",
    "LeaderState",
    "lsgd",
    "lsgd_multi",
    "lsgd_multi_nesterov",
    "lsgd_nesterov",
    "mdownpour",
    "msgd",
    "MultiLeaderState",
    "mvadownpour",
    "mvasgd",
    "nesterov",
    "nesterov_origin",
    "NesterovState",
    "load_center",
    "register",
    "replicate",
    "sgd",
]


def __getattr__(name: str) -> Any:
    """``load_center``, imported from ``easgd_jax.training.export`` on first use."""
    if name == "load_center":
        from easgd_jax.training.export import load_center

        return load_center
    raise AttributeError(f"module 'easgd_jax' has no attribute {name!r}")
