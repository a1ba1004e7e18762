"""What the host memory mode (siglip_rins/host_memory.py) changes in a training step: page faults, system time.

For each mode ('reuse', the default, and 'system', the C library's and JAX's defaults) a fresh process builds
the bench config's AB step (batch 64) under each precision policy, runs `--warmup` steps, then times `--steps`
steps one at a time (blocking on each) and reports per step: wall seconds, minor page faults, system and user
CPU seconds (getrusage over the whole process), and the process's peak RSS.  The modes run one after the other
(not interleaved: each needs its own process from the start); bench_precision.py gives the interleaved speed
comparison.

Usage: python -m benchmarks.bench_host_memory [--steps 4] [--warmup 2] [--precision bfloat16 float32]
       [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _util as U

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("reuse", "system")


def _worker(precisions, steps: int, warmup: int, batch: int) -> dict:
  import resource

  from benchmarks import bench_precision
  from siglip_rins import host_memory

  out = {"host_memory": host_memory.status()}
  for prec in precisions:
    setup = U.TrainSetup(bench_precision._model_cfg(prec), batch=batch)
    setup.compile()
    for _ in range(warmup):
      U.timed(setup.run_one)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    walls = [U.timed(setup.run_one)[0] for _ in range(steps)]
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    out[prec] = dict(
      step_s_median=U.median(walls),
      step_s=walls,
      minor_faults_per_step=(r1.ru_minflt - r0.ru_minflt) / steps,
      system_s_per_step=(r1.ru_stime - r0.ru_stime) / steps,
      user_s_per_step=(r1.ru_utime - r0.ru_utime) / steps,
    )
  out["maxrss_mb"] = U.maxrss_mb()
  return out


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--steps", type=int, default=4)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--precision", nargs="+", default=["bfloat16", "float32"], choices=["bfloat16", "float32"])
  p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--out", default=None)
  args = p.parse_args(argv)
  if args.worker:
    print(json.dumps(_worker(args.precision, args.steps, args.warmup, args.batch)))
    return {}
  result = {"benchmark": "host_memory", "batch": args.batch, "steps": args.steps, "context_start": U.context()}
  for mode in MODES:
    env = dict(os.environ, SIGLIP_RINS_HOST_MEMORY=mode)
    cmd = [sys.executable, "-m", "benchmarks.bench_host_memory", "--worker", "--steps", str(args.steps)]
    cmd += ["--warmup", str(args.warmup), "--batch", str(args.batch), "--precision", *args.precision]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
      raise RuntimeError(f"{mode} worker failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    result[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
  result["reuse_speedup"] = {
    prec: result["system"][prec]["step_s_median"] / result["reuse"][prec]["step_s_median"] for prec in args.precision
  }
  result["context_end"] = U.context()
  result["machine"] = U.machine_info()
  return U.emit(result, args.out)


if __name__ == "__main__":
  main()
