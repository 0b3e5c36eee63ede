"""Sweep configs for ``python -m easgd_jax.sweep --config configs/sweeps/NAME.py``."""
