"""`siglip-rins` command line: train, eval, flops, export, classify, retrieve, scaling, demo.

siglip-rins train    --config configs/siglip_rins.py:signature=A^2B --workdir DIR [--config.lr=3e-4]
siglip-rins eval     --config FILE:ARGS (--workdir DIR | --model MODEL_DIR) [--rounds 1,2,3 [--axis repeat]] [--out DIR]
                     [--config.k=v]
siglip-rins flops    --config FILE:ARGS [--baseline FILE:ARGS] [--config.k=v]
siglip-rins sweep    --depth L [--degree D] [--split floor|spread] [--variant lm_600m] [--json]
siglip-rins export   --workdir DIR --out MODEL_DIR
siglip-rins export-hf --model MODEL_DIR --out HF_DIR [--rounds R]
siglip-rins import-big-vision --npz F --config FILE:ARGS [--config.k=v] --tokenizer M.model --out MODEL_DIR
siglip-rins classify --model MODEL_DIR --labels "cat,dog,car" IMAGE...
siglip-rins retrieve --model MODEL_DIR --query TEXT FOLDER
siglip-rins serve    --model MODEL_DIR [--host 127.0.0.1 --port 8080 --index FOLDER --max-rounds R]
siglip-rins scaling  RUN_DIR... [--metric NAME] [--out DIR]
siglip-rins demo     [--out DIR] [--steps N] [--seeds N] ...
siglip-rins study    --budget 60m [--out DIR] [--variants ...] [--quick]   (siglip_rins/demo/study.py)
siglip-rins tokenizer train --input FILES_OR_FOLDERS... --vocab N --out M.model [...]  (siglip_rins/text/train_tokenizer.py)
"""

from __future__ import annotations

import argparse
import json
import sys

from siglip_rins import host_memory


def _rounds(text: str | None):
  if not text:
    return [None]
  try:
    out = [int(x) for x in text.split(",") if x.strip()]
  except ValueError:
    raise ValueError(f"--rounds expects a comma list of integers >= 1, got {text!r}") from None
  if any(r < 1 for r in out):
    raise ValueError(f"--rounds expects integers >= 1, got {text!r}")
  return out


def cmd_flops(args, rest=()) -> int:
  """Params, FLOPs and the compute-matched budget of the final config (with --config.key=value overrides,
  which apply to --config, not --baseline)."""
  from siglip_rins import budget, flops
  from siglip_rins.models import build_model
  from siglip_rins.tasks import get_task
  from siglip_rins.train import total_steps_of

  def describe(spec, overrides=()):
    config = load_config_with_overrides(spec, overrides)
    matched = budget.finalize(config)
    model, task = build_model(config.model), get_task(config)
    shapes = task.input_shapes()
    example = task.example_batch(1)
    params = flops.count_params(model, task.init_args(example))
    fwd = flops.model_flops(model, shapes, train=True)
    per_ex = flops.train_flops_per_example(model, shapes)
    bs = int(config.input.batch_size)
    return config, dict(
      params=params,
      flops_per_example=fwd["forward"],
      inference_flops_per_example=flops.model_flops(model, shapes)["forward"],
      expected_rounds=fwd["expected_rounds"],
      train_flops_per_example=per_ex,
      train_flops_per_step=per_ex * bs,
      batch_size=bs,
      total_steps=total_steps_of(config),
      compute_match=matched,
    )

  config, out = describe(args.config, rest)
  if args.baseline:
    base_cfg, base = describe(args.baseline)
    base_examples = base["total_steps"] * base["batch_size"]
    m = flops.matched_budget(
      out["train_flops_per_example"], base["train_flops_per_example"], base_examples, out["batch_size"]
    )
    out.update(
      baseline=base,
      matched_steps=m["matched_steps"],
      matched_examples=m["matched_examples"],
      flops_budget=m["flops_budget"],
    )
  print(json.dumps(out, indent=2, default=float))
  return 0


def cmd_sweep(args) -> int:
  """App. E.1's architecture sweep for a depth: each signature's blocks, layers per block and relative size."""
  from siglip_rins import flops

  degrees = (args.degree,) if args.degree else (1, 2, 3)
  rows = flops.sweep_with_params(args.depth, degrees, args.split, args.variant)
  if args.json:
    print(json.dumps(rows, indent=2))
    return 0
  cols = ["compact", "degree", "unique_blocks", "layers_per_block", "unique_layers", "layers_run", "dropped_layers"]
  cols += ["param_layers_rel", "compute_rel"] + (["params", "params_rel"] if args.variant else [])
  cell = lambda v: f"{v:.3f}" if isinstance(v, float) else ":".join(map(str, v)) if isinstance(v, list) else str(v)
  table = [cols] + [[cell(r[c]) for c in cols] for r in rows]
  widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
  for row in table:
    print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
  return 0


