"""Generic pp ops (keep, drop, copy, onehot) and the per-example randomness helper.

Randomness: the pipeline puts a per-example stateless seed, int32 [2], under `features['_rng']` (derived
from the pipeline seed, host and example index). A random op calls `next_seed(features)`, which returns a
seed for itself and advances `features['_rng']`, so ops see different seeds and a run is reproducible.
Without `_rng` (a pp fn called by hand) random ops use the fixed seed DEFAULT_SEED.
"""

import tensorflow as tf

from siglip_rins.data.pp import register

RNG_KEY = "_rng"
DEFAULT_SEED = (0, 0)


def next_seed(features: dict) -> tf.Tensor:
  """Returns a stateless seed int32 [2] for one random op and advances features['_rng'] (in place)."""
  base = features.get(RNG_KEY)
  base = tf.constant(DEFAULT_SEED, tf.int32) if base is None else tf.cast(base, tf.int32)
  seeds = tf.random.experimental.stateless_split(base, num=2)
  features[RNG_KEY] = seeds[1]
  return seeds[0]


def check_key(op: str, value, name: str = "key"):
  if not isinstance(value, str) or not value:
    raise ValueError(f"pp op {op!r}: {name} must be a non-empty string, got {value!r}")


def require(features: dict, key: str, op: str):
  """features[key] or a ValueError naming the op and the available keys (raised at trace time)."""
  if key not in features:
    raise ValueError(f"pp op {op!r}: feature {key!r} missing; available: {sorted(features)}")
  return features[key]


@register("keep")
def get_keep(*keys):
  """Keeps only `keys` (plus internal '_'-prefixed keys, which the pipeline drops before batching)."""
  for key in keys:
    check_key("keep", key, "each key")

  def keep(features):
    missing = [k for k in keys if k not in features]
    if missing:
      raise ValueError(f"pp op 'keep': features {missing} missing; available: {sorted(features)}")
    return {k: v for k, v in features.items() if k in keys or k.startswith("_")}

  return keep


@register("drop")
def get_drop(*keys):
  """Removes `keys` (absent keys are ignored)."""
  for key in keys:
    check_key("drop", key, "each key")

  def drop(features):
    return {k: v for k, v in features.items() if k not in keys}

  return drop


@register("copy")
def get_copy(inkey, outkey):
  """features[outkey] = features[inkey]."""
  check_key("copy", inkey, "inkey")
  check_key("copy", outkey, "outkey")

  def copy(features):
    features = dict(features)
    features[outkey] = require(features, inkey, "copy")
    return features

  return copy


@register("onehot")
def get_onehot(depth, key="label", key_result=None, on=1.0, off=0.0):
  """Integer labels (any shape) -> float32 one-hot [..., depth] under key_result (default: key)."""
  if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
    raise ValueError(f"pp op 'onehot': depth must be a positive int, got {depth!r}")
  check_key("onehot", key)
  for name, value in (("on", on), ("off", off)):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ValueError(f"pp op 'onehot': {name} must be a number, got {value!r}")
  out_key = key_result or key

  def onehot(features):
    features = dict(features)
    labels = tf.cast(require(features, key, "onehot"), tf.int32)
    features[out_key] = tf.one_hot(labels, depth, on_value=float(on), off_value=float(off), dtype=tf.float32)
    return features

  return onehot
