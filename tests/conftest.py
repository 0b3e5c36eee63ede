"""Test setup: 8 simulated CPU devices, created before jax starts its backend, and one
persistent compilation cache for the session.

The cache (a fresh temporary directory per session, so nothing carries over between runs) is
set in the environment before jax is imported: the ``launch.py`` subprocesses that many
end-to-end tests start inherit it and reuse the programs an earlier test compiled instead of
compiling them again (about half of a short launch's time). A cached program is the same
executable: results do not change. JAX does not cache programs with a host callback; the
transformations hold none by default (``on_disagreement="nan"``), only those built with
``on_disagreement="raise"`` compile again.
"""

import atexit
import os
import shutil
import tempfile

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="easgd_jax_test_cache_")
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    # Generated data (MNIST-1D, easgd_jax/data/embedded.py) is kept there too: generated
    # once per session (about 3 CPU-s a process), never in the user's ~/.cache.
    os.environ.setdefault("EASGD_JAX_DATA_CACHE", os.path.join(_CACHE, "data"))

# XLA:CPU's LLVM backend at optimization level 0 (the tests and the launch.py processes they
# start inherit it): the tests compile several thousand small programs, and LLVM's passes
# are about a fifth of their CPU time. The HLO passes (fusion, collectives: the programs the
# HLO tests read) are the same. The float32 numbers are not bitwise those of a default build
# (an elementwise function's machine code differs in its last bits: a 200-step digits run
# ends at test loss 0.3788 here, 0.3815 at the default level), which no test depends on:
# every comparison is between programs built alike, or against a float64 reference. Runs
# outside the tests keep XLA's default; set XLA_FLAGS with another level to test at it.
# Likewise two compile-time settings of XLA:CPU: its loop emitters instead of its newer
# fusion emitters, and the LLVM module compiled in one piece instead of split into parts for
# threads (a small module does not repay them). Measured on the 17 one-group algorithms'
# jitted steps (tests/helpers.py::user_step, P = 4): 3.0 CPU-s of XLA compile at the level
# alone, 1.15 with the loop emitters, 0.76 with both; the unit suite's CPU about halves.
# The same caveat: float32 last bits may differ from a default build.
for _flag in ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false",
              "--xla_cpu_parallel_codegen_split_count=1"):
    if _flag.split("=")[0] + "=" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

from easgd_jax.parallel.mesh import use_simulated_cpu_devices  # noqa: E402

NUM_TEST_DEVICES = 8

use_simulated_cpu_devices(NUM_TEST_DEVICES)
