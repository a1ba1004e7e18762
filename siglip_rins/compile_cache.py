"""JAX's persistent compilation cache for `siglip-rins` commands: a relaunched run loads its compiled programs.

A command compiles its initialiser, train step, evaluators' predictors and exporters afresh in every process,
although a resumed run (after a kill or preemption), a second seed, `eval`, `classify` or `serve` of the same
model compile the same programs again.  `configure()` points JAX's persistent cache at one folder per user, so
every later process loads those executables from disk instead (a cached executable is the same compiled
program: results do not change).  Measured (benchmarks/bench_compile_cache.py, RESULTS.md analysis, "Compilation
cache"; 2-core AMD EPYC): `train --config configs/siglip_rins.py:runlocal,steps=6` in a fresh workdir took 29.5 s
(first step after 24.6 s) without the cache and 17.6 s (first step 14.0 s) relaunched with it.

The folder is $SIGLIP_RINS_COMPILE_CACHE, else $XDG_CACHE_HOME/siglip_rins/xla, else ~/.cache/siglip_rins/xla;
it is kept under MAX_BYTES by JAX (least recently used entries go first).  SIGLIP_RINS_COMPILE_CACHE=off turns
it off.  A cache the user configured for JAX itself ($JAX_COMPILATION_CACHE_DIR or jax.config) is left as it is.
A folder that cannot be written leaves the cache off with one warning line; the command goes on.

`siglip-rins` (every command) and `python -m siglip_rins.train` call `configure()` at start; the benchmarks and
library users do not get it unless they call it (compile-time benchmarks must compile).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from typing import Optional

ENV = "SIGLIP_RINS_COMPILE_CACHE"
OFF = ("off", "0", "false", "no", "none")
MAX_BYTES = 4 * 2**30  # JAX evicts the least recently used entries above this

_status: Optional[dict] = None


def default_dir() -> str:
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(root, "siglip_rins", "xla")


def _use(folder: str) -> None:
  """JAX's persistent cache in `folder`, every executable however small or quick to compile."""
  import jax

  jax.config.update("jax_compilation_cache_dir", folder)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def configure() -> dict:
  """Turns the persistent cache on (once per process) unless already configured or turned off; returns what it
  did: {'state': 'on' | 'off' | 'jax', 'dir': folder or None, 'why': ...}."""
  global _status
  if _status is not None:
    return dict(_status)
  import jax

  value = os.environ.get(ENV, "").strip()
  if jax.config.jax_compilation_cache_dir:
    _status = {"state": "jax", "dir": jax.config.jax_compilation_cache_dir, "why": "configured for JAX already"}
  elif value.lower() in OFF:
    _status = {"state": "off", "dir": None, "why": f"{ENV}={value}"}
  else:
    folder = os.path.abspath(os.path.expanduser(value or default_dir()))
    try:
      os.makedirs(folder, exist_ok=True)
      if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError("not writable")
    except OSError as e:
      reason = getattr(e, "strerror", None) or str(e)
      print(
        f"warning: compilation cache off: cannot use {folder} ({reason}); set {ENV} to a writable folder or 'off'",
        file=sys.stderr,
      )
      _status = {"state": "off", "dir": None, "why": f"cannot use {folder}: {reason}"}
    else:
      _use(folder)
      jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)  # JAX locks the folder with filelock
      _status = {"state": "on", "dir": folder, "why": ENV if value else "default"}
  return dict(_status)


def status() -> Optional[dict]:
  """What `configure` did in this process (None before it ran)."""
  return None if _status is None else dict(_status)


@contextlib.contextmanager
def scoped(directory: str, keep: bool = False):
  """JAX's persistent compilation cache in `directory` for the block, where no cache is on yet (the demo and study
  with SIGLIP_RINS_COMPILE_CACHE=off, or called as a library): the runs of a study that differ only in their seed
  reuse the first run's compiled steps.  The previous settings are restored afterwards, and the folder removed
  unless `keep`.  A cache already on (`configure`, $JAX_COMPILATION_CACHE_DIR) is used as it is."""
  import jax
  from jax.experimental.compilation_cache import compilation_cache as cc

  if jax.config.jax_compilation_cache_dir:
    yield jax.config.jax_compilation_cache_dir
    return
  keys = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
  )
  old = {k: getattr(jax.config, k) for k in keys}
  os.makedirs(directory, exist_ok=True)
  _use(directory)
  cc.reset_cache()
  try:
    yield directory
  finally:
    for k, v in old.items():
      jax.config.update(k, v)
    cc.reset_cache()
    if not keep:
      shutil.rmtree(directory, ignore_errors=True)
