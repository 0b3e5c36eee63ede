"""Speed and communication benchmarks of easgd-jax; results and commands in RESULTS.md."""
