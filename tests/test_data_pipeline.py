"""Sources, train/eval iterators (determinism, resume, sharding, skipped records) and LM packing."""

import pathlib
import sys

import ml_collections
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import data_fixtures  # noqa: E402

tf = pytest.importorskip("tensorflow")
from siglip_rins.data import packing, pipeline, sources  # noqa: E402

BAD_KINDS = ("bad_bytes", "truncated", "zero_byte", "missing_file", "no_caption", "empty_caption", "bad_json")
NUM_GOOD = 12


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
  return data_fixtures.tokenizer_path_for_tests(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def jsonl_with_bad(tmp_path_factory):
  return data_fixtures.write_jsonl_dataset(tmp_path_factory.mktemp("jsonl"), NUM_GOOD, (12, 14), bad=BAD_KINDS)


def _pp(tok_path, augment=True):
  aug = "inception_crop(8, area_min=30)|flip_lr|" if augment else "resize(8)|"
  return (
    f"decode|{aug}value_range(-1, 1)|tokenize(max_len=6, model={tok_path!r}, eos='sticky', "
    f"inkey='texts', outkey='labels')|keep('image', 'labels', 'label')"
  )


def _cfg(path, tok_path, **kw):
  return dict(
    data=dict(type="jsonl", path=str(path)),
    pp=_pp(tok_path, kw.pop("augment", True)),
    shuffle_buffer_size=kw.pop("shuffle_buffer_size", 8),
    prefetch=1,
    **kw,
  )


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_train_batches_shapes_and_skip_counts(jsonl_with_bad, tok_path):
  it = pipeline.make_train_iterator(_cfg(jsonl_with_bad, tok_path), global_batch_size=8, process_count=2, seed=0)
  batch = next(it)
  assert batch["image"].shape == (4, 8, 8, 3) and batch["image"].dtype == np.float32
  assert batch["labels"].shape == (4, 6) and batch["labels"].dtype == np.int32
  assert np.all(np.abs(batch["image"]) <= 1.0)
  _take(it, 5)
  stats = it.stats()
  assert stats["skipped_records"] > 0
  assert set(batch["label"]) <= set(range(NUM_GOOD))  # bad records carry label -2 and never appear


def test_determinism_by_seed(jsonl_with_bad, tok_path):
  cfg = _cfg(jsonl_with_bad, tok_path)
  a = _take(pipeline.make_train_iterator(cfg, global_batch_size=4, seed=3), 4)
  config_dict = ml_collections.ConfigDict(cfg)  # the trainer passes config.input as a ConfigDict
  b = _take(pipeline.make_train_iterator(config_dict, global_batch_size=4, seed=3), 4)
  c = _take(pipeline.make_train_iterator(cfg, global_batch_size=4, seed=4), 4)
  _assert_same(a, b)
  assert not all(np.array_equal(x["image"], y["image"]) for x, y in zip(a, c))


def test_resume_equals_uninterrupted(jsonl_with_bad, tok_path):
  # 6 batches x 4 = 24 good examples: two epochs of the 12 good records, with 7 bad ones interleaved.
  cfg = _cfg(jsonl_with_bad, tok_path)
  full = _take(pipeline.make_train_iterator(cfg, global_batch_size=4, seed=11), 6)
  for start_batch in (1, 4):
    resumed = pipeline.make_train_iterator(cfg, global_batch_size=4, seed=11, start_example=4 * start_batch)
    _assert_same(_take(resumed, 6 - start_batch), full[start_batch:])


def test_eval_counts_every_bad_record_by_reason(jsonl_with_bad, tok_path):
  it = pipeline.make_eval_iterator(_cfg(jsonl_with_bad, tok_path, augment=False), batch_size=5)
  batches = list(it)
  assert all(b["_mask"].shape == (5,) and b["image"].shape == (5, 8, 8, 3) for b in batches)
  labels = np.concatenate([b["label"][b["_mask"]] for b in batches])
  assert sorted(labels.tolist()) == list(range(NUM_GOOD))  # every good record once, in a finite pass
  assert len(batches) == 3 and batches[-1]["_mask"].sum() == NUM_GOOD - 10
  assert not batches[-1]["image"][~batches[-1]["_mask"]].any()  # padding is zeros
  stats = it.stats()
  assert stats["skipped_records"] == len(BAD_KINDS)
  assert stats["examined_records"] == NUM_GOOD + len(BAD_KINDS)
  assert stats["skipped/undecodable"] == 2  # bad_bytes, truncated
  for reason in ("empty_image", "missing_image_file", "missing_field", "empty_text", "bad_json"):
    assert stats[f"skipped/{reason}"] == 1, reason


def test_non_utf8_caption_skipped(tmp_path, tok_path):
  path = data_fixtures.write_jsonl_dataset(tmp_path, 3, (12, 14))
  with open(path, "ab") as f:
    f.write(b'{"image": "images/00000.jpeg", "texts": "caf\xe9 latin-1", "label": 5}\n')
  it = pipeline.make_eval_iterator(_cfg(path, tok_path, augment=False), batch_size=4)
  assert sum(int(b["_mask"].sum()) for b in it) == 3
  assert it.stats()["skipped/bad_utf8_text"] == 1


def test_all_bad_records_raise_naming_the_source(tmp_path, tok_path):
  path = data_fixtures.write_jsonl_dataset(tmp_path, 0, bad=("bad_bytes", "zero_byte", "missing_file"))
  with pytest.raises(RuntimeError, match="data.jsonl"):
    next(pipeline.make_train_iterator(_cfg(path, tok_path), global_batch_size=2))
  with pytest.raises(RuntimeError, match="data.jsonl"):
    list(pipeline.make_eval_iterator(_cfg(path, tok_path, augment=False), batch_size=2))


def _eval_labels(cfg, process_index, process_count):
  it = pipeline.make_eval_iterator(cfg, batch_size=3, process_index=process_index, process_count=process_count)
  return [int(x) for b in it for x in b["label"][b["_mask"]]]


def test_jsonl_host_shards_are_disjoint_and_complete(jsonl_with_bad, tok_path):
  cfg = _cfg(jsonl_with_bad, tok_path, augment=False)
  host0, host1 = _eval_labels(cfg, 0, 2), _eval_labels(cfg, 1, 2)
  assert not set(host0) & set(host1) and sorted(host0 + host1) == list(range(NUM_GOOD))


def test_tfrecord_source_sharding_and_bad_images(tmp_path, tok_path):
  for num_shards in (1, 4):  # 1 file for 2 hosts: record sharding; 4 files: file sharding
    files = data_fixtures.write_tfrecord_dataset(
      tmp_path / str(num_shards), 10, num_shards, (12, 14), bad_image_indices=(3,)
    )
    cfg = dict(data=dict(type="tfrecord", files=files), pp=_pp(tok_path, augment=False), prefetch=1)
    labels, undecodable = [], 0
    for host in range(2):
      it = pipeline.make_eval_iterator(cfg, batch_size=3, process_index=host, process_count=2)
      labels.append([int(x) for b in it for x in b["label"][b["_mask"]]])
      undecodable += it.stats()["skipped/undecodable"]
    assert not set(labels[0]) & set(labels[1])
    assert sorted(labels[0] + labels[1]) == [i for i in range(10) if i != 3]
    assert undecodable == 1


def test_mixture_weights_and_determinism(tmp_path, tok_path):
  a = data_fixtures.write_jsonl_dataset(tmp_path / "a", 4, (12, 14), labels=[0, 1, 2, 3])
  b = data_fixtures.write_jsonl_dataset(tmp_path / "b", 4, (12, 14), labels=[100, 101, 102, 103])
  cfg = dict(
    data=dict(
      type="mixture",
      sources=[
        dict(weight=3, data=dict(type="jsonl", path=str(a))),
        dict(weight=1, data=dict(type="jsonl", path=str(b))),
      ],
    ),
    pp=_pp(tok_path, augment=False),
    shuffle_buffer_size=4,
    prefetch=1,
  )
  first = _take(pipeline.make_train_iterator(cfg, global_batch_size=32, seed=5), 4)
  again = _take(pipeline.make_train_iterator(cfg, global_batch_size=32, seed=5), 2)
  _assert_same(first[:2], again)
  labels = np.concatenate([x["label"] for x in first])
  share_a = np.mean(labels < 100)
  assert 0.65 < share_a < 0.85 and set(labels) == {0, 1, 2, 3, 100, 101, 102, 103}


def test_tfds_not_prepared_is_a_clear_error(tmp_path, tok_path):
  cfg = dict(
    data=dict(type="tfds", name="mnist", split="test", data_dir=str(tmp_path)), pp=_pp(tok_path, augment=False)
  )
  with pytest.raises(FileNotFoundError) as err:
    pipeline.make_eval_iterator(cfg, batch_size=2)
  assert "mnist" in str(err.value) and str(tmp_path) in str(err.value)


class SiglipRinsTinyTfds(__import__("tensorflow_datasets").core.GeneratorBasedBuilder):
  """A 6-record TFDS dataset prepared locally (no download) for the tfds source test."""

  VERSION = __import__("tensorflow_datasets").core.Version("1.0.0")

  def _info(self):
    import tensorflow_datasets as tfds

    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(None, None, 3)),
          "texts": tfds.features.Text(),
          "label": tfds.features.ClassLabel(num_classes=10),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i in range(6):
      yield (
        i,
        {"image": data_fixtures.make_image(8, 10, seed=i), "texts": data_fixtures.MULTILINGUAL_TEXTS[i], "label": i},
      )


