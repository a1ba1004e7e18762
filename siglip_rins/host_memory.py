"""Host memory for XLA:CPU programs: each call's buffers come from memory the process already holds.

XLA:CPU allocates the temporary buffer of every execution (one block of hundreds of MB for a training step)
with `malloc` and frees it when the call ends.  glibc serves blocks that large with `mmap` and gives them back
with `munmap`, so every step writes to fresh pages and the kernel zero-fills them on first touch: the bench
config's bf16 step took ~218,000 page faults and 0.3-0.5 s of system time per step on a 2-core machine, a third
of its CPU time (benchmarks/RESULTS.md, "Host memory").  `configure()` stops that:

* glibc keeps large blocks in its heap and does not return freed memory to the system below 2 GiB of free
  space (`mallopt(M_MMAP_MAX, 0)`, `mallopt(M_TRIM_THRESHOLD, 2**31 - 1)`): a block freed by one step is
  reused by the next;
* CPU programs run on the thread that calls them (`jax_cpu_enable_async_dispatch=False`).  Their buffers then
  come from glibc's main heap; a worker thread's heap (a non-main glibc arena) is limited to 64 MB and falls
  back to `mmap` for larger blocks whatever the setting.  The training loop needs no asynchronous dispatch
  on CPU: its input pipeline prefetches in TensorFlow's own threads.

Measured gains and costs are in benchmarks/RESULTS.md.  The process keeps its peak heap (freed memory is
reused, not returned); accelerators are unaffected (their buffers live in device memory).

`siglip-rins` (every command), the benchmarks and the test suite call `configure()` before JAX starts.  A
program that imports siglip_rins as a library calls it itself, first thing (the dispatch setting can only
change before JAX creates its CPU client; the heap setting holds from the call on).  The environment variable
SIGLIP_RINS_HOST_MEMORY=system leaves the C library and JAX at their defaults ('reuse' is the default).
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Optional

ENV = "SIGLIP_RINS_HOST_MEMORY"
MODES = ("reuse", "system")
TRIM_THRESHOLD = 2**31 - 1  # the largest value mallopt takes (an int)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc <malloc.h>
# The same heap setting as environment variables glibc reads at start-up, for other programs (the benchmarks
# give it to a peer framework's process so that both sides run with it).
GLIBC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}

_status: Optional[dict] = None


def _glibc():
  """The process's C library when it is glibc (has mallopt and gnu_get_libc_version), else None."""
  try:
    libc = ctypes.CDLL(None)
    version = libc.gnu_get_libc_version
    libc.mallopt  # noqa: B018 - raises AttributeError without it
  except (OSError, AttributeError):
    return None
  version.restype = ctypes.c_char_p
  return libc


def mode_from_env() -> str:
  mode = os.environ.get(ENV, "reuse").strip().lower() or "reuse"
  if mode not in MODES:
    raise ValueError(f"{ENV}={os.environ.get(ENV)!r} is not a host memory mode; allowed: {', '.join(MODES)}")
  return mode


def configure(mode: Optional[str] = None) -> dict:
  """Applies the host memory mode (`mode`, else $SIGLIP_RINS_HOST_MEMORY, else 'reuse') once per process and
  returns what it did: {'mode', 'malloc', 'cpu_dispatch'}.  Later calls return the first call's status."""
  global _status
  if _status is not None:
    return dict(_status)
  mode = mode_from_env() if mode is None else mode
  if mode not in MODES:
    raise ValueError(f"host memory mode {mode!r}: allowed: {', '.join(MODES)}")
  status = {"mode": mode, "malloc": "unchanged", "cpu_dispatch": "unchanged"}
  if mode == "reuse":
    libc = _glibc()
    if libc is None:
      status["malloc"] = "unchanged (not glibc)"
    else:
      ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
      version = libc.gnu_get_libc_version().decode()
      status["malloc"] = (
        f"glibc {version}: mmap_max=0, trim_threshold={TRIM_THRESHOLD}" if ok else f"glibc {version}: mallopt refused"
      )
    import jax
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
      status["cpu_dispatch"] = "unchanged (JAX backends already initialized)"
    else:
      jax.config.update("jax_cpu_enable_async_dispatch", False)
      status["cpu_dispatch"] = "sync"
  _status = status
  return dict(status)


def configure_for_command() -> bool:
  """`configure()` for a command's entry point: False after printing one `error:` line for a bad
  $SIGLIP_RINS_HOST_MEMORY (the command then exits with status 1)."""
  try:
    configure()
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return False
  return True


def status() -> Optional[dict]:
  """What `configure` did in this process (None before it ran)."""
  return None if _status is None else dict(_status)
