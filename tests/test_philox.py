"""siglip_rins/data/philox.py: TF's stateless random numbers for a batch of seeds, bit for bit."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
from siglip_rins.data import philox  # noqa: E402

B = 300


@pytest.fixture(scope="module")
def seeds():
  rng = np.random.default_rng(0)
  s32 = rng.integers(-(2**31), 2**31, (B, 2))
  s32[:4] = [[0, 0], [-1, -1], [2**31 - 1, -(2**31)], [1, 0]]  # edges of the sign extension
  return tf.constant(s32, tf.int32), tf.constant(rng.integers(-(2**63), 2**63, (B, 2), dtype=np.int64), tf.int64)


@pytest.mark.parametrize("data_dtype", [tf.int32, tf.int64])
def test_fold_in_equals_tf(seeds, data_dtype):
  data = tf.constant(np.random.default_rng(1).integers(-(10**6), 10**9, B), data_dtype)
  for seed in seeds:
    want = np.stack([tf.random.experimental.stateless_fold_in(seed[i], data[i]).numpy() for i in range(B)])
    np.testing.assert_array_equal(philox.fold_in(seed, data).numpy(), want)


def test_split_and_uniform_int_equal_tf(seeds):
  s32 = seeds[0]
  want = np.stack([tf.random.experimental.stateless_split(s32[i], num=2).numpy() for i in range(B)])
  np.testing.assert_array_equal(philox.split2(s32).numpy(), want)
  rng = np.random.default_rng(2)
  lo = tf.constant(rng.integers(-50, 1, B), tf.int32)
  hi = tf.constant(rng.integers(1, 2**31 - 1, B), tf.int32)
  hi = tf.tensor_scatter_nd_update(hi, [[0], [1]], [1, 2])  # spans of 1 and 2 too
  want = [tf.random.stateless_uniform([], s32[i], lo[i], hi[i], dtype=tf.int32).numpy() for i in range(B)]
  np.testing.assert_array_equal(philox.uniform_int32(s32, lo, hi).numpy(), want)
  for dtype in (tf.int32, tf.int64):
    want = [tf.random.stateless_uniform([], s32[i], dtype=dtype, minval=None, maxval=None).numpy() for i in range(B)]
    np.testing.assert_array_equal(philox.full_int(s32, dtype).numpy(), want)
  with pytest.raises(ValueError, match="dtype must be int32 or int64"):
    philox.full_int(s32, tf.float32)


def test_traced_once_per_seed_dtype(seeds):
  """The Philox graph is written once per seed dtype/rank, not per call (nor per tf.data function using it):
  new batch sizes and new outer graphs reuse the trace."""
  s32 = seeds[0]
  philox.fold_in(s32, tf.range(B))
  philox.fold_in(s32[:7], tf.range(7))  # a second batch size: one retrace to a batch-size-free signature
  before = philox._words4.experimental_get_tracing_count()
  philox.fold_in(s32[:9], tf.range(9))
  tf.function(lambda s: philox.split2(s))(s32[:5])  # inside another graph
  ds = tf.data.Dataset.from_tensor_slices(s32[:12]).batch(4).map(lambda s: philox.fold_in(s, tf.range(4)))
  got = np.concatenate([x.numpy() for x in ds])
  assert philox._words4.experimental_get_tracing_count() == before
  want = np.stack([tf.random.experimental.stateless_fold_in(s32[i], i % 4).numpy() for i in range(12)])
  np.testing.assert_array_equal(got, want)
