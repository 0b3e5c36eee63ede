"""``config.train.param_dtype``: checked before anything runs, with the field named."""

import os
import sys

import jax
import pytest

from easgd_jax.training import config as validation

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from easgd_jax.configs import async_easgd, easgd  # noqa: E402


def test_default_is_float32():
    config = easgd.get_config()
    assert config.train.param_dtype == "float32"
    validation.validate(config)


def test_unknown_dtype_names_the_field():
    config = easgd.get_config()
    config.train.param_dtype = "bfloat16"
    with pytest.raises(ValueError, match="config.train.param_dtype must be one of float32, "
                                         "float64; got 'bfloat16'"):
        validation.validate(config)


def test_float64_needs_x64():
    config = easgd.get_config()
    config.train.param_dtype = "float64"
    assert not jax.config.jax_enable_x64  # the tests run in jax's default 32-bit mode
    with pytest.raises(ValueError, match="param_dtype 'float64' needs 64-bit floats"):
        validation.validate(config)
    with jax.enable_x64(True):
        validation.validate(config)


def test_threads_and_ray_train_in_float32_and_the_simulation_in_either():
    config = async_easgd.get_config()
    assert config.executor == "simulated_async"
    config.train.param_dtype = "float64"
    with pytest.raises(ValueError, match="param_dtype 'float64' needs 64-bit floats"):
        validation.validate(config)
    with jax.enable_x64(True):
        validation.validate(config)
        for executor in ("threads", "ray"):
            config.executor = executor
            with pytest.raises(ValueError, match="param_dtype 'float64' applies to executors "
                                                 f"'sync' and 'simulated_async'; executor "
                                                 f"'{executor}' trains in float32"):
                validation.validate(config)