def config_overrides(rest) -> list[str]:
  """`--config.key=value` arguments -> ['key=value', ...]; anything else -> ValueError."""
  out = []
  for item in rest:
    if not item.startswith("--config.") or "=" not in item:
      raise ValueError(f"unknown argument {item!r} (config overrides look like --config.key=value)")
    out.append(item[len("--config.") :])
  return out


def load_config_with_overrides(spec: str, rest):
  from siglip_rins import config_lib

  config = config_lib.load_config(spec)
  config_lib.apply_overrides(config, config_overrides(rest))
  return config


def cmd_eval(args, rest=()) -> int:
  """Scores a run's latest checkpoint (--workdir) or an exported model (--model) with the config's evals.

  The example spec (pixels and token ids) is the one the run recorded (`<workdir>/example_spec.json`) or the
  exported model carries; the config (with `--config.key=value` overrides) supplies the evaluators.
  """
  import jax
  from etils import epath

  from siglip_rins import checkpoint as ckpt_lib, config_lib, example_spec
  from siglip_rins.evaluation import EvalHook
  from siglip_rins.models import build_model
  from siglip_rins.tasks import get_task
  from evaluators import report

  if bool(args.workdir) == bool(args.model):
    raise ValueError("give exactly one of --workdir (a training run) and --model (an exported model folder)")
  if args.config:
    config = load_config_with_overrides(args.config, rest)
  elif args.workdir and (epath.Path(args.workdir) / "config.json").exists():
    config = config_lib.from_json((epath.Path(args.workdir) / "config.json").read_text())
    config_lib.apply_overrides(config, config_overrides(rest))
  else:
    raise ValueError("give --config FILE.py[:ARGS] (its config.evals are run)")
  if not config.get("evals"):
    raise ValueError("the config has no evals (config.evals.NAME = dict(type=...)); add one with --config.evals...")
  rounds = _rounds(args.rounds) if args.rounds else None
  if args.axis != "rounds" and rounds is None:
    raise ValueError(f"--axis {args.axis} sets what --rounds counts: give --rounds too (e.g. --rounds 1,2,3)")
  if args.model:
    from siglip_rins.export import load_exported

    m = load_exported(args.model)
    model, params, spec = m.model, m.params, m.spec
    step, out_dir = None, args.out or args.model
  else:
    workdir = epath.Path(args.workdir).absolute()
    run_cfg_path = workdir / "config.json"
    if run_cfg_path.exists():  # the model the run trained, not what the config file says today
      run_config = config_lib.from_json(run_cfg_path.read_text())
      config.model = run_config.model
      config.input = run_config.input
    spec = example_spec.load(workdir)
    derived = example_spec.finalize(config)
    if spec is None:
      spec = derived
    model, task = build_model(config.model), get_task(config)
    example = task.example_batch(1)
    abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *task.init_args(example))["params"])
    mgr = ckpt_lib.CheckpointManager(str(workdir), async_save=False)
    step = mgr.latest_step()
    if step is None:
      raise FileNotFoundError(f"no complete checkpoint in {mgr.directory}")
    state, _ = mgr.restore(step)
    params = jax.tree.map(lambda a, s: a, state["params"], abstract)
    out_dir = args.out or str(workdir)
  names = None
  if args.evals:
    names = [n.strip() for n in args.evals.split(",") if n.strip()]
    unknown = sorted(set(names) - set(config.evals.keys()))
    if unknown:
      raise ValueError(f"--evals: unknown evaluator(s) {unknown}; the config has {sorted(config.evals.keys())}")
  hook = EvalHook(config, spec, model, total_steps=1, workdir=None, verbose=True)
  records = hook.run(step, params, names=names, rounds_override=rounds, axis=args.axis)
  if not records:
    raise ValueError("no evaluator produced results (their data is missing: see the lines above)")
  _, md_path = report.write_report(records, str(out_dir))
  print(epath.Path(md_path).read_text())
  return 0


def cmd_export_hf(args) -> int:
  from siglip_rins.interop.hf import export_hf_from_exported

  export_hf_from_exported(args.model, args.out, rounds=args.rounds)
  print(f"wrote a transformers SiglipModel folder to {args.out}")
  return 0


