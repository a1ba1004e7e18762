"""Why does (or doesn't) stochastic RINS leave the loss plateau?  A training probe on the demo's setting.

Trains one demo variant (siglip_rins/demo/runner.py's config: shapes data, 'mu' towers, temperature/bias
5/-5, the demo's schedule) with the real training step (siglip_rins.train.make_train_step, the configured
optimiser) and, every `--every` steps, records:

* the train loss, gradient norm, temperature t and bias b of that step (and the mean loss over the interval);
* per deterministic rounds value r = 1..trained, on that step's batch: the mean pairwise cosine of the image and
  of the text embeddings (1.0: the tower has collapsed to one point) and, with adapters, the batch-common share of
  the stream entering and leaving the adapter (energy of the per-position batch mean / total; 1.0 = collapsed).
  Printed as (img_cos, txt_cos[, img_common_in, img_common_out, txt_common_in, txt_common_out]) per r;
* per tower and adapter k: ||W_k - I||_F / ||I||_F (printed), the off-diagonal rms, the largest / smallest
  singular values of W_k, the share of ||W_k - I||^2 in its top singular value, ||b_k||, and how many steps so
  far drew k rounds (adapter k gets a gradient only in those steps).

Usage (one command, JSON to --out; defaults: the demo's rins_stochastic at the demo's lr):
  PYTHONPATH=. python -m benchmarks.probe_stochastic [--variant rins_stochastic] [--lr 3e-3] [--steps 1000]
      [--p_skip 0.5] [--adapters true] [--signature A^3B] [--every 25] [--max_steps N] [--seed 0]
      [--set key=value ...] [--out probe.json]
`--steps` is the *baseline's* step count (the variant's steps follow from compute matching, as in the demo);
`--max_steps` stops early; `--set` applies config overrides as the trainer's --config.key=value does, e.g.
--set adapter_lr_mult=1.0 (Adam's plain step on the adapters: the old behaviour) or --set model.bias_init=-3.4.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _bool(text: str) -> bool:
  if text.lower() in ("1", "true", "yes"):
    return True
  if text.lower() in ("0", "false", "no"):
    return False
  raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def adapter_stats(params, rounds_hist) -> dict:
  """Per stack and adapter: deviation from the identity, singular values, bias norm, steps that used it."""
  import numpy as np

  out = {}
  for stack, tree in (("img", params["img"].get("Transformer", {})), ("txt", params["txt"].get("Encoder_0", {}))):
    if "adapter_kernel" not in tree:
      continue
    kernel, bias = np.asarray(tree["adapter_kernel"], np.float64), np.asarray(tree["adapter_bias"], np.float64)
    d = kernel.shape[-1]
    eye = np.eye(d)
    rows = []
    for k in range(kernel.shape[0]):
      s = np.linalg.svd(kernel[k], compute_uv=False)
      sd = np.linalg.svd(kernel[k] - eye, compute_uv=False)
      rows.append(
        dict(
          k=k + 1,
          rel_dev=float(np.linalg.norm(kernel[k] - eye) / np.sqrt(d)),
          offdiag_rms=float(np.sqrt(((kernel[k] - np.diag(np.diag(kernel[k]))) ** 2).sum() / (d * d - d))),
          diag_mean=float(np.diag(kernel[k]).mean()),
          s_max=float(s[0]),
          s_min=float(s[-1]),
          delta_rank1_frac=float(sd[0] ** 2 / max((sd**2).sum(), 1e-30)),  # 1.0: W - I is rank one
          bias_norm=float(np.linalg.norm(bias[k])),
          steps_used=int(rounds_hist[stack].get(k + 1, 0)),
        )
      )
    out[stack] = rows
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--variant", default="rins_stochastic")
  p.add_argument("--lr", type=float, default=None)
  p.add_argument("--steps", type=int, default=None, help="baseline steps (compute matching gives the variant's)")
  p.add_argument("--signature", default=None)
  p.add_argument("--p_skip", type=float, default=None)
  p.add_argument("--adapters", type=_bool, default=None)
  p.add_argument("--every", type=int, default=25)
  p.add_argument("--max_steps", type=int, default=None)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  p.add_argument("--out", default=None)
  args = p.parse_args(argv)

  import jax
  import jax.numpy as jnp
  import numpy as np

  from siglip_rins import config_lib
  from siglip_rins import train as T
  from siglip_rins.demo import runner
  from siglip_rins.recursion import Block

  settings = dict(runner.DEFAULTS, seed=args.seed)
  if args.lr is not None:
    settings["lr"] = args.lr
  if args.steps is not None:
    settings["steps"] = args.steps
  v = dict(runner.VARIANTS[args.variant])
  for key in ("signature", "p_skip", "adapters"):
    if getattr(args, key) is not None:
      v[key] = getattr(args, key)
  runner.VARIANTS["_probe"] = v
  config = runner.variant_config("_probe", settings)
  config_lib.apply_overrides(config, args.set)  # --set key=value, as the trainer's --config.key=value
  run = T._setup_model(config)
  state = T.init_state(run.model, run.task, run.tx, run.mesh, config, jax.random.PRNGKey(run.seed))
  from siglip_rins.data import pipeline
  from siglip_rins import sharding

  it = pipeline.make_train_iterator(config.input, global_batch_size=run.global_bs, seed=run.seed)
  keep = set(run.task.batch_keys)
  step_jit = jax.jit(T.make_train_step(run.model, run.task, run.tx, run.schedule_fn, run.seed), donate_argnums=(0,))

  def embed_stats(params, batch):
    """Batch diversity of the L2-normalised embeddings at each deterministic rounds value (1 .. trained):
    mean pairwise cosine (1.0 = collapsed to one point) per tower."""
    out = {}
    for r in range(1, r_trained + 1):
      (zi, zt, _), inter = run.model.apply(
        {"params": params},
        batch["image"],
        batch["labels"],
        rounds=r,
        capture_intermediates=lambda mdl, _: isinstance(mdl, Block),
        mutable=["intermediates"],
      )
      n = zi.shape[0]
      off = lambda z: float((jnp.sum(z @ z.T) - n) / (n * n - n))
      out[str(r)] = dict(img_cos=off(zi), txt_cos=off(zt))
      if adapters:  # the batch-common share of the stream entering and leaving the adapter
        for tower, stack in (("img", "Transformer"), ("txt", "Encoder_0")):
          x = inter["intermediates"][tower][stack]["B"]["__call__"][0][0]  # block B's output: adapter input
          a = params[tower][stack]
          k = min(r, a["adapter_kernel"].shape[0]) - 1
          y = x @ a["adapter_kernel"][k] + a["adapter_bias"][k]
          out[str(r)][f"{tower}_common_in"] = common_frac(x)
          out[str(r)][f"{tower}_common_out"] = common_frac(y)
    return out

  def common_frac(x):
    """Share of the stream's energy that is the same for every example (per token position): 1.0 = collapsed."""
    x = jnp.asarray(x, jnp.float32)
    return float(jnp.sum(jnp.mean(x, 0) ** 2) * x.shape[0] / jnp.sum(x**2))

  adapters = bool(config.model.recursion.adapters)
  r_trained = runner.trained_rounds(config)
  total = run.total_steps if args.max_steps is None else min(run.total_steps, args.max_steps)
  hist = {"img": {}, "txt": {}}
  records, window, curve = [], [], []
  t0 = time.time()
  for step in range(1, total + 1):
    batch = sharding.make_global_batch({k: v for k, v in next(it).items() if k in keep}, run.mesh)
    state, metrics = step_jit(state, batch)
    m = jax.device_get(metrics)
    window.append(float(m["loss"]))
    curve.append(round(float(m["loss"]), 5))
    for stack in ("img", "txt"):
      key = f"rounds/{stack}"  # the rounds each tower drew this step (the contrastive task's metrics)
      if key in m:
        r = int(np.asarray(m[key]))
        hist[stack][r] = hist[stack].get(r, 0) + 1
    if step % args.every == 0 or step == total:
      rec = dict(
        step=step,
        loss=float(m["loss"]),
        loss_mean=float(np.mean(window)),
        grad_norm=float(m["grad_norm"]),
        lr=float(m["lr"]),
        t=float(m["t"]),
        b=float(m["b"]),
        embeddings=embed_stats(state["params"], batch),
        adapters=adapter_stats(jax.device_get(state["params"]), hist),
      )
      window = []
      records.append(rec)
      emb = {r: (round(e["img_cos"], 3), round(e["txt_cos"], 3)) for r, e in rec["embeddings"].items()}
      if adapters:
        emb = {
          r: v + tuple(round(rec["embeddings"][r][f"{t}_common_{w}"], 3) for t in ("img", "txt") for w in ("in", "out"))
          for r, v in emb.items()
        }
      dev = {s: [round(a["rel_dev"], 3) for a in rows] for s, rows in rec["adapters"].items()}
      print(
        f"step {step}/{total} loss {rec['loss_mean']:.4f} gnorm {rec['grad_norm']:.3g} lr {rec['lr']:.2e} "
        f"t {rec['t']:.2f} b {rec['b']:.2f} cos(img,txt)@r {emb} adapter |W-I|/|I| {dev}",
        flush=True,
      )
  result = dict(
    variant=args.variant,
    recursion=config.model.recursion.to_dict(),
    lr=config.lr,
    total_steps=run.total_steps,
    ran_steps=total,
    seconds=time.time() - t0,
    load_avg=os.getloadavg(),
    records=records,
    loss_curve=curve,
  )
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
