"""input.cache: the deterministic prefix of the pp kept in host memory (siglip_rins/data/pipeline.py).

The cache must be a pure speed-up: the same batches, positions and resume as without it, bad records still
skipped and counted, the byte cap honoured."""

import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import data_fixtures  # noqa: E402

tf = pytest.importorskip("tensorflow")
from siglip_rins.data import pipeline  # noqa: E402
from siglip_rins.data import pp as pp_lib  # noqa: E402

BAD_KINDS = ("bad_bytes", "truncated", "zero_byte", "missing_file", "empty_caption")
NUM_GOOD = 10


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
  return data_fixtures.tokenizer_path_for_tests(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return data_fixtures.write_jsonl_dataset(tmp_path_factory.mktemp("jsonl"), NUM_GOOD, (12, 14), bad=BAD_KINDS)


def _pp(tok_path, random_part="flip_lr|"):
  return (
    f"decode|resize(8)|value_range(-1, 1)|{random_part}tokenize(max_len=6, model={tok_path!r}, eos='sticky', "
    f"inkey='texts', outkey='labels')|keep('image', 'labels', 'label')"
  )


def _cfg(path, tok_path, cache, **kw):
  return dict(
    data=dict(type="jsonl", path=str(path)),
    pp=kw.pop("pp", None) or _pp(tok_path),
    shuffle_buffer_size=6,
    prefetch=1,
    cache=cache,
    **kw,
  )


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def _split(pp):
  """split_deterministic_prefix traced on an (encoded image, captions) record, as the pipeline does."""
  out = []

  @tf.function(input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([None], tf.string)])
  def trace(image, texts):
    out.extend(pp_lib.split_deterministic_prefix(pp, {"image": image, "texts": texts}))
    return 0

  trace.get_concrete_function()
  return tuple(out)


def test_split_before_the_first_random_op():
  pp = 'decode|resize(8)|value_range(-1, 1)|choice(inkey="texts")|tokenize(max_len=4, model="demo")'
  prefix, rest = _split(pp)
  # tokenize moved ahead of the pick (hoist_over_choice): every caption tokenized in the prefix
  assert prefix.startswith("decode|resize(8)|value_range(-1, 1)|tokenize(")
  assert "inkey='texts'" in prefix and "outkey='labels'" in prefix and "sample_if_multi=False" in prefix
  assert rest == "choice(inkey=['texts', 'labels'], skip_empty=False)"
  # not hoisted: the pick writes elsewhere, tokenize overwrites a picked key, several entries, no tokenize
  for pp in (
    'decode|choice(inkey="texts", outkey="t")|tokenize(max_len=4, model="demo", inkey="t")',
    'decode|choice(inkey="texts")|tokenize(max_len=4, model="demo", inkey="texts", outkey="texts")',
    'decode|choice(n=2, inkey="texts")|tokenize(max_len=4, model="demo")',
    'decode|choice(inkey="texts")|flip_lr|tokenize(max_len=4, model="demo")',
  ):
    assert _split(pp)[1].startswith("choice("), pp
  assert _split("decode|flip_lr|resize(8)") == ("decode", "flip_lr|resize(8)")
  assert _split("decode|inception_crop(8)|resize(8)") == ("decode", "inception_crop(8)|resize(8)")
  assert _split("decode|resize(8)") == ("decode|resize(8)", "")