def cmd_import_big_vision(args, rest) -> int:
  from siglip_rins.interop.big_vision import import_main

  overrides = config_overrides(rest)
  return import_main(args.npz, args.config, overrides, args.tokenizer, args.out, res=args.res, text_len=args.text_len)


def cmd_export(args) -> int:
  from siglip_rins import export

  path = export.export_model(args.workdir, args.out)
  print(f"exported to {path}")
  return 0


def cmd_classify(args) -> int:
  from siglip_rins import export

  labels = [s.strip() for s in args.labels.split(",") if s.strip()]
  if not labels:
    raise ValueError("--labels needs at least one label, e.g. --labels 'cat,dog'")
  return export.classify_main(args.model, labels, args.images, top_k=args.top_k, rounds=args.rounds) or 0


def cmd_retrieve(args) -> int:
  from siglip_rins import export

  return export.retrieve_main(args.model, args.query, args.folder, top_k=args.top_k, rounds=args.rounds) or 0


def cmd_serve(args) -> int:
  """`siglip-rins serve`: HTTP API + page for an exported model (siglip_rins/serve.py)."""
  from siglip_rins import serve

  return serve.serve_main(
    args.model,
    args.host,
    args.port,
    index=args.index,
    max_rounds=args.max_rounds,
    max_batch=args.max_batch,
    threads=args.threads,
    max_pixels=args.max_pixels,
    warmup=args.warmup,
  )


def cmd_scaling(args) -> int:
  from siglip_rins import scaling

  argv = (
    list(args.run_dirs) + (["--metric", args.metric] if args.metric else []) + (["--out", args.out] if args.out else [])
  )
  return scaling.main(argv) or 0


def cmd_demo(args, rest) -> int:
  from siglip_rins.demo import runner

  return runner.main(rest) or 0


def cmd_study(rest) -> int:
  from siglip_rins.demo import study

  return study.main(rest) or 0


def cmd_tokenizer(args) -> int:
  """`siglip-rins tokenizer train ...`: flags and behaviour live in siglip_rins/text/train_tokenizer.py."""
  from siglip_rins.text import train_tokenizer

  return train_tokenizer.run_from_args(args)


