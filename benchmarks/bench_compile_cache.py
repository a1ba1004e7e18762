"""What the commands' persistent compilation cache (siglip_rins/compile_cache.py) saves a user who launches again.

The command timed is the Quickstart's training command on the built-in data, short (`siglip-rins train --config
configs/siglip_rins.py:runlocal,steps=N` in a fresh workdir: init, compile, N steps, final evals), each launch a
new process as a user's would be.  Three settings, taking turns so they see the same machine load:
  off   SIGLIP_RINS_COMPILE_CACHE=off (every process compiles everything: the behaviour before the cache)
  cold  the cache on, its folder emptied before the launch (a user's very first run)
  warm  the cache on, filled by the launches before (a relaunch, a second seed, a resumed run)
Per launch: wall seconds of the whole command and seconds from launch to the 'step 1/' line.

Usage: python -m benchmarks.bench_compile_cache [--steps 6] [--repeats 3] [--out result.json]  (~4 min on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks import _util as U

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch(steps: int, workdir: str, cache: str) -> dict:
  cmd = [sys.executable, "-m", "siglip_rins.cli", "train", "--config", f"configs/siglip_rins.py:runlocal,steps={steps}"]
  cmd += ["--workdir", workdir, "--config.tensorboard=False", "--config.log_every=1"]
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))}
  env.update(SIGLIP_RINS_COMPILE_CACHE=cache, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
  start, first = time.perf_counter(), None
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  for line in proc.stdout:
    if first is None and line.startswith("step 1/"):
      first = time.perf_counter() - start
  proc.wait()
  wall = time.perf_counter() - start
  if proc.returncode != 0:
    raise SystemExit(f"error: {' '.join(cmd)} exited {proc.returncode}")
  return dict(wall_s=round(wall, 2), first_step_s=None if first is None else round(first, 2))


def run(steps: int, repeats: int) -> dict:
  context_start = U.context()
  scratch = tempfile.mkdtemp(prefix="bench_compile_cache_")
  folder = os.path.join(scratch, "xla")
  samples: dict[str, list[dict]] = {"off": [], "cold": [], "warm": []}
  try:
    for i in range(repeats):
      for setting in ("off", "cold", "warm"):
        if setting == "cold":
          if i > 0:  # one cold launch is enough: it is what the first warm launch of the round follows
            continue
          shutil.rmtree(folder, ignore_errors=True)
        workdir = os.path.join(scratch, f"run_{setting}_{i}")
        row = launch(steps, workdir, "off" if setting == "off" else folder)
        samples[setting].append(row)
        print(f"# {setting} {i}: {row}", file=sys.stderr, flush=True)
        shutil.rmtree(workdir, ignore_errors=True)
    cache_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  summary = {
    k: dict(
      wall_s=U.median([r["wall_s"] for r in v]),
      first_step_s=U.median([r["first_step_s"] for r in v if r["first_step_s"] is not None]),
      launches=len(v),
    )
    for k, v in samples.items()
  }
  summary["warm_vs_off_wall"] = round(summary["warm"]["wall_s"] / summary["off"]["wall_s"], 3)
  summary["warm_vs_off_first_step"] = round(summary["warm"]["first_step_s"] / summary["off"]["first_step_s"], 3)
  return dict(
    benchmark="compile_cache",
    command=f"siglip-rins train --config configs/siglip_rins.py:runlocal,steps={steps} (fresh workdir per launch)",
    samples=samples,
    summary=summary,
    cache_bytes=cache_bytes,
    context_start=context_start,
    context_end=U.context(),
    machine=U.machine_info(),
  )


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=6)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  if args.steps < 6 or args.repeats < 1:
    parser.error("--steps must be >= 6 (the runlocal warm-up) and --repeats >= 1")
  U.emit(run(args.steps, args.repeats), args.out)


if __name__ == "__main__":
  main()
