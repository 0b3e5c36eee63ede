"""Test setup: 8 simulated CPU devices, created before jax starts its backend."""

from easgd_jax.parallel.mesh import use_simulated_cpu_devices

NUM_TEST_DEVICES = 8

use_simulated_cpu_devices(NUM_TEST_DEVICES)
