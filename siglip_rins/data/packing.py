"""LM sequence packing: many token sequences -> fixed-length rows with segment ids and positions.

`pack_sequences(sequences, seq_len)` packs greedily first-fit into rows of length seq_len (int32 [T]):
  tokens       the concatenated sequences, 0 after the last one (padding);
  segment_ids  1, 2, 3, ... per sequence in the row, 0 on padding;
  positions    0, 1, 2, ... restarting at every segment, 0 on padding.
A sequence longer than seq_len is split into seq_len-long pieces, each its own segment. Attention must
only connect tokens with equal, non-zero segment ids (`segment_attention_mask`), so packed sequences
never see each other. Up to `max_open_rows` rows stay open for first-fit; the oldest is emitted when full.
`pack_dataset` wraps this for tf.data.
"""

from typing import Iterable, Iterator, Sequence

import numpy as np


class _Row:
  def __init__(self, seq_len):
    self.tokens = np.zeros(seq_len, np.int32)
    self.segment_ids = np.zeros(seq_len, np.int32)
    self.positions = np.zeros(seq_len, np.int32)
    self.used = 0
    self.segments = 0

  def add(self, seq: np.ndarray):
    n = len(seq)
    self.segments += 1
    self.tokens[self.used : self.used + n] = seq
    self.segment_ids[self.used : self.used + n] = self.segments
    self.positions[self.used : self.used + n] = np.arange(n, dtype=np.int32)
    self.used += n

  def as_dict(self) -> dict:
    return {"tokens": self.tokens, "segment_ids": self.segment_ids, "positions": self.positions}


def pack_sequences(sequences: Iterable[Sequence[int]], seq_len: int, max_open_rows: int = 8) -> Iterator[dict]:
  """Yields packed rows {tokens, segment_ids, positions}, each int32 [seq_len] (see module docstring).
  Empty sequences are dropped."""
  if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
    raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
  if max_open_rows < 1:
    raise ValueError(f"max_open_rows must be >= 1, got {max_open_rows}")
  open_rows: list[_Row] = []
  for seq in sequences:
    seq = np.asarray(seq, np.int32).reshape(-1)
    for start in range(0, len(seq), seq_len):
      piece = seq[start : start + seq_len]
      row = next((r for r in open_rows if r.used + len(piece) <= seq_len), None)
      if row is None:
        if len(open_rows) == max_open_rows:
          yield open_rows.pop(0).as_dict()
        row = _Row(seq_len)
        open_rows.append(row)
      row.add(piece)
      if row.used == seq_len:
        open_rows.remove(row)
        yield row.as_dict()
  for row in open_rows:
    yield row.as_dict()


def segment_attention_mask(segment_ids: np.ndarray, causal: bool = True) -> np.ndarray:
  """bool [..., T, T]: query i may attend key j iff same non-zero segment (and j <= i if causal)."""
  seg = np.asarray(segment_ids)
  mask = (seg[..., :, None] == seg[..., None, :]) & (seg[..., :, None] != 0)
  if causal:
    t = seg.shape[-1]
    mask &= np.tril(np.ones((t, t), bool))
  return mask


def pack_dataset(dataset, seq_len: int, key: str = "tokens", max_open_rows: int = 8):
  """tf.data wrapper: a dataset of dicts with int token vectors under `key` -> dataset of packed rows
  {tokens, segment_ids, positions} int32 [seq_len]. Runs the packer in Python (from_generator)."""
  import tensorflow as tf

  def generate():
    sequences = (element[key] for element in dataset.as_numpy_iterator())
    yield from pack_sequences(sequences, seq_len, max_open_rows)

  spec = tf.TensorSpec([seq_len], tf.int32)
  return tf.data.Dataset.from_generator(
    generate, output_signature={"tokens": spec, "segment_ids": spec, "positions": spec}
  )