@pytest.mark.slow
def test_tfds_prepared_dataset_sharded_by_host(tmp_path, tok_path):
  SiglipRinsTinyTfds(data_dir=str(tmp_path)).download_and_prepare()
  cfg = dict(
    data=dict(type="tfds", name="siglip_rins_tiny_tfds", split="train", data_dir=str(tmp_path)),
    pp=_pp(tok_path, augment=False),
    prefetch=1,
  )
  host0, host1 = _eval_labels(cfg, 0, 2), _eval_labels(cfg, 1, 2)
  assert not set(host0) & set(host1) and sorted(host0 + host1) == list(range(6))


def test_bad_configs_rejected(jsonl_with_bad, tok_path, tmp_path):
  with pytest.raises(ValueError, match="divisible"):
    pipeline.make_train_iterator(_cfg(jsonl_with_bad, tok_path), global_batch_size=5, process_count=2)
  with pytest.raises(ValueError, match="unknown data type"):
    sources.build_source(dict(type="csv"))
  with pytest.raises(FileNotFoundError, match="nothing"):
    sources.build_source(dict(type="jsonl", path=str(tmp_path / "nothing")))
  with pytest.raises(FileNotFoundError, match="no files match"):
    sources.build_source(dict(type="tfrecord", files=str(tmp_path / "*.tfrecord")))


