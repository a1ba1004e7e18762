"""`config.model_init`: start a training run from another model's parameters.

    config.model_init = "/ckpt/siglip_b16_224.npz"            # a big_vision SigLIP checkpoint (.npz)
    config.model_init = "/models/exported"                    # an exported siglip_rins model folder
    config.model_init = "/models/hf_siglip"                   # a Hugging Face SiglipModel folder (model.safetensors)
    config.model_init = "/runs/pretrain"                      # another run's workdir (its latest checkpoint)
    config.model_init = dict(path="/runs/pretrain", step=5000, reinit=[r"img/MAPHead_0/.*"])
    config.frozen = [r"img/.*"]                               # optional: regexes (re.fullmatch) of frozen params

`apply(config, params) -> params` (called by train.py right after the train state is initialised, on fresh runs
only: a resumed run restores its own checkpoint and never reads `model_init` again):

* The source is read into siglip_rins parameter names.  big_vision and Hugging Face stacks are a plain list of
  layers (`encoderblock_i`, `encoder.layers.i`) and map onto this model's unique blocks A, B, ... in order, as
  `interop.big_vision.import_big_vision` does: a 12-layer AB checkpoint fills blocks A (layers 0-5) and B (6-11)
  of an AB model and, with the identical tree, of any A^rB model (RINS-ify); a stack whose layer count differs
  from the layers of the model's unique blocks is refused.  Exported folders and workdirs already carry
  siglip_rins names.
* Each of this model's parameters is taken from the source when the name exists there with the same shape;
  `img/pos_embedding` is resampled (bilinear on the 2-D grid, `resample_posemb`) when the resolution differs and
  `txt/pos_embedding` keeps its first positions when the text is shorter.  Everything else (linear adapters, a new
  head, names matched by `reinit`) keeps its fresh initialisation; the log lists those names, and the source
  names that were not used.
* A shape mismatch (other than the two position embeddings) is an error: one line per mismatched name.
* The new values are placed with the sharding of the initialised parameters (`jax.make_array_from_callback`),
  so FSDP / multi-host runs work unchanged; dtypes follow the model.  The optimiser state is not touched: the
  optimisers of siglip_rins (optax scale_by_* moments, counters) initialise independently of parameter values.

Freezing (`config.frozen`) lives in siglip_rins/optim.py: the matched parameters' gradients and updates are set
to exactly zero (also weight decay), so their values stay bit-identical.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
from typing import Any, Callable, Mapping, Optional

import jax
import numpy as np

from siglip_rins.interop import flatten_params

KINDS = ("big_vision", "exported", "hf", "workdir")
_BV_LOOP_RE = re.compile(r"^(img/Transformer|txt/Encoder_0)/encoderblock_(\d+)/(.+)$")


# ---------------------------------------------------------------------------------------------- config
def _section(config) -> Optional[dict]:
  mi = config.get("model_init") if hasattr(config, "get") else None
  if mi is None or mi == "":
    return None
  if hasattr(mi, "to_dict"):
    mi = mi.to_dict()
  if isinstance(mi, (str, os.PathLike)):
    mi = {"path": str(mi)}
  if not isinstance(mi, Mapping) or not mi.get("path"):
    raise ValueError(f"config.model_init must be a path or dict(path=..., step=..., reinit=[...]), got {mi!r}")
  unknown = sorted(set(mi) - {"path", "step", "reinit", "kind"})
  if unknown:
    raise ValueError(f"config.model_init: unknown key(s) {unknown}; allowed: ['kind', 'path', 'reinit', 'step']")
  return dict(mi)


def detect_kind(path: str | os.PathLike) -> str:
  """'big_vision' (.npz file), 'exported' (config.json format siglip_rins.exported), 'hf' (config.json of a
  SiglipModel) or 'workdir' (a training run: config.json with model/input and checkpoints/)."""
  p = pathlib.Path(path)
  if not p.exists():
    raise FileNotFoundError(f"model_init: {p} does not exist")
  if p.is_file():
    if p.suffix == ".npz":
      return "big_vision"
    raise ValueError(f"model_init: {p} is a file but not a big_vision .npz")
  cfg_path = p / "config.json"
  if not cfg_path.is_file():
    raise ValueError(f"model_init: {p} has no config.json (not an exported model, HF folder or run workdir)")
  try:
    cfg = json.loads(cfg_path.read_text())
  except ValueError as e:
    raise ValueError(f"model_init: {cfg_path} is not valid JSON: {e}") from None
  if cfg.get("format") == "siglip_rins.exported":
    return "exported"
  if cfg.get("model_type") == "siglip" or "SiglipModel" in (cfg.get("architectures") or []):
    return "hf"
  if isinstance(cfg.get("model"), dict) and (p / "checkpoints").is_dir():
    return "workdir"
  raise ValueError(f"model_init: cannot tell what {p} holds (config.json is not one of {KINDS})")


# ---------------------------------------------------------------------------------------------- sources
def _hf_to_big_vision(sd: Mapping[str, np.ndarray], hf_config: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """A transformers SiglipModel state dict -> big_vision names (a plain layer stack), the inverse of
  interop.hf.to_hf."""
  out: dict[str, np.ndarray] = {}
  vc, tc = hf_config.get("vision_config") or {}, hf_config.get("text_config") or {}

  def attn(prefix_ours, weights, biases, heads):  # HF Linear [out, in] -> our [D, H, K] / [H, K, D]
    for ours, w, b in zip(("query", "key", "value"), weights[:3], biases[:3]):
      d = w.shape[1]
      out[f"{prefix_ours}/{ours}/kernel"] = w.T.reshape(d, heads, -1)
      out[f"{prefix_ours}/{ours}/bias"] = b.reshape(heads, -1)
    w, b = weights[3], biases[3]
    out[f"{prefix_ours}/out/kernel"] = w.T.reshape(heads, -1, w.shape[0])
    out[f"{prefix_ours}/out/bias"] = b

  def layers(hf_prefix, stack, heads):
    n = 0
    while f"{hf_prefix}.{n}.layer_norm1.weight" in sd:
      q, p = f"{hf_prefix}.{n}", f"{stack}/encoderblock_{n}"
      out[f"{p}/LayerNorm_0/scale"], out[f"{p}/LayerNorm_0/bias"] = (
        sd[f"{q}.layer_norm1.weight"],
        sd[f"{q}.layer_norm1.bias"],
      )
      out[f"{p}/LayerNorm_1/scale"], out[f"{p}/LayerNorm_1/bias"] = (
        sd[f"{q}.layer_norm2.weight"],
        sd[f"{q}.layer_norm2.bias"],
      )
      for i, fc in ((0, "fc1"), (1, "fc2")):
        out[f"{p}/MlpBlock_0/Dense_{i}/kernel"] = sd[f"{q}.mlp.{fc}.weight"].T
        out[f"{p}/MlpBlock_0/Dense_{i}/bias"] = sd[f"{q}.mlp.{fc}.bias"]
      a = f"{q}.self_attn"
      attn(
        f"{p}/MultiHeadDotProductAttention_0",
        [sd[f"{a}.{t}_proj.weight"] for t in ("q", "k", "v", "out")],
        [sd[f"{a}.{t}_proj.bias"] for t in ("q", "k", "v", "out")],
        heads,
      )
      n += 1
    return n

  if "vision_model.embeddings.patch_embedding.weight" in sd:
    heads = int(vc.get("num_attention_heads", 12))
    out["img/embedding/kernel"] = sd["vision_model.embeddings.patch_embedding.weight"].transpose(2, 3, 1, 0)
    out["img/embedding/bias"] = sd["vision_model.embeddings.patch_embedding.bias"]
    out["img/pos_embedding"] = sd["vision_model.embeddings.position_embedding.weight"][None]
    layers("vision_model.encoder.layers", "img/Transformer", heads)
    out["img/Transformer/encoder_norm/scale"] = sd["vision_model.post_layernorm.weight"]
    out["img/Transformer/encoder_norm/bias"] = sd["vision_model.post_layernorm.bias"]
    h = "vision_model.head"
    if f"{h}.probe" in sd:
      out["img/MAPHead_0/probe"] = sd[f"{h}.probe"]
      w = np.split(sd[f"{h}.attention.in_proj_weight"], 3, axis=0) + [sd[f"{h}.attention.out_proj.weight"]]
      b = np.split(sd[f"{h}.attention.in_proj_bias"], 3, axis=0) + [sd[f"{h}.attention.out_proj.bias"]]
      attn("img/MAPHead_0/MultiHeadDotProductAttention_0", w, b, heads)
      out["img/MAPHead_0/LayerNorm_0/scale"] = sd[f"{h}.layernorm.weight"]
      out["img/MAPHead_0/LayerNorm_0/bias"] = sd[f"{h}.layernorm.bias"]
      for i, fc in ((0, "fc1"), (1, "fc2")):
        out[f"img/MAPHead_0/MlpBlock_0/Dense_{i}/kernel"] = sd[f"{h}.mlp.{fc}.weight"].T
        out[f"img/MAPHead_0/MlpBlock_0/Dense_{i}/bias"] = sd[f"{h}.mlp.{fc}.bias"]
  if "text_model.embeddings.token_embedding.weight" in sd:
    heads = int(tc.get("num_attention_heads", 12))
    out["txt/Embed_0/embedding"] = sd["text_model.embeddings.token_embedding.weight"]
    out["txt/pos_embedding"] = sd["text_model.embeddings.position_embedding.weight"][None]
    layers("text_model.encoder.layers", "txt/Encoder_0", heads)
    out["txt/Encoder_0/encoder_norm/scale"] = sd["text_model.final_layer_norm.weight"]
    out["txt/Encoder_0/encoder_norm/bias"] = sd["text_model.final_layer_norm.bias"]
    if "text_model.head.weight" in sd:
      out["txt/head/kernel"] = sd["text_model.head.weight"].T
      out["txt/head/bias"] = sd["text_model.head.bias"]
  if "logit_scale" in sd:
    out["t"] = sd["logit_scale"].reshape(1)
  if "logit_bias" in sd:
    out["b"] = sd["logit_bias"].reshape(1)
  return out


def _blocks_from_stack(flat: Mapping[str, np.ndarray], model) -> dict[str, np.ndarray]:
  """big_vision layer names (encoderblock_i) -> this model's blocks, in order (interop.big_vision's rule).  A
  stack whose layer count differs from the layers the model's unique blocks hold is refused, one line per stack
  (the layers would land in the wrong blocks)."""
  from siglip_rins.interop.big_vision import _tower_plans

  plans = _tower_plans(model)
  depth: dict[str, int] = {}
  for k in flat:
    m = _BV_LOOP_RE.match(k)
    if m:
      depth[m.group(1)] = max(depth.get(m.group(1), 0), int(m.group(2)) + 1)
  bad = [
    f"{stack}: the source has {n} layers, the model's unique blocks {list(plans[stack][0].block_names)} hold "
    f"{sum(plans[stack][0].block_layers)}"
    for stack, n in sorted(depth.items())
    if stack in plans and n != sum(plans[stack][0].block_layers)
  ]
  if bad:
    raise ValueError(
      "model_init: the source's layer stack does not fit this model's blocks (a Hugging Face folder written by "
      "export-hf from a RINS model holds the recursion unrolled: start from the exported siglip_rins folder "
      "instead):\n  " + "\n  ".join(bad)
    )
  out = {}
  for k, v in flat.items():
    m = _BV_LOOP_RE.match(k)
    if m and m.group(1) in plans:
      plan = plans[m.group(1)][0]
      i = int(m.group(2))
      starts = np.cumsum((0,) + tuple(plan.block_layers))
      blk = int(np.searchsorted(starts, i, side="right")) - 1
      k = f"{m.group(1)}/{plan.block_names[blk]}/encoderblock_{i - starts[blk]}/{m.group(3)}"
    out[k] = v
  return out


def load_source(path, kind: Optional[str] = None, step: Optional[int] = None, model=None) -> dict[str, np.ndarray]:
  """The source's parameters as a flat dict of float32 numpy arrays under siglip_rins names (stacks mapped onto
  `model`'s blocks for big_vision / HF sources)."""
  from siglip_rins.interop import big_vision as bv

  kind = kind or detect_kind(path)
  if kind not in KINDS:
    raise ValueError(f"model_init.kind={kind!r}; allowed: {KINDS}")
  p = pathlib.Path(path)
  if kind in ("big_vision", "hf"):
    if kind == "big_vision":
      flat = bv.scan_to_loop(bv.load_npz(p))
    else:
      from siglip_rins.exported_format import read_params

      files = sorted(p.glob("model*.safetensors"))
      if not files:
        raise FileNotFoundError(f"model_init: {p} has no model.safetensors (save the SiglipModel with safetensors)")
      sd = {}
      for f in files:
        sd.update(read_params(f))  # size-checked from its header first (siglip_rins.limits)
      flat = _hf_to_big_vision(sd, json.loads((p / "config.json").read_text()))
    flat = {k: bv.to_float32(k, v) for k, v in flat.items()}
    return _blocks_from_stack(flat, model) if model is not None else flat
  if kind == "exported":
    from siglip_rins import paths
    from siglip_rins.export import check_weights, read_exported_config, read_params

    folder = paths.workdir_path(path)
    cfg = read_exported_config(folder)
    params_path = folder / cfg.get("params_file", "params.safetensors")
    flat = dict(read_params(params_path))
    check_weights(flat, params_path, cfg.get("params_dtype", "float32"))  # float32 and finite, else one line
    return flat
  from siglip_rins.checkpoint import CheckpointManager  # workdir

  mgr = CheckpointManager(str(p), async_save=False)
  try:
    step = step if step is not None else mgr.latest_step()
    if step is None:
      raise FileNotFoundError(f"model_init: no complete checkpoint in {p}")
    state, _ = mgr.restore(step)
  finally:
    mgr.close()
  return {k: np.asarray(v, np.float32) for k, v in flatten_params(state["params"]).items()}