@pytest.mark.parametrize("random_part", ["flip_lr|", "", "inception_crop(8, area_min=30)|"])
def test_cached_stream_equals_uncached_and_resumes_exactly(data, tok_path, random_part):
  pp = _pp(tok_path, random_part)
  # 3 epochs of the 10 good records (5 bad ones interleaved) in batches of 4.
  plain = pipeline.make_train_iterator(_cfg(data, tok_path, False, pp=pp), global_batch_size=4, seed=5)
  cached = pipeline.make_train_iterator(_cfg(data, tok_path, True, pp=pp), global_batch_size=4, seed=5)
  a, b = _take(plain, 8), _take(cached, 8)
  _assert_same(a, b)
  assert plain.position() == cached.position()
  assert all(set(x["label"].tolist()) <= set(range(NUM_GOOD)) for x in b)  # no bad record delivered
  stats = cached.stats()
  assert stats["skipped/undecodable"] >= 2 and stats["skipped/empty_image"] >= 1
  assert stats["skipped/missing_image_file"] >= 1 and stats["skipped/empty_text"] >= 1
  # Resume by seeking from a position in the third epoch, with and without the cache: the same rest.
  for resume_cache in (True, False):
    head = pipeline.make_train_iterator(_cfg(data, tok_path, True, pp=pp), global_batch_size=4, seed=5)
    _take(head, 5)
    rest = pipeline.make_train_iterator(
      _cfg(data, tok_path, resume_cache, pp=pp), global_batch_size=4, seed=5, start_position=head.position()
    )
    _assert_same(_take(rest, 3), a[5:])


def test_tokenize_hoisted_over_choice_gives_the_same_stream(tmp_path, tok_path):
  """choice|tokenize rewritten to tokenize-every-caption|choice (so the cache holds the tokens): the same
  batches as the plain pp, with several captions per record, an empty one (skip_empty), one longer than
  max_len (sticky EOS) and a record whose only caption is a scalar string."""
  long = "a very long caption " * 8
  captions = [["a cat", "", long], ["un chien", "ein Hund"], "just one string", ["", "x y z", "le chat noir"]]
  path = data_fixtures.write_jsonl_dataset(tmp_path, 8, (12, 14), captions=captions)
  pp = (
    f"decode|resize(8)|value_range(-1, 1)|choice(inkey='texts', skip_empty=True)|tokenize(max_len=6, "
    f"model={tok_path!r}, eos='sticky', inkey='texts', outkey='labels')|keep('image', 'labels', 'texts', 'label')"
  )
  plain = pipeline.make_train_iterator(_cfg(path, tok_path, False, pp=pp), global_batch_size=4, seed=3)
  cached = pipeline.make_train_iterator(_cfg(path, tok_path, True, pp=pp), global_batch_size=4, seed=3)
  a, b = _take(plain, 10), _take(cached, 10)
  _assert_same(a, b)
  texts = {t for x in a for t in x["texts"].tolist()}
  assert b"" not in texts and long.encode() in texts and b"just one string" in texts  # every case drawn
  assert len(texts) > 4


def test_cap_auto_falls_back_true_refuses(data, tok_path):
  auto = pipeline.make_train_iterator(_cfg(data, tok_path, "auto", cache_max_bytes=100), global_batch_size=4, seed=1)
  plain = pipeline.make_train_iterator(_cfg(data, tok_path, False), global_batch_size=4, seed=1)
  _assert_same(_take(auto, 3), _take(plain, 3))
  with pytest.raises(ValueError, match=r"input.cache=True .*exceed input.cache_max_bytes = 100"):
    pipeline.make_train_iterator(_cfg(data, tok_path, True, cache_max_bytes=100), global_batch_size=4)
  for bad in (dict(cache="yes"), dict(cache_max_bytes=-1), dict(cache_max_bytes=1.5)):
    with pytest.raises(ValueError, match=r"input.cache"):
      pipeline.make_train_iterator(_cfg(data, tok_path, **{"cache": "auto", **bad}), global_batch_size=4)


def test_records_failing_in_the_random_part_are_counted_and_all_bad_detected(tmp_path, tok_path):
  # random_crop(16) fails at run time on the 12x14 images (the random part, after the cache): every record raises.
  path = data_fixtures.write_jsonl_dataset(tmp_path, 3, (12, 14))
  pp = _pp(tok_path, "random_crop(16)|resize(8)|").replace("resize(8)|", "", 1)
  for cache in (True, False):
    it = pipeline.make_train_iterator(_cfg(path, tok_path, cache, pp=pp), global_batch_size=2)
    with pytest.raises(RuntimeError, match="every record seems bad"):
      next(it)
    assert it.stats()["skipped/undecodable"] >= 6


