"""Conversions between siglip_rins parameter trees and other formats.

* `big_vision`: public big_vision SigLIP `.npz` checkpoints (import, pos-emb resampling, export back).
* `hf`: Hugging Face `transformers` SiglipModel folders (export, unrolling the recursion).

Shared helpers here: flat '/'-joined parameter names <-> nested dicts.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def flatten_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
  """Nested dict of arrays -> {'img/embedding/kernel': np.ndarray, ...} ('/'-joined names, numpy arrays;
  abstract jax.ShapeDtypeStruct leaves are kept as they are)."""
  out: dict[str, np.ndarray] = {}
  for key, value in tree.items():
    if not isinstance(key, str) or not key or "/" in key:
      raise ValueError(f"parameter name {key!r} under {prefix!r} must be a non-empty string without '/'")
    name = f"{prefix}/{key}" if prefix else key
    if isinstance(value, Mapping):
      out.update(flatten_params(value, name))
    elif hasattr(value, "shape") and hasattr(value, "dtype") and not hasattr(value, "__array__"):
      out[name] = value  # abstract leaves (jax.ShapeDtypeStruct) stay abstract
    else:
      out[name] = np.asarray(value)
  return out


def unflatten_params(flat: Mapping[str, Any]) -> dict:
  """{'a/b/c': x} -> {'a': {'b': {'c': x}}}.  Raises ValueError when a name is both a leaf and a folder."""
  tree: dict = {}
  for name in sorted(flat):
    parts = name.split("/")
    if any(not p for p in parts):
      raise ValueError(f"parameter name {name!r} has an empty component")
    node = tree
    for p in parts[:-1]:
      child = node.setdefault(p, {})
      if not isinstance(child, dict):
        raise ValueError(f"parameter name {name!r} continues below leaf {p!r}")
      node = child
    if parts[-1] in node:
      raise ValueError(f"parameter name {name!r} is both a leaf and a folder")
    node[parts[-1]] = flat[name]
  return tree


def diff_names(expected: set[str], got: set[str], what: str, limit: int = 50) -> None:
  """Raises ValueError listing missing and unexpected names (up to `limit` of each) when the sets differ."""
  missing, extra = sorted(expected - got), sorted(got - expected)
  if not missing and not extra:
    return
  parts = []
  if missing:
    more = f" (+{len(missing) - limit} more)" if len(missing) > limit else ""
    parts.append(f"missing {len(missing)} key(s): {missing[:limit]}{more}")
  if extra:
    more = f" (+{len(extra) - limit} more)" if len(extra) > limit else ""
    parts.append(f"unexpected {len(extra)} key(s): {extra[:limit]}{more}")
  raise ValueError(f"{what}: " + "; ".join(parts))


__all__ = ["flatten_params", "unflatten_params", "diff_names"]
