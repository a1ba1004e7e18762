"""Small timing helpers shared by the benchmarks.

* `compile_seconds(jitted, *args)` -> (compiled executable, seconds for `.lower(*args).compile()`).
* `time_calls(fn, *args, repeats, warmup)` -> dict(median_s, min_s, times_s): wall seconds per call, each call
  waited on with `jax.block_until_ready`; the median is the number to quote (shared machines are noisy).
* `machine()` -> dict describing where the numbers came from (cores, load average, jax version, device).
* `emit(result, out)` prints one JSON object on stdout and writes it to `out` when given.

Usage:  compiled, secs = compile_seconds(jax.jit(step), params, batch)
        timing = time_calls(compiled, params, batch, repeats=5)
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Any, Callable, Optional

import jax


def compile_seconds(jitted: Any, *args, **kwargs) -> tuple[Any, float]:
  """Times tracing + lowering + XLA compilation of `jitted` (a `jax.jit` function) for these arguments.
  Returns (compiled, seconds); call `compiled(*args)` to run without recompiling."""
  start = time.perf_counter()
  compiled = jitted.lower(*args, **kwargs).compile()
  return compiled, time.perf_counter() - start


def time_calls(fn: Callable, *args, repeats: int = 5, warmup: int = 1) -> dict:
  """Calls `fn(*args)` `warmup` times untimed, then `repeats` times timed.  Seconds per call."""
  if repeats < 1:
    raise ValueError(f"repeats must be >= 1, got {repeats}")
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return dict(median_s=statistics.median(times), min_s=min(times), times_s=[round(t, 4) for t in times])


def machine() -> dict:
  """Where the numbers were taken: CPU cores usable, 1-minute load average, versions, JAX device."""
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
  return dict(cpu_cores=cores, load_avg_1min=load, python=platform.python_version(), jax=jax.__version__,
              device=str(jax.devices()[0].device_kind), backend=jax.default_backend())


def emit(result: dict, out: Optional[str] = None) -> dict:
  """Prints `result` as one JSON line and writes it (indented) to `out` when given."""
  print(json.dumps(result))
  if out:
    with open(out, "w") as f:
      json.dump(result, f, indent=1)
  return result
