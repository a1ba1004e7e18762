"""RINS-ify a pretrained SigLIP: turn an AB checkpoint into stochastic A^rB with adapters, fine-tune it at the
training FLOPs of continuing the AB model, and compare both at r = 1..4.

Two arms from the same checkpoint (`init`: a big_vision .npz, an exported siglip_rins folder, a Hugging Face
SiglipModel folder or a run's workdir; siglip_rins/model_init.py maps it by name, AB's blocks onto A and B):

  arm=continue   the AB model, trained on `finetune_examples` more examples (the budget);
  arm=rins       A^rB (default A^3B), stochastic (p_skip, default 0.5), with linear adapters (identity at the
                 start, listed as fresh in the log), trained for the same training FLOPs: `compute_match` is the
                 AB continuation's budget and total_steps is derived from it at train start (siglip_rins/budget.py),
                 so A^3B sees fewer examples.

Both arms start from exactly the pretrained function: with the identity adapters A^rB at r = 1 computes AB.

  CKPT=/ckpt/siglip_b16_224.npz   # e.g. big_vision's SigLIP B/16 at 224 px
  C=configs/rinsify.py
  siglip-rins train --config $C:init=$CKPT,arm=continue,res=224 --workdir runs/ab_cont
  siglip-rins train --config $C:init=$CKPT,arm=rins,signature=A^3B,res=224 --workdir runs/a3b
  siglip-rins eval --workdir runs/ab_cont --rounds 1,2,3,4 --config $C:init=$CKPT,arm=continue,res=224
  siglip-rins eval --workdir runs/a3b --rounds 1,2,3,4 --config $C:init=$CKPT,arm=rins,res=224
  siglip-rins flops --config $C:init=$CKPT,arm=rins,res=224 --baseline $C:init=$CKPT,arm=continue,res=224

The data and evaluators are those of configs/siglip_rins.py (point `--config.input.data` at your image-text data;
evaluators with `--config.evals.NAME.data...`).  Args: init (required), arm ('rins' | 'continue'), signature,
p_skip, adapters, finetune_examples (default 1e9), lr (default 1e-4), warmup_percent (default 0.05), freeze
(a regex of parameters kept fixed, default none), plus every configs/siglip_rins.py arg (variant, txt_variant,
res, text_len, tokenizer, batch_size, runlocal, steps, ...).  runlocal: the built-in shapes data; `steps` is the
AB continuation's steps (the budget).
"""

import os

try:
  from configs import common, siglip_rins
except ImportError:  # loaded by path from elsewhere
  import importlib.util

  def _load(name):
    spec = importlib.util.spec_from_file_location(
      f"configs.{name}", os.path.join(os.path.dirname(__file__), f"{name}.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod

  common, siglip_rins = _load("common"), _load("siglip_rins")

OWN_ARGS = dict(
  init="",
  arm="rins",
  signature="A^3B",
  p_skip=0.5,
  adapters=True,
  finetune_examples=1_000_000_000,
  lr=1e-4,
  warmup_percent=0.05,
  freeze="",
)


def get_config(arg=None):
  own, rest = {}, []
  for item in (arg or "").split(","):
    key, _, value = item.partition("=")
    if key.strip() in OWN_ARGS:
      own[key.strip()] = value.strip()
    elif item.strip():
      rest.append(item.strip())
  a = common.parse_arg(",".join(f"{k}={v}" for k, v in own.items()), **OWN_ARGS)
  if a.arm not in ("rins", "continue"):
    raise ValueError(f"arm={a.arm!r}; allowed: 'rins' (A^rB, compute-matched) or 'continue' (AB)")
  if not a.init:
    raise ValueError("give init=PATH: the pretrained AB checkpoint (.npz, exported folder, HF folder or workdir)")
  base_args = list(rest)
  if a.arm == "rins":
    base_args += [f"signature={a.signature}", f"p_skip={a.p_skip}", f"adapters={a.adapters}"]
  else:
    base_args += ["signature=AB"]
  runlocal = any(x.partition("=")[0] == "runlocal" and x.partition("=")[2] in ("", "True", "true", "1") for x in rest)
  if not runlocal:
    base_args.append(f"baseline_examples={int(a.finetune_examples)}")
  c = siglip_rins.get_config(",".join(base_args))
  c.name = f"rinsify_{a.arm}"
  c.model_init = a.init
  c.frozen = [a.freeze] if a.freeze else None
  # The budget: the AB continuation's training FLOPs (baseline_examples examples of AB at the same shapes).
  # runlocal: steps x local_batch_size (configs/siglip_rins.py).
  c.compute_match.baseline_signature = "AB"
  # Fine-tuning schedule: a short warm-up from the pretrained weights, cosine to zero; a lower lr than pretraining.
  c.lr = float(a.lr)
  c.schedule = dict(decay_type="cosine", warmup_percent=float(a.warmup_percent))
  return c
