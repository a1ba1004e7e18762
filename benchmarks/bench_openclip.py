"""Peer comparison: the bench config trained with open_clip (PyTorch CPU, eager and torch.compile) versus the
project's jitted JAX training step, measured in one run with the two frameworks taking turns.

Usage (driver, the project's interpreter):
  python -m benchmarks.bench_openclip [--rounds 4] [--steps_per_round 2] [--no_compile] [--python PY] [--out r.json]
Worker (started by the driver; open_clip's own environment, see benchmarks/README.md):
  /tmp/bench-venv/bin/python benchmarks/bench_openclip.py --worker [--modes eager compile autocast]
  (mode 'autocast': eager with `torch.autocast("cpu", dtype=torch.bfloat16)` around forward + loss; used by
  benchmarks/bench_precision.py)

The open_clip model matches the bench config as closely as open_clip allows: vision VisionTransformer (width 256,
6 layers, 4 heads, mlp_ratio 4, patch 8, image 64, learned positions, no ln_pre, attentional pooler with 1 query
and 4 heads), text TextTransformer (vocab 32000, context 16, width 256, 4 heads, 6 layers, no causal mask, 'last'
pooling, projection with bias), embed_dim 256, SigLipLoss with logit scale log(10) and bias -10; Adam lr 1e-3;
2 threads.  Remaining differences (open_clip's class token and extra position, ln_post and the image projection;
its pooler has query/key LayerNorms but no MLP) are reported as the parameter difference.

Method: the JAX step (AB) and the torch steps are all warmed up first; then `--rounds` rounds each run
`--steps_per_round` steps of JAX, open_clip eager and open_clip compiled in turn (the idle process waits on a
pipe), so all see the same machine load.  speedup = JAX examples/s / open_clip examples/s, median of per-round
ratios, reported against each torch mode and against the faster one (goal of issue 14: >= 1.0 in float32;
the bf16 policy against torch.autocast is bench_precision.py).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BENCH_VENV = os.environ.get("SIGLIP_RINS_BENCH_VENV", "/tmp/bench-venv")
THREADS = 2
TARGET = 1.0  # ours (float32) / the faster open_clip float32 mode; issue 14's goal


# ------------------------------------------------------------------------------------------- torch worker
TORCHVISION_STUBBED = False


def import_open_clip():
  """Imports open_clip.  open_clip (through timm) imports torchvision, whose PyPI wheel does not load its
  operator library beside the CPU build of torch (`torchvision::nms does not exist` while torchvision registers
  fake kernels for its detection ops).  The training step uses none of those ops, so on that error the
  registration module is replaced by an empty one and the import retried (TORCHVISION_STUBBED says so)."""
  global TORCHVISION_STUBBED
  try:
    import open_clip
  except RuntimeError as e:
    if "torchvision::" not in str(e):
      raise
    import types

    for mod in [m for m in sys.modules if m == "torchvision" or m.startswith(("torchvision.", "open_clip", "timm"))]:
      del sys.modules[mod]
    sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
    TORCHVISION_STUBBED = True
    import open_clip
  return open_clip


def build_open_clip(batch: int = 64):
  """The open_clip CLIP of the bench config, its Adam optimiser and SigLIP loss.  Returns (model, opt, loss)."""
  open_clip = import_open_clip()
  import torch
  from open_clip.loss import SigLipLoss

  vision = dict(
    width=256,
    layers=6,
    head_width=64,
    mlp_ratio=4.0,
    patch_size=8,
    image_size=64,
    attentional_pool=True,
    attn_pooler_queries=1,
    attn_pooler_heads=4,
    no_ln_pre=True,
    pos_embed_type="learnable",
  )
  text = dict(
    context_length=16,
    vocab_size=32000,
    width=256,
    heads=4,
    layers=6,
    mlp_ratio=4.0,
    no_causal_mask=True,
    pool_type="last",
    proj_bias=True,
  )
  model = open_clip.CLIP(
    embed_dim=256,
    vision_cfg=vision,
    text_cfg=text,
    init_logit_scale=math.log(10.0),
    init_logit_bias=-10.0,
    output_dict=True,
  )
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)
  return model, opt, SigLipLoss()


def _worker_main(batch: int, modes: list[str]) -> None:
  import torch
  from benchmarks import _util as U

  torch.set_num_threads(THREADS)
  torch.manual_seed(0)
  images = torch.rand(batch, 3, 64, 64) * 2 - 1
  texts = torch.randint(0, 32000, (batch, 16))
  runners, info = {}, {}
  for mode in modes:
    model, opt, loss_fn = build_open_clip(batch)
    model.train()

    def loss_of(model=model, loss_fn=loss_fn):
      out = model(images, texts)
      return loss_fn(out["image_features"], out["text_features"], out["logit_scale"], out["logit_bias"])

    if mode == "autocast":  # open_clip's mixed precision: bf16 autocast around the forward pass (and the loss)

      def fwd(loss_of=loss_of):
        with torch.autocast("cpu", dtype=torch.bfloat16):
          return loss_of()

    else:
      fwd = torch.compile(loss_of) if mode == "compile" else loss_of

    def step(opt=opt, fwd=fwd):
      opt.zero_grad(set_to_none=True)
      loss = fwd()
      loss.backward()
      opt.step()
      return float(loss)

    t0 = time.perf_counter()
    step()
    info[mode] = {
      "first_step_s": time.perf_counter() - t0,
      "params": int(sum(p.numel() for p in model.parameters())),
      "trainable_params": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
    }
    step()
    runners[mode] = step

  def run(mode, n=1):
    ws, cs = [], []
    for _ in range(n):
      w0, c0 = time.perf_counter(), time.process_time()
      loss = runners[mode]()
      ws.append(time.perf_counter() - w0)
      cs.append(time.process_time() - c0)
    return {"wall": ws, "cpu": cs, "loss": loss, "maxrss_mb": U.maxrss_mb()}

  def describe():
    return {
      "modes": info,
      "torch": torch.__version__,
      "threads": torch.get_num_threads(),
      "open_clip": import_open_clip().__version__,
      "torchvision_ops_stubbed": TORCHVISION_STUBBED,
      "mkldnn": bool(torch.backends.mkldnn.is_available()),
    }

  U.serve({"run": run, "describe": describe})


# ------------------------------------------------------------------------------------------- driver
def venv_python(path: str = BENCH_VENV) -> str:
  return os.path.join(path, "bin", "python")


def open_clip_available(python: str) -> tuple[bool, str]:
  """Whether `python` exists and imports torch and open_clip; (ok, reason)."""
  import subprocess

  if not os.path.exists(python):
    return False, f"{python} not found (create it: see benchmarks/README.md)"
  r = subprocess.run([python, os.path.abspath(__file__), "--check"], capture_output=True, text=True)
  if r.returncode:
    return False, f"{python} cannot import torch/open_clip: {r.stderr.strip().splitlines()[-1:]}"
  return True, ""


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rounds", type=int, default=4)
  parser.add_argument("--steps_per_round", type=int, default=2)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--no_compile", action="store_true", help="skip the torch.compile mode")
  parser.add_argument("--python", default=venv_python(), help="interpreter with torch + open_clip")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--modes", nargs="+", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  if args.rounds < 1 or args.steps_per_round < 1 or args.batch < 1:
    raise ValueError("--rounds, --steps_per_round and --batch must be >= 1")
  if args.check:  # can this interpreter import torch and open_clip?
    import_open_clip()
    return {}
  if args.worker:
    _worker_main(args.batch, args.modes or ["eager", "compile"])
    return {}

  from benchmarks import _util as U

  ok, why = open_clip_available(args.python)
  if not ok:
    return U.emit({"benchmark": "openclip", "skipped": True, "reason": "open_clip not installed: " + why}, args.out)
  modes = ["eager"] + ([] if args.no_compile else ["compile"])
  env = dict(os.environ, OMP_NUM_THREADS=str(THREADS))
  worker = U.Worker(
    [args.python, os.path.abspath(__file__), "--worker", "--batch", str(args.batch), "--modes", *modes], env=env
  )
  try:
    desc = worker.request("describe")
    ours = U.TrainSetup(U.bench_model_config("AB"), batch=args.batch)
    ours.compile()
    ours.run(1)
    t_ours, t_theirs = [], {m: [] for m in modes}
    for _ in range(args.rounds):
      t_ours.append(min(U.timed(lambda: ours.run_one())[0] for _ in range(args.steps_per_round)))
      for m in modes:
        t_theirs[m].append(min(worker.request("run", mode=m, n=args.steps_per_round)["wall"]))
  finally:
    worker.close()
  result = {
    "benchmark": "openclip",
    "batch": args.batch,
    "rounds": args.rounds,
    "steps_per_round": args.steps_per_round,
    "threads": THREADS,
    "ours": {
      "params": ours.params,
      "step_s_median": U.median(t_ours),
      "examples_per_s": args.batch / U.median(t_ours),
      "compile_plus_first_step_s": ours.compile_s,
    },
    "open_clip": desc,
  }
  speed = {}
  for m in modes:
    ratios = [tt / to for to, tt in zip(t_ours, t_theirs[m])]
    result["open_clip"][m] = dict(
      desc["modes"][m], step_s_median=U.median(t_theirs[m]), examples_per_s=args.batch / U.median(t_theirs[m])
    )
    speed[m] = U.median(ratios)
  faster = max(modes, key=lambda m: result["open_clip"][m]["examples_per_s"])
  theirs_params = desc["modes"][modes[0]]["params"]
  result.update(
    speedup=speed,
    faster_open_clip_mode=faster,
    speedup_vs_faster=speed[faster],
    target=TARGET,
    met=speed[faster] >= TARGET,
    open_clip_params=theirs_params,
    param_difference=theirs_params - ours.params,
    machine=U.machine_info(),
  )
  return U.emit(result, args.out)


if __name__ == "__main__":
  main()
