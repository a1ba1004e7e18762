"""Train and eval iterators over sources + a pp string, yielding dicts of numpy arrays.

input_cfg (dict or ConfigDict):
  data=dict(type='jsonl'|'tfrecord'|'tfds'|'mixture', ...)   see sources.py
  pp='decode|resize(32)|value_range(-1,1)|tokenize(...)'      see pp.py (a mixture component may override)
  shuffle_buffer_size=1000, cache='auto', cache_max_bytes=1 GiB, prefetch=2, threadpool_size=None (tf.data's pool;
  an int: that many input threads after the cache fill), max_consecutive_bad=10000 (only used when the
  source size is unknown), max_image_pixels / max_image_bytes (image caps, siglip_rins.limits: default
  $SIGLIP_RINS_MAX_IMAGE_PIXELS / _BYTES, else 100 MP / 64 MiB; a bigger image is skipped as 'too_large').

Per component, the train stream is: host shard -> [cache] -> epochs e0, e0+1, ... each shuffled with its own
seed (seed, host, component, epoch) -> (epoch, position, raw) -> guarded(parse, check, pp) -> count-and-filter;
components are mixed by a stateless weighted draw per output element; then batch, prefetch.  The eval stream
is one pass in source order.  Keys starting with '_' are dropped by the pp stage; the train stream adds the
position keys `_component/_epoch/_pos`, which DataIterator removes from the batches it returns.

Cache (train; input.cache = 'auto' (default) | True | False, input.cache_max_bytes = DEFAULT_CACHE_MAX_BYTES, 1
GiB per host). The pp's deterministic prefix -- its ops before the first one that draws a random seed, e.g.
`decode|resize(32)|value_range(-1, 1)` before `choice`/`inception_crop`/`flip_lr` (pp.split_deterministic_prefix)
-- is a function of the record alone (a `choice` of caption followed by `tokenize` is first rewritten to tokenize
every caption, then pick caption and tokens together: pp.hoist_over_choice, so the tokens are cached too), so
parse, checks and that prefix run once per record of the host's shard (in source order, each record keeping its
place: a failing one becomes a placeholder with its reason) and are kept in host memory (one tensor per feature,
ragged where records differ in shape); each epoch then shuffles the cached elements exactly as it would shuffle
raw records and runs only the random rest of the pp. When every op of that rest has a batched form
(`registry.register_batched`: keep, drop, choice(n='single') so far), a block of records (up to 256,
`_block_size`) is gathered and processed at once (`_block_stream`: the same examples, seeds, positions and counts,
a few dozen TF ops per block instead of per record; ~13 us of input CPU per example on the runlocal config against
~150 per record); otherwise the rest runs record by record. The batches, positions and resume are therefore the
same with and without the cache (a checkpoint written with one resumes exactly with the other), and skipped
records are counted as before. 'auto' caches a component when its size is known (jsonl, tfds) and the estimate --
bytes per record from the first 32 records after the prefix, times (records + shuffle buffer, which then holds
decoded elements too) -- fits in what the cap leaves after earlier mixture components; it skips sources that
shuffle their files per epoch (tfds), because a cache would replace that file order. True caches those too (then
without the per-epoch file order) and refuses, with one line, a source of unknown size or an estimate above the
cap; False never caches. Eval streams are never cached.

Skipped records and how they are counted: every raw record that reaches the guarded stage gets a reason
code: 0 if its parse, checks and pp all succeed, else the first problem (sources.REASONS: missing field,
missing image file, empty image, empty/non-UTF-8 text, bad JSON line, 'too_large' / 'bad_image_path' (see
siglip_rins.limits), or 'undecodable' when parsing or
preprocessing raised, e.g. corrupt image bytes; such a record is dropped by `ignore_errors` and counted from the
gap it leaves in the element numbering, see `_guarded`). The filter right after that stage adds one to a
tf.Variable per reason. So `stats()` counts records the pipeline has examined so far, including records
read ahead by prefetching and, in training, each time a bad record comes round again in a later epoch.
If a component yields no good record in 2 x (its size) consecutive records (or max_consecutive_bad when
its size is unknown), the iterator raises RuntimeError naming the source instead of spinning forever; an
eval pass that yields no good record raises too.

Randomness: each raw record gets the seed fold_in(fold_in(seed_of(seed, process_index, component), epoch),
position) under '_rng' (eval: fold_in(seed_of(...), position)), so augmentation depends only on the pipeline
seed and the record's place in this host's stream.

Resume (choice and reasoning).  `DataIterator.position()` is, after the batches returned so far,
{'mix': examples drawn from the mixture, 'components': [[epoch, next raw position], ...]}: for each component
the raw place just after its last *delivered* example.  The trainer saves it per host in the checkpoint's meta
and passes it back as `start_position`; each component then starts at that epoch (its shuffle is a function of
the epoch's seed alone) and skips the raw records before the position *before* parse/decode/pp, and the
mixture's draw j is a function of (seed, j) alone, so it restarts at j = 'mix'.  Bad records cannot break
this: every good record before the position was delivered (they come in stream order) and every record
after it was not, so the restarted stream is exactly the rest of the uninterrupted one -- bad records past the
last delivered example are simply examined again, with the same (index-based) verdict.  The cost is at most
one epoch of raw reads (no decoding), independent of how far the run was.  tf.data's own iterator
checkpointing was not used: it stores the shuffle buffers (large) and ties checkpoints to the pipeline graph.
Packed LM streams (input.pack) resume with `start_example` (skip after preprocessing): a packed row cuts
documents, so its position is not a record boundary.
"""

