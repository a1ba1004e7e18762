"""Inference wrapper that evaluators, export and the demo use: a model + its params behind numpy in/out.

All batching goes through fixed-size padded batches so each (function, rounds) compiles once.  Outputs are
remembered per input row (by a digest of its bytes) for the current params: evaluators that read the same images or
texts (zero-shot, retrieval and XM3600 share them; padding repeats rows) run the model once per distinct row.
"""

from __future__ import annotations

import collections
import hashlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from siglip_rins.models import Classifier, DecoderLM, TwoTowers
from siglip_rins.recursion import DynamicRepeat, DynamicRounds, rounds_bucket


# Jitted inference functions of this process, shared by every Predictor of an equal model: key (the model's repr
# -- every field of its config --, kind, rounds bucket or repeat value, axis) -> jax.jit wrapper.  Parameters and
# the rounds value are arguments, so a new Predictor for another seed or checkpoint of the same model (the demo's
# and the study's runs, periodic evals) and every r of a bucket reuse one traced and compiled function.
_FN_MEMO: "collections.OrderedDict[tuple, Any]" = collections.OrderedDict()
_FN_MEMO_ENTRIES = 64

# Bytes of remembered output rows one Predictor keeps (all kinds and rounds together); past it the oldest
# (kind, rounds) tables are dropped.
ROW_MEMO_BYTES = 64 << 20
# Input rows larger than this are not remembered: digesting them (~1 GB/s) would cost more than an accelerator's
# forward pass of them (a 224 px float32 image is 588 KiB).  Token rows and small images are far below it.
ROW_MEMO_MAX_ROW_BYTES = 64 << 10


def clear_fn_memo() -> None:
  """Forgets the process's shared jitted inference functions (tests, or to free their executables)."""
  _FN_MEMO.clear()


def _inference_fn(model, kind: str, axis: str, rounds):
  """f(params, x, r) of one Predictor method ('img' | 'txt' | 'logits' | 'lm').

  With an int `rounds`, r (an int32 scalar argument) is the count along `axis` -- the first block's rounds
  ('rounds') or the unit's repeats ('repeat') -- and `rounds` the bucket (recursion.rounds_bucket) of the
  DynamicRounds / DynamicRepeat program: one program for every r of the bucket.  With rounds=None (as trained)
  r is ignored."""
  if rounds is None:
    kw = lambda r: {}
  elif axis == "rounds":
    kw = lambda r: {"rounds": DynamicRounds(r, rounds)}
  else:
    kw = lambda r: {"repeat": DynamicRepeat(r, rounds)}
  if kind == "img":
    return lambda p, x, r: model.apply({"params": p}, x, None, **kw(r))[0]
  if kind == "txt":
    return lambda p, x, r: model.apply({"params": p}, None, x, **kw(r))[1]
  if kind == "logits":
    return lambda p, x, r: model.apply({"params": p}, x, **kw(r))
  if kind == "lm":

    def lm(p, x, r):
      logits = model.apply({"params": p}, x, **kw(r))
      logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), -1)
      return jnp.take_along_axis(logp, x[:, 1:, None], -1)[..., 0]

    return lm
  raise ValueError(kind)


