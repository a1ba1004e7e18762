"""Training-step throughput of the project's real step (build_model + ContrastiveTask + make_optimizer +
make_train_step, jitted) for A^rB signatures, as examples/s and as a fraction of the matmul limit measured in the
same process.

Usage:
  python -m benchmarks.bench_train_step [--signatures AB A^2B A^3B] [--loops scan unroll] [--rounds 4]
      [--steps_per_round 2] [--model bench|B/16|...] [--dtype float32|bfloat16] [--batch 64] [--out r.json]
      [--xla_variants]

Method: every configuration is compiled first; then `--rounds` rounds each time a jitted f32 (or bf16) 2048^3
matmul and `--steps_per_round` steps of every configuration in turn, so all figures see the same machine load.
fraction_of_peak = (analytic training FLOPs / step seconds) / (matmul FLOP/s of the same round); reported as the
median over rounds (wall clock) and also from process CPU seconds (less sensitive to other processes).
AB has no repeated block, so its 'scan' and 'unroll' forms are the same program and AB is run once.

`--xla_variants` additionally compares XLA:CPU flag sets on the AB step: each set runs in its own worker process
(XLA flags are read at start-up) and the workers take turns, so the speed ratios are measured under one load.
On a GPU/TPU, `--model B/16 --dtype bfloat16 --batch 256` measures model-FLOPs utilisation the same way.
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _util as U

# XLA:CPU flag sets compared by --xla_variants (results stay within float rounding of the default): wider
# vectors; oneDNN for dots; XLA's experimental oneDNN fusions of dots (and of dots with element-wise ops).
XLA_VARIANTS = {
  "default": "",
  "vector_width_512": "--xla_cpu_prefer_vector_width=512",
  "onednn": "--xla_cpu_use_onednn=true",
  "onednn_dot": "--xla_cpu_experimental_onednn_fusion_type=dot",
  "onednn_dot_eltwise": "--xla_cpu_experimental_onednn_fusion_type=dot,eltwise",
}


def _configs(signatures, loops):
  out = []
  for sig in signatures:
    from siglip_rins.recursion import parse_signature

    letters, _ = parse_signature(sig)
    repeated = len(set(letters)) < len(letters)
    for loop in loops if repeated else loops[:1]:
      out.append((sig, loop))
  return out


def measure(
  signatures, loops, model="bench", dtype="float32", batch=64, rounds=4, steps_per_round=2, remat=False
) -> dict:
  """Compiles each (signature, loop), then interleaves matmul and step timings; returns the result dict."""
  import numpy as np

  peak_dtype = "bfloat16" if dtype == "bfloat16" else "float32"
  setups = {}
  for sig, loop in _configs(signatures, loops):
    s = U.TrainSetup(
      U.bench_model_config(sig, loop=loop, remat=remat, model=model, dtype=dtype),
      batch=batch,
      image_size=U.image_size_of(model),
      text_len=U.text_len_of(model),
    )
    s.compile()
    setups[(sig, loop)] = s
  peaks, walls, cpus = [], {k: [] for k in setups}, {k: [] for k in setups}
  peak_cpu = []
  for _ in range(rounds):
    mm = U.matmul_flops(peak_dtype, 2048, repeats=3)
    peaks.append(mm["flops_per_s"])
    import jax
    import jax.numpy as jnp

    a = jnp.ones((2048, 2048), jnp.float32 if peak_dtype == "float32" else jnp.bfloat16)
    f = jax.jit(lambda x: jnp.dot(x, x, preferred_element_type=jnp.float32))
    f(a).block_until_ready()
    w, c = U.timed(lambda: f(a))
    peak_cpu.append(2 * 2048**3 / c)
    for key, s in setups.items():
      for _ in range(steps_per_round):
        w, c = U.timed(lambda: s.run_one())
        walls[key].append(w)
        cpus[key].append(c)
  entries = []
  base_wall = None
  for (sig, loop), s in setups.items():
    step_s = U.median(walls[(sig, loop)])
    # per-round fraction: this round's median step vs this round's matmul
    per_round = np.asarray(walls[(sig, loop)]).reshape(rounds, steps_per_round).min(axis=1)
    frac_rounds = [(s.flops_per_step / t) / p for t, p in zip(per_round, peaks)]
    cpu_frac = (s.flops_per_step / U.median(cpus[(sig, loop)])) / U.median(peak_cpu)
    e = dict(
      signature=sig,
      loop=loop,
      remat=remat,
      params=s.params,
      flops_per_step=s.flops_per_step,
      compile_plus_first_step_s=s.compile_s,
      step_s_median=step_s,
      step_s_min=min(walls[(sig, loop)]),
      examples_per_s=batch / step_s,
      achieved_flops_per_s=s.flops_per_step / step_s,
      fraction_of_peak=U.median(frac_rounds),
      fraction_of_peak_cpu_time=cpu_frac,
      fraction_of_peak_best=(s.flops_per_step / min(walls[(sig, loop)])) / max(peaks),
      loss=float(s.last_metrics["loss"]),
    )
    if sig == signatures[0]:
      base_wall = base_wall or step_s
    entries.append(e)
  for e in entries:
    e["step_time_over_first"] = e["step_s_median"] / base_wall
  return dict(
    model=model,
    dtype=dtype,
    batch=batch,
    rounds=rounds,
    steps_per_round=steps_per_round,
    peak_dtype=peak_dtype,
    peak_flops_per_s_median=U.median(peaks),
    peak_flops_per_s_rounds=peaks,
    peak_flops_per_cpu_s=U.median(peak_cpu),
    entries=entries,
  )


# ------------------------------------------------------------------------------------------- XLA flag variants
def _worker_main(model, dtype, batch):
  """Worker mode (--worker): serves 'step' (time n AB steps) and 'matmul' requests under this process's flags."""
  s = U.TrainSetup(
    U.bench_model_config("AB", model=model, dtype=dtype),
    batch=batch,
    image_size=U.image_size_of(model),
    text_len=U.text_len_of(model),
  )
  s.compile()

  def step(n=1):
    ws, cs = zip(*[U.timed(lambda: s.run_one()) for _ in range(n)])
    return {
      "wall": list(ws),
      "cpu": list(cs),
      "loss": float(s.last_metrics["loss"]),
      "flops_per_step": s.flops_per_step,
      "compile_s": s.compile_s,
    }

  def matmul(repeats=3):
    return U.matmul_flops("float32", 2048, repeats)

  U.serve({"step": step, "matmul": matmul})


