"""General pp ops (big_vision's ops_general), the `keyed_op` decorator and the per-example randomness helper.

Ops: keep, drop, copy, onehot, choice, setdefault, flatten, pad_to_shape, squeeze_last_dim, concat, reshape.
Each has big_vision's name, arguments and defaults; differences are noted in the op's docstring.

Keys: ops made with `keyed_op` take big_vision's InKeyOutKey arguments `key=None, inkey=<default>,
outkey=<default>` (keyword-only): the op reads `features[key or inkey]` and writes `features[key or outkey]`.
As in big_vision, giving only `inkey` writes to the default outkey (e.g. `resize(8, inkey='x')` reads 'x'
and writes 'image'); `key='x'` reads and writes 'x'.

Randomness: the pipeline puts a per-example stateless seed, int32 [2], under `features['_rng']` (derived
from the pipeline seed, host and example index). A random op calls `next_seed(features)`, which returns a
seed for itself and advances `features['_rng']`, so ops see different seeds and a run is reproducible.
Without `_rng` (a pp fn called by hand) random ops use the fixed seed DEFAULT_SEED. Keys starting with '_'
are internal: `keep` keeps them and the pipeline drops them before batching.
"""

import inspect
from collections.abc import Mapping

import tensorflow as tf

from siglip_rins.data import philox
from siglip_rins.data.registry import register, register_batched

RNG_KEY = "_rng"
DEFAULT_SEED = (0, 0)


def next_seed(features: dict) -> tf.Tensor:
  """Returns a stateless seed int32 [2] for one random op and advances features['_rng'] (in place)."""
  base = features.get(RNG_KEY)
  base = tf.constant(DEFAULT_SEED, tf.int32) if base is None else tf.cast(base, tf.int32)
  seeds = tf.random.experimental.stateless_split(base, num=2)
  features[RNG_KEY] = seeds[1]
  return seeds[0]


def next_seed_batched(features: dict) -> tf.Tensor:
  """`next_seed` for a block of examples: features['_rng'] [B, 2] -> seeds int32 [B, 2], the same per row."""
  base = tf.cast(features[RNG_KEY], tf.int32)
  seeds = philox.split2(base)
  features[RNG_KEY] = seeds[:, 1]
  return seeds[:, 0]


def check_key(op: str, value, name: str = "key"):
  if not isinstance(value, str) or not value:
    raise ValueError(f"pp op {op!r}: {name} must be a non-empty string, got {value!r}")


def require(features: dict, key: str, op: str):
  """features[key] or a ValueError naming the op and the available keys (raised at trace time)."""
  if key not in features:
    raise ValueError(f"pp op {op!r}: feature {key!r} missing; available: {sorted(features)}")
  return features[key]


def is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def keyed_op(name: str, indefault: str | None = "image", outdefault: str | None = "image"):
  """Registers `make` as pp op `name` with big_vision's InKeyOutKey arguments (see the module docstring).

  `make(*args, **kwargs)` validates its arguments and returns `fn(value, features) -> new value`; `features`
  is the op's own copy of the feature dict (random ops pass it to `next_seed`). The registered factory has
  `make`'s parameters plus keyword-only `key=None, inkey=indefault, outkey=outdefault`.
  """

  def wrap(make):
    def factory(*args, key=None, inkey=indefault, outkey=outdefault, **kwargs):
      if key not in (None, ""):  # big_vision: `key or inkey`, so an empty key means none
        check_key(name, key)
      src, dst = key or inkey, key or outkey
      check_key(name, src, "key" if key else "inkey (or key)")
      check_key(name, dst, "key" if key else "outkey (or key)")
      fn = make(*args, **kwargs)

      def op(features):
        features = dict(features)
        features[dst] = fn(require(features, src, name), features)
        return features

      return op

    params = list(inspect.signature(make).parameters.values())
    params += [
      inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d)
      for n, d in (("key", None), ("inkey", indefault), ("outkey", outdefault))
    ]
    factory.__signature__ = inspect.Signature(params)
    factory.__name__, factory.__doc__ = make.__name__, make.__doc__
    register(name)(factory)
    return factory

  return wrap


