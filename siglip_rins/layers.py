"""Transformer layers shared by every tower: attention (with KV cache and KV sharing), MLP, encoder layer,
MAP head and position embeddings.

Parameter names follow big_vision (`MultiHeadDotProductAttention_0/{query,key,value,out}`, `MlpBlock_0/Dense_{0,1}`,
`LayerNorm_{0,1}`) so released checkpoints map onto these modules one to one.

Shapes: B batch, T query tokens, S key tokens, D width, H heads, K head dim (D = H * K), M MLP width.
Parameters and activations are float32; `dtype` is the precision policy (`siglip_rins.precision.Policy`, a
policy name or a dtype): under a 16-bit policy every matmul/einsum takes 16-bit operands and accumulates in
float32; LayerNorm, softmax, GELU and residual adds stay float32 (under the experimental '*_act' policies the
activations between products are bf16; see precision.py).  Under 'float32' the layers are exactly flax's.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from siglip_rins.precision import Policy, cast_compute, get_policy

Array = jax.Array
KV = tuple  # (keys [B, S, H, K], values [B, S, H, K], mask broadcastable to [B, H, T, S] or None)


@dataclasses.dataclass(frozen=True)
class LayerConfig:
  """Everything that defines one pre-LN transformer layer (hashable, so towers can pass it around)."""

  width: int
  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32  # the precision policy: a Policy, 'float32' | 'bfloat16' | 'float16', or a dtype
  rope: bool = False  # rotary (relative) position embedding on q/k, used by the decoder LM
  rope_max_wavelength: float = 10_000.0
  layernorm_eps: float = 1e-6

  def __post_init__(self):
    if self.width % self.num_heads:
      raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")
    object.__setattr__(self, "dtype", get_policy(self.dtype))

  @property
  def policy(self) -> Policy:
    return self.dtype


def apply_rope(x: Array, positions: Array, max_wavelength: float) -> Array:
  """Rotary embedding. x: [B, T, H, K] (K even), positions: [B, T] int. Returns x rotated, same shape/dtype."""
  half = x.shape[-1] // 2
  freq = max_wavelength ** (-jnp.arange(half, dtype=jnp.float32) / half)  # [K/2]
  angle = positions[..., None].astype(jnp.float32) * freq  # [B, T, K/2]
  sin, cos = jnp.sin(angle)[:, :, None, :], jnp.cos(angle)[:, :, None, :]  # [B, T, 1, K/2]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)


def dot_product_attention(
  q: Array, k: Array, v: Array, mask: Optional[Array], policy: Optional[Policy] = None
) -> Array:
  """q: [B, T, H, K], k/v: [B, S, H, K], mask: broadcastable to [B, H, T, S] (True = attend). -> [B, T, H, K].
  Both einsums follow `policy` (16-bit operands, float32 accumulation); the softmax is float32."""
  policy = get_policy(policy)
  if policy.attention == "fused":
    return _fused_attention(q, k, v, mask, policy)
  scale = q.shape[-1] ** -0.5
  logits = policy.einsum("bthk,bshk->bhts", q * jnp.asarray(scale, q.dtype), k, out="float32").astype(jnp.float32)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1)
  if not policy.mixed:
    weights = weights.astype(v.dtype)
  return policy.einsum("bhts,bshk->bthk", weights, v).astype(policy.activation_dtype if policy.mixed else v.dtype)


def _fused_attention(q: Array, k: Array, v: Array, mask: Optional[Array], policy: Policy) -> Array:
  """model.attention='fused': jax.nn.dot_product_attention on q/k/v in the compute dtype (cuDNN's fused
  attention on GPUs where it applies, XLA otherwise); returns the policy's activation dtype (float32 policy:
  q's dtype).  mask: broadcastable to [B, H, T, S] (True = attend)."""
  dt = policy.compute_dtype
  if mask is not None:
    b, t, h, _ = q.shape
    mask = jnp.broadcast_to(mask, (b, h, t, k.shape[1]))
  q, k, v = q.astype(dt), k.astype(dt), v.astype(dt)
  y = None
  if jax.default_backend() == "gpu" and dt != jnp.float32:
    try:  # cuDNN's flash attention; shapes it does not take fall back to XLA's (the same function)
      y = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="cudnn")
    except (ValueError, NotImplementedError, RuntimeError):
      y = None
  if y is None:
    y = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")
  return y.astype(policy.activation_dtype if policy.mixed else q.dtype)