# ---------------------------------------------------------------------------------------------- mapping
def _grid(n: int, name: str, image_size=None, patch=None) -> tuple[int, int]:
  if image_size is not None and patch is not None:
    g = (int(image_size[0]) // patch[0], int(image_size[1]) // patch[1])
    if g[0] * g[1] == n:
      return g
  g = math.isqrt(n)
  if g * g != n:
    raise ValueError(f"{name}: {n} positions are not a square grid")
  return g, g


def map_params(
  source: Mapping[str, np.ndarray],
  target: Mapping[str, Any],
  reinit=(),
  image_size=None,
  patch=None,
) -> tuple[dict[str, np.ndarray], dict]:
  """(values for the target names taken from `source`, report).  target: flat name -> array or ShapeDtypeStruct.
  report: loaded, fresh (target names left as initialised), unused (source names not used), resampled (lines),
  mismatches (lines; non-empty -> apply raises)."""
  from siglip_rins.interop.big_vision import resample_posemb

  reinit_re = [re.compile(r) for r in ([reinit] if isinstance(reinit, str) else list(reinit or ()))]
  values, fresh, resampled, mismatches = {}, [], [], []
  for name, spec in target.items():
    want = tuple(spec.shape)
    if any(r.fullmatch(name) for r in reinit_re) or name not in source:
      fresh.append(name)
      continue
    v = np.asarray(source[name], np.float32)
    if not np.isfinite(v).all():
      mismatches.append(f"{name}: source has {int(v.size - np.isfinite(v).sum())} non-finite value(s) (NaN or inf)")
    elif tuple(v.shape) == want:
      values[name] = v
    elif name == "img/pos_embedding" and v.ndim == 3 and len(want) == 3 and v.shape[-1] == want[-1]:
      old = _grid(v.shape[1], f"source {name}")
      new = _grid(want[1], name, image_size, patch)
      values[name] = resample_posemb(v, new, old)
      resampled.append(f"{name}: resampled the {old[0]}x{old[1]} grid to {new[0]}x{new[1]}")
    elif name == "txt/pos_embedding" and v.ndim == 3 and v.shape[-1] == want[-1] and v.shape[1] > want[1]:
      values[name] = v[:, : want[1]]
      resampled.append(f"{name}: kept the first {want[1]} of {v.shape[1]} text positions")
    else:
      mismatches.append(f"{name}: source {tuple(v.shape)} != model {want}")
  unused = sorted(set(source) - set(target))
  report = dict(loaded=sorted(values), fresh=fresh, unused=unused, resampled=resampled, mismatches=mismatches)
  return values, report


def apply(config, params, log: Optional[Callable[[str], None]] = print):
  """params initialised from `config.model_init` (see module doc); returns `params` unchanged without it."""
  mi = _section(config)
  if mi is None:
    return params
  log = log or (lambda s: None)
  model_cfg = config.model.to_dict() if hasattr(config.model, "to_dict") else dict(config.model)
  model = None
  if model_cfg.get("name") == "two_towers":
    from siglip_rins.models import build_model

    model = build_model(model_cfg)
  kind = mi.get("kind") or detect_kind(mi["path"])
  source = load_source(mi["path"], kind, mi.get("step"), model)
  from siglip_rins.optim import _path_str

  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  flat = {_path_str(path): x for path, x in leaves}  # jax arrays stay where they are (no host gather)
  image_size = config.input.get("image_size") if "input" in config else None
  if isinstance(image_size, int):
    image_size = (image_size, image_size)
  patch = None
  if model is not None and model.image is not None:
    patch = tuple(model.image.get("patch_size", (16, 16)))
  values, report = map_params(source, flat, mi.get("reinit", ()), image_size, patch)
  if report["mismatches"]:
    raise ValueError(
      f"model_init {mi['path']}: {len(report['mismatches'])} shape mismatch(es) (add the names to "
      f"model_init.reinit to initialise them fresh):\n  " + "\n  ".join(report["mismatches"])
    )
  if not values:
    raise ValueError(f"model_init {mi['path']}: no parameter name matches this model (is it the right source?)")
  log(f"model_init: {len(values)} of {len(flat)} parameters from {mi['path']} ({kind})")
  for line in report["resampled"]:
    log(f"model_init: {line}")
  if report["fresh"]:
    log(f"model_init: initialised fresh ({len(report['fresh'])}): {', '.join(report['fresh'])}")
  if report["unused"]:
    shown = report["unused"][:20]
    more = f" and {len(report['unused']) - 20} more" if len(report["unused"]) > 20 else ""
    log(f"model_init: not used from the source ({len(report['unused'])}): {', '.join(shown)}{more}")

  def place(name, x):
    if name not in values:
      return x
    v = values[name].astype(x.dtype)
    sharding = getattr(x, "sharding", None)
    if sharding is None:
      return jax.numpy.asarray(v)
    return jax.make_array_from_callback(v.shape, sharding, lambda idx: v[idx])

  return jax.tree_util.tree_unflatten(treedef, [place(_path_str(path), x) for path, x in leaves])


__all__ = ["apply", "load_source", "map_params", "detect_kind", "KINDS"]
