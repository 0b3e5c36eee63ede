"""easgd-jax: Elastic Averaging SGD and its relatives as Optax transformations.

    import easgd_jax
    tx = easgd_jax.eamsgd(learning_rate=0.01, momentum=0.99, moving_rate=0.9 / p,
                          period=10, axis_name="workers")

Reference: Zhang, Choromanska & LeCun, "Deep learning with Elastic Averaging SGD",
NIPS 2015 (arXiv 1412.6651).
"""

from easgd_jax.algorithms import (
    ElasticAveragingState,
    NesterovState,
    algorithm_names,
    center,
    eamsgd,
    easgd,
    elastic_averaging,
    elastic_exchange,
    get_algorithm,
    nesterov,
    nesterov_origin,
    register,
)

__version__ = "0.1.0"

__all__ = [
    "ElasticAveragingState",
    "NesterovState",
    "algorithm_names",
    "center",
    "eamsgd",
    "easgd",
    "elastic_averaging",
    "elastic_exchange",
    "get_algorithm",
    "nesterov",
    "nesterov_origin",
    "register",
]
