"""Pieces the shipped configs share: arg parsing, recursion blocks, compute matching, the built-in dataset.

Configs import this as `from configs import common` when run from the checkout, or by path (see _load below).
"""

from __future__ import annotations

import os

import ml_collections

from siglip_rins.config_lib import parse_arg  # noqa: F401  (re-exported for configs)


def recursion(arg) -> dict:
  """The model.recursion section from the common args (`split` and `layers_per_block` only where a config
  has those args and sets them: see layers_per_block_arg)."""
  out = dict(
    signature=arg.signature,
    degree=arg.degree,
    p_skip=float(arg.p_skip),
    adapters=bool(arg.adapters),
    kv_sharing=bool(getattr(arg, "kv_sharing", False)),
    loop=arg.loop,
    remat=bool(arg.remat),
  )
  split = getattr(arg, "split", "floor")
  if split != "floor":
    out["split"] = split
  lpb = layers_per_block_arg(getattr(arg, "layers_per_block", ""))
  if lpb is not None:
    out["layers_per_block"] = lpb
  return out


def layers_per_block_arg(text) -> "int | list[int] | None":
  """'' -> None (split the depth), '5' -> 5 (every block), '6:5:5' -> [6, 5, 5] (one per unique block, in order
  of first use; ':' because the config arg is a comma list)."""
  if isinstance(text, int) and not isinstance(text, bool):
    return text
  text = str(text or "").strip()
  if not text:
    return None
  try:
    parts = [int(x) for x in text.split(":")]
  except ValueError:
    raise ValueError(
      f"layers_per_block: expected an integer or integers joined by ':' (e.g. 6:5:5), got {text!r}"
    ) from None
  return parts[0] if len(parts) == 1 else parts


def demo_data_dir(split: str, num_examples: int, image_size: int, seed: int = 0) -> str:
  """Writes (once) the built-in multilingual shapes dataset and returns the folder holding data.jsonl.

  Location: $SIGLIP_RINS_DATA_DIR (default ~/.cache/siglip_rins) / demo_shapes/<split>_<n>_<size>_<seed>.
  """
  from siglip_rins.demo import shapes

  root = os.environ.get("SIGLIP_RINS_DATA_DIR", os.path.join(os.path.expanduser("~"), ".cache", "siglip_rins"))
  out = os.path.join(root, "demo_shapes", f"{split}_{num_examples}_{image_size}_{seed}")
  if not os.path.exists(os.path.join(out, "data.jsonl")):
    tmp = out + f".tmp{os.getpid()}"
    shapes.write_jsonl_dataset(tmp, split, num_examples, seed=seed, image_size=image_size)
    try:
      os.replace(tmp, out)
    except OSError:  # another process won the race
      pass
  return out


def eval_data_dir(name: str) -> str:
  """Default local folder of an evaluation set: $SIGLIP_RINS_EVAL_DIR (default ~/.cache/siglip_rins/eval)/<name>."""
  root = os.environ.get("SIGLIP_RINS_EVAL_DIR", os.path.join(os.path.expanduser("~"), ".cache", "siglip_rins", "eval"))
  return os.path.join(root, name)


def demo_text_dir(languages=("en",)) -> str:
  """Writes (once) every built-in demo caption of `languages` as a text corpus; returns the folder holding
  data.jsonl (one {"text": caption} object per line, in shapes.all_captions order; ~29k lines for 'en').

  The offline corpus of the LM `runlocal` configs.  Location: $SIGLIP_RINS_DATA_DIR (default
  ~/.cache/siglip_rins) / demo_text/<languages joined by '_'>.
  """
  import json
  from siglip_rins.demo import shapes

  languages = tuple(languages)
  root = os.environ.get("SIGLIP_RINS_DATA_DIR", os.path.join(os.path.expanduser("~"), ".cache", "siglip_rins"))
  out = os.path.join(root, "demo_text", "_".join(languages))
  if not os.path.exists(os.path.join(out, "data.jsonl")):
    tmp = out + f".tmp{os.getpid()}"
    os.makedirs(tmp, exist_ok=True)
    with open(os.path.join(tmp, "data.jsonl"), "w", encoding="utf-8") as f:
      for caption in shapes.all_captions(languages):
        f.write(json.dumps({"text": caption}, ensure_ascii=False) + "\n")
    try:
      os.replace(tmp, out)
    except OSError:  # another process won the race
      pass
  return out


def schedule(decay_type: str, warmup_steps: int, cooldown_steps: int = 0, **kw) -> dict:
  d = dict(decay_type=decay_type, warmup_steps=warmup_steps, **kw)
  if cooldown_steps:
    d["cooldown_steps"] = cooldown_steps
  return d


def as_config(d: dict) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(d)
