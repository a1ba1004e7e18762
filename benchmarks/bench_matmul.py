"""The machine's practical limit: jitted n^3 matmul FLOP/s in float32 and in bfloat16 (bf16 inputs, f32 accumulation).

Usage: python -m benchmarks.bench_matmul [--n 2048] [--repeats 7] [--out result.json]
Prints one JSON object: per dtype the median seconds per call, FLOP/s from the median (2 n^3 FLOPs per call) and
from the fastest call; the ratio bf16/f32 is measured in this one process, the two dtypes interleaved.
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _util as U


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--n", type=int, default=2048)
  parser.add_argument("--repeats", type=int, default=7, help="timed calls per dtype and round")
  parser.add_argument("--rounds", type=int, default=2, help="rounds, each measuring every dtype in turn")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  if args.n < 1 or args.repeats < 1 or args.rounds < 1:
    raise ValueError("--n, --repeats and --rounds must be >= 1")
  runs: dict[str, list[dict]] = {"float32": [], "bfloat16": []}
  for _ in range(args.rounds):
    for dt in runs:
      runs[dt].append(U.matmul_flops(dt, args.n, args.repeats))
  result = {"benchmark": "matmul", "n": args.n, "repeats": args.repeats, "rounds": args.rounds}
  for dt, rs in runs.items():
    result[dt] = {
      "flops_per_s": U.median([r["flops_per_s"] for r in rs]),
      "best_flops_per_s": max(r["best_flops_per_s"] for r in rs),
      "median_s": U.median([r["median_s"] for r in rs]),
    }
  result["bf16_over_f32"] = result["bfloat16"]["flops_per_s"] / result["float32"]["flops_per_s"]
  result["machine"] = U.machine_info()
  return U.emit(result, args.out)


if __name__ == "__main__":
  main()
