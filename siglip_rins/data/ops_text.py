"""Text pp ops: choice, lower, canonicalize, tokenize. Texts are tf.string scalars or vectors [N]."""

import tensorflow as tf

from siglip_rins.data.ops_common import check_key, next_seed, require
from siglip_rins.data.pp import register
from siglip_rins.text import tf_ops
from siglip_rins.text.tokenizer import EOS_MODES, check_encode_args, get_tokenizer


@register("choice")
def get_choice(inkey="texts", outkey=None, mode="random"):
  """Picks one string of a vector [N] -> scalar. mode='random' (seeded per example) or 'first'.

  A scalar input passes through unchanged. Empty strings are never picked when a non-empty one exists.
  """
  check_key("choice", inkey, "inkey")
  if mode not in ("random", "first"):
    raise ValueError(f"pp op 'choice': mode must be 'random' or 'first', got {mode!r}")
  out_key = outkey or inkey

  def choice(features):
    features = dict(features)
    texts = require(features, inkey, "choice")
    if texts.shape.rank == 0:
      features[out_key] = texts
      return features
    non_empty = tf.boolean_mask(texts, tf.strings.length(texts) > 0)
    candidates = tf.cond(tf.size(non_empty) > 0, lambda: non_empty, lambda: texts)
    if mode == "first":
      index = 0
    else:
      index = tf.random.stateless_uniform(
        [], seed=next_seed(features), minval=0, maxval=tf.shape(candidates)[0], dtype=tf.int32
      )
    features[out_key] = candidates[index]
    return features

  return choice


@register("lower")
def get_lower(key="texts", outkey=None):
  """Unicode lowercase of a string tensor."""
  check_key("lower", key)

  def lower(features):
    features = dict(features)
    features[outkey or key] = tf.strings.lower(require(features, key, "lower"), encoding="utf-8")
    return features

  return lower


@register("canonicalize")
def get_canonicalize(key="texts", outkey=None):
  """SigLIP canonicalisation (siglip_rins.text.canonicalize) of a string tensor."""
  check_key("canonicalize", key)

  def canonicalize(features):
    features = dict(features)
    features[outkey or key] = tf_ops.canonicalize_tf(require(features, key, "canonicalize"))
    return features

  return canonicalize


@register("tokenize")
def get_tokenize(
  max_len, model="demo", eos="sticky", pad_value=None, inkey="texts", outkey="labels", canonicalize=True
):
  """String scalar -> int32 [max_len]; vector [N] -> int32 [N, max_len] (ids of Tokenizer.encode)."""
  if eos not in EOS_MODES:
    raise ValueError(f"pp op 'tokenize': eos must be one of {EOS_MODES}, got {eos!r}")
  if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
    raise ValueError(f"pp op 'tokenize': max_len must be a positive int, got {max_len!r}")
  if pad_value is not None and (isinstance(pad_value, bool) or not isinstance(pad_value, int)):
    raise ValueError(f"pp op 'tokenize': pad_value must be an int, got {pad_value!r}")
  check_key("tokenize", inkey, "inkey")
  check_key("tokenize", outkey, "outkey")
  try:
    tokenizer = get_tokenizer(model)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"pp op 'tokenize': {e}") from None
  check_encode_args(max_len, eos, tokenizer.eos_id)
  tf_ops.tf_sentencepiece(tokenizer)  # build the TF resource once, outside any tf.function

  def tokenize(features):
    features = dict(features)
    features[outkey] = tf_ops.tokenize(
      tokenizer,
      require(features, inkey, "tokenize"),
      max_len,
      eos=eos,
      pad_value=pad_value,
      canonicalize=bool(canonicalize),
    )
    return features

  return tokenize
