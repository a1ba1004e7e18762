"""SentencePiece tokenizers in pure Python (no TensorFlow).

Name resolution (`resolve_tokenizer_path`):
  * 'c4_en', 'mc4', 'gemma' (any name of letters/digits/_): `$SIGLIP_RINS_TOKENIZER_<NAME>` (upper case) if set,
    else `$SIGLIP_RINS_TOKENIZER_DIR/<name>.model`.
  * 'demo': `$SIGLIP_RINS_TOKENIZER_DEMO` if set, else the shipped `<repo>/tokenizers/demo_multilingual.model`.
  * anything containing a path separator or ending in '.model', or an existing file: a path.
Nothing found -> FileNotFoundError naming the name, the variables and the paths tried.
"""

import functools
import os
import pathlib
import re
from typing import Sequence

import numpy as np
import sentencepiece

from siglip_rins.text.canonicalize import canonicalize as canonicalize_text

REPO_TOKENIZER_DIR = pathlib.Path(__file__).resolve().parents[2] / "tokenizers"
SHIPPED_MODELS = {"demo": "demo_multilingual.model"}
ENV_DIR = "SIGLIP_RINS_TOKENIZER_DIR"
EOS_MODES = ("none", "yes", "sticky")
_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _env_name(name: str) -> str:
  return "SIGLIP_RINS_TOKENIZER_" + name.upper()


def resolve_tokenizer_path(name_or_path: str) -> pathlib.Path:
  """Returns the SentencePiece model file for a tokenizer name or path (rules in the module docstring)."""
  if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path):
    raise ValueError(f"tokenizer name or path must be a non-empty string, got {name_or_path!r}")
  name = str(name_or_path)
  if name.endswith(".model") or not _NAME_RE.match(name):  # a path, not a name
    path = pathlib.Path(name).expanduser()
    if not path.is_file():
      raise FileNotFoundError(f"tokenizer model file {str(path)!r} does not exist")
    return path
  tried = []
  env_var = _env_name(name)
  if os.environ.get(env_var):
    path = pathlib.Path(os.environ[env_var]).expanduser()
    if path.is_file():
      return path
    tried.append(f"${env_var}={path}")
  if os.environ.get(ENV_DIR):
    path = pathlib.Path(os.environ[ENV_DIR]).expanduser() / f"{name}.model"
    if path.is_file():
      return path
    tried.append(str(path))
  if name in SHIPPED_MODELS:
    path = REPO_TOKENIZER_DIR / SHIPPED_MODELS[name]
    if path.is_file():
      return path
    tried.append(str(path))
  raise FileNotFoundError(
    f"tokenizer {name!r} not found: set ${env_var} to its .model file or put {name}.model in "
    f"${ENV_DIR} (currently {os.environ.get(ENV_DIR)!r}); paths tried: {tried or 'none'}"
  )


