"""One factory from a named model config to a ready flax module.

    model = build_model(dict(name='two_towers', image=dict(variant='B/16'), text=dict(variant='B'),
                             out_dim=(None, 768), recursion=dict(signature='A^2B')))

Config keys per model name are listed in `ALLOWED`; unknown keys raise ValueError naming the key.
`recursion` (signature, degree, p_skip, adapters, loop, remat, kv_sharing, layers_per_block (an int or one int
per unique block), split ('floor' | 'spread' | 'exact'), scan_unroll) applies to every tower; `image.recursion` /
`text.recursion` override it per tower.
`precision` ('float32' (default) | 'bfloat16' | 'float16'; `dtype` is its older name) is the mixed-precision
policy of every tower (siglip_rins.precision): float32 parameters, gradients, activations, LayerNorm, softmax and
loss; matmul/einsum/conv operands in the named dtype with float32 accumulation.  `attention` ('einsum' (default)
| 'fused') picks how attention is computed (siglip_rins.precision.ATTENTION): 'fused' is
jax.nn.dot_product_attention, cuDNN's flash attention on GPUs.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp

from siglip_rins import limits
from siglip_rins.models.classifier import Classifier
from siglip_rins.models.decoder import DecoderLM, init_cache
from siglip_rins.models.text import TextTransformer
from siglip_rins.models.two_towers import TwoTowers
from siglip_rins.models.vit import ViT, decode_variant
from siglip_rins.precision import Policy, get_policy
from siglip_rins.recursion import RecursionConfig

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
_TOWER_KEYS = {"variant", "width", "depth", "mlp_dim", "num_heads", "recursion"}
ALLOWED = {
  "two_towers": {
    "name",
    "image",
    "text",
    "out_dim",
    "recursion",
    "dtype",
    "precision",
    "attention",
    "temperature_init",
    "bias_init",
  },
  "vit": {
    "name",
    "variant",
    "width",
    "depth",
    "mlp_dim",
    "num_heads",
    "patch_size",
    "posemb",
    "pool_type",
    "num_classes",
    "head_bias_init",
    "head_zeroinit",
    "recursion",
    "dtype",
    "precision",
    "attention",
  },
  "text": {
    "name",
    "variant",
    "vocab_size",
    "width",
    "depth",
    "mlp_dim",
    "num_heads",
    "pool_type",
    "num_classes",
    "recursion",
    "dtype",
    "precision",
    "attention",
  },
  "decoder": {
    "name",
    "variant",
    "vocab_size",
    "width",
    "depth",
    "mlp_dim",
    "num_heads",
    "tie_embeddings",
    "recursion",
    "dtype",
    "precision",
    "attention",
  },
}
# Model-level keys that are not tower arguments (the name and the precision policy, siglip_rins.precision).
_MODEL_LEVEL = ("name", "dtype", "precision", "attention")
IMAGE_KEYS = ALLOWED["vit"] - set(_MODEL_LEVEL)
TEXT_KEYS = ALLOWED["text"] - set(_MODEL_LEVEL)
# Decoder LM shapes of the paper (Sec. 3-4): 300M/600M (emb 1536, mlp 6144), 1B (emb 2048, mlp 8192, 18 blocks).
ALLOWED["classifier"] = ALLOWED["vit"]  # the ViT classifier takes the ViT keys

LM_VARIANTS = {
  "lm_mu": dict(width=64, depth=4, mlp_dim=256, num_heads=2),
  "lm_300m": dict(width=1536, depth=6, mlp_dim=6144, num_heads=12),
  "lm_600m": dict(width=1536, depth=16, mlp_dim=6144, num_heads=12),
  "lm_1b": dict(width=2048, depth=18, mlp_dim=8192, num_heads=16),
}


def _as_dict(cfg: Any) -> dict:
  if cfg is None:
    return {}
  if hasattr(cfg, "to_dict"):
    return cfg.to_dict()
  if isinstance(cfg, Mapping):
    return dict(cfg)
  raise ValueError(f"model config must be a dict or ConfigDict, got {type(cfg).__name__}")


def _check_keys(d: dict, allowed: set, where: str):
  unknown = sorted(set(d) - allowed)
  if unknown:
    raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _dtype(name: str):
  if name not in DTYPES:
    raise ValueError(f"model.dtype: unknown dtype {name!r}; allowed: {sorted(DTYPES)}")
  return DTYPES[name]


def precision_policy(cfg: Any) -> Policy:
  """The model's mixed-precision policy (siglip_rins.precision) from `model.precision` ('float32' |
  'bfloat16' | 'float16'); `model.dtype` is the older spelling of the same key (both given must agree).
  Default float32."""
  cfg = _as_dict(cfg)
  dtype, precision = cfg.get("dtype"), cfg.get("precision")
  if dtype is not None:
    _dtype(dtype)
  if dtype is not None and precision is not None and dtype != precision:
    raise ValueError(
      f"model.precision {precision!r} and model.dtype {dtype!r} disagree; model.dtype is the older name of "
      "model.precision: give one of them"
    )
  return Policy(get_policy(precision or dtype or "float32").name, attention=cfg.get("attention") or "einsum")


def _tower_kwargs(d: dict, recursion: dict, dtype, where: str, is_text: bool) -> dict:
  d = dict(d)
  variant = d.pop("variant", None)
  out: dict = {}
  if variant is not None:
    v = decode_variant(variant)
    if is_text:
      v.pop("patch_size", None)
    out.update(v)
  out.update(d)
  rec = dict(recursion)
  rec.update(_as_dict(out.pop("recursion", None)))
  try:
    out["recursion"] = RecursionConfig.from_dict(rec)
  except ValueError as e:
    raise ValueError(f"{where}.recursion: {e}") from None
  if "patch_size" in out and isinstance(out["patch_size"], int):
    out["patch_size"] = (out["patch_size"],) * 2
  if "patch_size" in out:
    out["patch_size"] = tuple(out["patch_size"])
  out["dtype"] = dtype
  limits.check_dims(out, where)
  return out


def build_model(cfg: Any):
  """Returns the flax module for `cfg` (see module docstring).  Validates keys and the recursion plan."""
  cfg = _as_dict(cfg)
  name = cfg.get("name")
  if name not in ALLOWED:
    raise ValueError(f"model.name: unknown model {name!r}; allowed: {sorted(ALLOWED)}")
  _check_keys(cfg, ALLOWED[name], f"model ({name})")
  dtype = precision_policy(cfg)  # passed to the towers as `dtype` (the policy)
  recursion = _as_dict(cfg.get("recursion"))
  if name == "two_towers":
    out_dim = cfg.get("out_dim", (None, None))
    out_img, out_txt = (out_dim, out_dim) if isinstance(out_dim, int) or out_dim is None else tuple(out_dim)
    image = text = None
    if cfg.get("image") is not None:
      di = _as_dict(cfg["image"])
      _check_keys(di, IMAGE_KEYS, "model.image")
      image = _tower_kwargs(di, recursion, dtype, "model.image", False)
      image.setdefault("num_classes", out_img)
    if cfg.get("text") is not None:
      dt = _as_dict(cfg["text"])
      _check_keys(dt, TEXT_KEYS, "model.text")
      text = _tower_kwargs(dt, recursion, dtype, "model.text", True)
      text.setdefault("num_classes", out_txt)
    if image is None and text is None:
      raise ValueError("model: a two_towers model needs at least one of 'image' and 'text'")
    kw = {k: cfg[k] for k in ("temperature_init", "bias_init") if k in cfg}
    model = TwoTowers(image=image, text=text, **kw)
  elif name == "vit":
    model = ViT(**_tower_kwargs(_without(cfg, *_MODEL_LEVEL), recursion, dtype, "model", False))
  elif name == "classifier":
    kw = _tower_kwargs(_without(cfg, *_MODEL_LEVEL), recursion, dtype, "model", False)
    kw.setdefault("head_bias_init", -6.9)
    if not kw.get("num_classes"):
      raise ValueError("model.num_classes: a classifier needs num_classes >= 1")
    model = Classifier(vit=kw)
  elif name == "text":
    model = TextTransformer(**_tower_kwargs(_without(cfg, *_MODEL_LEVEL), recursion, dtype, "model", True))
  else:
    d = _without(cfg, *_MODEL_LEVEL)
    variant = d.pop("variant", None)
    if variant is not None:
      if variant not in LM_VARIANTS:
        raise ValueError(f"model.variant: unknown LM variant {variant!r}; allowed: {sorted(LM_VARIANTS)}")
      d = {**LM_VARIANTS[variant], **d}
    limits.check_dims(d, "model")
    rec = dict(recursion)
    try:
      d["recursion"] = RecursionConfig.from_dict(rec)
    except ValueError as e:
      raise ValueError(f"model.recursion: {e}") from None
    model = DecoderLM(dtype=dtype, **d)
  _validate_plans(model)
  return model


def _without(d: dict, *keys) -> dict:
  """d without `keys` and without 'recursion' (the top-level recursion is merged by _tower_kwargs)."""
  return {k: v for k, v in d.items() if k not in keys and k != "recursion"}


def _validate_plans(model) -> None:
  """Builds each tower's block plan now so a bad signature/depth fails before any work starts."""
  towers = []
  if isinstance(model, TwoTowers):
    towers = [(k, v) for k, v in (("model.image", model.image), ("model.text", model.text)) if v is not None]
  elif isinstance(model, Classifier):
    towers = [("model", model.vit)]
  else:
    towers = [("model", {"recursion": model.recursion, "depth": model.depth})]
  for where, kw in towers:
    try:
      kw["recursion"].plan(kw.get("depth", 12))
    except ValueError as e:
      raise ValueError(f"{where}: {e}") from None


__all__ = [
  "build_model",
  "init_cache",
  "ViT",
  "TextTransformer",
  "TwoTowers",
  "DecoderLM",
  "Classifier",
  "decode_variant",
  "ALLOWED",
  "LM_VARIANTS",
]