def _add_tokenizer_parser(sub) -> None:
  from siglip_rins.text import train_tokenizer

  tok = sub.add_parser("tokenizer", help="tokenizer tools: `tokenizer train` trains a SentencePiece model")
  tok_sub = tok.add_subparsers(dest="tokenizer_command", required=True)
  train_tokenizer.add_arguments(
    tok_sub.add_parser("train", help="train a SentencePiece model on your captions (text, .jsonl, data.jsonl folders)")
  )


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="siglip-rins", description="Recursive Inference Scaling (RINS) in JAX.")
  sub = p.add_subparsers(dest="command", required=True)
  t = sub.add_parser("train", help="train from a config (big_vision style)")
  t.add_argument("--config", required=True)
  t.add_argument("--workdir", required=True)
  t.add_argument("--debug", action="store_true", help="show the traceback of an error")
  e = sub.add_parser(
    "eval", help="run a config's evaluators on a run's latest checkpoint or an exported model (--config.k=v too)"
  )
  e.add_argument("--config", help="FILE.py[:ARGS] whose config.evals run (default: the run's own config.json)")
  e.add_argument("--workdir", help="a training run folder (its latest checkpoint is scored)")
  e.add_argument("--model", help="or an exported model folder (siglip-rins export)")
  e.add_argument("--rounds", help="inference rounds, e.g. 1,2,3 (default: each eval's own)")
  e.add_argument(
    "--axis",
    default="rounds",
    choices=["rounds", "repeat"],
    help="what --rounds counts: 'rounds' (the first block's leading run, A^kB; default) or 'repeat' (repeat-all-over "
    "of the signature's unit, (AB)^k for ABAB: how the demo scales RAO)",
  )
  e.add_argument("--evals", help="comma list of config.evals names to run (default: all)")
  e.add_argument("--out", help="report folder (default: the workdir)")
  f = sub.add_parser("flops", help="params, FLOPs and compute-matched steps as JSON")
  f.add_argument("--config", required=True)
  f.add_argument("--baseline", help="a baseline config to compute-match against")
  w = sub.add_parser("sweep", help="App. E.1's signatures for a depth: blocks, layers per block, relative size")
  w.add_argument("--depth", type=int, help="baseline depth L (default: the --variant's)")
  w.add_argument("--degree", type=int, choices=(1, 2, 3), help="only this degree (default: 1, 2 and 3)")
  w.add_argument("--split", default="floor", choices=("floor", "spread"), help="floor: the paper's L // blocks")
  w.add_argument("--variant", help="an LM variant (e.g. lm_600m): adds parameter counts")
  w.add_argument("--json", action="store_true", help="JSON instead of a table")
  x = sub.add_parser("export", help="export a trained run to a self-contained model folder")
  x.add_argument("--workdir", required=True)
  x.add_argument("--out", required=True)
  h = sub.add_parser("export-hf", help="write a transformers SiglipModel folder from an exported model")
  h.add_argument("--model", required=True)
  h.add_argument("--out", required=True)
  h.add_argument("--rounds", type=int, default=None, help="recursion rounds to unroll (default: trained r)")
  b = sub.add_parser("import-big-vision", help="a big_vision SigLIP .npz -> an exported model folder")
  b.add_argument("--npz", required=True, help="big_vision checkpoint (.npz, float32 or bfloat16)")
  b.add_argument("--config", required=True, help="FILE.py:ARGS whose model matches the checkpoint")
  b.add_argument("--tokenizer", required=True, help="the checkpoint's SentencePiece .model file")
  b.add_argument("--out", required=True)
  b.add_argument("--res", type=int, default=None, help="image size (default: the checkpoint's)")
  b.add_argument("--text-len", type=int, default=None, help="text length (default: the checkpoint's)")
  c = sub.add_parser("classify", help="zero-shot classify images with an exported model")
  c.add_argument("--model", required=True)
  c.add_argument("--labels", required=True, help="comma-separated class names")
  c.add_argument("--top-k", type=int, default=3)
  c.add_argument("--rounds", type=int, default=None)
  c.add_argument("images", nargs="+")
  r = sub.add_parser("retrieve", help="rank the images of a folder for a text query")
  r.add_argument("--model", required=True)
  r.add_argument("--query", required=True)
  r.add_argument("--top-k", type=int, default=10)
  r.add_argument("--rounds", type=int, default=None)
  r.add_argument("folder")
  from siglip_rins import serve

  serve.add_arguments(sub.add_parser("serve", help="HTTP API and web page for an exported model (rounds per request)"))
  s = sub.add_parser("scaling", help="fit power laws to run folders' eval curves")
  s.add_argument("run_dirs", nargs="+")
  s.add_argument("--metric")
  s.add_argument("--out")
  sub.add_parser(
    "demo", help="the compute-matched RINS study on the built-in dataset (flags: see --help)", add_help=False
  )
  sub.add_parser(
    "study",
    help="compute sweep of AB / RAO / A^2B / A^3B / stochastic A^3B within a wall-clock --budget, power-law fits "
    "and the predicted RINS crossover (flags: see --help)",
    add_help=False,
  )
  _add_tokenizer_parser(sub)
  return p


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  if not host_memory.configure_for_command():  # before JAX starts (see host_memory)
    return 1
  from siglip_rins import compile_cache

  compile_cache.configure()  # every command loads the programs an earlier process compiled (see compile_cache)
  if argv[:1] == ["demo"]:
    return cmd_demo(None, argv[1:])
  if argv[:1] == ["study"]:
    return cmd_study(argv[1:])
  parser = build_parser()
  args, rest = parser.parse_known_args(argv)
  try:
    if args.command == "train":
      from siglip_rins.train import run_from_args

      return run_from_args(args, rest)
    if args.command == "eval":
      return cmd_eval(args, rest)
    if args.command == "flops":
      return cmd_flops(args, rest)
    if args.command == "import-big-vision":
      return cmd_import_big_vision(args, rest)
    if rest:
      parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return {
      "flops": cmd_flops,
      "sweep": cmd_sweep,
      "eval": cmd_eval,
      "export": cmd_export,
      "classify": cmd_classify,
      "retrieve": cmd_retrieve,
      "scaling": cmd_scaling,
      "serve": cmd_serve,
      "export-hf": cmd_export_hf,
      "tokenizer": cmd_tokenizer,
    }[args.command](args)
  except Exception as e:  # one line per failure; `train --debug` shows the traceback
    if getattr(args, "debug", False):
      raise
    from siglip_rins.train import error_line

    print(f"error: {error_line(e)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
