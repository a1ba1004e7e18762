"""The exported-model folder format, read without importing siglip_rins.export (interop/hf.py, model_init.py).

config.json          {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "model", "params_file",
                      "example_spec" (format 2), "text"/"image" (summaries; format 1 has only these), "source"}
params.safetensors   float32 parameters under '/'-joined names
tokenizer.model      the SentencePiece model
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Mapping, Optional

FORMAT_NAME = "siglip_rins.exported"
FORMAT_VERSION = 2  # 2: config.json carries "example_spec"; format 1 folders still load
PARAMS_FILE = "params.safetensors"
TOKENIZER_FILE = "tokenizer.model"
CONFIG_FILE = "config.json"


def read_exported_config(model_dir: str | os.PathLike) -> dict:
  """Reads and validates `<model_dir>/config.json`; a newer format version -> ValueError."""
  model_dir = pathlib.Path(model_dir)
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
