"""`siglip-rins demo`: the paper's SigLIP comparison (Sec. 5) in miniature, on the built-in shapes dataset.

Trains, at matched training compute (paper Sec. 2, Def. 2.1), with identical shared hyper-parameters:
    baseline         AB    (no recursion)
    rao              ABAB  (repeat-all-over, Liu et al. 2024)
    rins             A^2B  (RINS, Def. 2.2)
    rins_stochastic  A^3B  with p_s = 1/2 and linear adapters (Sec. 4 and 6)
Recursive variants train on fewer examples so that steps x batch x training FLOPs per example equals the
baseline's (`configs/siglip_rins.py` does the matching; steps round down, so a variant is below the baseline by
less than one of its own steps).  Each trained model is then evaluated at inference rounds r = 1 .. max_rounds
(r = k runs A^kB for AB and A^rB; for the RAO signature ABAB r is the repeat axis, (AB)^k) on the `eval` split,
whose (colour, shape) classes include the 6 pairs never seen in training:
    zero-shot classification   48-way, English class prompts; top-1 overall and on held-out-pair images
    retrieval                  image <-> caption, captions in all languages pooled; R@1
    per-language retrieval     XM3600-style, one gallery per language; reported at r = 1 and the trained r
Outputs in --out: report.md, results.json, loss_vs_flops.png, metrics_vs_rounds.png, eval_data/ (the eval split
and the evaluators' JSONL views of it) and runs/<variant>/ (each run's workdir: config.json, metrics.jsonl,
checkpoint).  The table is also printed.  Nothing is tuned per variant; the report states the ordering observed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from typing import Any, Optional, Sequence

from siglip_rins.demo.common import (
  count_params,
  parse_variants as _parse_variants,
  positive_float,
  positive_int,
  read_train_curve,
  shipped_config,
)

VARIANTS: dict[str, dict[str, Any]] = {
  "baseline": dict(signature="AB", p_skip=0.0, adapters=False, label="SigLIP baseline (AB)"),
  "rao": dict(signature="ABAB", p_skip=0.0, adapters=False, label="RAO (ABAB)"),
  "rins": dict(signature="A^2B", p_skip=0.0, adapters=False, label="RINS (A^2B)"),
  "rins_stochastic": dict(
    signature="A^3B", p_skip=0.5, adapters=True, label="stochastic RINS (A^3B, p_s=1/2, adapters)"
  ),
}
BASELINE = "baseline"

# Defaults of the full demo (chosen so that the whole run, compile and evals included, stays under 10 minutes on
# a 2-core CPU; see docs in the report) and of --quick (a smoke run for tests).
DEFAULTS = dict(
  steps=1000,
  batch_size=32,
  image_size=32,
  train_examples=4096,
  eval_examples=384,
  max_rounds=4,
  lr=3e-3,
  warmup_steps=20,
  model="mu",
  temperature_init=5.0,
  bias_init=-5.0,
)
QUICK = dict(steps=4, batch_size=16, image_size=16, train_examples=128, eval_examples=48, max_rounds=1, warmup_steps=1)
EVAL_BATCH = 64


# ----------------------------------------------------------------------------------------------- arguments
def parse_variants(text: str) -> list[str]:
  """See demo.common.parse_variants (this study's VARIANTS, BASELINE)."""
  return _parse_variants(text, list(VARIANTS), BASELINE)


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog="siglip-rins demo",
    description="Compute-matched SigLIP baseline vs RAO vs RINS on the built-in multilingual shapes dataset.",
  )
  p.add_argument("--out", default="./demo_report", help="report folder (default ./demo_report)")
  p.add_argument(
    "--steps",
    type=positive_int,
    help=f"baseline training steps; recursive variants get compute-matched steps (default {DEFAULTS['steps']})",
  )
  p.add_argument("--batch-size", type=positive_int, help=f"global batch size (default {DEFAULTS['batch_size']})")
  p.add_argument(
    "--image-size",
    type=positive_int,
    help=f"image side in pixels, a multiple of the patch size 8 (default {DEFAULTS['image_size']})",
  )
  p.add_argument(
    "--variants",
    default=",".join(VARIANTS),
    help=f"comma list of {', '.join(VARIANTS)} (default: all; the baseline is always included)",
  )
  p.add_argument(
    "--train-examples",
    type=positive_int,
    help=f"size of the generated train split (default {DEFAULTS['train_examples']})",
  )
  p.add_argument(
    "--eval-examples",
    type=positive_int,
    help=f"size of the eval split; 48 classes, 6 held out (default {DEFAULTS['eval_examples']})",
  )
  p.add_argument(
    "--max-rounds", type=positive_int, help=f"evaluate inference rounds r = 1..N (default {DEFAULTS['max_rounds']})"
  )
  p.add_argument("--model", choices=("mu", "nano", "bench"), help="tower size for both towers (default mu)")
  p.add_argument(
    "--lr", type=positive_float, help=f"peak learning rate, shared by all variants (default {DEFAULTS['lr']})"
  )
  p.add_argument("--warmup-steps", type=int, help=f"linear warm-up steps (default {DEFAULTS['warmup_steps']})")
  p.add_argument("--seed", type=int, default=0, help="initialisation and data-order seed, shared (default 0)")
  p.add_argument("--quick", action="store_true", help="a tiny smoke run (seconds of training; for tests)")
  p.add_argument(
    "--lm",
    action="store_true",
    help="run the language-model study instead (decoder LMs on Shakespeare's works or --corpus; "
    "its own flags: `siglip-rins demo --lm --help`)",
  )
  p.add_argument("--quiet", action="store_true", help="less training output")
  return p


