"""big_vision SigLIP `.npz` checkpoints <-> siglip_rins parameter trees.

big_vision names (flat, '/'-joined; released files prefix them with 'params/'):
  img/embedding/{kernel,bias}, img/pos_embedding, img/Transformer/encoderblock_{i}/..., img/Transformer/encoder_norm,
  img/MAPHead_0/..., (img/head), txt/Embed_0/embedding, txt/pos_embedding, txt/Encoder_0/encoderblock_{i}/...,
  txt/Encoder_0/encoder_norm, txt/head, t, b.
  With layer scan ('scan' layout) the blocks are one `encoderblock` whose arrays carry a leading depth axis.

siglip_rins splits each stack into unique blocks A, B, ... of `layers_per_block` layers:
  big_vision encoderblock_i  <->  <stack>/<block_names[i // layers_per_block]>/encoderblock_{i % layers_per_block}
  (blocks of an uneven split, recursion.split='spread', take consecutive layers by their own depths)
Everything else has the same name.  So a 12-layer checkpoint imports into the 'AB' model (blocks A, B of 6 layers)
and, with an identical parameter tree, into any RINS model A^rB (only the recursion config differs; the RINS model
then starts from the pretrained blocks).  Linear adapters, absent from big_vision, are initialised to the identity.

Image position embeddings are resampled (bilinear on the 2-D grid, no antialiasing) when the target resolution
differs.  Files are read with `np.load(allow_pickle=False)`.
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import Any, Mapping, Optional

import numpy as np

from siglip_rins.interop import diff_names, flatten_params, unflatten_params

STACKS = ("img/Transformer", "txt/Encoder_0")
LAYOUTS = ("loop", "scan")
ADAPTER_LEAVES = ("adapter_kernel", "adapter_bias")
_LOOP_RE = re.compile(r"^(img/Transformer|txt/Encoder_0)/encoderblock_(\d+)/(.+)$")
_SCAN_RE = re.compile(r"^(img/Transformer|txt/Encoder_0)/encoderblock/(.+)$")
_OURS_RE = re.compile(r"^(img/Transformer|txt/Encoder_0)/([A-Z]|Z\d+)/encoderblock_(\d+)/(.+)$")


# ------------------------------------------------------------------------------------------- reading
def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a big_vision .npz -> {name: array} with a leading 'params/' stripped.  No pickle."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"big_vision checkpoint {path} not found")
  try:
    with np.load(path, allow_pickle=False) as data:
      flat = {k: np.asarray(data[k]) for k in data.files}
  except ValueError as e:  # object arrays need pickle: refuse
    raise ValueError(f"{path}: cannot read without pickle ({e})") from None
  except (OSError, EOFError) as e:
    raise ValueError(f"{path} is not a readable .npz file: {e}") from None
  return strip_prefix(flat)


def strip_prefix(flat: Mapping[str, np.ndarray], prefix: str = "params/") -> dict[str, np.ndarray]:
  """Removes `prefix` from the names that carry it (released checkpoints use 'params/')."""
  out = {}
  for k, v in flat.items():
    name = k[len(prefix) :] if k.startswith(prefix) else k
    if name in out:
      raise ValueError(f"checkpoint holds {name!r} both with and without the {prefix!r} prefix")
    out[name] = v
  return out


def scan_to_loop(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """'<stack>/encoderblock/X' arrays with a leading depth axis -> '<stack>/encoderblock_{i}/X'."""
  out = {}
  for k, v in flat.items():
    m = _SCAN_RE.match(k)
    if not m:
      out[k] = v
      continue
    if v.ndim == 0:
      raise ValueError(f"scan-layout parameter {k!r} has no leading depth axis")
    for i in range(v.shape[0]):
      out[f"{m.group(1)}/encoderblock_{i}/{m.group(2)}"] = v[i]
  return out


def resample_posemb(
  posemb: np.ndarray, grid: tuple[int, int], old_grid: Optional[tuple[int, int]] = None
) -> np.ndarray:
  """Resamples a [1, gh*gw, D] position embedding to [1, grid[0]*grid[1], D] by bilinear interpolation on the
  2-D grid (half-pixel centres, no antialiasing).  old_grid defaults to the square grid."""
  import jax

  posemb = np.asarray(posemb)
  if posemb.ndim != 3 or posemb.shape[0] != 1:
    raise ValueError(f"position embedding must be [1, N, D], got {posemb.shape}")
  n, d = posemb.shape[1], posemb.shape[2]
  if old_grid is None:
    g = int(round(np.sqrt(n)))
    if g * g != n:
      raise ValueError(f"position embedding has {n} positions, not a square grid; give old_grid")
    old_grid = (g, g)
  if old_grid[0] * old_grid[1] != n:
    raise ValueError(f"old_grid {old_grid} does not hold {n} positions")
  if tuple(old_grid) == tuple(grid):
    return posemb.copy()
  x = posemb.reshape(*old_grid, d).astype(np.float32)
  y = jax.image.resize(x, (grid[0], grid[1], d), method="bilinear", antialias=False)
  return np.asarray(y, dtype=posemb.dtype).reshape(1, grid[0] * grid[1], d)


# ------------------------------------------------------------------------------------------- import
def _tower_plans(model) -> dict[str, Any]:
  """{stack prefix: (BlockPlan, tower kwargs)} for the towers the model has."""
  out = {}
  for stack, kw in (("img/Transformer", model.image), ("txt/Encoder_0", model.text)):
    if kw is not None:
      out[stack] = (kw["recursion"].plan(kw.get("depth", 12)), kw)
  return out


def import_big_vision(
  source: str | os.PathLike | Mapping[str, np.ndarray], model_config: Mapping[str, Any], *, image_size: Any = None
) -> dict:
  """big_vision checkpoint (path or flat dict, 'params/' prefix optional, loop or scan layout) -> parameter tree
  of the two_towers model `model_config` (numpy float32 arrays).

  image_size: int or (H, W) the model will run at; default: the checkpoint's grid times the patch size.  The
  image position embedding is resampled when the grids differ.  Missing or unexpected names, or shape
  mismatches, raise ValueError listing the names.
  """
  from siglip_rins.export import _size_pair, param_shapes
  from siglip_rins.models import build_model

  cfg = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
  if cfg.get("name") != "two_towers":
    raise ValueError(f"big_vision import supports two_towers models, got {cfg.get('name')!r}")
  model = build_model(cfg)
  flat = load_npz(source) if isinstance(source, (str, os.PathLike)) else strip_prefix(dict(source))
  flat = scan_to_loop(flat)
  plans = _tower_plans(model)

  size = None
  if model.image is not None:
    ph, pw = model.image.get("patch_size", (16, 16))
    if image_size is not None:
      size = _size_pair(image_size, "image_size")
    elif "img/pos_embedding" in flat:
      n = int(flat["img/pos_embedding"].shape[1])
      g = int(round(np.sqrt(n)))
      if g * g != n:
        raise ValueError(f"img/pos_embedding has {n} positions (not square): give image_size")
      size = (g * ph, g * pw)
    else:
      raise ValueError("give image_size: the checkpoint has no img/pos_embedding")
  text_len = None
  if model.text is not None:
    if "txt/pos_embedding" not in flat:
      raise ValueError("checkpoint has no txt/pos_embedding (missing key), needed for the text tower")
    text_len = int(flat["txt/pos_embedding"].shape[1])
  expected = flatten_params(param_shapes(model, size, text_len))

  ours: dict[str, np.ndarray] = {}
  for k, v in flat.items():
    m = _LOOP_RE.match(k)
    if m and m.group(1) in plans:
      plan = plans[m.group(1)][0]
      i = int(m.group(2))
      starts = np.cumsum((0,) + plan.block_layers)  # blocks of an uneven split have their own depths
      if i < starts[-1]:
        blk = int(np.searchsorted(starts, i, side="right")) - 1
        k = f"{m.group(1)}/{plan.block_names[blk]}/encoderblock_{i - starts[blk]}/{m.group(3)}"
    ours[k] = np.asarray(v)
  for stack, (plan, kw) in plans.items():  # adapters: not in big_vision; identity (their init value)
    if kw["recursion"].adapters:
      shape_k = expected[f"{stack}/adapter_kernel"].shape
      ours.setdefault(f"{stack}/adapter_kernel", np.broadcast_to(np.eye(shape_k[-1], dtype=np.float32), shape_k).copy())
      ours.setdefault(f"{stack}/adapter_bias", np.zeros(expected[f"{stack}/adapter_bias"].shape, np.float32))
  if size is not None and "img/pos_embedding" in ours and "img/pos_embedding" in expected:
    want = tuple(expected["img/pos_embedding"].shape)
    if tuple(ours["img/pos_embedding"].shape) != want:
      ph, pw = model.image.get("patch_size", (16, 16))
      ours["img/pos_embedding"] = resample_posemb(ours["img/pos_embedding"], (size[0] // ph, size[1] // pw))
  diff_names(set(expected), set(ours), "big_vision checkpoint does not match the model config")
  bad = [
    f"{k}: {ours[k].shape} != {tuple(expected[k].shape)}"
    for k in sorted(ours)
    if tuple(ours[k].shape) != tuple(expected[k].shape)
  ]
  if bad:
    raise ValueError(f"big_vision checkpoint shapes do not match the model config: {bad[:20]}")
  return unflatten_params({k: v if v.dtype == np.float32 else v.astype(np.float32) for k, v in ours.items()})


# ------------------------------------------------------------------------------------------- export
def _block_index(name: str) -> int:
  return ord(name) - ord("A") if len(name) == 1 else int(name[1:])


def to_big_vision(
  params: Mapping[str, Any],
  layout: str = "loop",
  model_config: Optional[Mapping[str, Any]] = None,
  allow_recursive: bool = False,
) -> dict[str, np.ndarray]:
  """Parameter tree -> flat big_vision names (no prefix).  layout 'loop' (encoderblock_i) or 'scan' (one
  encoderblock with a leading depth axis).

  Only trees that are a plain stack of blocks (A, B, ... with equal layer counts, no adapters) convert.  With
  `model_config`, a model whose signature runs a block more than once (A^rB, r > 1) is refused unless
  `allow_recursive=True` (the checkpoint then holds the unique blocks once: the AB model, a different function).
  """
  if layout not in LAYOUTS:
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
  if model_config is not None and not allow_recursive:
    from siglip_rins.models import build_model

    cfg = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
    for stack, (plan, _) in _tower_plans(build_model(cfg)).items():
      if plan.sequence != plan.block_names:
        raise ValueError(
          f"{stack}: signature {''.join(plan.letters)!r} (degree {plan.degree}) runs blocks {plan.sequence}, "
          f"but a big_vision ViT runs each layer once; the checkpoint would hold the AB model, which computes "
          f"a different function.  Pass allow_recursive=True to export the unique blocks anyway, or use "
          f"interop.hf.export_hf, which unrolls the recursion"
        )
  flat = flatten_params(params)
  adapters = sorted(k for k in flat if k.rsplit("/", 1)[-1] in ADAPTER_LEAVES)
  if adapters:
    raise ValueError(
      f"linear adapters have no big_vision equivalent (found {adapters}); only adapter-free trees export to big_vision"
    )
  out: dict[str, np.ndarray] = {}
  blocks: dict[str, dict[tuple[int, int], dict[str, np.ndarray]]] = {}
  for k, v in flat.items():
    m = _OURS_RE.match(k)
    if m:
      blocks.setdefault(m.group(1), {}).setdefault((_block_index(m.group(2)), int(m.group(3))), {})[m.group(4)] = v
    elif re.match(r"^(img/Transformer|txt/Encoder_0)/[^/]+/encoderblock_", k):
      raise ValueError(f"{k!r}: unexpected block name (blocks are named A, B, ... under the stack)")
    else:
      out[k] = v
  for stack, layers in blocks.items():
    block_ids = sorted({b for b, _ in layers})
    lpb = 1 + max(j for _, j in layers)
    if block_ids != list(range(len(block_ids))):
      raise ValueError(f"{stack}: blocks {block_ids} are not consecutive from A; not a plain block stack")
    if set(layers) != {(b, j) for b in block_ids for j in range(lpb)}:
      raise ValueError(f"{stack}: blocks do not all hold encoderblock_0..{lpb - 1}; not a plain block stack")
    names = set(layers[(0, 0)])
    ordered = [layers[(b, j)] for b in block_ids for j in range(lpb)]
    for i, layer in enumerate(ordered):
      if set(layer) != names:
        raise ValueError(f"{stack}: layer {i} has parameters {sorted(layer)} but layer 0 has {sorted(names)}")
      if layout == "loop":
        for leaf, v in layer.items():
          out[f"{stack}/encoderblock_{i}/{leaf}"] = v
    if layout == "scan":
      for leaf in names:
        out[f"{stack}/encoderblock/{leaf}"] = np.stack([layer[leaf] for layer in ordered])
  return out


def export_big_vision_npz(
  params: Mapping[str, Any],
  path: str | os.PathLike,
  layout: str = "loop",
  prefix: str = "params/",
  model_config: Optional[Mapping[str, Any]] = None,
  allow_recursive: bool = False,
) -> pathlib.Path:
  """Writes `params` as a big_vision .npz (names `prefix` + big_vision name; see `to_big_vision`)."""
  flat = to_big_vision(params, layout, model_config, allow_recursive)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp.npz")
  np.savez(tmp, **{prefix + k: v for k, v in flat.items()})
  os.replace(tmp, path)
  return path


__all__ = [
  "load_npz",
  "strip_prefix",
  "scan_to_loop",
  "resample_posemb",
  "import_big_vision",
  "to_big_vision",
  "export_big_vision_npz",
]
