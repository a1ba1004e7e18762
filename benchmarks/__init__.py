"""Benchmarks (benchmarks/README.md).

A benchmark process with JAX applies the project's host memory mode before JAX starts, as `siglip-rins` does
(siglip_rins/host_memory.py; SIGLIP_RINS_HOST_MEMORY=system keeps the C library's and JAX's defaults).  The
open_clip workers (another environment, no JAX) run with their own defaults unless a benchmark says otherwise.
"""

import importlib.util

if importlib.util.find_spec("jax") is not None:
  from siglip_rins import host_memory as _host_memory

  _host_memory.configure()