class Predictor:
  """Exposes embed_images / embed_texts / lm_logprobs / classify_logits at any inference `rounds`.

  Args:
    model: a module from `build_model`; params: its parameter tree.
    spec: the run's `ExampleSpec` (siglip_rins.example_spec): how evaluators read images and tokenize texts.
    tokenizer: a `siglip_rins.text.Tokenizer` (default: the spec's).
    batch_size: inference batch size (inputs are padded up to it).
    axis: which inference-time recursion the methods' `rounds` argument sets: 'rounds' (the first block's
      leading run, A^kB) or 'repeat' (repeat-all-over of the signature's unit, for RAO signatures such as ABAB;
      see siglip_rins.recursion.adapter_axis).
  """

  def __init__(
    self, model, params, spec=None, tokenizer=None, batch_size: int = 64, name: str = "model", axis: str = "rounds"
  ):
    self.model, self.params, self.spec = model, params, spec
    text = None if spec is None else spec.text
    self.tokenizer = tokenizer if tokenizer is not None else (None if text is None else text.get_tokenizer())
    self.text_len = None if text is None else text.max_len
    self.batch_size = int(batch_size)
    self.name = name
    self.axis = axis
    self._fns: dict[Any, Any] = {}

  @property
  def params(self):
    return self._params

  @params.setter
  def params(self, value):  # new parameters: remembered outputs no longer hold
    self._params = value
    self._rows: "collections.OrderedDict[tuple, dict[bytes, np.ndarray]]" = collections.OrderedDict()
    self._row_bytes = 0

  # ----------------------------------------------------------------------------------------- scalars
  @property
  def temperature(self) -> float:
    return float(np.exp(np.asarray(self.params["t"]).reshape(-1)[0]))

  @property
  def bias(self) -> float:
    return float(np.asarray(self.params["b"]).reshape(-1)[0])

  # ----------------------------------------------------------------------------------------- batching
  def _fn(self, kind: str, rounds):
    """f(params, x) at `rounds` (see _jitted)."""
    fn = self._jitted(kind, rounds)
    r = np.int32(0 if rounds is None else rounds)
    return lambda p, x: fn(p, x, r)

  def _jitted(self, kind: str, rounds):
    """The jitted f(params, x, r) serving `rounds`: one program per bucket of values along the axis (r = 1..4,
    5..8, ...: recursion.DynamicRounds / DynamicRepeat), one for rounds=None; shared through _FN_MEMO."""
    if self.axis not in ("rounds", "repeat"):
      raise ValueError(f"Predictor.axis must be 'rounds' or 'repeat', got {self.axis!r}")
    compiled = None if rounds is None else rounds_bucket(rounds)
    key = (kind, compiled, self.axis)
    if key not in self._fns:
      shared = (type(self.model).__name__, repr(self.model)) + key
      if shared not in _FN_MEMO:
        _FN_MEMO[shared] = jax.jit(_inference_fn(self.model, kind, self.axis, compiled))
        while len(_FN_MEMO) > _FN_MEMO_ENTRIES:
          _FN_MEMO.popitem(last=False)
      _FN_MEMO.move_to_end(shared)
      self._fns[key] = _FN_MEMO[shared]
    return self._fns[key]

  def _batched(self, kind: str, x: np.ndarray, rounds) -> np.ndarray:
    """fn(params, x) row by row, in padded batches of batch_size, over the rows not remembered yet."""
    x = np.asarray(x)
    if len(x) == 0:
      raise ValueError("no inputs given")
    fn, bs = self._fn(kind, rounds), self.batch_size
    if x[0].nbytes > ROW_MEMO_MAX_ROW_BYTES:
      return np.concatenate([self._run(fn, x[i : i + bs]) for i in range(0, len(x), bs)])
    table_key = (kind, rounds, self.axis, x.dtype.str, x.shape[1:])
    table = self._rows.setdefault(table_key, {})
    self._rows.move_to_end(table_key)
    keys = [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in x]
    todo = list({k: i for i, k in enumerate(keys) if k not in table}.values())  # first row of each new key
    for i in range(0, len(todo), bs):
      rows = todo[i : i + bs]
      out = self._run(fn, x[rows])
      for j, row in enumerate(rows):
        table[keys[row]] = out[j]
      self._row_bytes += out.nbytes
    result = np.stack([table[k] for k in keys])
    while self._row_bytes > ROW_MEMO_BYTES and len(self._rows) > 1:  # the oldest tables go first
      _, dropped = self._rows.popitem(last=False)
      self._row_bytes -= sum(v.nbytes for v in dropped.values())
    if self._row_bytes > ROW_MEMO_BYTES:  # one table alone is over the budget: forget it
      self.params = self.params
    return result

  def _run(self, fn, chunk: np.ndarray) -> np.ndarray:
    """fn(params, chunk) for up to batch_size rows, padded with zeros to batch_size (one compiled shape)."""
    n, pad = len(chunk), self.batch_size - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
    return np.array(np.asarray(fn(self.params, chunk))[:n])  # a copy: remembered rows hold only their rows

  # ----------------------------------------------------------------------------------------- API
  def embed_images(self, images: np.ndarray, rounds=None) -> np.ndarray:
    """images float32 [N, H, W, 3] in [-1, 1] -> L2-normalised [N, D]."""
    self._need(TwoTowers, "embed_images")
    return self._batched("img", np.asarray(images, np.float32), rounds)

  def embed_texts(self, tokens: np.ndarray, rounds=None) -> np.ndarray:
    """tokens int32 [N, L] -> L2-normalised [N, D]."""
    self._need(TwoTowers, "embed_texts")
    return self._batched("txt", np.asarray(tokens, np.int32), rounds)

  def encode_strings(self, texts: Sequence[str]) -> np.ndarray:
    """Strings -> int32 [N, text_len] as the run's pipeline tokenizes them."""
    if self.spec is None or self.spec.text is None:
      raise ValueError("this predictor has no example spec with a text part")
    return self.spec.text.encode(texts, tokenizer=self.tokenizer)

  def classify_logits(self, images: np.ndarray, rounds=None) -> np.ndarray:
    """images [N, H, W, 3] -> logits [N, C] (classifier models)."""
    self._need(Classifier, "classify_logits")
    return self._batched("logits", np.asarray(images, np.float32), rounds)

  def lm_logprobs(self, tokens: np.ndarray, rounds=None) -> np.ndarray:
    """tokens int32 [N, T] -> log p(tokens[:, t+1] | tokens[:, :t+1]) as float32 [N, T-1]."""
    self._need(DecoderLM, "lm_logprobs")
    return self._batched("lm", np.asarray(tokens, np.int32), rounds)

  def _need(self, cls, what):
    if not isinstance(self.model, cls):
      raise ValueError(f"{what} needs a {cls.__name__} model, this one is {type(self.model).__name__}")
