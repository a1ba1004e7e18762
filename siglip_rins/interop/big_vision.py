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
differs.  bfloat16 checkpoints (stored as 2-byte void '|V2', or ml_dtypes.bfloat16 arrays in memory) convert
exactly to float32.

Files (`load_npz`) are read without pickle, and hostile ones are refused in one line naming the file and member
before anything large is allocated or inflated: a .npy renamed .npz, non-.npy members, object arrays, headers or
zip entries over the per-array limit, and members that compress like a zip bomb.

`import_to_exported` / `siglip-rins import-big-vision --npz F --config FILE.py:ARGS [--config.key=value ...]
--tokenizer M.model --out MODEL_DIR [--res R] [--text-len L]` writes an exported model folder (for classify,
retrieve, eval --model, export-hf) whose example spec is big_vision SigLIP's: images
`decode|resize(R)|value_range(-1, 1)`, texts `tokenize(max_len=L, model=M, eos="sticky", pad_value=<eos id>,
lower=True)`.
"""

from __future__ import annotations

import math
import os
import pathlib
import re
import zipfile
import zlib
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
# Limits of `load_npz` (see its docstring).  The largest array of a released big_vision SigLIP checkpoint is the
# text embedding table (256k pieces x 1152 float32: 1.2 GB).
MAX_MEMBER_BYTES = 4 << 30
MAX_TOTAL_BYTES = 64 << 30
MAX_RATIO = 100
_RATIO_MIN_BYTES = 64 << 20
_MAX_HEADER = 1 << 16


def _one_line(e: BaseException) -> str:
  return " ".join(str(e).split()) or type(e).__name__


def _open_npz(path: pathlib.Path) -> zipfile.ZipFile:
  with open(path, "rb") as f:
    magic = f.read(6)
  if magic.startswith(b"\x93NUMPY"):
    raise ValueError(
      f"{path} is a single .npy array, not an .npz archive of named arrays (big_vision checkpoints are written "
      f"with np.savez)"
    )
  if not magic.startswith(b"PK"):
    raise ValueError(f"{path} is not an .npz archive (no zip signature)")
  try:
    return zipfile.ZipFile(path)
  except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
    raise ValueError(f"{path} is not a readable .npz archive: {_one_line(e)}") from None


def _npz_members(path, zf: zipfile.ZipFile, max_member_bytes: int, max_total_bytes: int, max_ratio: float):
  """Checks the zip directory and every member's .npy header before anything is decompressed.
  Returns [(ZipInfo, name, shape, fortran_order, dtype)]; ValueError naming the file (and member) otherwise."""
  out, total, seen = [], 0, set()
  for info in zf.infolist():
    member = info.filename
    where = f"{path}: member {member!r}"
    if not member.endswith(".npy"):
      raise ValueError(f"{where} is not a .npy array")
    if member in seen:
      raise ValueError(f"{where} appears twice")
    seen.add(member)
    if info.file_size > max_member_bytes + _MAX_HEADER:
      raise ValueError(
        f"{where} unpacks to {info.file_size:,} bytes, over the {max_member_bytes:,}-byte limit per array"
      )
    if info.file_size > _RATIO_MIN_BYTES and info.file_size > max_ratio * max(info.compress_size, 1):
      raise ValueError(
        f"{where} unpacks {info.compress_size:,} bytes to {info.file_size:,} (over {max_ratio:g}:1, a zip "
        f"bomb, not model weights); refused"
      )
    try:
      with zf.open(info) as fp:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
          shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp, max_header_size=_MAX_HEADER)
        elif version == (2, 0):
          shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp, max_header_size=_MAX_HEADER)
        else:
          raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, SyntaxError) as e:
      raise ValueError(f"{where} has no readable .npy header: {_one_line(e)}") from None
    if dtype.hasobject:
      raise ValueError(f"{where} holds Python objects, which cannot be read without pickle; refused")
    nbytes = math.prod(int(d) for d in shape) * dtype.itemsize
    if nbytes > max_member_bytes:
      raise ValueError(
        f"{where} claims shape {tuple(shape)} of {dtype} ({nbytes:,} bytes), over the {max_member_bytes:,}-byte "
        f"limit per array; refused before reading"
      )
    if nbytes > info.file_size:
      raise ValueError(f"{where} claims {nbytes:,} bytes of data but holds {info.file_size:,} (truncated)")
    total += nbytes
    if total > max_total_bytes:
      raise ValueError(f"{path}: arrays add up to more than the {max_total_bytes:,}-byte limit (at {member!r})")
    out.append((info, member[: -len(".npy")], tuple(shape), fortran, dtype))
  return out


def load_npz(
  path: str | os.PathLike,
  *,
  max_member_bytes: int = MAX_MEMBER_BYTES,
  max_total_bytes: int = MAX_TOTAL_BYTES,
  max_ratio: float = MAX_RATIO,
) -> dict[str, np.ndarray]:
  """Reads a big_vision .npz -> {name: array} with a leading 'params/' stripped.  No pickle.

  Hostile files are refused with one line naming the file (and member) before anything large is allocated or
  decompressed: a single .npy renamed .npz; members that are not .npy arrays, hold Python objects, or whose
  zip entry (uncompressed size) or .npy header (shape x itemsize) exceed `max_member_bytes` (default 4 GiB);
  all arrays together over `max_total_bytes` (64 GiB); members over 64 MiB that compress better than
  `max_ratio`:1 (100; float weights barely compress, a zip bomb of zeros does ~1000:1).  bfloat16 arrays (stored
  by big_vision / ml_dtypes as 2-byte void, '|V2') come back as they are stored; `import_big_vision` converts
  them to float32.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"big_vision checkpoint {path} not found")
  flat = {}
  with _open_npz(path) as zf:
    members = _npz_members(path, zf, int(max_member_bytes), int(max_total_bytes), float(max_ratio))
    for info, name, shape, fortran, dtype in members:
      try:
        with zf.open(info) as fp:
          arr = np.lib.format.read_array(fp, allow_pickle=False, max_header_size=_MAX_HEADER)
      except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"{path}: member {info.filename!r} cannot be read: {_one_line(e)}") from None
      if arr.shape != shape or arr.dtype != dtype:  # pragma: no cover (the header was read from the same file)
        raise ValueError(f"{path}: member {info.filename!r} changed while reading")
      flat[name] = arr
  return strip_prefix(flat)


