"""big_vision-style configs: `--config path/file.py:arg` and `--config.key=value` overrides.

* A config file defines `get_config(arg)` returning an `ml_collections.ConfigDict`.  The file is the user's own
  code (config-as-code), imported from its path.  Strings (arg lists, overrides) are parsed as literals only.
* `parse_arg("variant=B/16,signature=AAAB,p_skip=0.25,runlocal", variant='B/16', signature='AB', p_skip=0.0,
  runlocal=False)` returns a ConfigDict typed from the defaults; a bare key means True; unknown keys raise.
* `apply_overrides(config, ["lr=1e-4", "model.recursion.signature='A^3B'"])`: each value is a Python literal
  (falls back to a plain string), its type must fit the existing value; an unknown key names the allowed keys.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
import sys
from typing import Any, Iterable, Optional

import ml_collections

ConfigDict = ml_collections.ConfigDict


def _literal(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _coerce(value: Any, default: Any, key: str) -> Any:
  """Converts `value` to the type of `default` (None defaults accept anything)."""
  if default is None or value is None:  # None clears a key (e.g. total_examples=None with total_steps=N)
    return value
  if isinstance(default, bool):
    if isinstance(value, bool):
      return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
      return value.lower() in ("true", "1", "yes")
    if isinstance(value, int) and value in (0, 1):
      return bool(value)
    raise ValueError(f"config key {key!r}: expected a boolean, got {value!r}")
  if isinstance(default, int):
    if (
      isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or int(value) != value
    ):
      raise ValueError(f"config key {key!r}: expected an integer, got {value!r}")
    return int(value)
  if isinstance(default, float):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ValueError(f"config key {key!r}: expected a number, got {value!r}")
    return float(value)
  if isinstance(default, str):
    return value if isinstance(value, str) else str(value)
  if isinstance(default, (tuple, list)):
    if not isinstance(value, (tuple, list)):
      raise ValueError(f"config key {key!r}: expected a {type(default).__name__}, got {value!r}")
    return type(default)(value)
  return value


def parse_arg(arg: Optional[str], **defaults) -> ConfigDict:
  """Parses a comma list 'k=v,flag,...' into a ConfigDict typed from `defaults` (see module docstring)."""
  out = dict(defaults)
  for item in filter(None, (s.strip() for s in (arg or "").split(","))):
    key, sep, raw = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(f"config arg {key!r} is unknown; allowed: {sorted(defaults)}")
    value = True if not sep else (raw.strip() if isinstance(defaults[key], str) else _literal(raw.strip()))
    out[key] = _coerce(value, defaults[key], key)
  return ConfigDict(out)


def load_config(spec: str) -> ConfigDict:
  """Loads 'path/to/config.py[:arg]' by calling its get_config(arg)."""
  path, _, arg = spec.partition(":")
  if not path.endswith(".py"):
    raise ValueError(f"--config expects 'path/to/file.py[:args]', got {spec!r}")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file not found: {path}")
  name = "siglip_rins_config_" + os.path.splitext(os.path.basename(path))[0]
  module_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(module_spec)
  sys.modules[name] = module
  module_spec.loader.exec_module(module)  # the user's own config code (config-as-code), never a data string
  if not hasattr(module, "get_config"):
    raise ValueError(f"config file {path} defines no get_config(arg)")
  config = module.get_config(arg or None) if arg else module.get_config()
  if not isinstance(config, ConfigDict):
    raise ValueError(f"{path}: get_config must return an ml_collections.ConfigDict, got {type(config).__name__}")
  return config


def apply_overrides(config: ConfigDict, overrides: Iterable[str]) -> ConfigDict:
  """Applies 'a.b.c=value' overrides in place (see module docstring) and returns the config."""
  for item in overrides:
    key, sep, raw = item.partition("=")
    if not sep:
      raise ValueError(f"override {item!r} must look like key=value")
    parts = key.strip().split(".")
    node = config
    for i, p in enumerate(parts[:-1]):
      if not isinstance(node, ConfigDict) or p not in node:
        where = ".".join(parts[:i]) or "<top>"
        allowed = sorted(node.keys()) if isinstance(node, ConfigDict) else []
        raise ValueError(f"override {key!r}: unknown key {p!r} under {where}; allowed: {allowed}")
      node = node[p]
    last = parts[-1]
    if not isinstance(node, ConfigDict):
      raise ValueError(f"override {key!r}: {'.'.join(parts[:-1])} is not a config section")
    value = _literal(raw.strip())
    if last in node:
      value = _coerce(value, node[last], key)
      with node.ignore_type():
        node[last] = value
    else:
      raise ValueError(f"override {key!r}: unknown key {last!r}; allowed: {sorted(node.keys())}")
  return config


def to_json(config: ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


def from_json(text: str) -> ConfigDict:
  return ConfigDict(json.loads(text))
