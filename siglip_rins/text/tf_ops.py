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
    _TF_TOKENIZERS[key] = tensorflow_text.SentencepieceTokenizer(
      model=tokenizer.model_proto, out_type=tf.int32, add_bos=False, add_eos=False
    )
  return _TF_TOKENIZERS[key]


def tokenize(
  tokenizer,
  strings: tf.Tensor,
  max_len: int,
  eos: str = "sticky",
  pad_value: int | None = None,
  canonicalize: bool = True,
) -> tf.Tensor:
  """Tokenizes a tf.string scalar -> int32 [max_len], or vector [N] -> int32 [N, max_len].

  `tokenizer` is a `Tokenizer` or a name/path for `get_tokenizer`. EOS/padding semantics of
  `Tokenizer.encode`.
  """
  tokenizer = get_tokenizer(tokenizer)
  check_encode_args(max_len, eos, tokenizer.eos_id)
  pad = tokenizer.pad_id if pad_value is None else int(pad_value)
  strings = tf.convert_to_tensor(strings, dtype=tf.string)
  is_scalar = strings.shape.rank == 0
  if strings.shape.rank not in (0, 1):
    raise ValueError(f"tokenize expects a scalar or vector of strings, got rank {strings.shape.rank}")
  batch = strings[None] if is_scalar else strings
  if canonicalize:
    batch = canonicalize_tf(batch)
  ids = tf_sentencepiece(tokenizer).tokenize(batch)  # RaggedTensor int32 [N, None]
  ids = _eos_and_pad(ids, max_len, eos, tokenizer.eos_id, pad)
  return ids[0] if is_scalar else ids


def _eos_and_pad(ids: tf.RaggedTensor, max_len: int, eos: str, eos_id: int, pad: int) -> tf.Tensor:
  """TF version of `tokenizer.apply_eos` followed by padding to int32 [N, max_len]."""
  n = ids.nrows()
  if eos == "sticky":
    ids = ids[:, : max_len - 1]
  if eos in ("yes", "sticky"):
    eos_col = tf.fill(tf.stack([n, tf.constant(1, n.dtype)]), tf.constant(eos_id, tf.int32))
    ids = tf.concat([ids, tf.RaggedTensor.from_tensor(eos_col)], axis=1)
  ids = ids[:, :max_len]
  dense = ids.to_tensor(default_value=pad, shape=[None, max_len])
  return tf.ensure_shape(dense, [None, max_len])