class Tokenizer:
  """A SentencePiece model. `encode` gives int32 [N, max_len] ids; see `encode` for EOS and padding.

  Attributes: `path` (str or None), `model_proto` (bytes, the serialized model), `vocab_size`, `eos_id` and
  `bos_id` (-1 if the model has none), `pad_id` (the model's pad id, or 0 if it defines none).
  """

  def __init__(self, model_proto: bytes, path: str | None = None):
    self.path = path
    self.model_proto = bytes(model_proto)
    self._sp = sentencepiece.SentencePieceProcessor()
    where = path if path is not None else "<in-memory proto>"
    try:
      ok = self._sp.LoadFromSerializedProto(self.model_proto)
    except Exception as e:  # sentencepiece raises RuntimeError/OSError on a bad proto.
      raise ValueError(f"{where} is not a SentencePiece model: {e}") from None
    if ok is False or self._sp.GetPieceSize() <= 0:
      raise ValueError(f"{where} is not a SentencePiece model (empty vocabulary)")
    self.vocab_size = int(self._sp.GetPieceSize())
    self.eos_id = int(self._sp.eos_id())
    self.bos_id = int(self._sp.bos_id())
    self.pad_id = int(self._sp.pad_id()) if self._sp.pad_id() >= 0 else 0

  @classmethod
  def from_file(cls, path) -> "Tokenizer":
    path = pathlib.Path(path)
    if not path.is_file():
      raise FileNotFoundError(f"tokenizer model file {str(path)!r} does not exist")
    return cls(path.read_bytes(), path=str(path))

  def piece_to_id(self, piece: str) -> int:
    """Id of a vocabulary piece such as '<pad>' (the unknown-piece id if the model lacks it), as
    tensorflow_text's `string_to_id` gives it."""
    return int(self._sp.PieceToId(piece))

  def resolve_pad(self, pad_value: int | str | None) -> int:
    """The padding id for `pad_value`: None -> `pad_id`; an int -> itself; a piece (e.g. '<pad>') -> its id."""
    if pad_value is None:
      return self.pad_id
    if isinstance(pad_value, str):
      return self.piece_to_id(pad_value)
    if isinstance(pad_value, bool) or not isinstance(pad_value, (int, np.integer)):
      raise ValueError(f"pad_value must be an int, a piece such as '<pad>', or None, got {pad_value!r}")
    return int(pad_value)

  def encode_ids(self, text: str, canonicalize: bool = True, lower: bool = False) -> list[int]:
    """Token ids of one string, no BOS/EOS, no padding. `lower` (ASCII only, as tf.strings.lower) is
    applied before `canonicalize` (SigLIP canonicalisation, which lowercases all of Unicode)."""
    if lower:
      text = ascii_lower(text)
    if canonicalize:
      text = canonicalize_text(text)
    return list(self._sp.EncodeAsIds(text))

  def encode(
    self,
    texts: Sequence[str],
    max_len: int,
    eos: str = "sticky",
    canonicalize: bool = False,
    pad_value: int | str | None = None,
    *,
    lower: bool = False,
    add_bos: bool = False,
  ) -> np.ndarray:
    """Tokenizes strings to int32 [N, max_len]; the same ids as the `tokenize` pp op with the same options.

    lower: ASCII-only lowercasing (tf.strings.lower; other characters keep their case).
    canonicalize: SigLIP canonicalisation (Unicode lowercase, punctuation deleted; `siglip_rins.text.canonicalize`).
    add_bos: start with the model's BOS id.
    eos: 'none' no EOS; 'yes' append EOS, then truncate to max_len (the EOS may be cut off);
    'sticky' append EOS and, when truncating, keep it as the last token.
    pad_value: shorter rows are padded with it: None -> `pad_id`; an int; or a piece such as '<pad>'.
    """
    if isinstance(texts, (str, bytes)):
      raise ValueError("Tokenizer.encode expects a sequence of strings, got a single string")
    check_encode_args(max_len, eos, self.eos_id)
    if add_bos and self.bos_id < 0:
      raise ValueError("add_bos requested but the tokenizer has no BOS id")
    pad = self.resolve_pad(pad_value)
    out = np.full((len(texts), max_len), pad, dtype=np.int32)
    for row, text in enumerate(texts):
      if isinstance(text, bytes):
        text = text.decode("utf-8")
      ids = self.encode_ids(text, canonicalize=canonicalize, lower=lower)
      if add_bos:
        ids = [self.bos_id] + ids
      ids = apply_eos(ids, max_len, eos, self.eos_id)
      out[row, : len(ids)] = ids
    return out

  def decode(self, ids) -> str:
    """Text of one row of ids; ids equal to pad_id (after the first token) and EOS end the text."""
    ids = [int(i) for i in ids]
    kept = []
    for i in ids:
      if i == self.eos_id:
        break
      kept.append(i)
    while kept and kept[-1] == self.pad_id:
      kept.pop()
    return self._sp.DecodeIds(kept)

  def __repr__(self):
    return f"Tokenizer(path={self.path!r}, vocab_size={self.vocab_size})"


def ascii_lower(text: str) -> str:
  """Lowercases A-Z only, like tf.strings.lower without an encoding (big_vision's `lower`)."""
  return text.translate(_ASCII_LOWER)


def check_encode_args(max_len, eos: str, eos_id: int):
  """Validates `max_len` / `eos`; raises ValueError naming the bad argument."""
  if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 1:
    raise ValueError(f"max_len must be a positive int, got {max_len!r}")
  if eos not in EOS_MODES:
    raise ValueError(f"eos must be one of {EOS_MODES}, got {eos!r}")
  if eos != "none" and eos_id < 0:
    raise ValueError(f"eos={eos!r} requested but the tokenizer has no EOS id")


def apply_eos(ids: list[int], max_len: int, eos: str, eos_id: int) -> list[int]:
  """Appends EOS per `eos` mode and truncates to max_len (see Tokenizer.encode)."""
  if eos == "none":
    return ids[:max_len]
  if eos == "yes":
    return (ids + [eos_id])[:max_len]
  return ids[: max_len - 1] + [eos_id]


@functools.lru_cache(maxsize=16)
def _load_cached(path: str, mtime_ns: int) -> Tokenizer:
  del mtime_ns  # part of the cache key only
  return Tokenizer.from_file(path)


def get_tokenizer(name_or_path) -> Tokenizer:
  """Tokenizer for a name ('demo', 'c4_en', 'mc4', 'gemma', ...) or a .model path; cached per file."""
  if isinstance(name_or_path, Tokenizer):
    return name_or_path
  path = resolve_tokenizer_path(name_or_path)
  return _load_cached(str(path.resolve()), path.stat().st_mtime_ns)
