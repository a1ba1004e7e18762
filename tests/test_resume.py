"""Resume from a saved input position: the stream restarts at the raw record (before decoding), equals the
uninterrupted stream exactly (also with bad records and mixtures, across epochs), costs the same however far
the run was, and the trainer's kill-and-resume on data with bad records gives the uninterrupted parameters."""

import json
import os
import pathlib
import sys
import time

import jax
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import data_fixtures  # noqa: E402

from siglip_rins import checkpoint as ckpt_lib  # noqa: E402
from siglip_rins.data import pipeline  # noqa: E402

BAD_KINDS = ("bad_bytes", "truncated", "zero_byte", "missing_file", "no_caption", "empty_caption", "bad_json")


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
  return data_fixtures.tokenizer_path_for_tests(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("resume_data")
  bad = data_fixtures.write_jsonl_dataset(root / "bad", 10, (12, 14), bad=BAD_KINDS)
  clean = data_fixtures.write_jsonl_dataset(root / "clean", 6, (12, 14), labels=[100 + i for i in range(6)])
  return bad, clean


def _pp(tok_path):
  return (
    f"decode|inception_crop(8, area_min=30)|flip_lr|value_range(-1, 1)|tokenize(max_len=6, model={tok_path!r}, "
    f"inkey='texts', outkey='labels')|keep('image', 'labels', 'label')"
  )


def _single(data, tok_path):
  return dict(data=dict(type="jsonl", path=str(data[0])), pp=_pp(tok_path), shuffle_buffer_size=8, prefetch=1)


def _mixture(data, tok_path):
  return dict(
    data=dict(
      type="mixture",
      sources=[
        dict(weight=2, data=dict(type="jsonl", path=str(data[0]))),
        dict(weight=1, data=dict(type="jsonl", path=str(data[1]))),
      ],
    ),
    pp=_pp(tok_path),
    shuffle_buffer_size=4,
    prefetch=1,
  )


def _take(it, n):
  return [next(it) for _ in range(n)]


def _same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize("kind", ["single", "mixture"])
def test_resume_from_position_equals_uninterrupted(data, tok_path, kind):
  """10 good + 7 bad records, batches of 3: 8 batches run through ~2.4 epochs; resuming after any batch
  continues with exactly the same batches (values and augmentation)."""
  cfg = (_single if kind == "single" else _mixture)(data, tok_path)
  full_it = pipeline.make_train_iterator(cfg, global_batch_size=3, seed=7)
  full = _take(full_it, 8)
  assert "_pos" not in full[0] and "_component" not in full[0]
  for k in (1, 3, 6):
    it = pipeline.make_train_iterator(cfg, global_batch_size=3, seed=7)
    _take(it, k)
    position = json.loads(json.dumps(it.position()))  # as stored in a checkpoint's meta
    assert position["mix"] == 3 * k
    resumed = pipeline.make_train_iterator(cfg, global_batch_size=3, seed=7, start_position=position)
    _same(_take(resumed, 8 - k), full[k:])


def test_restart_cost_does_not_grow_with_the_position(data, tok_path):
  """Starting a million epochs in costs what starting at the beginning costs: nothing before the position
  is read, let alone decoded."""
  cfg = _single(data, tok_path)

  def first_batch_seconds(position):
    t0 = time.perf_counter()
    it = pipeline.make_train_iterator(cfg, global_batch_size=3, seed=7, start_position=position)
    batch = next(it)
    return time.perf_counter() - t0, it, batch

  near, _, _ = first_batch_seconds({"mix": 3, "components": [[0, 4]]})
  far, it, batch = first_batch_seconds({"mix": 3_000_000_000, "components": [[1_000_000, 4]]})
  assert batch["image"].shape[0] == 3
  assert it.position()["components"][0][0] >= 1_000_000
  assert it.stats()["examined_records"] < 2 * (10 + len(BAD_KINDS))  # only records at/after the position
  assert far < 3 * near + 2.0, (near, far)


@pytest.mark.slow
def test_kill_and_resume_with_bad_records_gives_the_uninterrupted_parameters(data, tmp_path):
  """The trainer saves each host's position in the checkpoint and resumes from it; with bad records in a
  shuffled dataset, the resumed run ends with exactly the uninterrupted run's parameters."""
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import multiprocess_worker as worker
  from siglip_rins.train import train

  root = tmp_path / "d"
  path = data_fixtures.write_jsonl_dataset(root, 20, (12, 14), bad=BAD_KINDS)

  def config():
    c = worker.make_config(str(path), steps=6, global_batch=8)
    c.input.shuffle_buffer_size = 8
    c.ckpt_every = 2
    return c

  straight = train(config(), str(tmp_path / "straight"), verbose=False)
  first = train(config(), str(tmp_path / "resumed"), stop_after=3, verbose=False)  # killed after step 3
  assert first["step"] == 3
  meta = ckpt_lib.CheckpointManager(str(tmp_path / "resumed")).restore(2)[1]
  assert meta["data_position"][0]["mix"] == 16 and meta["data_position"][0]["components"][0][1] > 0
  resumed = train(config(), str(tmp_path / "resumed"), verbose=False)
  assert resumed["step"] == straight["step"] == 6
  a = jax.tree.leaves(straight["state"]["params"])
  b = jax.tree.leaves(resumed["state"]["params"])
  for x, y in zip(a, b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


class SiglipRinsShardedTfds(__import__("tensorflow_datasets").core.GeneratorBasedBuilder):
  """24 records in 4 TFRecord files, prepared locally (no download)."""

  VERSION = __import__("tensorflow_datasets").core.Version("1.0.0")

  def _info(self):
    import tensorflow_datasets as tfds

    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(None, None, 3)),
          "texts": tfds.features.Text(),
          "label": tfds.features.ClassLabel(num_classes=100),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i in range(24):
      yield i, {"image": data_fixtures.make_image(8, 10, seed=i), "texts": f"record {i}", "label": i}


@pytest.mark.slow
def test_tfds_files_shuffled_per_seed_and_epoch_and_resume_exact(tmp_path, tok_path):
  import tensorflow_datasets as tfds

  builder = SiglipRinsShardedTfds(data_dir=str(tmp_path))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=4))
  assert len(builder.info.splits["train"].file_instructions) == 4

  def cfg():  # no record-level shuffle: the order seen is the file order alone
    data = dict(type="tfds", name="siglip_rins_sharded_tfds", split="train", data_dir=str(tmp_path))
    pp = f"decode|resize(8)|value_range(-1, 1)|tokenize(max_len=4, model={tok_path!r})|keep('image', 'label')"
    return dict(data=data, pp=pp, shuffle_buffer_size=1, prefetch=1)

  def epochs(seed, n_batches=8):
    it = pipeline.make_train_iterator(cfg(), global_batch_size=6, seed=seed)
    labels = np.concatenate([b["label"] for b in _take(it, n_batches)])
    return [labels[i : i + 24].tolist() for i in range(0, len(labels), 24)]

  e_seed0, e_seed1 = epochs(0), epochs(1)
  assert all(sorted(e) == list(range(24)) for e in e_seed0 + e_seed1)  # each epoch: every record once
  file_order = lambda e: e[::6]  # noqa: E731 (files of 6 records read whole: their first records)
  assert file_order(e_seed0[0]) != file_order(e_seed0[1]) or file_order(e_seed0[1]) != file_order(e_seed0[2])
  assert [file_order(e) for e in e_seed0] != [file_order(e) for e in e_seed1]
  assert epochs(0) == e_seed0  # deterministic
  it = pipeline.make_train_iterator(cfg(), global_batch_size=6, seed=0)
  _take(it, 5)  # into the second epoch
  resumed = pipeline.make_train_iterator(cfg(), global_batch_size=6, seed=0, start_position=it.position())
  rest = np.concatenate([b["label"] for b in _take(resumed, 3)]).tolist()
  assert rest == sum(e_seed0, [])[30:48]