def as_key_list(op: str, value, name: str) -> list[str]:
  """A key or list of keys -> list of keys (big_vision's maybe_repeat(x, 1) for keys)."""
  keys = [value] if isinstance(value, str) else value
  if not isinstance(keys, (list, tuple)) or not keys:
    raise ValueError(f"pp op {op!r}: {name} must be a key or a non-empty list of keys, got {value!r}")
  for k in keys:
    check_key(op, k, name)
  return list(keys)


@register("keep")
def get_keep(*keys):
  """Keeps only `keys` (absent keys are ignored) plus internal '_'-prefixed keys (dropped before batching)."""
  for key in keys:
    check_key("keep", key, "each key")

  def keep(features):
    return {k: v for k, v in features.items() if k in keys or k.startswith("_")}

  return keep


def _rowwise(fn):
  """The batched form of an op that only selects keys: the same function, ok unchanged."""
  return lambda features, ok: (fn(features), ok)


register_batched("keep")(lambda *keys: _rowwise(get_keep(*keys)))


@register("drop")
def get_drop(*keys):
  """Removes `keys` (absent keys are ignored)."""
  for key in keys:
    check_key("drop", key, "each key")

  def drop(features):
    return {k: v for k, v in features.items() if k not in keys}

  return drop


register_batched("drop")(lambda *keys: _rowwise(get_drop(*keys)))


@register("copy")
def get_copy(inkey, outkey):
  """features[outkey] = features[inkey] (a nested dict is copied as a structure; tensors are shared)."""
  check_key("copy", inkey, "inkey")
  check_key("copy", outkey, "outkey")

  def copy(features):
    features = dict(features)
    features[outkey] = tf.nest.map_structure(lambda x: x, require(features, inkey, "copy"))
    return features

  return copy


@register("onehot")
def get_onehot(depth, key="labels", key_result=None, multi=True, on=1.0, off=0.0):
  """Integer labels -> float32 one-hot [..., depth] under key_result (default: key).

  A scalar label gives [depth]. Labels with a leading dimension give one multi-hot [depth] vector
  (`on` where any label hits, `off` elsewhere) when `multi`, else one one-hot row per label. Out-of-range
  labels (e.g. -1 padding) set no position (big_vision's multi path fails on them instead).
  """
  if not is_int(depth) or depth < 1:
    raise ValueError(f"pp op 'onehot': depth must be a positive int, got {depth!r}")
  check_key("onehot", key)
  if key_result is not None:
    check_key("onehot", key_result, "key_result")
  for name, value in (("on", on), ("off", off)):
    if not is_number(value):
      raise ValueError(f"pp op 'onehot': {name} must be a number, got {value!r}")
  out_key = key_result or key

  def onehot(features):
    features = dict(features)
    labels = tf.cast(require(features, key, "onehot"), tf.int64)
    if labels.shape.rank and multi:
      hits = tf.one_hot(tf.reshape(labels, [-1]), depth, dtype=tf.float32)
      x = tf.reduce_max(hits, axis=0) * (float(on) - float(off)) + float(off)
    else:
      x = tf.one_hot(labels, depth, on_value=float(on), off_value=float(off), dtype=tf.float32)
    features[out_key] = x
    return features

  return onehot


def _choice_keys(key, inkey, outkey, mode):
  inkeys = as_key_list("choice", inkey or key or "texts", "inkey")
  outkeys = as_key_list("choice", outkey or key or inkeys, "outkey")
  if len(outkeys) != len(inkeys):
    raise ValueError(f"pp op 'choice': {len(inkeys)} inkeys but {len(outkeys)} outkeys")
  if mode not in ("random", "first"):
    raise ValueError(f"pp op 'choice': mode must be 'random' or 'first', got {mode!r}")
  return inkeys, [ok.format(key=ik) for ok, ik in zip(outkeys, inkeys)]


