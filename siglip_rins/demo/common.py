"""Helpers both demo command lines share (runner.py: SigLIP study, lm_study.py: LM study)."""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Sequence


def positive_int(text: str) -> int:
  """argparse type: an integer >= 1."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
  return value


def positive_float(text: str) -> float:
  """argparse type: a finite number > 0."""
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
  if not value > 0 or not math.isfinite(value):
    raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
  return value


def parse_variants(text: str, known: Sequence[str], baseline: str) -> list[str]:
  """'rins,rao' -> [baseline, 'rins', 'rao'] (order kept, duplicates dropped); unknown names -> ValueError.

  The baseline is always trained (it defines the compute budget), so it is added first when missing.
  """
  names = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
  if not names:
    raise ValueError(f"--variants is empty; choose from {', '.join(known)}")
  unknown = [n for n in names if n not in known]
  if unknown:
    raise ValueError(f"--variants: unknown variant(s) {unknown}; known: {', '.join(known)}")
  if baseline not in names:
    names.insert(0, baseline)
  return names


def shipped_config(filename: str) -> str:
  """configs/<filename> of this checkout (the demos go through the same configs as users)."""
  import siglip_rins

  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(siglip_rins.__file__))), "configs", filename)
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f"the demo needs the shipped config {path!r} (install from a source checkout: pip install -e .)"
    )
  return path


def count_params(params) -> int:
  import jax
  import numpy as np

  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def read_train_curve(metrics_path: str) -> list[tuple[float, float]]:
  """(flops_seen, train/loss) pairs from a run's metrics.jsonl (rows without both are skipped)."""
  curve = []
  if os.path.exists(metrics_path):
    with open(metrics_path, encoding="utf-8") as f:
      for line in f:
        row = json.loads(line)
        if "flops_seen" in row and "train/loss" in row:
          curve.append((float(row["flops_seen"]), float(row["train/loss"])))
  return curve
