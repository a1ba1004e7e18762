"""Test-session settings: quiet TensorFlow/XLA logs; keep JAX on CPU; share one persistent XLA compilation
cache between test workers and the training subprocesses some tests launch (same computations compile once)."""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"siglip_rins_test_xla_cache_{os.getuid()}")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

from siglip_rins import host_memory  # noqa: E402

host_memory.configure()  # as `siglip-rins` does, before JAX starts (siglip_rins/host_memory.py)