class MultiHeadAttention(nn.Module):
  """Multi-head attention with optional KV cache (decode) and optional *shared* keys/values.

  `shared_kv` (RINS KV-cache sharing): when given, this call computes only queries and attends to the given
  keys/values (those of the first round of the recursive block), so no `key`/`value` projection runs and no cache
  is kept for this call.
  """

  cfg: LayerConfig

  @nn.compact
  def __call__(
    self,
    x: Array,
    mask: Optional[Array],
    positions: Optional[Array] = None,
    shared_kv: Optional[KV] = None,
    decode: bool = False,
    inputs_kv: Optional[Array] = None,
  ) -> tuple[Array, KV]:
    """x: [B, T, D] queries (and keys/values unless `inputs_kv` [B, S, D] is given, e.g. MAP pooling)."""
    cfg = self.cfg
    h, k_dim = cfg.num_heads, cfg.width // cfg.num_heads
    pkw = cfg.policy.dense_kwargs()
    dense = lambda name: nn.DenseGeneral(
      (h, k_dim), dtype=jnp.float32, name=name, kernel_init=nn.initializers.xavier_uniform(), **pkw
    )
    q = cfg.policy.act(dense("query")(x))
    if cfg.rope:
      q = apply_rope(q, positions, cfg.rope_max_wavelength)
    if shared_kv is None:
      kv_in = x if inputs_kv is None else inputs_kv
      k, v = cfg.policy.act(dense("key")(kv_in)), cfg.policy.act(dense("value")(kv_in))
      if cfg.rope:
        k = apply_rope(k, positions, cfg.rope_max_wavelength)
      # Under a 16-bit policy keys/values are kept (shared, cached) in the compute dtype: the attention einsums
      # would round them to it anyway, so this changes no result and halves the KV cache.
      k, v = cast_compute(k, cfg.policy), cast_compute(v, cfg.policy)
      if decode:
        k, v, mask = self._update_cache(k, v, mask)
    else:
      k, v, mask = shared_kv
    y = dot_product_attention(q, k, v, mask, cfg.policy)
    out = nn.DenseGeneral(
      cfg.width, axis=(-2, -1), dtype=jnp.float32, name="out", kernel_init=nn.initializers.xavier_uniform(), **pkw
    )(y)
    return cfg.policy.act(out), (k, v, mask)

  def _update_cache(self, k: Array, v: Array, mask: Optional[Array]):
    """Writes this step's k/v ([B, 1, H, K]) at the cache index; returns the full cache and its validity mask.

    The cache variables are created by calling the model once with `decode=True` on a dummy input of the full
    maximum length (see `models.decoder.init_cache`).  All sequences of a batch decode in lockstep.
    """
    is_init = not self.has_variable("cache", "cached_key")
    ck = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
    cv = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
    idx = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
    if is_init:
      return k, v, mask
    if k.shape[1] != 1:
      raise ValueError(f"decode=True processes one token per call, got {k.shape[1]} tokens")
    i = idx.value
    ck.value = jax.lax.dynamic_update_slice(ck.value, k, (0, i, 0, 0))
    cv.value = jax.lax.dynamic_update_slice(cv.value, v, (0, i, 0, 0))
    idx.value = i + 1
    valid = (jnp.arange(ck.value.shape[1]) <= i)[None, None, None, :]  # [1, 1, 1, S]
    mask = valid if mask is None else jnp.logical_and(mask, valid)
    return ck.value, cv.value, mask