def measure_xla_variants(model="bench", dtype="float32", batch=64, rounds=4, steps_per_round=2) -> dict:
  """AB step time under each XLA_VARIANTS flag set, workers interleaved.  Returns per-variant medians, the
  speed-up over 'default' (median of per-round ratios) and the f32 2048^3 matmul rate under the same flags (timed
  in the same rounds), which tells a faster GEMM from a faster step."""
  workers = {}
  try:
    for name, flags in XLA_VARIANTS.items():
      env = dict(os.environ)
      env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flags).strip()
      workers[name] = U.Worker(
        [
          sys.executable,
          os.path.abspath(__file__),
          "--worker",
          "--model",
          model,
          "--dtype",
          dtype,
          "--batch",
          str(batch),
        ],
        env=env,
      )
    times = {n: [] for n in workers}
    gemm = {n: [] for n in workers}
    losses = {}
    for _ in range(rounds):
      for name, w in workers.items():
        r = w.request("step", n=steps_per_round)
        times[name].append(min(r["wall"]))
        losses[name] = r["loss"]
        gemm[name].append(w.request("matmul", repeats=3)["flops_per_s"])
    out = {}
    for name in workers:
      ratios = [d / t for d, t in zip(times["default"], times[name])]
      out[name] = dict(
        flags=XLA_VARIANTS[name],
        step_s_median=U.median(times[name]),
        speedup_over_default=U.median(ratios),
        matmul_f32_flops_per_s=U.median(gemm[name]),
        loss_after_steps=losses[name],
      )
    return out
  finally:
    for w in workers.values():
      w.close()


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--signatures", nargs="+", default=["AB", "A^2B", "A^3B"])
  parser.add_argument("--loops", nargs="+", default=["scan", "unroll"], choices=["scan", "unroll"])
  parser.add_argument("--model", default="bench", help="'bench' (the bench config) or a ViT variant like B/16")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--rounds", type=int, default=4)
  parser.add_argument("--steps_per_round", type=int, default=2)
  parser.add_argument("--remat", action="store_true", help="rematerialise each recursion round")
  parser.add_argument("--xla_variants", action="store_true", help="also compare XLA:CPU flag sets (AB)")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  if args.batch < 1 or args.rounds < 1 or args.steps_per_round < 1:
    raise ValueError("--batch, --rounds and --steps_per_round must be >= 1")
  if args.worker:
    _worker_main(args.model, args.dtype, args.batch)
    return {}
  import jax

  result = {"benchmark": "train_step", "device": str(jax.devices()[0].device_kind), "platform": jax.default_backend()}
  result.update(
    measure(
      args.signatures, args.loops, args.model, args.dtype, args.batch, args.rounds, args.steps_per_round, args.remat
    )
  )
  if args.xla_variants:
    result["xla_variants"] = measure_xla_variants(args.model, args.dtype, args.batch, args.rounds, args.steps_per_round)
  result["target_fraction_of_peak"] = 0.75
  result["machine"] = U.machine_info()
  return U.emit(result, args.out)


if __name__ == "__main__":
  main()
