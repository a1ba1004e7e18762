"""TensorFlow text ops for tf.data: canonicalisation and SentencePiece tokenisation.

They produce exactly the ids of `Tokenizer.encode` (pure Python); tests check this on multilingual text.
"""

import tensorflow as tf
import tensorflow_text

from siglip_rins.text.canonicalize import PUNCTUATION_RE2, WHITESPACE_RE2
from siglip_rins.text.tokenizer import Tokenizer, check_encode_args, get_tokenizer

_TF_TOKENIZERS = {}


def canonicalize_tf(strings: tf.Tensor) -> tf.Tensor:
  """SigLIP canonicalisation of a tf.string tensor of any shape (same rules as `canonicalize`)."""
  strings = tf.strings.lower(strings, encoding="utf-8")
  strings = tf.strings.regex_replace(strings, "_", " ")
  strings = tf.strings.regex_replace(strings, PUNCTUATION_RE2, "")
  strings = tf.strings.regex_replace(strings, WHITESPACE_RE2, " ")
  return tf.strings.regex_replace(strings, r"^ +| +$", "")


def tf_sentencepiece(tokenizer: Tokenizer) -> tensorflow_text.SentencepieceTokenizer:
  """The tensorflow_text tokenizer for the same model proto (cached per proto)."""
  key = tokenizer.model_proto
  if key not in _TF_TOKENIZERS:
    with tf.init_scope():  # the resource lives eagerly even when first asked for inside a traced function
      _TF_TOKENIZERS[key] = tensorflow_text.SentencepieceTokenizer(
        model=tokenizer.model_proto, out_type=tf.int32, add_bos=False, add_eos=False
      )
  return _TF_TOKENIZERS[key]


def tokenize(
  tokenizer,
  strings: tf.Tensor,
  max_len: int,
  eos: str = "sticky",
  pad_value: int | str | None = None,
  canonicalize: bool = False,
  lower: bool = False,
  add_bos: bool = False,
) -> tf.Tensor:
  """Tokenizes a tf.string tensor of shape S -> int32 S + [max_len] (a scalar gives [max_len]).

  `tokenizer` is a `Tokenizer` or a name/path for `get_tokenizer`. Options, EOS and padding as
  `Tokenizer.encode`, which gives the same ids: `lower` (ASCII, tf.strings.lower) then `canonicalize`,
  optional BOS, EOS per `eos`, padding with `pad_value` (None -> pad_id, an int, or a piece like '<pad>').
  """
  tokenizer = get_tokenizer(tokenizer)
  check_encode_args(max_len, eos, tokenizer.eos_id)
  if add_bos and tokenizer.bos_id < 0:
    raise ValueError("add_bos requested but the tokenizer has no BOS id")
  pad = tokenizer.resolve_pad(pad_value)
  strings = tf.convert_to_tensor(strings, dtype=tf.string)
  if strings.shape.rank is None:
    raise ValueError("tokenize expects strings of known rank")
  batch = tf.reshape(strings, [-1])
  if lower:
    batch = tf.strings.lower(batch)
  if canonicalize:
    batch = canonicalize_tf(batch)
  ids = tf_sentencepiece(tokenizer).tokenize(batch)  # RaggedTensor int32 [N, None]
  if add_bos:
    ids = tf.concat([_column(ids.nrows(), tokenizer.bos_id), ids], axis=1)
  ids = _eos_and_pad(ids, max_len, eos, tokenizer.eos_id, pad)
  if strings.shape.rank == 1:
    return ids
  if strings.shape.is_fully_defined():
    return tf.reshape(ids, strings.shape.as_list() + [max_len])
  out = tf.reshape(ids, tf.concat([tf.shape(strings), [max_len]], axis=0))
  return tf.ensure_shape(out, strings.shape.concatenate([max_len]))


def token_ids(tokenizer, string: tf.Tensor, add_bos: bool = False, add_eos: bool = False) -> tf.Tensor:
  """Ids of one tf.string scalar, unpadded: int32 [n] (optional BOS first / EOS last), as `Tokenizer.encode_ids`
  with canonicalize=False plus those tokens."""
  tokenizer = get_tokenizer(tokenizer)
  for flag, name, value in ((add_bos, "BOS", tokenizer.bos_id), (add_eos, "EOS", tokenizer.eos_id)):
    if flag and value < 0:
      raise ValueError(f"{name} requested but the tokenizer has no {name} id")
  string = tf.convert_to_tensor(string, dtype=tf.string)
  if string.shape.rank != 0:
    raise ValueError(f"token_ids expects one string (a scalar), got rank {string.shape.rank}")
  ids = tf_sentencepiece(tokenizer).tokenize(string)
  parts = ([tf.constant([tokenizer.bos_id], tf.int32)] if add_bos else []) + [ids]
  parts += [tf.constant([tokenizer.eos_id], tf.int32)] if add_eos else []
  return tf.ensure_shape(tf.concat(parts, axis=0), [None])


def _column(n, value: int) -> tf.RaggedTensor:
  """A ragged [n, 1] column filled with `value`."""
  return tf.RaggedTensor.from_tensor(tf.fill(tf.stack([n, tf.constant(1, n.dtype)]), tf.constant(value, tf.int32)))


def _eos_and_pad(ids: tf.RaggedTensor, max_len: int, eos: str, eos_id: int, pad: int) -> tf.Tensor:
  """TF version of `tokenizer.apply_eos` followed by padding to int32 [N, max_len]."""
  if eos == "sticky":
    ids = ids[:, : max_len - 1]
  if eos in ("yes", "sticky"):
    ids = tf.concat([ids, _column(ids.nrows(), eos_id)], axis=1)
  ids = ids[:, :max_len]
  dense = ids.to_tensor(default_value=pad, shape=[None, max_len])
  return tf.ensure_shape(dense, [None, max_len])