# ------------------------------------------------------------------ packing


def test_packing_segments_positions_and_isolation():
  rng = np.random.default_rng(0)
  seqs = [rng.integers(3, 50, size=n).tolist() for n in (5, 3, 8, 2, 7, 1, 6, 20)]
  rows = list(packing.pack_sequences(seqs, seq_len=10, max_open_rows=3))
  recovered = []
  for row in rows:
    tokens, seg, pos = row["tokens"], row["segment_ids"], row["positions"]
    assert tokens.dtype == seg.dtype == pos.dtype == np.int32 and tokens.shape == (10,)
    assert np.all(tokens[seg == 0] == 0) and np.all(pos[seg == 0] == 0)
    for s in np.unique(seg[seg > 0]):
      idx = np.flatnonzero(seg == s)
      assert np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx)))  # contiguous
      assert np.array_equal(pos[idx], np.arange(len(idx)))  # positions restart per segment
      recovered.append(tokens[idx].tolist())
    mask = packing.segment_attention_mask(seg)
    cross = seg[:, None] != seg[None, :]
    assert not mask[cross].any()  # no attention across segments
    assert np.array_equal(mask.diagonal(), seg > 0)
  pieces = [s for s in seqs if len(s) <= 10] + [seqs[-1][:10], seqs[-1][10:]]
  assert sorted(map(tuple, recovered)) == sorted(map(tuple, pieces))
  assert sum(int((r["segment_ids"] > 0).sum()) for r in rows) == sum(len(s) for s in seqs)
  assert len(rows) <= 7  # first-fit fills rows: 52 tokens in at most 7 rows of 10


def test_pack_dataset_wrapper():
  ds = tf.data.Dataset.from_generator(
    lambda: ({"tokens": np.arange(1, n + 1, dtype=np.int32)} for n in (3, 4, 5)),
    output_signature={"tokens": tf.TensorSpec([None], tf.int32)},
  )
  rows = list(packing.pack_dataset(ds, seq_len=8).as_numpy_iterator())
  assert [r["segment_ids"].tolist() for r in rows] == [[1, 1, 1, 2, 2, 2, 2, 0], [1, 1, 1, 1, 1, 0, 0, 0]]
  assert rows[0]["positions"].tolist() == [0, 1, 2, 0, 1, 2, 3, 0]
  with pytest.raises(ValueError, match="seq_len"):
    list(packing.pack_sequences([[1]], seq_len=0))
