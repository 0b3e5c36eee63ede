"""Sweep configs for ``python -m easgd_jax.experiments.sweep --config configs/sweeps/NAME.py``."""
