"""Where a compiled training step spends its time: the project's real step (benchmarks/_util.TrainSetup, bench
config) compiled by XLA, its HLO read back, and (with --trace) one jax.profiler trace of a few steps.

Usage:
  python -m benchmarks.profile_step [--precision bfloat16] [--signature AB] [--loop scan] [--batch 64]
                                    [--trace --steps 2] [--out r.json]
      (~1 min on an idle 2-core machine with --trace; without it only the compile)

Reports (JSON, and a table on stderr):
* `dots`: every dot of the compiled HLO by where it runs (`ynn`: inside an XLA:CPU YNNPACK fusion, the fast
  matmul library; `generic`: XLA's own dot thunk), its operand dtypes (after XLA's type rewrites: a bf16 x bf16
  -> f32 dot that XLA upcasts shows up as f32 x f32) and whether it has batch dimensions (attention).
* `ops`: the step's top-level instructions by kind (the fusion kind named by XLA: `transpose_copy_fusion`,
  `wrapped_convert`, ...; YNNPACK fusions split into those with a dot and the rest), with counts and the bytes
  their operands and results occupy (a load-independent proxy for memory traffic; loop bodies counted once).
* with --trace: `time_ms_per_step` by the same kinds, from the profiler's per-thunk events (absolute times
  depend on the machine's load; the shares are what to compare).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _util as U  # noqa: E402
from siglip_rins.precision import POLICIES  # noqa: E402

_BYTES = {"f64": 8, "s64": 8, "u64": 8, "f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2, "s16": 2, "u16": 2}
_INST = re.compile(r"\s*(?:ROOT )?%([\w.\-]+) = (.+?) ([\w\-]+)\((.*)")
_SKIP = ("parameter", "get-tuple-element", "tuple", "constant", "bitcast")


def _nbytes(shape: str) -> int:
  total = 0
  for dt, dims in re.findall(r"(\w+)\[([\d,]*)\]", shape):
    n = 1
    for d in dims.split(","):
      n *= int(d) if d else 1
    total += n * _BYTES.get(dt, 1)
  return total


def parse_hlo(text: str) -> dict:
  """{computation: [(name, shape, opcode, rest of line)]}, the entry computation's name and name -> shape."""
  comps, shapes, entry, comp = collections.defaultdict(list), {}, None, None
  for line in text.splitlines():
    if line and not line.startswith(" ") and line.rstrip().endswith("{"):
      parts = line.split()
      comp = (parts[1] if parts[0] == "ENTRY" else parts[0]).lstrip("%")
      entry = comp if parts[0] == "ENTRY" else entry
      continue
    m = _INST.match(line)
    if m and comp:
      name, shape, op, rest = m.groups()
      shapes[name] = shape
      comps[comp].append((name, shape, op, rest))
  return dict(comps=comps, shapes=shapes, entry=entry)


def _called(rest: str) -> list[str]:
  out = []
  for key in ("calls", "body", "condition", "to_apply", "true_computation", "false_computation"):
    out += re.findall(rf"{key}=%([\w.\-]+)", rest)
  m = re.search(r"branch_computations=\{([^}]*)\}", rest)
  if m:
    out += [x.strip().lstrip("%") for x in m.group(1).split(",")]
  return out


def kind_of(name: str, rest: str, h: dict) -> str:
  """The category of a top-level instruction: its fusion kind (XLA's name stem), YNNPACK fusions split into
  'ynn_fusion(dot)' and 'ynn_fusion(other)'."""
  stem = name.split(".")[0]
  if stem == "ynn_fusion":
    calls = _called(rest)
    has_dot = any(op == "dot" for c in calls for _, _, op, _ in h["comps"].get(c, []))
    return "ynn_fusion(dot)" if has_dot else "ynn_fusion(other)"
  return stem