import collections
import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from siglip_rins import limits
from siglip_rins.data import philox
from siglip_rins.data import pp as pp_lib
from siglip_rins.data import sources as sources_lib

ALL_BAD_MESSAGE = "SIGLIP_RINS_ALL_RECORDS_BAD"
# Per-example stream position (train): which component, and the epoch / raw position of the record in it.
_COMPONENT, _EPOCH, _POS = "_component", "_epoch", "_pos"
_POSITION_KEYS = (_COMPONENT, _EPOCH, _POS)


def _get(cfg, key, default=None):
  value = cfg.get(key, default) if hasattr(cfg, "get") else default
  return default if value is None else value


class _Counters:
  """tf.Variables counting examined/skipped records per reason (see module docstring)."""

  def __init__(self):
    with tf.init_scope():
      self.skipped = tf.Variable(tf.zeros([len(sources_lib.REASONS) + 1], tf.int64), trainable=False)
      self.examined = tf.Variable(tf.constant(0, tf.int64), trainable=False)
    self.sources = []

  def stats(self) -> dict:
    skipped = self.skipped.numpy()
    out = {"skipped_records": int(skipped[1:].sum()), "examined_records": int(self.examined.numpy())}
    for code, name in enumerate(sources_lib.REASONS, start=1):
      out[f"skipped/{name}"] = int(skipped[code])
    return out


def _placeholder(spec):
  """A zero/empty value matching a TensorSpec structure (unknown dims -> 0)."""

  def one(s):
    shape = [0 if d is None else d for d in s.shape.as_list()]
    if s.dtype == tf.string:
      return tf.fill(shape, tf.constant("", tf.string))
    return tf.zeros(shape, s.dtype)

  return tf.nest.map_structure(one, spec)


def _public(features: dict) -> dict:
  return {k: v for k, v in features.items() if not k.startswith("_")}


def _plain(fn):
  """fn for tf.data as it is written, without AutoGraph's source conversion: every function the pipeline maps
  uses tf.cond / tf ops for data-dependent control flow, and converting the pp's op tree on every trace cost
  ~0.8 s per traced map (several seconds per iterator)."""
  return tf.autograph.experimental.do_not_convert(fn)


def _epoch_seed(shuffle_seed: int) -> tf.Tensor:
  """The int64 seed every epoch's shuffle (and file order) is derived from."""
  return tf.constant(int(shuffle_seed) % (2**31), tf.int64)


def _epoch_shuffle(ds: tf.data.Dataset, buffer: int, seed0, epoch) -> tf.data.Dataset:
  """One epoch's shuffle.  Records (_epoch_stream) and record indices (_block_stream) go through this one
  function: tf.data's shuffle order depends on the seed and the count alone, so both paths see the same order."""
  if buffer > 1:
    ds = ds.shuffle(buffer, seed=seed0 * 1_000_003 + epoch, reshuffle_each_iteration=False)
  return ds


def _epoch_stream(source, *, buffer: int, shuffle_seed: int, start) -> tf.data.Dataset:
  """(epoch, position, raw) for epochs start[0], start[0]+1, ... of the host's raw records, each epoch
  shuffled with its own seed (derived from shuffle_seed and the epoch), the first start[1] raw records of the
  first epoch skipped before any parsing."""
  epoch0, pos0 = int(start[0]), int(start[1])
  base = source.dataset
  seed0 = _epoch_seed(shuffle_seed)

  def one_epoch(epoch):
    ds = base
    if source.files_in_order is not None:  # e.g. TFDS: the epoch's file order from (seed, epoch) too
      ds = source.files_in_order(seed0 * 1_000_033 + 7 * epoch + 1)
    return _epoch_shuffle(ds, buffer, seed0, epoch).enumerate().map(_plain(lambda pos, raw: (epoch, pos, raw)))

  ds = tf.data.Dataset.range(epoch0, 2**62).flat_map(_plain(one_epoch))
  return ds.skip(pos0) if pos0 else ds


def _check_not_empty(source) -> None:
  """An empty source would make the epoch loop spin: refuse it (reads at most one raw record)."""
  if source.num_records == 0 or (source.num_records is None and not list(source.dataset.take(1))):
    raise ValueError(f"data source {source.name} has no records (for this host)")


DEFAULT_CACHE_MAX_BYTES = 1 << 30
_CACHE_SAMPLE = 32


def _cache_mode(input_cfg):
  mode = _get(input_cfg, "cache", "auto")
  if isinstance(mode, str) and mode.lower() in ("true", "false"):  # a command-line override of the 'auto' default
    mode = mode.lower() == "true"
  if mode not in ("auto", True, False) or isinstance(mode, int) and not isinstance(mode, bool):
    raise ValueError(f"input.cache must be 'auto', True or False, got {mode!r}")
  cap = _get(input_cfg, "cache_max_bytes", DEFAULT_CACHE_MAX_BYTES)
  if not isinstance(cap, int) or isinstance(cap, bool) or cap < 0:
    raise ValueError(f"input.cache_max_bytes must be an integer >= 0 (bytes), got {cap!r}")
  return mode, cap


