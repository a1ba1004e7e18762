"""Compute matching that cannot go stale: the training budget derived from the final config.

The paper compares variants at equal training FLOPs.  A config declares what it is matched against,

  config.compute_match = dict(baseline_signature="AB", baseline_examples=N,
                              baseline_res=R, baseline_text_len=L, baseline_seq_len=S)   # the inputs it has

and leaves `total_steps` / `total_examples` / `total_epochs` unset.  `finalize(config)` runs after every
`--config.*` override (train start, `siglip-rins flops`, the demo): it builds the final model and task, computes
the candidate's and the baseline's training FLOPs per example (siglip_rins.flops) and sets
`config.total_steps` to the matched number of steps (the budget over the baseline's FLOPs, rounded down).

A config that also gives a total (e.g. `--config.total_steps=1000`) is checked instead: the run is refused with
one line when it is more than one step away from the matched budget (set `--config.compute_match=None` to train
an unmatched run).  The derivation is recorded in `run_info.json` and printed at train start.
"""

from __future__ import annotations

import copy
from typing import Optional

TOTAL_KEYS = ("total_steps", "total_examples", "total_epochs")


def declared_steps(config) -> Optional[int]:
  """The total steps the config states (None when it states none)."""
  bs = int(config.input.batch_size)
  if config.get("total_steps") is not None:
    return int(config.total_steps)
  if config.get("total_examples") is not None:
    return max(1, int(config.total_examples) // bs)
  if config.get("total_epochs") is not None and config.input.get("num_examples"):
    return max(1, int(config.total_epochs * config.input.num_examples) // bs)
  return None


def _baseline_shapes(cm, shapes: dict) -> dict:
  out = dict(shapes)
  if "image" in out and cm.get("baseline_res"):
    out["image"] = (int(cm.baseline_res), int(cm.baseline_res))
  if "text" in out and cm.get("baseline_text_len"):
    out["text"] = int(cm.baseline_text_len)
  if "tokens" in out and cm.get("baseline_seq_len"):
    out["tokens"] = int(cm.baseline_seq_len)
  return out


def _baseline_model_config(model_cfg, signature: str):
  base = copy.deepcopy(model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else dict(model_cfg))
  rec = dict(base.get("recursion") or {})
  base["recursion"] = dict(signature=signature, loop=rec.get("loop", "auto"))
  return base


def matched(config) -> Optional[dict]:
  """The matched budget of the final config (None without compute_match); see module docstring."""
  cm = config.get("compute_match")
  if not cm:
    return None
  from siglip_rins import flops
  from siglip_rins.models import build_model
  from siglip_rins.tasks import get_task

  if cm.get("baseline_examples") is None:
    raise ValueError("config.compute_match needs baseline_examples (the baseline's training examples)")
  bs = int(config.input.batch_size)
  task = get_task(config)
  shapes = task.input_shapes()
  cand = flops.train_flops_per_example(build_model(config.model), shapes)
  base_cfg = _baseline_model_config(config.model, str(cm.get("baseline_signature", "AB")))
  base = flops.train_flops_per_example(build_model(base_cfg), _baseline_shapes(cm, shapes))
  m = flops.matched_budget(cand, base, float(cm.baseline_examples), bs)
  return dict(
    baseline_signature=str(cm.get("baseline_signature", "AB")),
    baseline_examples=float(cm.baseline_examples),
    baseline_train_flops_per_example=float(base),
    train_flops_per_example=float(cand),
    flops_budget=float(m["flops_budget"]),
    matched_steps=int(m["matched_steps"]),
    matched_examples=int(m["matched_steps"]) * bs,
  )


def finalize(config) -> Optional[dict]:
  """Derives (or checks) the total steps from compute_match; returns the `matched` dict (None without one)."""
  info = matched(config)
  if info is None:
    return None
  declared = declared_steps(config)
  if declared is None:
    with config.ignore_type():
      config.total_steps = info["matched_steps"]
    info["derived"] = True
  else:
    info["derived"] = False
    info["declared_steps"] = declared
    if abs(declared - info["matched_steps"]) > 1:
      raise ValueError(
        f"compute_match does not hold: the config trains {declared} steps but the final model's matched budget "
        f"is {info['matched_steps']} steps ({info['flops_budget']:.4g} FLOPs of the {info['baseline_signature']} "
        f"baseline over {info['train_flops_per_example']:.4g} FLOPs per example); drop the total_* override to "
        f"derive it, or set --config.compute_match=None to train an unmatched run"
      )
  return info