def resolve_settings(args: argparse.Namespace) -> dict:
  """Flags -> the settings dict of the run (quick defaults when --quick; explicit flags always win)."""
  base = dict(DEFAULTS, **(QUICK if args.quick else {}))
  settings = {}
  for key in (
    "steps",
    "batch_size",
    "image_size",
    "train_examples",
    "eval_examples",
    "max_rounds",
    "lr",
    "warmup_steps",
    "model",
  ):
    given = getattr(args, key)
    settings[key] = base[key] if given is None else given
  if settings["image_size"] % 8:
    raise ValueError(f"--image-size must be a multiple of the patch size 8, got {settings['image_size']}")
  if settings["warmup_steps"] < 0:
    raise ValueError(f"--warmup-steps must be >= 0, got {settings['warmup_steps']}")
  settings.update(temperature_init=base["temperature_init"], bias_init=base["bias_init"])
  settings.update(
    seed=int(args.seed), quick=bool(args.quick), variants=parse_variants(args.variants), out=os.path.abspath(args.out)
  )
  return settings


# ----------------------------------------------------------------------------------------------- configs
def variant_config(name: str, settings: dict):
  """The training config of one variant: configs/siglip_rins.py:runlocal,... plus the shared settings."""
  from siglip_rins import config_lib

  v = VARIANTS[name]
  arg = (
    f"runlocal,signature={v['signature']},p_skip={v['p_skip']},adapters={v['adapters']},"
    f"steps={settings['steps']},local_batch_size={settings['batch_size']},"
    f"local_res={settings['image_size']},local_examples={settings['train_examples']},"
    f"local_variant={settings['model']}"
  )
  config = config_lib.load_config(f"{shipped_config('siglip_rins.py')}:{arg}")
  # Shared by every variant (never per variant): optimiser peak lr, warm-up, seed, logging.
  config.lr = float(settings["lr"])
  config.schedule.warmup_steps = int(settings["warmup_steps"])
  # At batch 32 the paper's temperature/bias init (10, -10, tuned for 32k batches) left several variants on the
  # trivial plateau (loss log B + 1) for the whole budget; a milder init, identical for every variant, did not.
  config.model.temperature_init = float(settings["temperature_init"])
  config.model.bias_init = float(settings["bias_init"])
  config.seed = int(settings["seed"])
  config.tensorboard = False
  config.log_every = max(1, min(10, settings["steps"] // 20 or 1))
  config.evals = {}  # the demo evaluates after training, at every inference rounds value (see evaluate())
  return config


def recursion_axis(config) -> str:
  """The axis the demo's r sweeps for this signature: 'repeat' for RAO (ABAB), else 'rounds' (A^kB)."""
  from siglip_rins.recursion import RecursionConfig, adapter_axis
  from siglip_rins.models.vit import decode_variant

  rec = RecursionConfig.from_dict(config.model.recursion.to_dict())
  return adapter_axis(rec.plan(decode_variant(config.model.image.variant)["depth"]))


def trained_rounds(config) -> int:
  """r of the trained signature along its recursion_axis (A^rB -> r; ABAB -> 2 repeats; AB -> 1)."""
  from siglip_rins.recursion import RecursionConfig, num_adapters
  from siglip_rins.models.vit import decode_variant

  rec = RecursionConfig.from_dict(config.model.recursion.to_dict())
  depth = decode_variant(config.model.image.variant)["depth"]
  return int(num_adapters(rec.plan(depth)))


# ----------------------------------------------------------------------------------------------- eval data
def write_eval_data(out_dir: str, num_examples: int, image_size: int) -> dict:
  """Writes the eval split into out_dir/eval_data and the evaluators' views of it; returns their paths.

  data.jsonl     the split as `shapes.write_jsonl_dataset` writes it (texts: one caption per language)
  zeroshot.jsonl {"image", "label", "group": "heldout" | "seen"} per image
  xm3600.jsonl   {"image", "texts": {language: [caption]}} per image
  """
  from siglip_rins.demo import shapes

  folder = os.path.join(out_dir, "eval_data")
  if os.path.isdir(folder):
    shutil.rmtree(folder)
  jsonl = shapes.write_jsonl_dataset(folder, "eval", num_examples, seed=0, image_size=image_size)
  rows = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines() if line.strip()]
  heldout = shapes.HELDOUT_LABELS
  with open(os.path.join(folder, "zeroshot.jsonl"), "w", encoding="utf-8") as f:
    for row in rows:
      group = "heldout" if int(row["label"]) in heldout else "seen"
      f.write(json.dumps({"image": row["image"], "label": int(row["label"]), "group": group}) + "\n")
  with open(os.path.join(folder, "xm3600.jsonl"), "w", encoding="utf-8") as f:
    for row in rows:
      texts = {lang: [text] for lang, text in zip(row["languages"], row["texts"])}
      f.write(json.dumps({"image": row["image"], "texts": texts}, ensure_ascii=False) + "\n")
  n_heldout = sum(int(r["label"]) in heldout for r in rows)
  return dict(
    folder=folder,
    all=str(jsonl),
    zeroshot=os.path.join(folder, "zeroshot.jsonl"),
    xm3600=os.path.join(folder, "xm3600.jsonl"),
    n=len(rows),
    n_heldout=n_heldout,
  )


def eval_configs(eval_data: dict, image_size: int) -> dict:
  """config.evals-style dicts for the three evaluators (built with `evaluators.build`)."""
  from siglip_rins.demo import shapes

  del image_size  # the run's example spec gives the pixels
  common = dict(batch_size=EVAL_BATCH, show_progress=False, model="demo")
  return {
    # Class embedding = mean over the English one-object captions of the class (all sizes and positions).
    "zeroshot": dict(
      type="zeroshot",
      data=dict(type="jsonl", path=eval_data["zeroshot"]),
      class_names=shapes.class_prompts("en"),
      templates=["{}"],
      group_by="group",
      dataset="shapes_zeroshot",
      **common,
    ),
    "retrieval": dict(
      type="retrieval",
      data=dict(type="jsonl", path=eval_data["all"]),
      texts_key="texts",
      dataset="shapes_retrieval",
      language="all",
      **common,
    ),
    "xm3600": dict(type="xm3600", data=dict(type="jsonl", path=eval_data["xm3600"]), dataset="shapes_xm3600", **common),
  }


# ----------------------------------------------------------------------------------------------- one variant
def run_variant(name: str, settings: dict, evals: dict, verbose: bool = True) -> dict:
  """Trains one variant in out/runs/<name> and evaluates it at r = 1..max_rounds. Returns its result dict."""
  import evaluators
  from siglip_rins.models import build_model
  from siglip_rins.evaluation import predictor_for_run as make_predictor
  from siglip_rins.train import train

  config = variant_config(name, settings)
  r_trained = trained_rounds(config)
  workdir = os.path.join(settings["out"], "runs", name)
  if os.path.isdir(workdir):  # a fresh run every time (train() would otherwise resume the old one)
    shutil.rmtree(workdir)
  t0 = time.time()
  summary = train(config, workdir, verbose=verbose)
  train_seconds = time.time() - t0
  steps, bs = int(summary["step"]), int(config.input.batch_size)
  flops_per_example = float(summary["flops_per_example"])
  params = summary["state"]["params"]

  t1 = time.time()
  model = build_model(config.model)
  predictor = make_predictor(model, params, config)
  predictor.batch_size, predictor.name = EVAL_BATCH, name
  predictor.axis = recursion_axis(config)  # RAO (ABAB) is evaluated along repeat-all-over
  all_rounds = sorted(set(range(1, settings["max_rounds"] + 1)) | {r_trained})
  records = []
  for ev_name, ev_cfg in evals.items():
    rounds = all_rounds if ev_name != "xm3600" else sorted({1, r_trained})
    records.extend(evaluators.build(ev_name, ev_cfg).run(predictor, rounds=rounds))
  eval_seconds = time.time() - t1

  by_rounds = {str(r): summarise(records, r) for r in all_rounds}
  loss_curve = read_train_curve(os.path.join(workdir, "metrics.jsonl"))
  v = VARIANTS[name]
  return dict(
    name=name,
    label=v["label"],
    signature=v["signature"],
    p_skip=v["p_skip"],
    adapters=v["adapters"],
    trained_rounds=r_trained,
    params=count_params(params),
    steps=steps,
    batch_size=bs,
    examples_seen=steps * bs,
    train_flops_per_example=flops_per_example,
    train_flops_per_step=flops_per_example * bs,
    train_flops=flops_per_example * bs * steps,
    final_train_loss=loss_curve[-1][1] if loss_curve else None,
    train_seconds=train_seconds,
    eval_seconds=eval_seconds,
    metrics={"r1": by_rounds["1"], "r_trained": by_rounds[str(r_trained)]},
    by_rounds=by_rounds,
    loss_curve=loss_curve,
    records=records,
    workdir=workdir,
  )


def summarise(records: Sequence[dict], rounds: int) -> dict:
  """The headline metrics (fractions in [0, 1]) of one rounds value from the evaluator records."""
  out = {}
  for rec in records:
    if rec["rounds"] != rounds:
      continue
    m = rec["metrics"]
    if rec["dataset"] == "shapes_zeroshot":
      out["zeroshot_top1"] = m["acc1"]
      out["zeroshot_top1_heldout"] = m.get("acc1/heldout")
      out["zeroshot_top1_seen"] = m.get("acc1/seen")
    elif rec["dataset"] == "shapes_retrieval":
      out["retrieval_i2t@1"], out["retrieval_t2i@1"] = m["text_retrieval_recall@1"], m["image_retrieval_recall@1"]
    elif rec["dataset"] == "shapes_xm3600" and rec["language"] == "avg":
      out["xm3600_i2t@1"], out["xm3600_t2i@1"] = m["text_retrieval_recall@1"], m["image_retrieval_recall@1"]
  return out


# ----------------------------------------------------------------------------------------------- report
COLUMNS = (
  ("zeroshot_top1", "0-shot top-1"),
  ("zeroshot_top1_heldout", "0-shot held-out"),
  ("retrieval_i2t@1", "i2t@1"),
  ("retrieval_t2i@1", "t2i@1"),
  ("xm3600_i2t@1", "per-lang i2t@1"),
  ("xm3600_t2i@1", "per-lang t2i@1"),
)


def _pct(v) -> str:
  return "–" if v is None else f"{100 * v:.1f}"


def results_table(results: Sequence[dict]) -> str:
  """Markdown table: one row per (variant, r in {1, trained}); metrics in %."""
  header = ["variant", "signature", "params", "train GFLOPs", "examples seen", "r"] + [c[1] for c in COLUMNS]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for res in results:
    shown = [("r1", 1)] + ([("r_trained", res["trained_rounds"])] if res["trained_rounds"] != 1 else [])
    for key, r in shown:
      m = res["metrics"][key]
      cells = [
        res["name"],
        res["signature"]
        + (f", p_s={res['p_skip']:g}" if res["p_skip"] else "")
        + (", adapters" if res["adapters"] else ""),
        f"{res['params']:,}",
        f"{res['train_flops'] / 1e9:.1f}",
        f"{res['examples_seen']:,}",
        f"{r}" + (" (trained)" if r == res["trained_rounds"] else ""),
      ]
      cells += [_pct(m.get(k)) for k, _ in COLUMNS]
      lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _standard_error(p: float, n: int) -> float:
  return math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))


