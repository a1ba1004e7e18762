"""Peak training memory of A^rB versus AB at the same batch, from the compiled training step's memory analysis.

Usage: python -m benchmarks.bench_memory [--signature A^3B] [--loop scan] [--batch 64] [--rss] [--out r.json]

For each of AB, A^rB with per-round rematerialisation (recursion remat=True) and A^rB without it, the project's
real jitted train step (state donated) is compiled and XLA's `memory_analysis()` read:
  argument bytes (params + Adam state + batch), output bytes, alias bytes (outputs written in place of donated
  arguments) and temp bytes (activations kept for the backward pass and scratch).
`total_bytes` = temp + argument + output - alias (the buffers live at the peak of one step);
`temp_plus_arg_plus_out` is the plain sum as well.  Ratios are to AB.  Deterministic: no timing involved.
`--rss` also runs one step of each in a fresh subprocess and reports its peak resident set size (ru_maxrss).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _util as U


def compiled_memory(signature: str, loop: str, remat: bool, batch: int, model: str = "bench") -> dict:
  """memory_analysis() of the compiled train step for one configuration (bytes)."""
  s = U.TrainSetup(
    U.bench_model_config(signature, loop=loop, remat=remat, model=model),
    batch=batch,
    image_size=U.image_size_of(model),
    text_len=U.text_len_of(model),
  )
  ma = s.lowered().compile().memory_analysis()
  if ma is None:
    raise RuntimeError("this backend gives no memory_analysis() for compiled programs")
  d = dict(
    signature=signature,
    loop=loop,
    remat=remat,
    batch=batch,
    argument_bytes=int(ma.argument_size_in_bytes),
    output_bytes=int(ma.output_size_in_bytes),
    alias_bytes=int(ma.alias_size_in_bytes),
    temp_bytes=int(ma.temp_size_in_bytes),
  )
  d["total_bytes"] = d["temp_bytes"] + d["argument_bytes"] + d["output_bytes"] - d["alias_bytes"]
  d["temp_plus_arg_plus_out"] = d["temp_bytes"] + d["argument_bytes"] + d["output_bytes"]
  return d


def peak_rss(signature: str, loop: str, remat: bool, batch: int) -> int:
  """Peak RSS (bytes) of a fresh process that builds the state and runs two training steps."""
  code = (
    "import resource, sys; sys.path.insert(0, %r); from benchmarks import _util as U; "
    "s = U.TrainSetup(U.bench_model_config(%r, loop=%r, remat=%r), batch=%d); s.compile(); s.run(1); "
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)"
    % (os.path.dirname(os.path.dirname(os.path.abspath(__file__))), signature, loop, remat, batch)
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  return int(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--signature", default="A^3B")
  parser.add_argument("--loop", default="scan", choices=["scan", "unroll"])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--rss", action="store_true", help="also measure peak RSS in subprocesses (slow)")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  if args.batch < 1:
    raise ValueError(f"--batch must be >= 1, got {args.batch}")
  cases = [("AB", args.loop, False), (args.signature, args.loop, True), (args.signature, args.loop, False)]
  entries = [compiled_memory(sig, loop, remat, args.batch) for sig, loop, remat in cases]
  base = entries[0]
  for e in entries:
    e["total_over_AB"] = e["total_bytes"] / base["total_bytes"]
    e["temp_plus_arg_plus_out_over_AB"] = e["temp_plus_arg_plus_out"] / base["temp_plus_arg_plus_out"]
    e["temp_over_AB"] = e["temp_bytes"] / base["temp_bytes"]
    if args.rss:
      e["peak_rss_bytes"] = peak_rss(e["signature"], e["loop"], e["remat"], args.batch)
  if args.rss:
    for e in entries:
      e["peak_rss_over_AB"] = e["peak_rss_bytes"] / base["peak_rss_bytes"]
  remat = entries[1]
  result = {
    "benchmark": "memory",
    "batch": args.batch,
    "entries": entries,
    "target_ratio": 1.3,
    "remat_ratio": remat["total_over_AB"],
    "met": remat["total_over_AB"] <= 1.3,
    "machine": U.machine_info(),
  }
  return U.emit(result, args.out)


if __name__ == "__main__":
  main()