@register("choice")
def get_choice(n="single", key=None, fewer_ok=False, inkey=None, outkey=None, mode="random", skip_empty=False):
  """Picks the same random entries (along the leading dimension) of one or several keys.

  n: 'single' picks one entry and drops the leading dimension; an int picks that many without repeats
  (kept in their original order); [min, max] picks a random number between min and max (inclusive).
  key / inkey / outkey: a key or a list of keys (InKeyOutKey meaning); an outkey may contain '{key}',
  replaced by its inkey. fewer_ok: allow fewer entries than n (else an error, and a static leading size n).
  Extensions over big_vision: with no key at all the key is 'texts'; `inkey` alone writes back to inkey
  (big_vision fails there); mode='first' picks the first entries instead of random ones (deterministic
  evaluation); skip_empty=True chooses among the non-empty strings of the first key only (when there are
  any; siglip_rins' old `choice` did this by default); a scalar input passes through unchanged when
  n='single'. Stateless: seeded per example.  A batched form (`get_choice_batched`) covers n='single'.
  """
  inkeys, outkeys = _choice_keys(key, inkey, outkey, mode)
  is_range = isinstance(n, (list, tuple))
  if is_range:
    if len(n) != 2 or not all(is_int(v) and v >= 0 for v in n) or n[0] > n[1]:
      raise ValueError(f"pp op 'choice': n as a range must be [min, max] with 0 <= min <= max, got {n!r}")
    min_n = n[0]
  elif n == "single":
    min_n = 1
  elif is_int(n) and n >= 0:
    min_n = n
  else:
    raise ValueError(f"pp op 'choice': n must be 'single', an int or [min, max], got {n!r}")

  def choice(features):
    features = dict(features)
    values = [require(features, k, "choice") for k in inkeys]
    if values[0].shape.rank == 0:
      if n != "single":
        raise ValueError(f"pp op 'choice': {inkeys[0]!r} is a scalar; there is nothing to choose from")
      for ok, v in zip(outkeys, values):
        features[ok] = v
      return features
    nitems = tf.shape(values[0])[0]
    checks = [
      tf.debugging.assert_equal(tf.shape(v)[0], nitems, message="choice: keys differ in length") for v in values
    ]
    if not fewer_ok or n == "single":
      checks.append(tf.debugging.assert_greater_equal(nitems, min_n, message="choice: too few entries"))
    with tf.control_dependencies(checks):
      nitems = tf.identity(nitems)
    candidates = tf.range(nitems)
    if skip_empty:
      if values[0].dtype != tf.string:
        raise ValueError(f"pp op 'choice': skip_empty needs strings, {inkeys[0]!r} is {values[0].dtype.name}")
      non_empty = tf.boolean_mask(candidates, tf.strings.length(values[0]) > 0)
      candidates = tf.cond(tf.size(non_empty) > 0, lambda: non_empty, lambda: candidates)
    count = tf.size(candidates)
    seed = next_seed(features) if mode == "random" else None
    if n == "single":
      pick = 0 if seed is None else tf.random.stateless_uniform([], seed, 0, count, dtype=tf.int32)
      index = candidates[pick]
      results = [v[index] for v in values]
    else:
      if seed is None:
        order, end = candidates, (n[1] if is_range else n)
      else:
        perm_seed, len_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
        order = tf.gather(candidates, tf.argsort(tf.random.stateless_uniform([count], perm_seed)))
        end = tf.random.stateless_uniform([], len_seed, n[0], n[1] + 1, dtype=tf.int32) if is_range else n
      indices = tf.sort(order[:end])
      results = [tf.gather(v, indices, axis=0) for v in values]
      if not is_range and not fewer_ok and not skip_empty:
        results = [tf.ensure_shape(r, [n] + [None] * (r.shape.rank - 1)) for r in results]
    for ok, r in zip(outkeys, results):
      features[ok] = r
    return features

  return choice


