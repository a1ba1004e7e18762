"""TensorFlow's stateless random numbers (Philox, the CPU default) for a batch of seeds at once.

`tf.random.stateless_*` take one seed per call, and `tf.vectorized_map` has no converter for their
`StatelessRandomGetKeyCounter` op, so a pp op drawing per-example numbers over a block of examples would run a
dozen TF ops per example.  These functions compute the same bits as
`tf.random.experimental.stateless_fold_in`, `..._split`, `tf.random.stateless_uniform(..., dtype=int32/int64)`
(minval/maxval given or full range) for seeds of shape [B, 2] with B-wide integer ops: Philox-4x32-10 with TF's
seed scrambling (key 0x3ec8f720 / 0x02461e29, one Philox call mixing the seed into key and counter) and TF's
sample layouts (a full-range int64 is two uint32 words, low first; an int in [lo, hi) is lo + bits mod (hi - lo)).
tests/test_philox.py checks them bit for bit against TF on random seeds, so a batched op and its per-example form
give the same examples.

32-bit words are held in uint64 tensors (products of two words fit), shapes [..., 4] for a counter.
"""

import tensorflow as tf

_MASK = 0xFFFFFFFF
_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85


def _u64(x):
  return tf.cast(x, tf.uint64)


def _mulhilo(a: int, b):
  product = tf.constant(a, tf.uint64) * b
  return product & _MASK, tf.bitwise.right_shift(product, tf.constant(32, tf.uint64))


def _philox(counter, key):
  """Philox-4x32-10: counter [..., 4] and key [..., 2] words -> 4 output words [..., 4]."""
  c0, c1, c2, c3 = tf.unstack(counter, axis=-1)
  k0, k1 = tf.unstack(key, axis=-1)
  for i in range(10):
    lo0, hi0 = _mulhilo(_M0, c0)
    lo1, hi1 = _mulhilo(_M1, c2)
    c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    if i < 9:
      k0, k1 = (k0 + _W0) & _MASK, (k1 + _W1) & _MASK
  return tf.stack([c0, c1, c2, c3], axis=-1)


def _key_counter(seed):
  """TF's key [..., 2] and counter [..., 4] words for int32/int64 seeds [..., 2] (sign-extended to 64 bits)."""
  s = _u64(seed)
  s0, s1 = s[..., 0], s[..., 1]
  shift = tf.constant(32, tf.uint64)
  counter = tf.stack([s0 & _MASK, tf.bitwise.right_shift(s0, shift), s1 & _MASK, tf.bitwise.right_shift(s1, shift)], -1)
  key = tf.broadcast_to(tf.constant([0x3EC8F720, 0x02461E29], tf.uint64), tf.concat([tf.shape(counter)[:-1], [2]], 0))
  mix = _philox(counter, key)
  zeros = tf.zeros_like(mix[..., :2])
  return mix[..., :2], tf.concat([zeros, mix[..., 2:]], -1)


@tf.function(autograph=False, reduce_retracing=True)
def _words4(seed):
  key, counter = _key_counter(seed)
  return _philox(counter, key)


def words(seed, n: int):
  """The first n (<= 4) uint32 words (as uint64 [..., n]) TF's Philox draws for seeds [..., 2].

  The ~500 ops of the two Philox calls are traced once per seed dtype and rank (a `tf.function`, called as a
  function from the graphs that use it), not again in every tf.data map function that draws per-example
  numbers: building a training iterator used to spend ~0.4 s of its ~1.3 s writing them out."""
  if not 1 <= n <= 4:
    raise ValueError(f"philox.words: 1 <= n <= 4, got {n}")
  return _words4(tf.convert_to_tensor(seed))[..., :n]


def full_int(seed, dtype):
  """= tf.random.stateless_uniform([], seed, dtype=dtype, minval=None, maxval=None) per seed [..., 2]."""
  w = words(seed, 2)
  if dtype == tf.int32:
    return tf.bitcast(tf.cast(w[..., 0], tf.uint32), tf.int32)
  if dtype == tf.int64:
    return tf.bitcast(w[..., 0] | tf.bitwise.left_shift(w[..., 1], tf.constant(32, tf.uint64)), tf.int64)
  raise ValueError(f"philox.full_int: dtype must be int32 or int64, got {dtype}")


def fold_in(seed, data):
  """= tf.random.experimental.stateless_fold_in(seed[i], data[i]) for seeds [B, 2] and data [B] (int32/int64)."""
  data = tf.convert_to_tensor(data)
  return tf.stack([full_int(seed, data.dtype), data], -1)


def split2(seed):
  """= tf.random.experimental.stateless_split(seed[i], num=2) for seeds [B, 2] int32 -> [B, 2, 2] int32."""
  w = tf.bitcast(tf.cast(words(seed, 4), tf.uint32), tf.int32)
  return tf.reshape(w, tf.concat([tf.shape(seed)[:-1], [2, 2]], 0))


def uniform_int32(seed, minval, maxval):
  """= tf.random.stateless_uniform([], seed[i], minval[i], maxval[i], dtype=tf.int32) for seeds [B, 2];
  requires minval < maxval (TF refuses the call otherwise)."""
  bits = words(seed, 1)[..., 0]
  lo = tf.cast(tf.bitcast(tf.cast(minval, tf.int32), tf.uint32), tf.uint64)
  span = (tf.cast(tf.bitcast(tf.cast(maxval, tf.int32), tf.uint32), tf.uint64) - lo) & _MASK
  return tf.bitcast(tf.cast((lo + bits % span) & _MASK, tf.uint32), tf.int32)