def _ranking(named_values: Sequence[tuple[str, float]]) -> str:
  """[('a', 0.3), ('b', 0.5), ('c', 0.3)] -> 'b (50.0%) > a (30.0%) = c (30.0%)' (ties at the shown precision)."""
  ranked = sorted(named_values, key=lambda kv: -kv[1])
  text = ""
  for i, (name, value) in enumerate(ranked):
    if i:
      text += " = " if _pct(value) == _pct(ranked[i - 1][1]) else " > "
    text += f"{name} ({_pct(value)}%)"
  return text


def ordering_paragraph(results: Sequence[dict], eval_n: int, n_classes: int) -> str:
  """A factual paragraph: the ordering by zero-shot top-1 at the trained r and at r = 1, with the noise level."""

  def order(key):
    return _ranking([(r["name"], r["metrics"][key]["zeroshot_top1"]) for r in results])

  base = next(r for r in results if r["name"] == BASELINE)
  p = base["metrics"]["r1"]["zeroshot_top1"]
  se = _standard_error(p, eval_n)
  parts = [
    f"Zero-shot top-1 ordering at each variant's trained r: {order('r_trained')}. "
    f"At r = 1 (no extra inference compute): {order('r1')}. "
    f"Chance is {100 / n_classes:.1f}% ({n_classes} classes). "
    f"With {eval_n} evaluation images the binomial standard error of a top-1 near the baseline's is about "
    f"{100 * se:.1f} points, so differences smaller than ~{200 * se:.1f} points are within noise; this is "
    f"one seed of a tiny model on synthetic data, not evidence either way about the paper's claims at "
    f"scale."
  ]
  best = max(results, key=lambda r: r["metrics"]["r_trained"]["zeroshot_top1"])
  if best["name"] == BASELINE:
    parts.append(" In this run no recursive variant beat the compute-matched baseline on zero-shot accuracy.")
  else:
    gap = best["metrics"]["r_trained"]["zeroshot_top1"] - base["metrics"]["r1"]["zeroshot_top1"]
    verdict = "larger" if gap > 2 * se else "not larger"
    parts.append(
      f" The best variant, {best['name']}, is {100 * gap:.1f} points above the baseline, "
      f"{verdict} than twice the standard error."
    )
  ret = results
  parts.append(
    " Retrieval (mean of i2t@1 and t2i@1 at the trained r) orders them: "
    + _ranking(
      [
        (r["name"], (r["metrics"]["r_trained"]["retrieval_i2t@1"] + r["metrics"]["r_trained"]["retrieval_t2i@1"]) / 2)
        for r in ret
      ]
    )
    + "."
  )
  return "".join(parts)