def analyse(text: str) -> dict:
  h = parse_hlo(text)
  shapes = h["shapes"]
  caller_kind = {}  # computation -> the category of the instruction that calls it
  for comp, insts in h["comps"].items():
    for name, _, op, rest in insts:
      for c in _called(rest):
        caller_kind.setdefault(c, "ynn" if name.startswith("ynn_fusion") else op)
  dots = collections.Counter()
  for comp, insts in h["comps"].items():
    for name, shape, op, rest in insts:
      if op != "dot":
        continue
      args = re.findall(r"%([\w.\-]+)", rest.split("), ")[0])[:2]
      dts = "x".join(shapes.get(a, "?").split("[")[0] for a in args)
      where = "ynn" if caller_kind.get(comp) == "ynn" else "generic"
      batched = "batched" if "lhs_batch_dims" in rest else "unbatched"
      dots[f"{where} {dts} -> {shape.split('[')[0]} {batched}"] += 1
  ops, op_bytes = collections.Counter(), collections.Counter()
  seen, stack = set(), [h["entry"]]
  while stack:  # the entry computation and the bodies of its loops / conditionals: executed instructions
    comp = stack.pop()
    if comp in seen:
      continue
    seen.add(comp)
    for name, shape, op, rest in h["comps"].get(comp, []):
      if op in _SKIP:
        continue
      if op in ("while", "conditional", "call"):
        stack += _called(rest)
        continue
      k = kind_of(name, rest, h)
      args = re.findall(r"%([\w.\-]+)", rest.split("), ")[0])
      ops[k] += 1
      op_bytes[k] += _nbytes(shape) + sum(_nbytes(shapes.get(a, "")) for a in args)
  return dict(
    dots=dict(dots.most_common()),
    ops={k: dict(count=ops[k], mbytes=round(op_bytes[k] / 1e6, 1)) for k, _ in op_bytes.most_common()},
    total_mbytes=round(sum(op_bytes.values()) / 1e6, 1),
    _h=h,
  )


def trace_times(setup, steps: int, h: dict) -> dict:
  """Milliseconds per step by category from a jax.profiler trace of `steps` steps."""
  import jax

  names = {}
  for insts in h["comps"].values():
    for name, _, _, rest in insts:
      names[name] = rest
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d, create_perfetto_trace=True):
      setup.run(steps)
    path = glob.glob(os.path.join(d, "**", "*perfetto_trace.json.gz"), recursive=True)[0]
    with gzip.open(path) as f:
      ev = json.load(f)
  ev = ev["traceEvents"] if isinstance(ev, dict) else ev
  tot = collections.Counter()
  for e in ev:
    n = e.get("name", "")
    if e.get("ph") != "X" or "dur" not in e or n not in names:
      continue
    tot[kind_of(n, names[n], h)] += e["dur"] / 1e3 / steps
  return {k: round(v, 2) for k, v in tot.most_common()}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--precision", default="bfloat16", choices=list(POLICIES))
  parser.add_argument("--signature", default="AB")
  parser.add_argument("--loop", default="scan", choices=["auto", "scan", "unroll"])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--trace", action="store_true", help="also time the step's instructions with jax.profiler")
  parser.add_argument("--steps", type=int, default=2, help="steps traced (after 2 warm-up steps)")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  if min(args.batch, args.steps) < 1:
    raise ValueError("--batch and --steps must be >= 1")
  cfg = U.bench_model_config(args.signature, loop=args.loop)
  cfg.pop("dtype", None)
  cfg["precision"] = args.precision
  result = dict(benchmark="profile_step", config=cfg, batch=args.batch, context_start=U.context())
  s = U.TrainSetup(cfg, batch=args.batch)
  a = analyse(s.lowered().compile().as_text())
  h = a.pop("_h")
  result.update(a)
  if args.trace:
    s.compile()
    s.run(2)
    t = trace_times(s, args.steps, h)
    result["time_ms_per_step"] = t
    result["time_ms_per_step_total"] = round(sum(t.values()), 1)
  result["context_end"] = U.context()
  print(f"dots ({args.precision}):", file=sys.stderr)
  for k, v in result["dots"].items():
    print(f"  {v:4d}  {k}", file=sys.stderr)
  t = result.get("time_ms_per_step", {})
  total_t = sum(t.values()) or 1.0
  print(f"{'kind':28s} {'count':>5s} {'MB':>8s} {'ms/step':>8s} {'share':>6s}", file=sys.stderr)
  for k, v in list(result["ops"].items())[:25]:
    ms = t.get(k)
    share = f"{100 * ms / total_t:5.1f}%" if ms is not None else ""
    print(f"{k:28s} {v['count']:5d} {v['mbytes']:8.1f} {ms if ms is not None else '':>8} {share:>6s}", file=sys.stderr)
  return U.emit(result, args.out)


if __name__ == "__main__":
  main()
