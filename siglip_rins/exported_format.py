"""The exported-model folder format, read without importing siglip_rins.export (interop/hf.py, model_init.py).

config.json          {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "model", "params_file",
                      "example_spec" (format 2), "text"/"image" (summaries; format 1 has only these), "source"}
params.safetensors   float32 parameters under '/'-joined names
tokenizer.model      the SentencePiece model
"""

from __future__ import annotations

import json
import math
import os
import struct
from typing import Any, Mapping, Optional

from siglip_rins import limits, paths

FORMAT_NAME = "siglip_rins.exported"
FORMAT_VERSION = 2  # 2: config.json carries "example_spec"; format 1 folders still load
PARAMS_FILE = "params.safetensors"
TOKENIZER_FILE = "tokenizer.model"
CONFIG_FILE = "config.json"


def read_exported_config(model_dir: str | os.PathLike) -> dict:
  """Reads and validates `<model_dir>/config.json`; a newer format version -> ValueError."""
  model_dir = paths.workdir_path(model_dir)
  path = model_dir / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: {model_dir} is not an exported siglip_rins model folder")
  try:
    config = json.loads(path.read_text())
  except ValueError as e:
    raise ValueError(f"{path} is not valid JSON: {e}") from None
  if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
    raise ValueError(
      f"{path} is not a siglip_rins exported-model config (format {config.get('format')!r})"
      if isinstance(config, dict)
      else f"{path} does not hold a JSON object"
    )
  version = config.get("format_version")
  if isinstance(version, bool) or not isinstance(version, int) or version < 1:
    raise ValueError(f"{path}: format_version must be an integer >= 1, got {version!r}")
  if version > FORMAT_VERSION:
    raise ValueError(
      f"{path} was written in exported-model format version {version}, but this siglip_rins reads "
      f"versions up to {FORMAT_VERSION}; upgrade siglip_rins to load it"
    )
  return config


def example_spec_of(config: Mapping[str, Any], tokenizer_path: Optional[str | os.PathLike] = None):
  """The ExampleSpec of an exported folder's config.json: `config["example_spec"]` (format 2), else built from
  the format-1 "text" / "image" sections; its tokenizer is the folder's file `tokenizer_path`."""
  from siglip_rins import example_spec as es

  if config.get("example_spec"):
    spec = es.ExampleSpec.from_dict(config["example_spec"])
    return spec if tokenizer_path is None else es.with_tokenizer_file(spec, str(tokenizer_path))
  return es.from_legacy_sections(config.get("text"), config.get("image"), tokenizer_path and str(tokenizer_path))


# safetensors dtypes -> bytes per element (the format's own list)
_ST_ITEMSIZE = {
  "BOOL": 1,
  "U8": 1,
  "I8": 1,
  "F8_E4M3": 1,
  "F8_E5M2": 1,
  "U16": 2,
  "I16": 2,
  "F16": 2,
  "BF16": 2,
  "U32": 4,
  "I32": 4,
  "F32": 4,
  "U64": 8,
  "I64": 8,
  "F64": 8,
}
_MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit


def _size_of(path) -> Optional[int]:
  try:
    st = path.stat()
  except OSError:
    return None
  size = getattr(st, "st_size", None)
  return getattr(st, "length", None) if size is None else size


def check_safetensors_header(path, header: dict, file_size: int, cap: int) -> None:
  """Every tensor's declared dtype x shape must be its byte range, inside the file, and the total within `cap`;
  else ValueError naming the tensor."""
  total = 0
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if not isinstance(info, dict):
      raise ValueError(f"{path}: tensor {name!r} has no header entry (not a safetensors file?)")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in _ST_ITEMSIZE:
      raise ValueError(f"{path}: tensor {name!r} has unknown dtype {dtype!r}")
    ok_shape = isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ok_offsets = isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) and o >= 0 for o in offsets)
    if not ok_shape or not ok_offsets:
      raise ValueError(f"{path}: tensor {name!r} has a malformed shape {shape!r} or data_offsets {offsets!r}")
    declared = math.prod(shape) * _ST_ITEMSIZE[dtype]
    if declared > cap:
      raise ValueError(
        f"{path}: tensor {name!r} declares shape {shape} {dtype} = {declared} bytes, above the cap of {cap} bytes "
        f"({limits.ENV_MAX_PARAMS_BYTES})"
      )
    if offsets[1] - offsets[0] != declared or offsets[1] > file_size:
      raise ValueError(
        f"{path}: tensor {name!r} declares {declared} bytes ({shape} {dtype}) but its data range {offsets} does not "
        f"match it or lies outside the file ({file_size} bytes of data)"
      )
    total += declared
  if total > cap:
    raise ValueError(
      f"{path}: tensors total {total} bytes, above the cap of {cap} bytes ({limits.ENV_MAX_PARAMS_BYTES})"
    )


def read_params(path) -> dict:
  """The tensors of a params.safetensors file (through siglip_rins.paths, so gs:// works), as numpy arrays.
  Checked before the data is read: the file size and every header-declared tensor size against
  limits.max_params_bytes(), each tensor's byte range against its dtype and shape (one ValueError naming the
  tensor).  No pickle: safetensors only."""
  path = paths.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found (the exported folder is incomplete)")
  cap = limits.max_params_bytes()
  size = _size_of(path)
  if size is not None and size > cap:
    raise ValueError(f"{path} is {size} bytes, above the cap of {cap} bytes ({limits.ENV_MAX_PARAMS_BYTES})")
  with path.open("rb") as f:
    head = f.read(8)
    if len(head) < 8:
      raise ValueError(f"{path} is not a readable safetensors file: {len(head)} bytes")
    (n,) = struct.unpack("<Q", head)
    if n > _MAX_HEADER_BYTES:
      raise ValueError(f"{path} is not a readable safetensors file: header of {n} bytes")
    raw_header = f.read(n)
    try:
      header = json.loads(raw_header)
    except ValueError as e:
      raise ValueError(f"{path} is not a readable safetensors file: bad header ({e})") from None
    if not isinstance(header, dict):
      raise ValueError(f"{path} is not a readable safetensors file: the header is not a JSON object")
    data_size = (size if size is not None else cap + 8 + n) - 8 - n
    check_safetensors_header(path, header, data_size, cap)
    data = head + raw_header + f.read()
  from safetensors.numpy import load

  try:
    return load(data)
  except Exception as e:  # safetensors raises SafetensorError on corrupt data
    raise ValueError(f"{path} is not a readable safetensors file: {e}") from None


def write_params(path, flat: Mapping[str, Any], metadata: Optional[dict] = None) -> None:
  """Writes tensors to a safetensors file through siglip_rins.paths (atomic locally)."""
  import numpy as np
  from safetensors.numpy import save

  data = save({k: np.ascontiguousarray(v) for k, v in flat.items()}, metadata=metadata)
  paths.write_bytes(path, data)
