"""Interleaved A/B timing of the jitted bench-config train step under several precision policies, in ONE process
(ratios only mean something side by side on a shared machine).

Usage: python -m benchmarks.bench_bf16_variants [--policies bfloat16 bfloat16_act ...] [--rounds 4]
       [--steps_per_round 5] [--batch 64] [--out r.json]
Each round runs `--steps_per_round` steps of every policy in turn; per policy the median over rounds of each
round's fastest step is reported, and per policy the median over rounds of (baseline round median / policy round median), where
the baseline is the first policy listed.  (~4 min for 3 policies on an idle 2-core machine, compiles included.)

Measured (AMD EPYC, 2 shared cores, load 5-11; results_bf16_variants.json): against 'bfloat16' (bf16 operands,
f32 activations) the jmp-style bf16-activation policies are SLOWER: 'bfloat16_act' 0.85x / 0.93x,
'bfloat16_act_dotout' 0.90x, 'bfloat16_act_res16' 0.92x / 0.92x (two runs).  On XLA:CPU a product cannot
return bf16 without a float32 dot plus a separate convert pass, and bf16 elementwise work is computed in f32 with
converts, so halving the activation bytes does not pay for the extra converts.  Two throwaway variants of
'bfloat16' (code not kept; same parameter tree, same loss): q/k/v as one product with a stacked [D, 3, H, K]
kernel 0.99x (results_bf16_variants_qkv.json), and attention in [B, H, T, K] layout straight from the
projections (no operand transposes for the logits / value products) 0.98x (results_bf16_variants_bhtk.json).
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _util as U  # noqa: E402
from benchmarks.bench_precision import _model_cfg  # noqa: E402


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--policies", nargs="+", default=["bfloat16", "bfloat16_act", "bfloat16_act_res16", "float32"])
  parser.add_argument("--rounds", type=int, default=8)
  parser.add_argument("--steps_per_round", type=int, default=3)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  context_start = U.context()
  setups = {}
  for p in args.policies:
    s = U.TrainSetup(_model_cfg(p), batch=args.batch)
    s.compile()
    s.run(1)
    setups[p] = s
  times = {p: [] for p in setups}
  for _ in range(args.rounds):
    for p, s in setups.items():
      times[p].append(min(U.timed(lambda: s.run_one())[0] for _ in range(args.steps_per_round)))
  base = args.policies[0]
  result = {
    "benchmark": "bf16_variants",
    "context_start": context_start,
    "batch": args.batch,
    "rounds": args.rounds,
    "steps_per_round": args.steps_per_round,
    "baseline": base,
    "step_s_median": {p: U.median(t) for p, t in times.items()},
    "step_s_rounds": times,
    "speedup_vs_baseline": {p: U.median([a / b for a, b in zip(times[base], t)]) for p, t in times.items()},
    "loss_after": {p: float(s.last_metrics["loss"]) for p, s in setups.items()},
  }
  result["context_end"] = U.context()
  return U.emit(result, args.out)


if __name__ == "__main__":
  main()