def _rows(value, batch):
  """(flat entries [N, ...], row of each entry [N], entries per row [B]) of a batched value whose rows are
  lists (a tf.RaggedTensor over its first per-example dimension, or dense [B, n, ...])."""
  if isinstance(value, tf.RaggedTensor):
    return value.values, value.value_rowids(), tf.cast(value.row_lengths(), tf.int32)
  n = tf.shape(value)[1]
  flat = tf.reshape(value, tf.concat([[-1], tf.shape(value)[2:]], 0))
  return flat, tf.repeat(tf.range(batch), n), tf.fill([batch], n)


def _take(entries, index, ok):
  """entries[index[i]] for the rows with ok, an empty / zero entry for the others (never out of range, also
  when there are no entries at all)."""
  if isinstance(entries, tf.RaggedTensor):  # one more row, empty
    size = entries.nrows()
    padded = tf.RaggedTensor.from_row_lengths(
      entries.values, tf.concat([entries.row_lengths(), [0]], 0), validate=False
    )
  else:
    size = tf.shape(entries, out_type=tf.int64)[0]
    fill = tf.constant("") if entries.dtype == tf.string else tf.zeros([], entries.dtype)
    padded = tf.concat([entries, tf.fill(tf.concat([[1], tf.shape(entries)[1:]], 0), fill)], 0)
  return tf.gather(padded, tf.where(ok, index, size))


@register_batched("choice")
def get_choice_batched(n="single", key=None, fewer_ok=False, inkey=None, outkey=None, mode="random", skip_empty=False):
  """The batched form of `choice` for n='single' (None otherwise): the same draw per row (philox), no op per
  example.  A row whose keys differ in length, or that has no entry, comes out with ok False (the
  per-example op raises there)."""
  del fewer_ok  # n='single' needs an entry either way
  if n != "single":
    return None
  inkeys, outkeys = _choice_keys(key, inkey, outkey, mode)

  def choice(features, ok):
    features = dict(features)
    values = [require(features, k, "choice") for k in inkeys]
    batch = tf.shape(ok)[0]
    if not isinstance(values[0], tf.RaggedTensor) and values[0].shape.rank == 1:  # a scalar per example
      for ok_key, v in zip(outkeys, values):
        features[ok_key] = v
      return features, ok
    rows = [_rows(v, batch) for v in values]
    flat0, row_ids, nitems = rows[0]
    for _, _, lengths in rows[1:]:
      ok = ok & tf.equal(lengths, nitems)
    ok = ok & (nitems >= 1)
    candidate = tf.ones_like(row_ids, tf.bool)
    if skip_empty:
      if flat0.dtype != tf.string:
        raise ValueError(f"pp op 'choice': skip_empty needs strings, {inkeys[0]!r} is {flat0.dtype.name}")
      non_empty = tf.strings.length(flat0) > 0
      any_non_empty = tf.math.unsorted_segment_max(tf.cast(non_empty, tf.int32), row_ids, batch) > 0
      candidate = non_empty | ~tf.gather(any_non_empty, row_ids)
    as_int = tf.cast(candidate, tf.int32)
    count = tf.math.unsorted_segment_sum(as_int, row_ids, batch)
    seed = next_seed_batched(features) if mode == "random" else None
    pick = tf.zeros([batch], tf.int32) if seed is None else philox.uniform_int32(seed, 0, tf.maximum(count, 1))
    # the entry index of the pick-th candidate of each row: how many entries have at most pick candidates
    # up to and including themselves
    row_offset = tf.cumsum(count, exclusive=True)
    upto = tf.cumsum(as_int) - tf.gather(row_offset, row_ids)
    index = tf.math.unsorted_segment_sum(tf.cast(upto <= tf.gather(pick, row_ids), tf.int32), row_ids, batch)
    for ok_key, (flat, _, lengths) in zip(outkeys, rows):
      features[ok_key] = _take(flat, tf.cast(tf.cumsum(lengths, exclusive=True) + index, tf.int64), ok)
    return features, ok

  return choice