class MlpBlock(nn.Module):
  """Dense(M) -> GELU -> Dense(D).  x: [..., D] -> [..., D]."""

  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    d = x.shape[-1]
    init = dict(kernel_init=nn.initializers.xavier_uniform(), bias_init=nn.initializers.normal(1e-6))
    policy = get_policy(self.dtype)
    init.update(policy.dense_kwargs())
    x = policy.act(nn.Dense(self.mlp_dim, dtype=jnp.float32, **init)(x))
    x = nn.gelu(x)
    return policy.act(nn.Dense(d, dtype=jnp.float32, **init)(x))


class EncoderLayer(nn.Module):
  """Pre-LN transformer layer: x + Attn(LN(x)); x + MLP(LN(x)).  x: [B, T, D] -> ([B, T, D], kv)."""

  cfg: LayerConfig

  @nn.compact
  def __call__(
    self,
    x: Array,
    mask: Optional[Array] = None,
    positions: Optional[Array] = None,
    shared_kv: Optional[KV] = None,
    decode: bool = False,
  ) -> tuple[Array, KV]:
    cfg = self.cfg
    y = nn.LayerNorm(epsilon=cfg.layernorm_eps, dtype=cfg.policy.activation_dtype, name="LayerNorm_0")(x)
    y, kv = MultiHeadAttention(cfg, name="MultiHeadDotProductAttention_0")(y, mask, positions, shared_kv, decode)
    x = x + y
    y = nn.LayerNorm(epsilon=cfg.layernorm_eps, dtype=cfg.policy.activation_dtype, name="LayerNorm_1")(x)
    x = x + MlpBlock(cfg.mlp_dim, cfg.dtype, name="MlpBlock_0")(y)
    return x, kv


class MAPHead(nn.Module):
  """Multihead attention pooling: a learned probe attends over tokens, then x + MLP(LN(x)).  [B,N,D] -> [B,D]."""

  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b, _, d = x.shape
    probe = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, d), jnp.float32)
    probe = jnp.tile(probe, (b, 1, 1))
    cfg = LayerConfig(width=d, num_heads=self.num_heads, mlp_dim=self.mlp_dim, dtype=self.dtype)
    x, _ = MultiHeadAttention(cfg, name="MultiHeadDotProductAttention_0")(probe, None, inputs_kv=x)
    y = nn.LayerNorm(dtype=cfg.policy.activation_dtype, name="LayerNorm_0")(x)
    x = x + MlpBlock(self.mlp_dim, self.dtype, name="MlpBlock_0")(y)
    return x[:, 0]


def sincos2d(h: int, w: int, width: int, temperature: float = 10_000.0) -> np.ndarray:
  """Fixed 2-D sin-cos position embedding: [1, h*w, width] float32 (width divisible by 4)."""
  if width % 4:
    raise ValueError(f"sincos2d needs width divisible by 4, got {width}")
  y, x = np.mgrid[:h, :w]
  omega = 1.0 / temperature ** (np.arange(width // 4) / (width // 4 - 1 or 1))
  y = y.reshape(-1)[:, None] * omega[None]
  x = x.reshape(-1)[:, None] * omega[None]
  return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)[None].astype(np.float32)


def position_embedding(module: nn.Module, kind: str, seqshape: tuple[int, ...], width: int, name: str) -> Array:
  """Returns a [1, prod(seqshape), width] embedding: 'learn' (a parameter `name`) or 'sincos2d' (fixed)."""
  if kind == "learn":
    n = int(np.prod(seqshape))
    return module.param(name, nn.initializers.normal(stddev=1 / np.sqrt(width)), (1, n, width), jnp.float32)
  if kind == "sincos2d":
    return jnp.asarray(sincos2d(*seqshape, width))
  raise ValueError(f"unknown position embedding {kind!r}; allowed: 'learn', 'sincos2d'")
