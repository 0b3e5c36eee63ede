"""Train with a config file: ``python launch.py --config configs/X.py --workdir DIR``.

Any field can be overridden: ``--config.algorithm.period=1 --config.num_workers=8``.
"""

import logging as std_logging

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file with get_config().", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for metrics, checkpoints and the saved config. An existing "
    "workdir of the same config is resumed from its latest checkpoint.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Start afresh in a workdir that holds a run with another config.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(std_logging.Filter):
    """Keeps Orbax's per-save INFO lines out of the training log (warnings still show)."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.get_absl_handler().addFilter(_QuietLibraries())
    config = _CONFIG.value
    import jax

    from easgd_jax import parallel, training
    from easgd_jax.parallel import distributed

    if config.train.param_dtype == "float64":  # before jax creates any array
        jax.config.update("jax_enable_x64", True)
    training.config.validate(config)  # before jax starts: fail fast on bad input
    if config.num_devices:  # simulated CPU devices of this process (ignored on GPUs)
        parallel.use_simulated_cpu_devices(
            config.num_devices // distributed.num_processes(config.distributed))
    distributed.initialize(config.distributed)
    metrics = training.train_and_evaluate(config, _WORKDIR.value, overwrite=_OVERWRITE.value)
    logging.info("final: %s", {k: round(v, 4) if isinstance(v, float) else v
                               for k, v in metrics.items()})


def run_main() -> None:
    app.run(main)


if __name__ == "__main__":
    run_main()
