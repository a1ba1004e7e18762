"""Vision Transformer encoder built on the recursion engine (big_vision-style names and variants).

image [B, H, W, 3] float in [-1, 1] -> (out [B, num_classes or D] (or tokens [B, N, D] for pool 'none'), aux).
Parameter tree: embedding/{kernel,bias}, pos_embedding, cls (pool 'tok'), Transformer/{A,B,...}/encoderblock_j/...,
Transformer/encoder_norm, MAPHead_0/... (pool 'map'), head/{kernel,bias} (when num_classes is set).
"""

from __future__ import annotations

import re
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from siglip_rins.layers import LayerConfig, MAPHead, position_embedding
from siglip_rins.precision import get_policy
from siglip_rins.recursion import RecursionConfig, RecursiveStack

# name: (width, depth, mlp_dim, heads).  The lower-case ones are tiny variants for CPU runs and tests.
VARIANTS = {
  "mu": (64, 4, 256, 2),
  "nano": (128, 4, 512, 4),
  "bench": (256, 6, 1024, 4),
  "Ti": (192, 12, 768, 3),
  "S": (384, 12, 1536, 6),
  "M": (512, 12, 2048, 8),
  "B": (768, 12, 3072, 12),
  "L": (1024, 24, 4096, 16),
  "So400m": (1152, 27, 4304, 16),
  "H": (1280, 32, 5120, 16),
}
POOLS = ("map", "gap", "tok", "none")


def decode_variant(variant: str) -> dict:
  """'B/16' -> dict(width=768, depth=12, mlp_dim=3072, num_heads=12, patch_size=(16, 16))."""
  m = re.fullmatch(r"([A-Za-z0-9]+)(?:/(\d+))?", variant or "")
  if not m or m.group(1) not in VARIANTS:
    raise ValueError(f"unknown ViT variant {variant!r}; allowed: {sorted(VARIANTS)} with '/patch', e.g. 'B/16'")
  w, d, mlp, h = VARIANTS[m.group(1)]
  out = dict(width=w, depth=d, mlp_dim=mlp, num_heads=h)
  if m.group(2):
    out["patch_size"] = (int(m.group(2)),) * 2
  return out


class ViT(nn.Module):
  """ViT encoder whose depth is a stack of recursive blocks."""

  width: int = 768
  depth: int = 12
  mlp_dim: int = 3072
  num_heads: int = 12
  patch_size: tuple[int, int] = (16, 16)
  posemb: str = "learn"
  pool_type: str = "map"
  num_classes: Optional[int] = None
  head_bias_init: float = 0.0
  head_zeroinit: bool = True
  recursion: RecursionConfig = RecursionConfig()
  dtype: Any = jnp.float32  # precision policy (siglip_rins.precision): a Policy, its name or a dtype

  @nn.compact
  def __call__(self, image, train: bool = False, rounds: Optional[int] = None, repeat: Optional[int] = None):
    if self.pool_type not in POOLS:
      raise ValueError(f"unknown pool_type {self.pool_type!r}; allowed: {POOLS}")
    policy = get_policy(self.dtype)  # float32 activations; matmul operands in policy.compute_dtype
    x = nn.Conv(
      self.width,
      self.patch_size,
      strides=self.patch_size,
      padding="VALID",
      dtype=jnp.float32,
      name="embedding",
      **policy.conv_kwargs(),
    )(image.astype(jnp.float32))
    b, h, w, c = x.shape
    x = x.reshape(b, h * w, c)
    x = policy.residual(x + position_embedding(self, self.posemb, (h, w), c, "pos_embedding"))
    if self.pool_type == "tok":
      cls = self.param("cls", nn.initializers.zeros, (1, 1, c), jnp.float32)
      x = jnp.concatenate([jnp.tile(cls, (b, 1, 1)), x], axis=1)
    layer = LayerConfig(self.width, self.num_heads, self.mlp_dim, self.dtype)
    x, info = RecursiveStack(layer, self.depth, self.recursion, name="Transformer")(
      x, train=train, rounds=rounds, repeat=repeat
    )
    aux = {"encoded": x, "rounds": info["rounds"]}
    if self.pool_type == "map":
      x = MAPHead(self.num_heads, self.mlp_dim, self.dtype, name="MAPHead_0")(x)
    elif self.pool_type == "gap":
      x = x.mean(axis=1)
    elif self.pool_type == "tok":
      x = x[:, 0]
    aux["pre_logits"] = x
    if self.num_classes:
      kinit = nn.initializers.zeros if self.head_zeroinit else nn.initializers.lecun_normal()
      x = nn.Dense(
        self.num_classes,
        dtype=jnp.float32,
        **policy.dense_kwargs(),
        kernel_init=kinit,
        bias_init=nn.initializers.constant(self.head_bias_init),
        name="head",
      )(x)
    return x.astype(jnp.float32), aux
