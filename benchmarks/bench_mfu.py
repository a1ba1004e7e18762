"""Model-FLOPs utilisation (MFU) of the SigLIP-RINS training step on every local device (GPU/TPU/CPU).

Usage:
  python -m benchmarks.bench_mfu                       # SigLIP-RINS-B/16 A^3B, 224 px, text 64, bf16 policy
                                                       # (bfloat16_act, fused attention, unrolled rounds)
  python -m benchmarks.bench_mfu --size small          # reduced size that runs on a CPU in seconds (the test)
  python -m benchmarks.bench_mfu --precision float32 --batch_per_device 128 --signature AB --mesh data=-1
  options: [--steps 10] [--matmul_n 8192] [--init device|host] [--mesh data=-1,fsdp=1] [--out r.json]
           [--attention einsum|fused] [--loop auto|scan|unroll] [--remat none|dots|full|...]
  python -m benchmarks.bench_mfu --sweep --out sweep.json   # the variants of SWEEP, one process each

`--sweep` runs every entry of SWEEP (precision policy x attention implementation x loop form) in its own
process (an out-of-memory or compile failure loses one row, not the run), with the same size/batch/steps,
and writes all rows to --out as they finish (so a run cut short keeps what it measured).

What it does: builds the model with `model.precision` (default 'bfloat16_act', the jmp/levanter bf16 compute
dtype: bf16 matmul operands with f32 accumulation, bf16 activations between products, f32 parameters/optimizer,
f32 LayerNorm statistics, softmax, pooled embeddings, logits and loss; siglip_rins/precision.py), attention
'fused' (cuDNN flash attention on a GPU) and the rounds unrolled without remat (the fastest variant measured on
an H200, benchmarks/RESULTS.md section 6; every axis is a flag, and `--sweep` runs the others), the trainer's own
step (ContrastiveTask, make_optimizer (Adam), make_train_step) jitted with the trainer's shardings: the state
placed by `train.init_state` on the mesh of siglip_rins/sharding.py (default: data parallel over all local
devices, `{'data': -1, 'fsdp': 1}`; `--mesh` takes the trainer's mesh config), the batch split over the mesh.
Then it measures the device's bf16 matmul peak (an n^3 matmul with bf16 operands and f32 accumulation on every
device at once, sharded over the mesh) and the step time, and reports

  MFU = analytic model FLOPs per step (siglip_rins.flops: 2 per MAC, backward = 2x forward) / step seconds
        / (measured peak FLOP/s of all devices together).

Model 'B16_A3B' (default): image ViT-B/16 (width 768, depth 12 -> A = B = 6 layers, A run 3 times: 24 layer
applications), MAP pooling; text B (vocab 32000, 64 tokens) with a head to 768; batch 256 per device.
Size 'small': image mu/8 at 32 px, text mu (vocab 1000, 16 tokens), A^3B, batch 8 per device, matmul 512^3.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _util as U  # noqa: E402

SIZES = {
  "B16_A3B": dict(
    model=dict(
      name="two_towers",
      image=dict(variant="B/16", pool_type="map"),
      text=dict(variant="B", vocab_size=32000),
      out_dim=(None, 768),
    ),
    image_size=224,
    text_len=64,
    batch_per_device=256,
    matmul_n=8192,
    steps=10,
  ),
  "small": dict(
    model=dict(
      name="two_towers",
      image=dict(variant="mu/8", pool_type="map"),
      text=dict(variant="mu", vocab_size=1000),
      out_dim=(None, 64),
    ),
    image_size=32,
    text_len=16,
    batch_per_device=8,
    matmul_n=512,
    steps=2,
  ),
}


# (name, precision, attention, loop, remat): the GPU sweep, most important first.  'auto' is the trainer's
# default loop (scan, saving only matmul outputs for the backward pass: remat 'dots').
SWEEP = [
  ("bf16act_fused_unroll", "bfloat16_act", "fused", "unroll", "none"),
  ("bf16", "bfloat16", "einsum", "auto", None),
  ("bf16_fused_scan", "bfloat16", "fused", "scan", "none"),
  ("bf16act_fused_scan", "bfloat16_act", "fused", "scan", "none"),
  ("bf16_einsum_unroll", "bfloat16", "einsum", "unroll", "none"),
  ("bf16act_res16_fused_unroll", "bfloat16_act_res16", "fused", "unroll", "none"),
  ("f32", "float32", "einsum", "auto", None),
]


def parse_remat(value):
  """'none' -> False (save every activation), 'true' -> True, else the name ('dots', 'full', ...)."""
  if value is None or value == "default":
    return None
  return {"none": False, "false": False, "true": True}.get(value.lower(), value)


def parse_mesh(spec: str | None):
  """'data=-1,fsdp=1' -> {'data': -1, 'fsdp': 1}; None -> None (the trainer's default: all devices on 'data')."""
  if not spec:
    return None
  out = {}
  for part in spec.split(","):
    name, _, size = part.partition("=")
    out[name.strip()] = int(size)
  return out


def matmul_peak(mesh, n: int, repeats: int = 5) -> dict:
  """Aggregate FLOP/s of one n^3 matmul per device (bf16 operands, f32 accumulation), run on all devices of
  `mesh` at once (a [devices, n, n] batch sharded over the mesh's axes)."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding, PartitionSpec as P

  d = mesh.size
  sh = NamedSharding(mesh, P(tuple(mesh.axis_names)))
  make = jax.jit(
    lambda k: jax.random.normal(k, (d, n, n), jnp.float32).astype(jnp.bfloat16), out_shardings=sh
  )  # fmt: skip
  a, b = make(jax.random.PRNGKey(0)), make(jax.random.PRNGKey(1))
  f = jax.jit(lambda x, y: jnp.einsum("bij,bjk->bik", x, y, preferred_element_type=jnp.float32), out_shardings=sh)
  times = U.time_calls(lambda: f(a, b), warmup=2, repeats=repeats)
  fl = 2.0 * n**3 * d
  return dict(n=n, devices=d, median_s=U.median(times), flops_per_s=fl / U.median(times), best=fl / min(times))


def run(
  size: str,
  signature: str,
  precision: str,
  batch_per_device,
  steps,
  matmul_n,
  mesh_spec,
  attention: str = "einsum",
  loop: str = "auto",
  remat=None,
  init: str = "host",
) -> dict:
  import jax
  import numpy as np
  from siglip_rins import flops, optim, sharding, train
  from siglip_rins.models import build_model
  from siglip_rins.tasks import get_task

  spec = SIZES[size]
  batch_per_device = batch_per_device or spec["batch_per_device"]
  steps = steps or spec["steps"]
  matmul_n = matmul_n or spec["matmul_n"]
  mesh = sharding.make_mesh(parse_mesh(mesh_spec))
  batch = batch_per_device * mesh.size
  recursion = dict(signature=signature, loop=loop)
  if remat is not None:
    recursion["remat"] = remat
  model_cfg = dict(spec["model"], precision=precision, attention=attention, recursion=recursion)
  config = U.train_config(model_cfg, batch, spec["image_size"], spec["text_len"])
  if mesh_spec:
    config.mesh = parse_mesh(mesh_spec)
  model = build_model(config.model)
  task = get_task(config, mesh)  # as the trainer: the sigmoid loss sharded over the batch axes
  tx, schedule_fn = optim.make_optimizer(config, config.total_steps, batch_size=batch)
  t_start = time.perf_counter()
  progress = lambda what: print(
    f"[bench_mfu] {time.perf_counter() - t_start:7.1f} s {what}", file=sys.stderr, flush=True
  )
  peak = matmul_peak(mesh, matmul_n)  # first: a run cut short by its time limit still reports the peak
  progress(f"bf16 matmul peak {peak['flops_per_s'] / 1e12:.1f} TFLOP/s ({matmul_n}^3 on {mesh.size} device(s))")
  state = train.init_state(model, task, tx, mesh, config, jax.random.PRNGKey(0), on_host=init == "host")
  progress(f"state initialised (on the {'host CPU' if init == 'host' else 'mesh'})")
  state_sh = train.state_shardings(state)
  step = jax.jit(
    train.make_train_step(model, task, tx, schedule_fn, 0),
    in_shardings=(state_sh, sharding.batch_sharding(mesh)),
    out_shardings=(state_sh, None),
    donate_argnums=(0,),
  )
  rng = np.random.default_rng(0)
  local = batch // jax.process_count()
  data = sharding.make_global_batch(
    {
      "image": rng.uniform(-1, 1, (local, spec["image_size"], spec["image_size"], 3)).astype(np.float32),
      "labels": rng.integers(0, model_cfg["text"]["vocab_size"], (local, spec["text_len"])).astype(np.int32),
    },
    mesh,
  )
  flops_per_step = flops.train_flops_per_example(model, task.input_shapes()) * batch
  t0 = time.perf_counter()
  step = step.lower(state, data).compile()
  hlo = step.as_text()
  progress(f"compiled ({flops_per_step / 1e12:.2f} TFLOP per step)")
  state, m = step(state, data)
  jax.block_until_ready(m["loss"])
  compile_s = time.perf_counter() - t0
  progress("first step done")
  times = []
  for i in range(steps):
    t0 = time.perf_counter()
    state, m = step(state, data)
    jax.block_until_ready(m["loss"])
    times.append(time.perf_counter() - t0)
    progress(
      f"step {i + 1}/{steps}: {times[-1] * 1e3:.1f} ms, MFU {flops_per_step / times[-1] / peak['flops_per_s']:.3f}"
    )
  step_s = U.median(times)
  achieved = flops_per_step / step_s
  return dict(
    size=size,
    signature=signature,
    precision=precision,
    attention=attention,
    loop=loop,
    remat=remat,
    init=init,
    mesh={k: int(v) for k, v in mesh.shape.items()},
    devices=mesh.size,
    device_kind=str(jax.devices()[0].device_kind),
    xla_flags=os.environ.get("XLA_FLAGS", ""),
    platform=jax.default_backend(),
    batch=batch,
    batch_per_device=batch_per_device,
    params=int(sum(x.size for x in jax.tree.leaves(state["params"]))),
    flops_per_step=flops_per_step,
    compile_plus_first_step_s=compile_s,
    cudnn_fused_attention_calls=hlo.count("cudnn$fmha"),  # > 0: attention='fused' runs cuDNN's kernel
    step_s_median=step_s,
    step_s=times,
    examples_per_s=batch / step_s,
    achieved_tflop_per_s=achieved / 1e12,
    bf16_matmul_peak=peak,
    bf16_matmul_peak_tflop_per_s=peak["flops_per_s"] / 1e12,
    mfu=achieved / peak["flops_per_s"],
    loss=float(m["loss"]),
    finite=bool(m["finite"]),
  )


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
    "--size", default="B16_A3B", choices=sorted(SIZES) + ["auto"], help="'auto': small on a CPU, else B16_A3B"
  )
  parser.add_argument("--signature", default="A^3B")
  parser.add_argument("--precision", default="bfloat16_act", help="a model.precision policy (siglip_rins.precision)")
  parser.add_argument("--attention", default="fused", choices=["einsum", "fused"])
  parser.add_argument("--loop", default="unroll", choices=["auto", "scan", "unroll"])
  parser.add_argument(
    "--remat", default="none", help="recursion.remat: none | true | dots | full | dots_no_batch | default (the loop's)"
  )
  parser.add_argument(
    "--init", default="host", choices=["device", "host"], help="'host' (single process): initialise on the CPU"
  )
  parser.add_argument("--sweep", action="store_true", help="run every variant of SWEEP, one process each")
  parser.add_argument("--timeout", type=float, default=240.0, help="--sweep: seconds per variant")
  parser.add_argument("--batch_per_device", type=int, default=None)
  parser.add_argument("--steps", type=int, default=None)
  parser.add_argument("--matmul_n", type=int, default=None)
  parser.add_argument("--mesh", default=None, help="the trainer's mesh, e.g. 'data=-1,fsdp=1' (default) or 'fsdp=-1'")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  if args.size == "auto":
    import jax

    args.size = "small" if jax.default_backend() == "cpu" else "B16_A3B"
  if args.sweep:
    return sweep(args)
  result = {"benchmark": "mfu", "context_start": U.context()}
  result.update(
    run(
      args.size,
      args.signature,
      args.precision,
      args.batch_per_device,
      args.steps,
      args.matmul_n,
      args.mesh,
      args.attention,
      args.loop,
      parse_remat(args.remat),
      args.init,
    )
  )
  result["context_end"] = U.context()
  result["machine"] = U.machine_info()
  return U.emit(result, args.out)


def sweep(args) -> dict:
  """Runs each SWEEP variant in a subprocess (this file, same options); rows are written to --out as they end."""
  import json
  import subprocess
  import tempfile

  result = {"benchmark": "mfu_sweep", "context_start": U.context(), "machine": U.machine_info(), "rows": []}
  for name, precision, attention, loop, remat in SWEEP:
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
      cmd = [sys.executable, "-m", "benchmarks.bench_mfu", "--size", args.size, "--signature", args.signature]
      cmd += ["--precision", precision, "--attention", attention, "--loop", loop, "--out", tmp.name]
      cmd += ["--init", args.init]
      cmd += ["--remat", remat if remat is not None else "default"]
      for flag in ("batch_per_device", "steps", "matmul_n", "mesh"):
        if getattr(args, flag) is not None:
          cmd += [f"--{flag}", str(getattr(args, flag))]
      t0 = time.perf_counter()
      root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
      try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=root)
        ok = proc.returncode == 0
        row = json.load(open(tmp.name)) if ok else {"error": proc.stderr.strip().splitlines()[-3:]}
      except subprocess.TimeoutExpired:
        row = {"error": f"timed out after {args.timeout:.0f} s"}
      except (OSError, ValueError) as e:
        row = {"error": f"{type(e).__name__}: {e}"}
    row.update(variant=name, wall_s=time.perf_counter() - t0)
    result["rows"].append(row)
    print(
      f"{name:28s} "
      + (
        f"step {row['step_s_median'] * 1e3:8.1f} ms  {row['achieved_tflop_per_s']:7.1f} TFLOP/s  "
        f"peak {row['bf16_matmul_peak_tflop_per_s']:6.1f}  MFU {row['mfu']:.3f}  compile {row['compile_plus_first_step_s']:.1f} s"
        if "mfu" in row
        else f"error: {row['error']}"
      ),
      flush=True,
    )
    if args.out:
      with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
  result["context_end"] = U.context()
  return U.emit(result, args.out)


if __name__ == "__main__":
  main()
