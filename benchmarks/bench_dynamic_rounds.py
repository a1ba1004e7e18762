"""Inference rounds as a run-time argument (recursion.DynamicRounds) against one static program per rounds value.

Model: the bench image tower (ViT 64x64/8, width 256, depth 6 split as A = B = 3 layers, MAP pooling) trained as
A^2B, random weights.  For each precision: compile + first call of the static programs for r in `--rounds` and of
the one DynamicRounds program (max_rounds = recursion.rounds_bucket(max r)); then the forward pass of a batch at
each r, static and dynamic taking turns (`--repeats` rounds), medians; and the largest absolute difference of
their outputs.  What the Predictor gained: one compile serves r = 1..4 (evaluators sweep r); what it must not
lose: speed at any r (positions past r are skipped by a `cond`).

Usage: python -m benchmarks.bench_dynamic_rounds [--batch 64] [--rounds 1 2 4] [--repeats 7]
       [--precision float32 bfloat16] [--out result.json]
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _util as U


def run(batch: int, rounds_list, repeats: int, precision: str) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from benchmarks.bench_recursion import image_tower
  from siglip_rins.recursion import DynamicRounds, rounds_bucket

  model = image_tower(2, "auto", False, precision)  # A^2B, the trainer's default loop form
  images = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (batch, 64, 64, 3)), jnp.float32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), images[:1])["params"]
  bucket = rounds_bucket(max(rounds_list))
  out = {"precision": precision, "max_rounds": bucket, "compile_s": {}, "rows": []}
  static = {}
  for r in rounds_list:  # compile + first call of each static program
    static[r] = jax.jit(lambda p, x, r=r: model.apply({"params": p}, x, rounds=r)[0])
    out["compile_s"][f"static r={r}"] = round(U.timed(lambda r=r: static[r](params, images))[0], 3)
  dyn = jax.jit(lambda p, x, r: model.apply({"params": p}, x, rounds=DynamicRounds(r, bucket))[0])
  out["compile_s"]["dynamic"] = round(U.timed(lambda: dyn(params, images, jnp.int32(1)))[0], 3)
  out["compile_s"]["static total"] = round(sum(out["compile_s"][f"static r={r}"] for r in rounds_list), 3)
  calls = {}
  for r in rounds_list:
    calls["static", r] = lambda r=r: static[r](params, images)
    calls["dynamic", r] = lambda r=r: dyn(params, images, jnp.int32(r))
  times = {k: [] for k in calls}
  for _ in range(repeats):  # taking turns: every configuration sees the same load
    for k, fn in calls.items():
      times[k] += U.time_calls(fn, warmup=0, repeats=1)
  for r in rounds_list:
    s, d = U.median(times["static", r]), U.median(times["dynamic", r])
    diff = float(jnp.abs(calls["static", r]() - calls["dynamic", r]()).max())
    out["rows"].append(
      dict(r=r, static_s=round(s, 4), dynamic_s=round(d, 4), dynamic_over_static=round(d / s, 3), max_abs_diff=diff)
    )
  return out


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--rounds", type=int, nargs="+", default=[1, 2, 4])
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--precision", nargs="+", default=["float32", "bfloat16"])
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  if args.batch < 1 or args.repeats < 1 or min(args.rounds) < 1:
    raise ValueError("--batch, --repeats and every --rounds value must be >= 1")
  start = U.context()
  result = {
    "benchmark": "dynamic_rounds",
    "model": "bench image tower (ViT 64x64/8, width 256, A=3 layers, B=3 layers), A^2B",
    "batch": args.batch,
    "repeats": args.repeats,
    "runs": [run(args.batch, args.rounds, args.repeats, p) for p in args.precision],
    "machine": U.machine_info(),
    "start": start,
    "end": U.context(),
  }
  return U.emit(result, args.out)


if __name__ == "__main__":
  main()
