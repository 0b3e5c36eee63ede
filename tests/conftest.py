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

from easgd_jax.parallel.mesh import use_simulated_cpu_devices  # noqa: E402

NUM_TEST_DEVICES = 8

use_simulated_cpu_devices(NUM_TEST_DEVICES)
