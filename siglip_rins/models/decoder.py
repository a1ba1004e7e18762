"""Decoder-only language model built on the recursion engine.

apply(tokens [B, T] int32, segment_ids=None [B, T], positions=None [B, T], train=False, rounds=None,
      decode=False, repeat=None) -> logits [B, T, V] float32.  `rounds` / `repeat`: inference-time recursion
(see siglip_rins.recursion: A^kB and repeat-all-over).
Causal attention with rotary (relative) position embeddings; with `segment_ids` (sequence packing) tokens attend
only within their segment and positions restart per segment.  Incremental decoding: `init_cache` creates the KV
cache for a maximum length, then each call with `decode=True` takes one token per sequence ([B, 1]) at its
`positions` (default: the number of tokens decoded so far, kept in the cache as `decode_index`), mutating the
'cache' collection.  With `recursion.kv_sharing=True` the rounds after the first of
the recursive block attend to the first round's keys/values, so the cache does not grow with r.
Parameter tree: Embed_0/embedding, Decoder/{A,B,...}/encoderblock_j/..., Decoder/encoder_norm, head/kernel.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from siglip_rins.layers import LayerConfig
from siglip_rins.precision import get_policy
from siglip_rins.recursion import RecursionConfig, RecursiveStack


def causal_mask(segment_ids: Optional[jax.Array], length: int) -> jax.Array:
  """[B or 1, 1, T, T] boolean: causal, and within one segment when segment_ids [B, T] is given."""
  mask = jnp.tril(jnp.ones((length, length), bool))[None, None]
  if segment_ids is not None:
    mask = jnp.logical_and(mask, (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None])
  return mask


class DecoderLM(nn.Module):
  """Decoder-only LM.

  Embedding scale (so that the initial cross-entropy is about ln V, tied or untied): the table E is initialised
  N(0, 1/D) (rows of norm ~1, GPT-2-like magnitudes) and read without a sqrt(D) multiplier, so the
  residual stream starts at unit-norm rows and the first layers' outputs dominate it; the tied output is
  x @ E^T and the untied head is lecun-normal, both giving logits of unit variance after the final LayerNorm.
  At init the loss is ln V + ~0.5 nats (tests/test_models.py checks the paper's widths 1536 and 2048).
  A sqrt(D) input multiplier with a tied x @ E^T output would not do: the final residual then points along the
  input token's own embedding and its logit is ~sqrt(D) (39 at D = 1536) above the others.  (The old init,
  N(0, 1) * sqrt(D) with a tied x @ E^T, started lm_300m at ~1,500 nats.)  The paper specifies no
  initialisation for its decoder.
  """

  vocab_size: int = 32_000
  width: int = 1536
  depth: int = 12
  mlp_dim: int = 6144
  num_heads: int = 12
  tie_embeddings: bool = False
  recursion: RecursionConfig = RecursionConfig()
  dtype: Any = jnp.float32  # precision policy (siglip_rins.precision): a Policy, its name or a dtype

  @nn.compact
  def __call__(
    self,
    tokens,
    segment_ids=None,
    positions=None,
    train: bool = False,
    rounds=None,
    decode: bool = False,
    repeat=None,
  ):
    b, t = tokens.shape
    embed = nn.Embed(
      self.vocab_size, self.width, embedding_init=nn.initializers.normal(stddev=self.width**-0.5), name="Embed_0"
    )
    policy = get_policy(self.dtype)  # float32 activations; matmul operands in policy.compute_dtype
    x = embed(tokens).astype(jnp.float32)  # rows of norm ~1; no sqrt(D) multiplier (see the class docstring)
    if decode:
      # The number of tokens decoded so far (reset by init_cache); the position of a token decoded without
      # explicit `positions` (all sequences of a batch decode in lockstep).
      initializing = not self.has_variable("cache", "decode_index")
      index = self.variable("cache", "decode_index", lambda: jnp.zeros((), jnp.int32))
      if positions is None:
        positions = jnp.broadcast_to(index.value + jnp.arange(t, dtype=jnp.int32)[None], (b, t))
      if not initializing:
        index.value = index.value + t
      mask = None  # the cache index bounds attention (see layers.MultiHeadAttention._update_cache)
    else:
      if positions is None:
        positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32)[None], (b, t))
      mask = causal_mask(segment_ids, t)
    layer = LayerConfig(self.width, self.num_heads, self.mlp_dim, self.dtype, rope=True)
    x, _ = RecursiveStack(layer, self.depth, self.recursion, name="Decoder")(
      x, mask=mask, positions=positions, train=train, rounds=rounds, decode=decode, repeat=repeat
    )
    if self.tie_embeddings:
      if policy.mixed:
        logits = policy.einsum("btd,vd->btv", x, embed.embedding)
      else:
        logits = embed.attend(x.astype(jnp.float32))
    else:
      logits = nn.Dense(self.vocab_size, use_bias=False, dtype=jnp.float32, name="head", **policy.dense_kwargs())(x)
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