def test_threadpool_size_same_stream_and_validated(data, tok_path):
  """input.threadpool_size (big_vision's name) only changes how many threads run the pipeline, not what it
  yields; a bad value is one clear line before anything is read."""
  default = pipeline.make_train_iterator(_cfg(data, tok_path, True), global_batch_size=4, seed=2)
  one = pipeline.make_train_iterator(_cfg(data, tok_path, True, threadpool_size=1), global_batch_size=4, seed=2)
  _assert_same(_take(default, 4), _take(one, 4))
  for bad in (0, -1, 1.5, True, "4"):
    with pytest.raises(ValueError, match=r"input.threadpool_size must be None or an integer >= 1, got"):
      pipeline.make_train_iterator(_cfg(data, tok_path, True, threadpool_size=bad), global_batch_size=4)


def test_filled_cache_reused_by_later_runs_of_the_process_until_the_data_changes(tmp_path, tok_path):
  """A second iterator over the same data, pp and shard (the demo's next variant or seed) reuses the filled
  cache; it yields what a fresh pipeline yields.  Rewriting the data file is a new key: its records are read."""
  path = data_fixtures.write_jsonl_dataset(tmp_path, 6, (12, 14))
  pipeline.clear_cache_memo()
  first = pipeline.make_train_iterator(_cfg(path, tok_path, True), global_batch_size=3, seed=4)
  assert len(pipeline._MEMO) == 1
  (entry,) = pipeline._MEMO.values()
  second = pipeline.make_train_iterator(_cfg(path, tok_path, True), global_batch_size=3, seed=4)
  assert len(pipeline._MEMO) == 1 and next(iter(pipeline._MEMO.values()))[0] is entry[0]  # the same filled cache
  plain = pipeline.make_train_iterator(_cfg(path, tok_path, False), global_batch_size=3, seed=4)
  a, b, c = _take(first, 5), _take(second, 5), _take(plain, 5)
  _assert_same(a, c)
  _assert_same(b, c)
  # the file changes (two records dropped): a new entry, and only the 4 remaining labels come out
  lines = path.read_text().splitlines()[:4]
  path.write_text("\n".join(lines) + "\n")
  changed = pipeline.make_train_iterator(_cfg(path, tok_path, True), global_batch_size=3, seed=4)
  assert len(pipeline._MEMO) == 2
  assert {int(x) for batch in _take(changed, 4) for x in batch["label"]} == {0, 1, 2, 3}
  pipeline.clear_cache_memo()
  assert not pipeline._MEMO


@pytest.mark.parametrize("resize", ["resize(8)|", ""])
def test_block_path_equals_per_record_path(tmp_path, tok_path, monkeypatch, resize):
  """A cached component whose random rest has batched forms (here the hoisted choice) is made a block of
  records at a time: the same batches, positions, resume and skip counts as the per-record path on the same
  cache.  Without resize the cached images have no static size (ragged in two dimensions in the store)."""
  captions = [["a cat", "", "le chat"], ["un chien", "ein Hund"], "one string", ["", "x y z", "noir"], [""]]
  data = data_fixtures.write_jsonl_dataset(tmp_path, NUM_GOOD, (12, 14), captions=captions, bad=BAD_KINDS)
  pp = (
    f"decode|{resize}value_range(-1, 1)|choice(inkey='texts', skip_empty=True)|tokenize(max_len=6, "
    f"model={tok_path!r}, eos='sticky', inkey='texts', outkey='labels')|keep('image', 'labels', 'texts', 'label')"
  )
  cfg = _cfg(data, tok_path, True, pp=pp)
  blocks = pipeline.make_train_iterator(cfg, global_batch_size=4, seed=4)
  a = _take(blocks, 9)
  built = []
  original = pp_lib.get_batched_preprocess_fn
  monkeypatch.setattr(pp_lib, "get_batched_preprocess_fn", lambda s: built.append(s) or None)
  per_record = pipeline.make_train_iterator(cfg, global_batch_size=4, seed=4)
  b = _take(per_record, 9)
  assert built and built[0].startswith("choice(")  # the per-record path really ran
  _assert_same(a, b)
  assert blocks.position() == per_record.position()
  monkeypatch.setattr(pp_lib, "get_batched_preprocess_fn", original)
  head = pipeline.make_train_iterator(cfg, global_batch_size=4, seed=4)
  _take(head, 4)
  rest = pipeline.make_train_iterator(cfg, global_batch_size=4, seed=4, start_position=head.position())
  _assert_same(_take(rest, 5), a[4:])
  for it in (blocks, per_record):  # 9 batches of 4 = 3.6 epochs of the 10 good records: every bad one seen 3 times
    stats = it.stats()
    assert stats["skipped/undecodable"] >= 6 and stats["skipped/missing_image_file"] >= 3
    assert stats["skipped/empty_text"] >= 3


