"""Text pp ops (big_vision's ops_text): tokenize, lower, coco_captions, strfmt; `tok` (big_vision's
PaliGemma/SigLIP 2 tokenizer op); plus canonicalize (SigLIP).

Texts are tf.string tensors (a scalar, or a vector [N] of captions). `tokenize` gives the ids of
`Tokenizer.encode` with the same options (tests check this on multilingual text).
"""

import string

import tensorflow as tf

from siglip_rins.data.ops_common import (
  RNG_KEY,
  check_key,
  get_choice,
  get_setdefault,
  is_int,
  keyed_op,
  require,
)
from siglip_rins.data.registry import register
from siglip_rins.text import tf_ops
from siglip_rins.text.tokenizer import EOS_MODES, check_encode_args, get_tokenizer

_PICK = "_pick"  # scratch key for tokenize's sample_if_multi


@keyed_op("tokenize", indefault="texts", outdefault="labels")
def get_tokenize(
  max_len,
  eos="sticky",
  model="c4_en",
  lower=True,
  sample_if_multi=True,
  pad_value="<pad>",
  add_bos=False,
  canonicalize=False,
):
  """Strings -> int32 ids [max_len] (a scalar, or one caption sampled from a vector) or [N, max_len].

  big_vision's arguments and defaults: eos 'none' / 'yes' (append EOS, may be truncated away) / 'sticky'
  (EOS kept as the last token when truncating); model 'c4_en' (a name or a .model path, see
  `siglip_rins.text.tokenizer`); lower: ASCII lowercasing (tf.strings.lower); sample_if_multi: a vector of
  captions gives one randomly chosen caption (an empty vector gives ''), else every caption is tokenized;
  pad_value: an id, or a piece such as '<pad>' resolved to its id (None: the model's pad id); add_bos.
  canonicalize (siglip_rins, default off as big_vision has no such step): SigLIP canonicalisation after `lower`.
  Keys: inkey defaults to 'texts' (big_vision has no default), outkey to 'labels'. Extensions: eos defaults
  to 'sticky'; with sample_if_multi=False, sticky EOS is kept in every row (big_vision can lose it in rows
  that are too long but not the longest).
  """
  if eos not in EOS_MODES:
    raise ValueError(f"pp op 'tokenize': eos must be one of {EOS_MODES}, got {eos!r}")
  if not is_int(max_len) or max_len < 1:
    raise ValueError(f"pp op 'tokenize': max_len must be a positive int, got {max_len!r}")
  try:
    tokenizer = get_tokenizer(model)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"pp op 'tokenize': {e}") from None
  check_encode_args(max_len, eos, tokenizer.eos_id)
  if add_bos and tokenizer.bos_id < 0:
    raise ValueError(f"pp op 'tokenize': add_bos=True but tokenizer {model!r} has no BOS id")
  pad = tokenizer.resolve_pad(pad_value)
  tf_ops.tf_sentencepiece(tokenizer)  # build the TF resource once, outside any tf.function
  pick = get_choice(key=_PICK)
  default_empty = get_setdefault(_PICK, "")

  def tokenize(texts, features):
    texts = tf.convert_to_tensor(texts)
    if sample_if_multi and texts.shape.rank:
      scratch = {_PICK: texts}
      if RNG_KEY in features:
        scratch[RNG_KEY] = features[RNG_KEY]
      scratch = pick(default_empty(scratch))
      features[RNG_KEY] = scratch[RNG_KEY]
      texts = scratch[_PICK]
    return tf_ops.tokenize(
      tokenizer,
      texts,
      max_len,
      eos=eos,
      pad_value=pad,
      canonicalize=bool(canonicalize),
      lower=bool(lower),
      add_bos=bool(add_bos),
    )

  return tokenize


_TOK_EOS = {"no": "none", "yes": "yes", "sticky": "sticky"}