def _element_bytes(element) -> int:
  total = 0
  for value in tf.nest.flatten(element, expand_composites=True):
    array = np.asarray(value)
    total += sum(len(x) for x in array.ravel()) if array.dtype == object else array.nbytes
  return total


_GUARD_BLOCK = 32


def _guarded_each(ds, fn, out_spec) -> tf.data.Dataset:
  """(features, reason) for each element of ds = (epoch, pos, x), in place: fn(epoch, pos, x, placeholder), or
  (placeholder, 'undecodable') when fn raises at run time.  One nested dataset per element: used where each
  record is processed once (filling the cache), so that every record keeps its place."""
  undecodable = sources_lib.REASON_CODE["undecodable"]

  def one(epoch, pos, x):
    placeholder = _placeholder(out_spec)
    good = tf.data.Dataset.from_tensors((epoch, pos, x)).map(_plain(lambda e, i, r: fn(e, i, r, placeholder)))
    good = good.ignore_errors()
    fallback = tf.data.Dataset.from_tensors((placeholder, tf.constant(undecodable, tf.int32)))
    return good.concatenate(fallback).take(1)

  return ds.interleave(
    _plain(one), cycle_length=tf.data.AUTOTUNE, block_length=1, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
  )


def _guarded(ds, fn, out_spec) -> tf.data.Dataset:
  """(features, reason, epoch, pos, k) for ds = (epoch, pos, x): fn(epoch, pos, x, placeholder) -> (features,
  reason), in order, k numbering the elements.  An element for which fn raises at run time (corrupt image
  bytes...) is left out (`ignore_errors` on one parallel map: a nested dataset per element would cost several
  times the pp itself); the gaps in k tell the counter how many were (see `_Counting`).  After every
  _GUARD_BLOCK inputs, and at the end of a finite stream, a sentinel (placeholder, reason -1) that cannot fail
  passes through, so a stream in which everything raises still reaches the counter."""
  elements = ds.map(_plain(lambda e, i, x: (e, i, x, tf.constant(False))))
  spec = elements.element_spec
  sentinel = tf.data.Dataset.from_tensors(_placeholder(spec[:3]) + (tf.constant(True),))
  pattern = tf.data.Dataset.from_tensors(tf.constant([0] * _GUARD_BLOCK + [1], tf.int64)).repeat().unbatch()
  merged = tf.data.Dataset.choose_from_datasets([elements, sentinel.repeat()], pattern, stop_on_empty_dataset=True)
  merged = merged.concatenate(sentinel)  # a finite stream (eval) ends with one

  def apply(k, element):
    epoch, pos, x, is_sentinel = element
    placeholder = _placeholder(out_spec)
    features, reason = tf.cond(
      is_sentinel, lambda: (placeholder, tf.constant(-1, tf.int32)), lambda: fn(epoch, pos, x, placeholder)
    )
    return features, reason, epoch, pos, k

  return merged.enumerate().map(_plain(apply), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()


# Filled caches of this process, most recent last: memo key -> (cached Source, rest of the pp, bytes estimated).
# Runs in one process over the same data (the demo's variants and seeds, a study's points, `siglip-rins sweep`)
# reuse the decoded records instead of decoding them again.  At most _MEMO_ENTRIES are kept.
_MEMO: "collections.OrderedDict[str, tuple]" = collections.OrderedDict()
_MEMO_ENTRIES = 2


def clear_cache_memo() -> None:
  """Drops the filled input caches this process keeps for later runs (their memory is freed with them)."""
  _MEMO.clear()


def _memo_key(data_cfg, pp_string, source, process_index, process_count, mode, buffer) -> str | None:
  """What a filled cache depends on: the data config, the size and modification time of every file it names,
  the pp, the host's shard, the image caps and the cache settings.  (Files that a record names, such as a
  jsonl's images, are not checked: edit them between runs of one process and call clear_cache_memo.)"""
  cfg = data_cfg.to_dict() if hasattr(data_cfg, "to_dict") else dict(data_cfg)
  files = []

  def walk(value):
    if isinstance(value, dict):
      for v in value.values():
        walk(v)
    elif isinstance(value, (list, tuple)):
      for v in value:
        walk(v)
    elif isinstance(value, str) and os.path.isfile(value):
      st = os.stat(value)
      files.append([os.path.abspath(value), st.st_size, st.st_mtime_ns])

  walk(cfg)
  caps = [limits.max_image_pixels(), limits.max_image_bytes()]
  parts = [cfg, files, pp_string, source.name, source.num_records, process_index, process_count, caps, mode, buffer]
  try:
    return json.dumps(parts, sort_keys=True, default=repr)
  except (TypeError, ValueError):
    return None


def _over_budget(where: str, estimate: int, budget: int, mode) -> bool:
  """True when a cache of `estimate` bytes does not fit `budget` ('auto': then not cached); input.cache=True
  refuses it with one line."""
  if estimate <= budget:
    return False
  if mode is True:
    raise ValueError(
      f"{where}: about {estimate / 2**20:.0f} MiB of decoded records (+ shuffle buffer) exceed input.cache_max_bytes"
      f" = {budget} (raise it, or set input.cache=False)"
    )
  return True


def _cached_prefix(source, pp_string, *, mode, budget, buffer, memo_key=None):
  """The host's records with parse, checks and the deterministic prefix of the pp done once and kept in host
  memory: (Source whose elements are (prefix features or placeholder, reason), rest of the pp string, bytes
  estimated, the same records as one batch: (features [n, ...], reasons [n])), or None when not cached.  See the
  module docstring (input.cache).  With `memo_key`, a cache this process filled earlier for the same key is
  reused (_MEMO)."""
  where = f"input.cache={mode!r} for {source.name}"
  if source.num_records is None:
    if mode is True:
      raise ValueError(f"{where}: the number of records is unknown (only jsonl and tfds sources can be cached)")
    return None
  if source.files_in_order is not None and mode == "auto":  # caching would replace the per-epoch file order
    return None
  if memo_key is not None and memo_key in _MEMO:
    _MEMO.move_to_end(memo_key)
    cached, rest, estimate, store = _MEMO[memo_key]
    return None if _over_budget(where, estimate, budget, mode) else (cached, rest, estimate, store)

  def parsed(raw):
    features = source.parse(raw)
    reason = sources_lib.record_reason(features, source.image_key, source.text_keys)
    return {k: v for k, v in features.items() if k != sources_lib.REASON_KEY}, reason

  split = []

  def probe(raw):
    features, _ = parsed(raw)
    split.extend(pp_lib.split_deterministic_prefix(pp_string, features))
    return features

  source.dataset.map(_plain(probe))  # traced once: decides the split
  prefix, rest = split[:2]
  prefix_fn = pp_lib.get_preprocess_fn(prefix)

  def parse_and_prefix(epoch, pos, raw, placeholder=None):
    del epoch, pos
    features, reason = parsed(raw)
    if placeholder is None:
      return prefix_fn(features), reason
    return tf.cond(tf.equal(reason, 0), lambda: prefix_fn(features), lambda: placeholder), reason

  start = source.dataset.map(_plain(lambda raw: (tf.constant(0, tf.int64), tf.constant(0, tf.int64), raw)))
  out_spec = start.map(_plain(parse_and_prefix)).element_spec[0]
  ds = _guarded_each(start, parse_and_prefix, out_spec)
  sample = list(ds.take(min(_CACHE_SAMPLE, source.num_records)).as_numpy_iterator())
  per_record = sum(_element_bytes(x) for x in sample) / max(len(sample), 1) + 64  # + per-element overhead
  estimate = int(per_record * (source.num_records + min(buffer, source.num_records)))  # cache + shuffle buffer
  if _over_budget(where, estimate, budget, mode):
    return None
  # Filled here, in one pass at full parallelism, into one tensor per feature (tf.RaggedTensor where records
  # differ in shape) indexed by the record's place: every epoch (and a resumed run's seek) then reads memory, no
  # iterator is left holding a half-filled cache when training stops mid-epoch, and blocks of records can be
  # gathered at once (`_block_stream`).
  store = next(iter(ds.ragged_batch(source.num_records)))
  cached = dataclasses.replace(source, dataset=_store_records(store), files_in_order=None)
  if memo_key is not None:
    _MEMO[memo_key] = (cached, rest, estimate, store)
    while len(_MEMO) > _MEMO_ENTRIES:
      _MEMO.popitem(last=False)
  return cached, rest, estimate, store


def _store_records(store) -> tf.data.Dataset:
  """The stored (features, reason) records one by one, each feature as the dense tensor it was."""

  def dense(features, reason):
    return {k: v.to_tensor() if isinstance(v, tf.RaggedTensor) else v for k, v in features.items()}, reason

  return tf.data.Dataset.from_tensor_slices(store).map(_plain(dense))


def _component_stream(
  data_cfg,
  pp_string,
  *,
  train,
  seed_pair,
  shuffle_seed,
  counters,
  process_index,
  process_count,
  input_cfg,
  component=0,
  start=(0, 0),
  cache_budget=None,
) -> tuple[tf.data.Dataset, str, int]:
  """(examples, source name, cache bytes used).  cache_budget (train): bytes this component may cache."""
  pp_fn = pp_lib.get_preprocess_fn(pp_string)  # bad pp strings fail here, before any source is read
  source = sources_lib.build_source(data_cfg, process_index=process_index, process_count=process_count)
  buffer = int(_get(input_cfg, "shuffle_buffer_size", 1000))
  cached = None
  if train:
    _check_not_empty(source)
    mode, _ = _cache_mode(input_cfg)
    if mode is not False:
      key = _memo_key(data_cfg, pp_string, source, process_index, process_count, mode, buffer)
      cached = _cached_prefix(source, pp_string, mode=mode, budget=cache_budget, buffer=buffer, memo_key=key)
  if cached is not None:
    source, rest, cache_bytes, store = cached
    batched_fn = pp_lib.get_batched_preprocess_fn(rest)
    if batched_fn is not None:  # every op of the rest has a batched form: blocks of records, see _block_stream
      counters.sources.append(source.name)
      ds = _block_stream(
        store,
        batched_fn,
        buffer=buffer,
        shuffle_seed=shuffle_seed,
        start=start,
        seed_pair=seed_pair,
        counters=counters,
        max_bad=2 * source.num_records,
        component=component,
        name=source.name,
      )
      return ds, source.name, cache_bytes
    pp_fn = pp_lib.get_preprocess_fn(rest)
  else:
    cache_bytes = 0
  if train:
    ds = _epoch_stream(source, buffer=buffer, shuffle_seed=shuffle_seed, start=start)
  else:
    ds = source.dataset.enumerate().map(_plain(lambda pos, raw: (tf.constant(0, tf.int64), pos, raw)))
  base_seed = tf.constant(seed_pair, tf.int32)

  def record_seed(epoch, pos):
    if not train:  # one pass: the record's place in the file
      return tf.random.experimental.stateless_fold_in(base_seed, pos)
    return tf.random.experimental.stateless_fold_in(tf.random.experimental.stateless_fold_in(base_seed, epoch), pos)

  def parse_and_pp(epoch, pos, raw, placeholder=None):
    if cached is not None:  # parsed, checked and the prefix of the pp done (cache), the rest here
      features, reason = raw
      features = dict(features)
    else:
      features = source.parse(raw)
      reason = sources_lib.record_reason(features, source.image_key, source.text_keys)
      features = {k: v for k, v in features.items() if k != sources_lib.REASON_KEY}
    features["_rng"] = record_seed(epoch, pos)
    if placeholder is None:  # only used to trace the output structure
      return _public(pp_fn(features)), reason
    out = tf.cond(tf.equal(reason, 0), lambda: _public(pp_fn(features)), lambda: placeholder)
    return out, reason

  out_spec = ds.map(_plain(parse_and_pp)).element_spec[0]
  ds = _guarded(ds, parse_and_pp, out_spec)
  undecodable = sources_lib.REASON_CODE["undecodable"]

  if source.num_records:
    max_bad = 2 * source.num_records
  else:
    max_bad = int(_get(input_cfg, "max_consecutive_bad", 10_000))
  with tf.init_scope():
    consecutive_bad = tf.Variable(tf.constant(0, tf.int64), trainable=False)
  counters.sources.append(source.name)
  message = f"{ALL_BAD_MESSAGE}: no usable record in {max_bad} consecutive records of {source.name}"

  with tf.init_scope():
    last_k = tf.Variable(tf.constant(-1, tf.int64), trainable=False)

  def count_and_keep(features, reason, epoch, pos, k):
    # k - last_k - 1 records raised in the pp since the last element (see _guarded); a sentinel (reason -1) only
    # carries that count.
    dropped = k - last_k - 1
    with tf.control_dependencies([dropped]):
      last_k.assign(k)
    ok = tf.equal(reason, 0)
    own = tf.cast(reason >= 0, tf.int64)
    counters.examined.assign_add(dropped + own)
    codes = tf.stack([tf.constant(undecodable, tf.int32), tf.maximum(reason, 0)])
    counters.skipped.scatter_nd_add(tf.reshape(codes, [2, 1]), tf.stack([dropped, own]))
    bad_run = consecutive_bad.assign(tf.where(ok, tf.constant(0, tf.int64), consecutive_bad + dropped + own))
    with tf.control_dependencies([tf.debugging.assert_less(bad_run, tf.constant(max_bad, tf.int64), message=message)]):
      return tf.identity(ok)

  def with_position(features, reason, epoch, pos, k):
    if not train:
      return features
    at = {_COMPONENT: tf.constant(component, tf.int64), _EPOCH: tf.cast(epoch, tf.int64), _POS: pos}
    return dict(features, **at)

  ds = ds.filter(_plain(count_and_keep)).map(_plain(with_position))
  return ds, source.name, cache_bytes


# Records per block of the batched path: as many as fit in _BLOCK_BYTES of cached features, within
# [_BLOCK_MIN, _BLOCK_MAX] (runlocal's 32 px records: 256, ~13 us of input CPU per example against ~23 at 64;
# 224 px float32 images: 27, so a few blocks in flight stay ~100 MB).
_BLOCK_MIN, _BLOCK_MAX, _BLOCK_BYTES = 16, 256, 16 << 20


def _block_size(store) -> int:
  features, reasons = store
  sample = min(int(reasons.shape[0]), _CACHE_SAMPLE)
  per_record = _element_bytes({k: v[:sample] for k, v in features.items()}) / max(sample, 1)
  return int(min(_BLOCK_MAX, max(_BLOCK_MIN, _BLOCK_BYTES // max(per_record, 1))))


def _block_stream(
  store, batched_fn, *, buffer, shuffle_seed, start, seed_pair, counters, max_bad, component, name
) -> tf.data.Dataset:
  """A cached component's train examples, made a block of records at a time: the same examples, positions,
  seeds and counts as the per-record path (_epoch_stream -> _guarded -> count-and-filter) on the same cache,
  in the same order, with a few dozen ops per block instead of per record.

  Each epoch shuffles the record *indices* 0..n-1 with the seed the per-record path shuffles the records with
  (tf.data's shuffle order depends on the seed and the count alone), skips the first start[1] of epoch
  start[0], and cuts them into blocks (`_block_size`); a block gathers its records from `store`, gets the
  per-record seeds fold_in(fold_in(seed, epoch), position) (philox: the same bits, all rows at once), runs the
  batched rest of the pp (`pp.get_batched_preprocess_fn`; a row it cannot process counts as 'undecodable', as a raising
  record does), counts and drops the bad rows in order (the consecutive-bad check sees the same runs), and is
  unbatched into examples."""
  features_store, reasons_store = store
  n, block = int(reasons_store.shape[0]), _block_size(store)
  epoch0, pos0 = int(start[0]), int(start[1])
  seed0 = _epoch_seed(shuffle_seed)
  base_seed = tf.constant(seed_pair, tf.int32)
  undecodable = sources_lib.REASON_CODE["undecodable"]

  def one_epoch(epoch):
    ds = _epoch_shuffle(tf.data.Dataset.range(n), buffer, seed0, epoch)
    skip = tf.where(tf.equal(epoch, epoch0), tf.constant(pos0, tf.int64), tf.constant(0, tf.int64))

    def place(j, index):
      pos = skip + j * block + tf.range(tf.size(index, out_type=tf.int64))
      return tf.fill(tf.shape(pos), epoch), pos, index

    return ds.skip(skip).batch(block).enumerate().map(_plain(place))

  def process(epoch, pos, index):
    features = {k: tf.gather(v, index) for k, v in features_store.items()}
    reason = tf.gather(reasons_store, index)
    rows = tf.size(index)
    seeds = tf.broadcast_to(base_seed, tf.stack([rows, 2]))
    features["_rng"] = philox.fold_in(philox.fold_in(seeds, epoch), pos)
    out, ok = batched_fn(features, tf.equal(reason, 0))
    reason = tf.where(tf.equal(reason, 0), tf.where(ok, 0, undecodable), reason)
    return _public(out), reason, epoch, pos

  with tf.init_scope():
    consecutive_bad = tf.Variable(tf.constant(0, tf.int64), trainable=False)
  message = f"{ALL_BAD_MESSAGE}: no usable record in {max_bad} consecutive records of {name}"

  def count_and_keep(features, reason, epoch, pos):
    rows = tf.size(reason, out_type=tf.int64)
    counters.examined.assign_add(rows)
    counters.skipped.scatter_nd_add(tf.reshape(reason, [-1, 1]), tf.ones_like(reason, tf.int64))
    ok = tf.equal(reason, 0)
    good = tf.where(ok)[:, 0]
    # the longest run of bad records ending inside this block (continuing the previous block's trailing run)
    # and the trailing run left for the next block
    gaps = tf.concat([[-1 - consecutive_bad], good, [rows]], 0)
    longest = tf.reduce_max(gaps[1:] - gaps[:-1] - 1)
    trailing = tf.where(tf.size(good) > 0, rows - 1 - gaps[-2], consecutive_bad + rows)
    with tf.control_dependencies([consecutive_bad.assign(trailing)]):
      check = tf.debugging.assert_less(longest, tf.constant(max_bad, tf.int64), message=message)
    with tf.control_dependencies([check]):
      out = {k: tf.ragged.boolean_mask(v, ok) for k, v in features.items()}
      epoch, pos = tf.boolean_mask(epoch, ok), tf.boolean_mask(pos, ok)
    out.update({_COMPONENT: tf.fill(tf.shape(pos), tf.constant(component, tf.int64)), _EPOCH: epoch, _POS: pos})
    return out

  blocks = tf.data.Dataset.range(epoch0, 2**62).flat_map(_plain(one_epoch))
  ds = blocks.map(_plain(process), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.map(_plain(count_and_keep)).unbatch()
  if any(isinstance(spec, tf.RaggedTensorSpec) and spec.ragged_rank > 0 for spec in ds.element_spec.values()):
    # a row of a feature ragged in more than one dimension: the dense tensor the per-record path yields
    ds = ds.map(_plain(lambda x: {k: v.to_tensor() if isinstance(v, tf.RaggedTensor) else v for k, v in x.items()}))
  return ds


def _mix_train(streams: list, weights: list, seed_pair, start_index: int) -> tf.data.Dataset:
  """Weighted choice of a component per output element j, from a stateless draw seeded by (seed, j): the
  choice sequence restarts exactly at any j (no sampler state to restore)."""
  if len(streams) == 1:
    return streams[0]
  total = float(sum(weights))
  logits = tf.math.log(tf.constant([[w / total for w in weights]], tf.float32))
  seed = tf.constant(seed_pair, tf.int32)

  def choose(j):
    draw = tf.random.stateless_categorical(logits, 1, seed=tf.random.experimental.stateless_fold_in(seed, j))
    return tf.cast(draw[0, 0], tf.int64)

  choice = tf.data.Dataset.range(int(start_index), 2**62).map(_plain(choose))
  return tf.data.Dataset.choose_from_datasets(streams, choice, stop_on_empty_dataset=False)


def _stream(input_cfg, **kw):
  """`_stream_in_caps` with the image caps input.max_image_pixels / input.max_image_bytes (siglip_rins.limits;
  defaults there) in scope while sources are read and the pp traced: a bigger image is skipped as 'too_large'."""
  with limits.image_caps(_get(input_cfg, "max_image_pixels"), _get(input_cfg, "max_image_bytes")):
    return _stream_in_caps(input_cfg, **kw)


def _stream_in_caps(input_cfg, *, train, seed, process_index, process_count, position=None):
  """The mixed, filtered example stream.  position (train only): {'mix': j, 'components': [[epoch, pos], ...]}
  to start from (see module docstring)."""
  data_cfg = _get(input_cfg, "data")
  if data_cfg is None:
    raise ValueError("input config needs data=dict(type=...)")
  default_pp = _get(input_cfg, "pp")
  counters = _Counters()
  if _get(data_cfg, "type") == "mixture":
    components = sources_lib.mixture_components(data_cfg)
  else:
    components = [(1.0, data_cfg, None)]
  starts = [(0, 0)] * len(components)
  if position is not None:
    starts = [tuple(int(x) for x in c) for c in position["components"]]
    if len(starts) != len(components):
      raise ValueError(f"data position has {len(starts)} components but the input has {len(components)}")
  streams, names = [], []
  cache_budget = _cache_mode(input_cfg)[1] if train else 0
  for i, (_, comp_cfg, comp_pp) in enumerate(components):
    pp_string = comp_pp or default_pp
    if not pp_string:
      raise ValueError("input config needs pp='...' (a preprocessing string)")
    seed_pair = sources_lib.default_seed_pair(seed, process_index, i)
    shuffle_seed = int(sources_lib.default_seed_pair(seed, process_index, i, 1)[0])
    ds, name, cache_bytes = _component_stream(
      comp_cfg,
      pp_string,
      train=train,
      seed_pair=seed_pair,
      shuffle_seed=shuffle_seed,
      counters=counters,
      process_index=process_index,
      process_count=process_count,
      input_cfg=input_cfg,
      component=i,
      start=starts[i],
      cache_budget=cache_budget,
    )
    cache_budget -= cache_bytes
    streams.append(ds)
    names.append(name)
  weights = [w for w, _, _ in components]
  if train:
    mix_seed = sources_lib.default_seed_pair(seed, process_index, 7919)
    ds = _mix_train(streams, weights, mix_seed, 0 if position is None else int(position["mix"]))
  else:
    mix_seed = int(sources_lib.default_seed_pair(seed, process_index, 7919)[0])
    ds = sources_lib.mix_datasets(streams, weights, mix_seed)
  return ds, counters, names, len(components)


def _strip_trailing_pad(tokens):
  """int [L] -> the prefix up to the last non-zero id (0 is the pad id)."""
  nonzero = tf.cast(tokens != 0, tf.int32)
  trailing = tf.cast(tf.argmax(tf.reverse(nonzero, [0])), tf.int32)
  return tokens[: tf.shape(tokens)[0] - trailing]


def _packed(ds, pack_cfg):
  """LM sequence packing (config `input.pack = dict(seq_len=T, key='tokens')`), in pure tf.data ops.

  The padded token vectors of consecutive examples are stripped of padding, concatenated and cut into rows of
  T tokens (a document that does not fit continues in the next row as a new segment).  Each row gets
  segment_ids (1, 2, ... per document piece in the row) and positions (restarting at 0 per piece), so
  attention never crosses documents.  Deterministic, so `start_example` (counted in rows) resumes exactly.
  """
  seq_len = _get(pack_cfg, "seq_len")
  key = _get(pack_cfg, "key", "tokens")
  if not isinstance(seq_len, int) or seq_len < 2:
    raise ValueError(f"input.pack.seq_len must be an integer >= 2, got {seq_len!r}")
  if key not in ds.element_spec:
    raise ValueError(f"input.pack.key {key!r} is not produced by the pp (features: {sorted(ds.element_spec)})")

  def doc_tokens(index, features):
    tokens = _strip_trailing_pad(tf.cast(features[key], tf.int32))
    return {"tokens": tokens, "doc": tf.fill(tf.shape(tokens), tf.cast(index, tf.int32))}

  def segment(row):
    doc = row["doc"]
    idx = tf.range(seq_len)
    starts = tf.concat([[True], doc[1:] != doc[:-1]], axis=0)
    segment_ids = tf.cumsum(tf.cast(starts, tf.int32))
    first = tf.math.segment_min(idx, segment_ids - 1)
    return {"tokens": row["tokens"], "segment_ids": segment_ids, "positions": idx - tf.gather(first, segment_ids - 1)}

  stream = ds.enumerate().map(_plain(doc_tokens)).unbatch()
  return stream.batch(seq_len, drop_remainder=True).map(_plain(segment))


def _threadpool_size(input_cfg):
  """input.threadpool_size (big_vision's name): None (default: tf.data's own pool, one thread per core) or an
  int >= 1 -- the threads the input pipeline may use after the cache is filled, each op single-threaded, so a
  host whose cores also run the train step (a CPU-only host) can keep them for the step."""
  n = _get(input_cfg, "threadpool_size")
  if n is None:
    return None
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise ValueError(f"input.threadpool_size must be None or an integer >= 1, got {n!r}")
  return n


def _options(ds, threadpool_size=None):
  options = tf.data.Options()
  options.deterministic = True
  options.experimental_optimization.map_parallelization = True
  if threadpool_size:
    options.threading.private_threadpool_size = threadpool_size
    options.threading.max_intra_op_parallelism = 1
  return ds.with_options(options)


class DataIterator:
  """Iterator of dicts of numpy arrays with `stats()` (skipped-record counts, see module docstring)."""

  def __init__(
    self,
    dataset: tf.data.Dataset,
    counters: _Counters,
    source_names: list,
    *,
    pad_to: int | None = None,
    position: dict | None = None,
  ):
    self.dataset = dataset
    self._iterator = iter(dataset)
    self._counters = counters
    self._names = source_names
    self._pad_to = pad_to
    self._batches = 0
    self._position = None if position is None else _copy_position(position)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    try:
      batch = next(self._iterator)
    except StopIteration:
      if self._batches == 0:
        raise RuntimeError(f"no usable record in {', '.join(self._names)} (stats: {self.stats()})") from None
      raise
    except tf.errors.InvalidArgumentError as e:
      if ALL_BAD_MESSAGE in str(e):
        msg = str(e).split(ALL_BAD_MESSAGE + ": ", 1)[1].split("\n")[0]
        raise RuntimeError(f"{msg} -- every record seems bad (stats: {self.stats()})") from None
      raise
    self._batches += 1
    batch = {k: v.numpy() for k, v in batch.items()}
    at = [batch.pop(k) for k in _POSITION_KEYS if k in batch]
    if at and self._position is not None:
      self._advance(*at)
    if self._pad_to is not None:
      batch = _pad_batch(batch, self._pad_to)
    return batch

  def stats(self) -> dict:
    """{'skipped_records': n, 'examined_records': n, 'skipped/<reason>': n, ...} so far."""
    return self._counters.stats()

  def _advance(self, component, epoch, pos) -> None:
    self._position["mix"] += len(component)
    for c, e, p in zip(component.tolist(), epoch.tolist(), pos.tolist()):
      self._position["components"][c] = [e, p + 1]  # in stream order: the last one wins

  def position(self) -> dict | None:
    """Where the stream stands after the batches returned so far: {'mix': examples drawn, 'components':
    [[epoch, next raw position], ...]} -- pass it as start_position to resume.  None when unknown (packed
    streams; after a resume by start_example until every component has been seen)."""
    if self._position is None or any(c is None for c in self._position["components"]):
      return None
    return _copy_position(self._position)


def _copy_position(position: dict) -> dict:
  return {
    "mix": int(position["mix"]),
    "components": [None if c is None else [int(c[0]), int(c[1])] for c in position["components"]],
  }


def _pad_batch(batch: dict, size: int) -> dict:
  n = len(next(iter(batch.values())))
  out = {}
  for key, value in batch.items():
    pad = np.zeros((size - n,) + value.shape[1:], value.dtype)
    if value.dtype == object:
      pad[...] = b""
    out[key] = np.concatenate([value, pad])
  out["_mask"] = np.arange(size) < n
  return out


def make_train_iterator(
  input_cfg,
  *,
  global_batch_size: int,
  process_index: int = 0,
  process_count: int = 1,
  seed: int = 0,
  start_example: int = 0,
  start_position: dict | None = None,
) -> DataIterator:
  """Infinite iterator of this host's batches: dicts of numpy arrays with leading dim
  global_batch_size // process_count. Deterministic given seed.

  Resume: start_position (a `DataIterator.position()` saved with the checkpoint) starts every component at
  its raw record, before any parsing or preprocessing (cost independent of how far the run was); without it,
  start_example skips that many examples of this host's stream after preprocessing (the fallback, also used
  for packed streams)."""
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(
      f"global_batch_size {global_batch_size} must be positive and divisible by process_count {process_count}"
    )
  if start_example < 0:
    raise ValueError(f"start_example must be >= 0, got {start_example}")
  threadpool_size = _threadpool_size(input_cfg)  # a bad value fails before the cache is filled
  pack = _get(input_cfg, "pack")
  if pack:
    start_position = None  # a packed row spans documents: only the example-level skip is exact
  ds, counters, names, num_components = _stream(
    input_cfg,
    train=True,
    seed=seed,
    process_index=process_index,
    process_count=process_count,
    position=start_position,
  )
  if pack:
    ds = _packed(ds, pack)
  if start_example and start_position is None:
    ds = ds.skip(start_example)
  ds = ds.batch(global_batch_size // process_count, drop_remainder=True)
  ds = _options(ds.prefetch(int(_get(input_cfg, "prefetch", 2))), threadpool_size)
  if start_position is not None:
    initial = start_position
  elif start_example:  # skipped examples: a component's position is known once one of its records is seen
    initial = {"mix": start_example, "components": [None] * num_components}
  else:
    initial = {"mix": 0, "components": [[0, 0]] * num_components}
  return DataIterator(ds, counters, names, position=None if pack else initial)


def make_eval_iterator(input_cfg, *, batch_size: int, process_index: int = 0, process_count: int = 1) -> DataIterator:
  """One pass over this host's shard in source order, batches of batch_size; the last batch is padded
  (zeros / b'') and every batch has a bool `_mask` [batch_size] marking real examples."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  ds, counters, names, _ = _stream(
    input_cfg, train=False, seed=0, process_index=process_index, process_count=process_count
  )
  ds = _options(ds.batch(batch_size).prefetch(int(_get(input_cfg, "prefetch", 2))))
  return DataIterator(ds, counters, names, pad_to=batch_size)
