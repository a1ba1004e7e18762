"""Decoder-only language model built on the recursion engine.

apply(tokens [B, T] int32, segment_ids=None [B, T], positions=None [B, T], train=False, rounds=None,
      decode=False) -> logits [B, T, V] float32.
Causal attention with rotary (relative) position embeddings; with `segment_ids` (sequence packing) tokens attend
only within their segment and positions restart per segment.  Incremental decoding: `init_cache` creates the KV
cache for a maximum length, then each call with `decode=True` takes one token per sequence ([B, 1]) at its
`positions`, mutating the 'cache' collection.  With `recursion.kv_sharing=True` the rounds after the first of
the recursive block attend to the first round's keys/values, so the cache does not grow with r.
Parameter tree: Embed_0/embedding, Decoder/{A,B,...}/encoderblock_j/..., Decoder/encoder_norm, head/kernel.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from siglip_rins.layers import LayerConfig
from siglip_rins.recursion import RecursionConfig, RecursiveStack


def causal_mask(segment_ids: Optional[jax.Array], length: int) -> jax.Array:
  """[B or 1, 1, T, T] boolean: causal, and within one segment when segment_ids [B, T] is given."""
  mask = jnp.tril(jnp.ones((length, length), bool))[None, None]
  if segment_ids is not None:
    mask = jnp.logical_and(mask, (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None])
  return mask


class DecoderLM(nn.Module):
  vocab_size: int = 32_000
  width: int = 1536
  depth: int = 12
  mlp_dim: int = 6144
  num_heads: int = 12
  tie_embeddings: bool = False
  recursion: RecursionConfig = RecursionConfig()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens, segment_ids=None, positions=None, train: bool = False, rounds=None, decode: bool = False):
    b, t = tokens.shape
    embed = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(stddev=1.0), name="Embed_0")
    x = embed(tokens).astype(self.dtype) * jnp.sqrt(self.width).astype(self.dtype)
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32)[None], (b, t))
    if decode:
      if positions is None:
        raise ValueError("decode=True needs `positions` [B, 1]: the index of the token being decoded")
      mask = None  # the cache index bounds attention (see layers.MultiHeadAttention._update_cache)
    else:
      mask = causal_mask(segment_ids, t)
    layer = LayerConfig(self.width, self.num_heads, self.mlp_dim, self.dtype, rope=True)
    x, _ = RecursiveStack(layer, self.depth, self.recursion, name="Decoder")(
      x, mask=mask, positions=positions, train=train, rounds=rounds, decode=decode
    )
    if self.tie_embeddings:
      logits = embed.attend(x.astype(jnp.float32))
    else:
      logits = nn.Dense(self.vocab_size, use_bias=False, dtype=self.dtype, name="head")(x)
    return logits.astype(jnp.float32)


def init_cache(model: DecoderLM, params, batch_size: int, max_len: int, rounds=None):
  """Creates an all-zero KV cache for `max_len` positions.  Returns the 'cache' collection.

  The cache holds, per layer, keys/values of shape [B, max_len, H, K] (with a leading rounds axis inside
  scanned recursive blocks).  With KV sharing only the first round of the recursive block caches.
  """
  full = jnp.zeros((batch_size, max_len), jnp.int32)
  positions = jnp.zeros((batch_size, max_len), jnp.int32)
  _, variables = model.apply(
    {"params": params}, full, positions=positions, decode=True, rounds=rounds, mutable=["cache"]
  )
  return jax.tree.map(jnp.zeros_like, variables["cache"])


def cache_bytes(cache) -> int:
  """Total bytes of the KV tensors in a cache collection."""
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(cache) if x.ndim >= 4)