@register("tok")
def get_tok(model, length=None, *, bos="no", eos="no", text=None, key=None, inkey=None, outkey=None):
  """big_vision's newer tokenizer op (SigLIP 2 / PaliGemma): one string -> int32 ids, no lowercasing.

  bos: 'no' / 'yes'; eos: 'no' / 'yes' / 'sticky' (as `tokenize`); length: pad (with the model's pad id) or
  truncate to it, or None for the unpadded ids [n]. Reads `inkey or key`, writes `outkey or key`; with
  `text=` the op writes the ids of that constant string instead (then no inkey).
  """
  if eos not in _TOK_EOS:
    raise ValueError(f"pp op 'tok': eos must be 'no', 'yes' or 'sticky', got {eos!r}")
  if bos not in ("no", "yes"):
    raise ValueError(f"pp op 'tok': bos must be 'no' or 'yes', got {bos!r}")
  if length is not None and (not is_int(length) or length < 1):
    raise ValueError(f"pp op 'tok': length must be a positive int or None, got {length!r}")
  out_key, in_key = outkey or key, inkey or key
  check_key("tok", out_key, "outkey (or key)")
  try:
    tokenizer = get_tokenizer(model)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"pp op 'tok': {e}") from None
  add_bos, add_eos = bos == "yes", eos != "no"
  if add_bos and tokenizer.bos_id < 0:
    raise ValueError(f"pp op 'tok': bos='yes' but tokenizer {model!r} has no BOS id")
  if add_eos and tokenizer.eos_id < 0:
    raise ValueError(f"pp op 'tok': eos={eos!r} but tokenizer {model!r} has no EOS id")
  if text is not None:
    if inkey is not None or not isinstance(text, str):
      raise ValueError("pp op 'tok': text= must be a string, and excludes inkey")
    if length is None:
      ids = ([tokenizer.bos_id] if add_bos else []) + tokenizer.encode_ids(text, canonicalize=False)
      constant = tf.constant(ids + ([tokenizer.eos_id] if add_eos else []), tf.int32)
    else:
      constant = tf.constant(tokenizer.encode([text], length, eos=_TOK_EOS[eos], add_bos=add_bos)[0])

    def tok_text(features):
      return {**features, out_key: constant}

    return tok_text
  check_key("tok", in_key, "inkey (or key)")
  tf_ops.tf_sentencepiece(tokenizer)

  def tok(features):
    features = dict(features)
    string = tf.convert_to_tensor(require(features, in_key, "tok"))
    if string.shape.rank != 0:
      raise ValueError(f"pp op 'tok': can only tokenize a single string, {in_key!r} has rank {string.shape.rank}")
    if length is None:
      features[out_key] = tf_ops.token_ids(tokenizer, string, add_bos=add_bos, add_eos=add_eos)
    else:
      features[out_key] = tf_ops.tokenize(tokenizer, string, length, eos=_TOK_EOS[eos], add_bos=add_bos)
    return features

  return tok


@keyed_op("lower", indefault="text", outdefault="text")
def get_lower():
  """ASCII lowercase (tf.strings.lower): A-Z become a-z, every other character is unchanged."""
  return lambda text, features: tf.strings.lower(text)


@keyed_op("canonicalize", indefault="text", outdefault="text")
def get_canonicalize():
  """SigLIP canonicalisation (siglip_rins.text.canonicalize): Unicode lowercase, '_' -> ' ', punctuation
  deleted, whitespace collapsed and stripped. Not a big_vision op; keys as big_vision's `lower`."""
  return lambda text, features: tf_ops.canonicalize_tf(text)


@register("coco_captions")
def get_coco_captions(outkey="captions"):
  """features[outkey] = features['captions']['text'] (TFDS coco_captions' nested captions)."""
  check_key("coco_captions", outkey, "outkey")

  def coco_captions(features):
    features = dict(features)
    captions = require(features, "captions", "coco_captions")
    if not isinstance(captions, dict) or "text" not in captions:
      raise ValueError("pp op 'coco_captions': feature 'captions' must be a dict with a 'text' entry")
    features[outkey] = captions["text"]
    return features

  return coco_captions


@register("strfmt")
def get_strfmt(template, outkey="text"):
  """features[outkey] = `template` with each '{name}' replaced by features[name] (non-strings written by
  tf.strings.format, e.g. 3 -> '3', [1, 2] -> '[1 2]'). As in big_vision, a bare '{}' inserts nothing, and
  format specs / conversions ('{x:3}', '{x!r}') are not supported."""
  if not isinstance(template, str):
    raise ValueError(f"pp op 'strfmt': template must be a string, got {template!r}")
  check_key("strfmt", outkey, "outkey")
  try:
    parts = list(string.Formatter().parse(template))
  except ValueError as e:
    raise ValueError(f"pp op 'strfmt': bad template {template!r}: {e}") from None
  for _, field, spec, conversion in parts:
    if spec or conversion:
      raise ValueError(f"pp op 'strfmt': field {field!r} has a format spec or conversion; not supported")

  def strfmt(features):
    features = dict(features)
    pieces = []
    for literal, field, _, _ in parts:
      pieces.append(tf.constant(literal))
      if field:
        value = tf.convert_to_tensor(require(features, field, "strfmt"))
        if value.dtype != tf.string:
          value = tf.strings.format("{}", value, summarize=-1)
        pieces.append(value)
    features[outkey] = tf.strings.join(pieces)
    return features

  return strfmt
