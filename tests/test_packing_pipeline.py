"""LM sequence packing inside the tf.data pipeline (input.pack): rows never mix documents within a segment,
positions restart per segment, nothing is lost, and resuming by start_example is exact."""

import json

import numpy as np

from siglip_rins.data import pipeline
from tests.data_fixtures import write_sentencepiece_model


def _corpus(tmp_path, n=40):
  docs = [" ".join(f"word{(i * 7 + j) % 23}" for j in range(3 + i % 9)) for i in range(n)]
  path = tmp_path / "data.jsonl"
  path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
  return path


def _cfg(tmp_path, seq_len=16):
  model = write_sentencepiece_model(tmp_path / "sp")
  return dict(
    data=dict(type="jsonl", path=str(_corpus(tmp_path))),
    shuffle_buffer_size=8,
    pp=f'tokenize(max_len=64, model="{model}", eos="yes", inkey="text", outkey="tokens", '
    f'lower=False, canonicalize=False)|keep("tokens")',
    pack=dict(seq_len=seq_len, key="tokens"),
  )


def test_packed_rows_segments_and_positions(tmp_path):
  it = pipeline.make_train_iterator(_cfg(tmp_path), global_batch_size=4, seed=3)
  batch = next(it)
  assert {k: v.shape for k, v in batch.items()} == {k: (4, 16) for k in ("tokens", "segment_ids", "positions")}
  for toks, seg, pos in zip(batch["tokens"], batch["segment_ids"], batch["positions"]):
    assert seg[0] == 1 and np.all(np.diff(seg) >= 0) and np.all(np.diff(seg) <= 1)
    for s in np.unique(seg):
      p = pos[seg == s]
      np.testing.assert_array_equal(p, np.arange(len(p)) + (p[0] if s == seg[0] else 0))
    assert np.all(toks != 0)  # padding was stripped before packing
    eos_at = np.nonzero(toks == 1)[0]  # an EOS (id 1) always ends its segment
    for e in eos_at:
      assert e == len(seg) - 1 or seg[e + 1] == seg[e] + 1


def test_packed_resume_equals_uninterrupted(tmp_path):
  cfg = _cfg(tmp_path)
  straight = pipeline.make_train_iterator(cfg, global_batch_size=2, seed=5)
  rows = [next(straight) for _ in range(5)]
  resumed = pipeline.make_train_iterator(cfg, global_batch_size=2, seed=5, start_example=6)
  for want in rows[3:]:
    got = next(resumed)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])
