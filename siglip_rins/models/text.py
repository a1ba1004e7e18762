"""Text transformer encoder (SigLIP's text tower) built on the recursion engine.

tokens [B, L] int32 -> (out [B, num_classes or D], aux).  Learned positions, bidirectional attention (no mask,
as in SigLIP), final LayerNorm, pooling at the last token ('last', SigLIP with sticky EOS), 'first', 'gap' or
'map'; then a linear head.  Parameter tree: Embed_0/embedding, pos_embedding, Encoder_0/{A,B,...}/...,
Encoder_0/encoder_norm, head/{kernel,bias} (big_vision names).
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from siglip_rins.layers import LayerConfig, MAPHead, position_embedding
from siglip_rins.precision import get_policy
from siglip_rins.recursion import RecursionConfig, RecursiveStack

POOLS = ("last", "first", "gap", "map")


class TextTransformer(nn.Module):
  vocab_size: int = 32_000
  width: int = 768
  depth: int = 12
  mlp_dim: int = 3072
  num_heads: int = 12
  pool_type: str = "last"
  num_classes: Optional[int] = None
  recursion: RecursionConfig = RecursionConfig()
  dtype: Any = jnp.float32  # precision policy (siglip_rins.precision): a Policy, its name or a dtype

  @nn.compact
  def __call__(self, tokens, train: bool = False, rounds: Optional[int] = None, repeat: Optional[int] = None):
    if self.pool_type not in POOLS:
      raise ValueError(f"unknown text pool_type {self.pool_type!r}; allowed: {POOLS}")
    policy = get_policy(self.dtype)  # float32 activations; matmul operands in policy.compute_dtype
    x = nn.Embed(
      self.vocab_size, self.width, embedding_init=nn.initializers.normal(stddev=1 / self.width**0.5), name="Embed_0"
    )(tokens).astype(jnp.float32)
    x = policy.residual(x + position_embedding(self, "learn", (tokens.shape[1],), self.width, "pos_embedding"))
    layer = LayerConfig(self.width, self.num_heads, self.mlp_dim, self.dtype)
    x, info = RecursiveStack(layer, self.depth, self.recursion, name="Encoder_0")(
      x, train=train, rounds=rounds, repeat=repeat
    )
    aux = {"encoded": x, "rounds": info["rounds"]}
    if self.pool_type == "last":
      x = x[:, -1]
    elif self.pool_type == "first":
      x = x[:, 0]
    elif self.pool_type == "gap":
      x = x.mean(axis=1)
    else:
      x = MAPHead(self.num_heads, self.mlp_dim, self.dtype, name="MAPHead_0")(x)
    aux["pre_logits"] = x
    if self.num_classes:
      x = nn.Dense(self.num_classes, dtype=jnp.float32, name="head", **policy.dense_kwargs())(x)
    return x.astype(jnp.float32), aux