def to_float32(name: str, value: Any) -> np.ndarray:
  """An array of a checkpoint -> float32.  bfloat16 comes as ml_dtypes.bfloat16 or as 2-byte void ('|V2', how
  np.save stores it): its 16 bits are the top half of a float32 (exact).  Other non-numeric dtypes -> ValueError."""
  arr = np.asarray(value)
  if arr.dtype == np.float32:
    return arr
  if arr.dtype.kind == "V" and arr.dtype.itemsize == 2 and arr.dtype.fields is None:
    bits = arr.view(np.uint16).astype(np.uint32) << np.uint32(16)
    return bits.view(np.float32)
  if arr.dtype.name == "bfloat16" or arr.dtype.kind in "fiub":
    return arr.astype(np.float32)
  raise ValueError(f"parameter {name!r} has dtype {arr.dtype} ({arr.dtype.descr}), not a number array")


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
  from siglip_rins.example_spec import size_pair as _size_pair
  from siglip_rins.models import build_model
  from siglip_rins.models.shapes import param_shapes

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
    ours[k] = to_float32(k, v)
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
  return unflatten_params(ours)


# ------------------------------------------------------------------------------- exported model folder
def import_to_exported(
  npz: str | os.PathLike,
  model_config: Mapping[str, Any],
  tokenizer: str | os.PathLike,
  out_dir: str | os.PathLike,
  *,
  res: Any = None,
  text_len: Optional[int] = None,
) -> pathlib.Path:
  """A big_vision SigLIP `.npz` -> an exported model folder (`siglip_rins.export`) that `classify`, `retrieve`,
  `eval --model` and `export-hf` read, with big_vision SigLIP's example spec (`example_spec.make_spec`: images
  `decode|resize(R)|value_range(-1, 1)`, bilinear without antialias; texts `tokenize(max_len=L, eos="sticky",
  pad_value=<eos id>, lower=True)`, EOS-padded so the pooled last position reads EOS, not canonicalised).

  res: image size R (default: the checkpoint's grid times the patch size; another R resamples the position
  embedding).  text_len: L (default: the checkpoint's; a smaller L keeps the first L text position embeddings,
  a larger one is refused).
  """
  from siglip_rins import example_spec as es, export as export_lib  # lazy: export.py imports this package
  from siglip_rins.text.tokenizer import Tokenizer

  tok = Tokenizer.from_file(tokenizer)
  flat = scan_to_loop(load_npz(npz))
  if "txt/pos_embedding" in flat:
    stored = int(flat["txt/pos_embedding"].shape[1])
    if text_len is not None:
      if isinstance(text_len, bool) or not isinstance(text_len, int) or not 1 <= text_len <= stored:
        raise ValueError(f"text length must be an integer in 1..{stored} (the checkpoint's), got {text_len!r}")
      flat["txt/pos_embedding"] = flat["txt/pos_embedding"][:, :text_len]
  params = import_big_vision(flat, model_config, image_size=res)
  if res is None:  # the checkpoint's own resolution
    from siglip_rins.models import build_model

    if "pos_embedding" not in params.get("img", {}):
      raise ValueError("the image tower has no learned position embedding: give the image size (--res)")
    ph, pw = build_model(dict(model_config)).image.get("patch_size", (16, 16))
    g = math.isqrt(int(params["img"]["pos_embedding"].shape[1]))
    res = (g * ph, g * pw)
  length = int(params["txt"]["pos_embedding"].shape[1])
  spec = es.make_spec(image_size=res, tokenizer=tok, text_len=length)
  source = dict(big_vision_npz=str(pathlib.Path(npz).resolve()), tokenizer=str(pathlib.Path(tokenizer).resolve()))
  return export_lib.export_params(params, model_config, out_dir, spec=spec, tokenizer=tok, source=source)


def import_main(
  npz: str,
  config: str,
  overrides: list[str],
  tokenizer: str,
  out_dir: str,
  *,
  res: Optional[int] = None,
  text_len: Optional[int] = None,
) -> int:
  """`siglip-rins import-big-vision`: the model of `--config FILE.py:ARGS` (after `--config.key=value`
  overrides) filled from a big_vision `.npz`, written as an exported model folder.  Prints one line."""
  from siglip_rins import config_lib

  cfg = config_lib.load_config(config)
  config_lib.apply_overrides(cfg, overrides)
  if cfg.get("model") is None:
    raise ValueError(f"{config}: the config has no model section")
  model_config = cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else dict(cfg.model)
  out = import_to_exported(npz, model_config, tokenizer, out_dir, res=res, text_len=text_len)
  print(f"imported {npz} -> exported model folder {out}")
  return 0


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
  "to_float32",
  "import_to_exported",
  "import_main",
]