@register("setdefault")
def get_setdefault(key, value):
  """If features[key] is missing or empty (size 0), sets it to `value` (broadcast to the key's static
  shape, unknown or zero dimensions taken as 1, in the key's dtype)."""
  check_key("setdefault", key)
  try:
    tf.constant(value)
  except (TypeError, ValueError) as e:
    raise ValueError(f"pp op 'setdefault': value {value!r} is not a tensor literal ({e})") from None

  def setdefault(features):
    features = dict(features)
    x = features[key] if key in features else tf.constant(value)
    if x.shape.rank is None:
      raise ValueError(f"pp op 'setdefault': {key!r} has unknown rank")
    default = tf.broadcast_to(tf.constant(value, dtype=x.dtype), [s or 1 for s in x.shape])
    features[key] = tf.cond(tf.size(x) > 0, lambda: x, lambda: default)
    return features

  return setdefault


def _flatten_into(out: dict, prefix: str, value):
  if isinstance(value, Mapping):
    for k, v in value.items():
      _flatten_into(out, f"{prefix}/{k}" if prefix else str(k), v)
  else:
    out[prefix] = value


@register("flatten")
def get_flatten(keys=None):
  """Flattens nested dicts into '/'-joined keys ({'captions': {'text': t}} -> {'captions/text': t});
  only `keys` (a list) when given, else every key."""
  if keys is not None:
    keys = as_key_list("flatten", keys, "keys")

  def flatten(features):
    out = {}
    for k, v in features.items():
      if keys is None or k in keys:
        _flatten_into(out, k, v)
      else:
        out[k] = v
    return out

  return flatten


def _shape_entry_ok(s) -> bool:
  return s is None or (is_int(s) and s >= 0)


@keyed_op("pad_to_shape")
def get_pad_to_shape(shape, pad_value=0, where="after"):
  """Pads a tensor with `pad_value` up to `shape` (None entries: that dimension is left as is).
  where: 'after' (default), 'before' or 'both' (the extra element after). The rank must match."""
  if not isinstance(shape, (list, tuple)) or not all(_shape_entry_ok(s) for s in shape):
    raise ValueError(f"pp op 'pad_to_shape': shape must be a list of sizes or None, got {shape!r}")
  if where not in ("after", "before", "both"):
    raise ValueError(f"pp op 'pad_to_shape': where must be 'after', 'before' or 'both', got {where!r}")
  shape = list(shape)

  def pad_to_shape(x, features):
    if x.shape.rank != len(shape):
      raise ValueError(f"pp op 'pad_to_shape': tensor of rank {x.shape.rank} but shape {shape} has rank {len(shape)}")
    paddings = []
    for i, target in enumerate(shape):
      if target is None:
        paddings.append([0, 0])
        continue
      diff = target - tf.shape(x)[i]
      paddings.append({"after": [0, diff], "before": [diff, 0], "both": [diff // 2, diff - diff // 2]}[where])
    out = tf.pad(x, paddings, constant_values=tf.constant(pad_value, x.dtype))
    out.set_shape(shape)
    return out

  return pad_to_shape


@keyed_op("squeeze_last_dim")
def get_squeeze_last_dim():
  """Removes a trailing dimension of size 1."""
  return lambda x, features: tf.squeeze(x, axis=-1)


@keyed_op("reshape")
def get_reshape(new_shape):
  """tf.reshape to `new_shape` (a list of ints, one may be -1)."""
  if not isinstance(new_shape, (list, tuple)) or not all(is_int(s) and s >= -1 for s in new_shape):
    raise ValueError(f"pp op 'reshape': new_shape must be a list of ints, got {new_shape!r}")
  return lambda x, features: tf.reshape(x, list(new_shape))


@register("concat")
def get_concat(inkeys, outkey=None, axis=-1):
  """features[outkey or inkeys[0]] = concatenation of features[k] for k in inkeys along `axis`."""
  inkeys = as_key_list("concat", inkeys, "inkeys")
  out_key = outkey or inkeys[0]
  check_key("concat", out_key, "outkey")
  if not is_int(axis):
    raise ValueError(f"pp op 'concat': axis must be an int, got {axis!r}")

  def concat(features):
    features = dict(features)
    features[out_key] = tf.concat([require(features, k, "concat") for k in inkeys], axis)
    return features

  return concat