def plot_loss_vs_flops(results: Sequence[dict], path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for res in results:
    if res["loss_curve"]:
      x, y = zip(*res["loss_curve"])
      ax.plot(x, y, label=res["label"], lw=1.4)
  ax.set_xlabel("training FLOPs seen")
  ax.set_ylabel("train sigmoid loss")
  ax.set_title("Training loss at matched compute")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_metrics_vs_rounds(results: Sequence[dict], path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  panels = (
    ("zeroshot_top1", "zero-shot top-1 (%)"),
    ("retrieval_i2t@1", "image→text R@1 (%)"),
    ("retrieval_t2i@1", "text→image R@1 (%)"),
  )
  fig, axes = plt.subplots(1, len(panels), figsize=(13, 3.9))
  for ax, (key, title) in zip(axes, panels):
    for res in results:
      rounds = sorted(int(r) for r in res["by_rounds"])
      values = [100 * res["by_rounds"][str(r)][key] for r in rounds]
      (line,) = ax.plot(rounds, values, marker="o", label=res["label"])
      rt = res["trained_rounds"]
      ax.plot([rt], [100 * res["by_rounds"][str(rt)][key]], marker="*", ms=14, color=line.get_color())
    ax.set_xlabel("inference rounds r (★ = trained r)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_report(results: Sequence[dict], settings: dict, eval_data: dict, timings: dict) -> dict:
  """Writes report.md, results.json and the two plots into settings['out']; returns their paths."""
  from siglip_rins.demo import shapes

  out = settings["out"]
  paths = {
    k: os.path.join(out, f)
    for k, f in (
      ("markdown", "report.md"),
      ("json", "results.json"),
      ("loss_plot", "loss_vs_flops.png"),
      ("rounds_plot", "metrics_vs_rounds.png"),
    )
  }
  plot_loss_vs_flops(results, paths["loss_plot"])
  plot_metrics_vs_rounds(results, paths["rounds_plot"])
  base = next(r for r in results if r["name"] == BASELINE)
  matching = {
    r["name"]: dict(
      train_flops=r["train_flops"],
      baseline_train_flops=base["train_flops"],
      difference=r["train_flops"] - base["train_flops"],
      one_step_flops=r["train_flops_per_step"],
      within_one_step=abs(r["train_flops"] - base["train_flops"]) <= r["train_flops_per_step"],
    )
    for r in results
  }
  table = results_table(results)
  paragraph = ordering_paragraph(results, eval_data["n"], shapes.NUM_CLASSES)
  payload = dict(
    settings=settings,
    timings=timings,
    eval_data=dict(
      n_images=eval_data["n"],
      n_heldout_images=eval_data["n_heldout"],
      heldout_pairs=[" ".join(p) for p in shapes.HELDOUT_PAIRS],
      languages=list(shapes.LANGUAGES),
      num_classes=shapes.NUM_CLASSES,
    ),
    compute_matching=matching,
    ordering=paragraph,
    variants={r["name"]: {k: v for k, v in r.items() if k != "workdir"} for r in results},
  )
  tmp = paths["json"] + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(payload, f, indent=1, ensure_ascii=False, default=float)
  os.replace(tmp, paths["json"])

  all_rounds = sorted({int(r) for res in results for r in res["by_rounds"]})
  per_rounds = ["| variant | " + " | ".join(f"r={r}" for r in all_rounds) + " |", "|---|" + "---|" * len(all_rounds)]
  for res in results:
    cells = []
    for r in all_rounds:
      m = res["by_rounds"].get(str(r))
      cell = "–" if m is None else _pct(m["zeroshot_top1"])
      cells.append(f"**{cell}**" if r == res["trained_rounds"] else cell)
    per_rounds.append(f"| {res['name']} | " + " | ".join(cells) + " |")
  lines = [
    "# SigLIP-RINS demo: compute-matched comparison on the built-in shapes dataset",
    "",
    f"Variants trained with identical hyper-parameters (lr {settings['lr']:g}, warm-up {settings['warmup_steps']} "
    f"steps, cosine decay, temperature/bias init {settings['temperature_init']:g}/{settings['bias_init']:g}, "
    f"batch {settings['batch_size']}, {settings['model']} towers, {settings['image_size']}px "
    f"images, seed {settings['seed']}); the baseline trains {settings['steps']} steps and every recursive variant "
    f"the number of steps that matches the baseline's training FLOPs (stochastic RINS: expected FLOPs). "
    f"Evaluation on {eval_data['n']} eval-split images ({eval_data['n_heldout']} of them show a held-out "
    f"(colour, shape) pair never seen in training: {', '.join(' '.join(p) for p in shapes.HELDOUT_PAIRS)}).",
    "",
    "Metrics in %. 0-shot: 48-way, English class prompts; held-out: the same accuracy on held-out-pair images. "
    "i2t/t2i@1: retrieval with every image's captions in all 9 languages pooled. Per-lang: retrieval within each "
    "language, averaged over languages.",
    "",
    table,
    "## What this run shows",
    "",
    paragraph,
    "",
    "## Zero-shot top-1 against inference rounds (bold = trained r)",
    "",
    *per_rounds,
    "",
    "![loss vs FLOPs](loss_vs_flops.png)",
    "",
    "![metrics vs rounds](metrics_vs_rounds.png)",
    "",
    "## Compute matching",
    "",
    "| variant | steps | train FLOPs/example | train FLOPs | vs baseline | within one step |",
    "|---|---|---|---|---|---|",
  ]
  for res in results:
    m = matching[res["name"]]
    lines.append(
      f"| {res['name']} | {res['steps']} | {res['train_flops_per_example']:.3g} | "
      f"{res['train_flops']:.4g} | {100 * m['difference'] / base['train_flops']:+.2f}% | "
      f"{'yes' if m['within_one_step'] else 'NO'} |"
    )
  lines += [
    "",
    "## Timings (seconds, wall clock)",
    "",
    f"total {timings['total_seconds']:.0f} (CPU time, all cores: {timings['cpu_seconds']:.0f}); eval data {timings['eval_data_seconds']:.1f}; "
    + "; ".join(f"{r['name']}: train {r['train_seconds']:.0f} + eval {r['eval_seconds']:.0f}" for r in results),
    "",
    "Per-run workdirs (config.json, metrics.jsonl, checkpoint) are under `runs/`; per-language results are in "
    "results.json (`records`).",
    "",
  ]
  with open(paths["markdown"], "w", encoding="utf-8") as f:
    f.write("\n".join(lines))
  return paths


# ----------------------------------------------------------------------------------------------- main
def _cpu_seconds() -> float:
  """User + system CPU seconds of this process and its finished children (all cores summed)."""
  import resource

  own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_demo(settings: dict, verbose: bool = True) -> dict:
  """Runs every variant and writes the report. Returns {'results', 'paths', 'timings'}."""
  t0, cpu0 = time.time(), _cpu_seconds()
  os.makedirs(settings["out"], exist_ok=True)
  eval_data = write_eval_data(settings["out"], settings["eval_examples"], settings["image_size"])
  timings = {"eval_data_seconds": time.time() - t0}
  evals = eval_configs(eval_data, settings["image_size"])
  results = []
  for name in settings["variants"]:
    if verbose:
      print(f"\n=== {name}: {VARIANTS[name]['label']} ===", flush=True)
    results.append(run_variant(name, settings, evals, verbose=verbose))
  timings["total_seconds"] = time.time() - t0
  timings["cpu_seconds"] = _cpu_seconds() - cpu0
  paths = write_report(results, settings, eval_data, timings)
  return dict(results=results, paths=paths, timings=timings)


def main(argv: Optional[Sequence[str]] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if "--lm" in argv:  # the LM study has its own flags (siglip_rins/demo/lm_study.py)
    from siglip_rins.demo import lm_study

    return lm_study.main([a for a in argv if a != "--lm"])
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    settings = resolve_settings(args)
    outcome = run_demo(settings, verbose=not args.quiet)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  results = outcome["results"]
  print("\n" + results_table(results))
  with open(outcome["paths"]["json"], encoding="utf-8") as f:
    print(json.load(f)["ordering"])
  print(f"\nreport: {outcome['paths']['markdown']} (total {outcome['timings']['total_seconds']:.0f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