def test_block_path_detects_an_all_bad_source(tmp_path, tok_path):
  path = data_fixtures.write_jsonl_dataset(tmp_path, 0, (12, 14), bad=("missing_file",) * 3)
  pp = "decode|resize(8)|choice(inkey='texts')|keep('image', 'texts')"
  it = pipeline.make_train_iterator(_cfg(path, tok_path, True, pp=pp), global_batch_size=2)
  with pytest.raises(RuntimeError, match="every record seems bad"):
    next(it)
  assert it.stats()["skipped/missing_image_file"] >= 6


def test_block_path_in_a_mixture_and_on_two_hosts(tmp_path, tok_path, monkeypatch):
  """Two cached components (one block-processed, one with a per-record rest) mixed, and a host's shard of a
  two-host run: the same batches and positions as the per-record path."""
  captions = [["a cat", "", "le chat"], ["un chien", "ein Hund"], ["", "x y z", "noir"]]
  one = data_fixtures.write_jsonl_dataset(tmp_path / "one", NUM_GOOD, (12, 14), captions=captions, bad=BAD_KINDS)
  two = data_fixtures.write_jsonl_dataset(tmp_path / "two", 7, (12, 14), captions=captions)
  pp = (
    f"decode|resize(8)|value_range(-1, 1)|choice(inkey='texts')|tokenize(max_len=6, model={tok_path!r}, "
    f"eos='sticky', inkey='texts', outkey='labels')|keep('image', 'labels', 'label')"
  )
  mixture = dict(
    type="mixture",
    sources=[
      dict(weight=2.0, data=dict(type="jsonl", path=str(one))),
      dict(weight=1.0, data=dict(type="jsonl", path=str(two)), pp=pp.replace("resize(8)|", "resize(8)|flip_lr|")),
    ],
  )
  cfg = dict(data=mixture, pp=pp, shuffle_buffer_size=6, prefetch=1, cache=True)
  runs, blocks = {}, []
  block_stream = pipeline._block_stream
  monkeypatch.setattr(pipeline, "_block_stream", lambda *a, **k: blocks.append(k["name"]) or block_stream(*a, **k))
  for path in ("blocks", "per_record"):
    if path == "per_record":
      assert len(blocks) == 2  # the first component of the mixture and the host's shard
      monkeypatch.setattr(pp_lib, "get_batched_preprocess_fn", lambda s: None)
    mixed = pipeline.make_train_iterator(cfg, global_batch_size=4, seed=6)
    host = pipeline.make_train_iterator(
      _cfg(one, tok_path, True, pp=pp), global_batch_size=4, seed=6, process_index=1, process_count=2
    )
    runs[path] = (_take(mixed, 8), mixed.position(), _take(host, 6), host.position())
  a, b = runs["blocks"], runs["per_record"]
  _assert_same(a[0], b[0])
  _assert_same(a[2], b[2])
  assert a[1] == b[1] and a[3] == b[3]
  assert len(blocks) == 2  # none on the per-record pass
