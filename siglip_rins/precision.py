"""Mixed-precision policy (jmp/levanter style), one config key for every tower and every backend.

    build_model(dict(..., precision='bfloat16'))   # or 'float32' (the default); model.dtype is an alias

A `Policy` has three dtypes:
* param_dtype (always float32): parameters, gradients and the optimizer state;
* compute_dtype: the dtype of the *operands* of every matmul / einsum / patch-embedding convolution;
* output_dtype (always float32): what those products accumulate in and return
  (``preferred_element_type=float32``), and the dtype of every activation between them, so LayerNorm, GELU,
  softmax, residual adds, the pooled embeddings, the sigmoid logits and the loss all run in float32.

'float32_custom' (experimental, for speed measurements) routes float32 operands through the same custom products
(one canonical dot per product, hand-written VJP): equal to 'float32' within float rounding, not bit for bit; on
XLA:CPU it lets the matmul library take the weight-gradient dots that JAX's own transpose leaves to the generic
kernel (benchmarks/bench_precision.py measures it).

Under 'float32' nothing changes: the modules call flax's Dense / DenseGeneral / Conv and `jnp.einsum` exactly as
before (bit-identical outputs and checkpoints).  Under 'bfloat16' (or 'float16') every product goes through
`einsum` below: its operands are cast to the compute dtype, it accumulates in float32, and its hand-written
VJP casts the incoming cotangent to the compute dtype too, so all three matmuls of a Dense (forward, input
gradient, kernel gradient) run with 16-bit operands and float32 accumulation.  (JAX's own transpose of a dot
with a float32 output would multiply the float32 cotangent by the 16-bit operand, which XLA upcasts: a float32
matmul.)  Only the bf16 copies of the operands are kept for the backward pass.  Gradients returned to float32
parameters are float32 (accumulated in float32 from bf16 products).

Experimental (benchmarks/bench_bf16_variants.py measures them; none is faster than 'bfloat16' on XLA:CPU):
'bfloat16_act' is the jmp/levanter meaning of a bf16 compute dtype: bf16 operands as above, and the activations
between products in bf16 too (dense outputs cast to bf16 after the float32 bias add, GELU in bf16, LayerNorm
outputs bf16 with float32 statistics); the attention logits, softmax, the pooled embeddings, the sigmoid logits
and the loss stay float32, and so does the residual stream.  'bfloat16_act_res16' also keeps the residual stream
in bf16; 'bfloat16_act_dotout' makes the products themselves return bf16 (before the bias add).

Parameter names and shapes are flax's own (the policy is passed to flax's Dense as its `dot_general`), so
checkpoints and the big_vision / Hugging Face interop do not depend on the policy.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

POLICIES = (
  "float32",
  "bfloat16",
  "float16",
  "float32_custom",
  "bfloat16_act",
  "bfloat16_act_res16",
  "bfloat16_act_dotout",
)
_DTYPES = {
  "float32": jnp.float32,
  "bfloat16": jnp.bfloat16,
  "float16": jnp.float16,
  "float32_custom": jnp.float32,
  "bfloat16_act": jnp.bfloat16,
  "bfloat16_act_res16": jnp.bfloat16,
  "bfloat16_act_dotout": jnp.bfloat16,
}
# (activation dtype, residual-stream dtype, dtype the products return) of the policies whose activations between
# matmuls are 16-bit.  Products returning float32 let XLA fuse the cast to bf16 with the bias add that follows;
# on XLA:CPU a product returning bf16 is a float32 dot followed by a separate convert pass.
_ACT = {
  "bfloat16_act": (jnp.bfloat16, jnp.float32, jnp.float32),
  "bfloat16_act_res16": (jnp.bfloat16, jnp.bfloat16, jnp.float32),
  "bfloat16_act_dotout": (jnp.bfloat16, jnp.float32, jnp.bfloat16),
}
_NO_ACT = (jnp.float32, jnp.float32, jnp.float32)
# How attention is computed (`model.attention`): 'einsum' (default): two policy einsums around a float32
# softmax (siglip_rins.layers.dot_product_attention); 'fused': jax.nn.dot_product_attention on q/k/v in the
# compute dtype, which XLA:GPU runs as cuDNN's fused (flash) attention where it applies and XLA elsewhere (CPU,
# TPU): the [B, H, T, S] logits are never written out.  Same parameters and checkpoints either way.
ATTENTION = ("einsum", "fused")


@dataclasses.dataclass(frozen=True)
class Policy:
  """param/compute/output dtypes (see the module docstring).  Hashable, so modules can hold it."""

  name: str = "float32"
  attention: str = "einsum"  # 'einsum' | 'fused' (see ATTENTION)

  def __post_init__(self):
    if self.name not in POLICIES:
      raise ValueError(f"model.precision: unknown policy {self.name!r}; allowed: {list(POLICIES)}")
    if self.attention not in ATTENTION:
      raise ValueError(f"model.attention: unknown implementation {self.attention!r}; allowed: {list(ATTENTION)}")

  @property
  def param_dtype(self):
    return jnp.float32

  @property
  def compute_dtype(self):
    return _DTYPES[self.name]

  @property
  def output_dtype(self):
    return jnp.float32

  @property
  def activation_dtype(self):
    """dtype of the activations between products (GELU, bias adds, LayerNorm outputs): float32 except under
    the '*_act' policies (jmp/levanter compute dtype); LayerNorm statistics and softmax stay float32."""
    return _ACT.get(self.name, _NO_ACT)[0]

  @property
  def residual_dtype(self):
    """dtype of the residual stream (the towers' embeddings and every x + f(x))."""
    return _ACT.get(self.name, _NO_ACT)[1]

  @property
  def product_dtype(self):
    """dtype the products (dense layers, attention's value product) return."""
    return _ACT.get(self.name, _NO_ACT)[2]

  def act(self, x):
    """x in the activation dtype (unchanged under every policy but the '*_act' ones)."""
    if self.name not in _ACT:
      return x
    return x.astype(self.activation_dtype)

  def residual(self, x):
    """x in the residual dtype (unchanged under every policy but 'bfloat16_act_res16')."""
    if self.name not in _ACT:
      return x
    return x.astype(self.residual_dtype)

  @property
  def mixed(self) -> bool:
    """True when the custom product path is used (16-bit operands, or 'float32_custom')."""
    return self.name != "float32"

  # ---------------------------------------------------------------------------------------- flax helpers
  def dense_kwargs(self) -> dict:
    """Extra kwargs for flax's nn.Dense / nn.DenseGeneral: none under float32 (flax's own path)."""
    if not self.mixed:
      return {}
    return dict(dot_general=mixed_dot_general(self.name, jnp.dtype(self.product_dtype).name))

  def conv_kwargs(self) -> dict:
    """Extra kwargs for flax's nn.Conv: none under float32."""
    if not self.mixed:
      return {}
    return dict(conv_general_dilated=mixed_conv(self.name))

  def einsum(self, spec: str, a, b, out: Optional[str] = None):
    """jnp.einsum(spec, a, b) under the policy (float32: exactly jnp.einsum).  `out`: the result's dtype name
    (default: the policy's product dtype; 'float32' e.g. for attention logits that feed a float32 softmax)."""
    if not self.mixed:
      return jnp.einsum(spec, a, b)
    return named_einsum(spec, a, b, self.name, out or jnp.dtype(self.product_dtype).name)


FLOAT32 = Policy("float32")
BFLOAT16 = Policy("bfloat16")


def get_policy(p: Union[None, str, Policy, Any]) -> Policy:
  """A Policy from a name ('float32' | 'bfloat16' | 'float16'), a jnp dtype, a Policy or None (float32)."""
  if p is None:
    return FLOAT32
  if isinstance(p, Policy):
    return p
  if isinstance(p, str):
    return Policy(p)
  try:
    name = np.dtype(p).name
  except TypeError:
    raise ValueError(f"model.precision: cannot read a policy from {p!r}; allowed: {list(POLICIES)}") from None
  return Policy(name)


# ------------------------------------------------------------------------------------------ the products
def _parse(spec: str) -> tuple[str, str, str]:
  ins, out = spec.replace(" ", "").split("->")
  a, b = ins.split(",")
  for i in set(a + b + out):
    if (i in a) + (i in b) + (i in out) < 2 or a.count(i) > 1 or b.count(i) > 1 or out.count(i) > 1:
      raise ValueError(
        f"mixed-precision einsum {spec!r}: every index must appear (once) in at least two of the operands and "
        f"the output (index {i!r} does not)"
      )
  return a, b, out


def _product(spec: str, a, b):
  """einsum(spec, a, b) with float32 accumulation as ONE canonical dot_general: operands transposed to
  [batch..., M, K] x [batch..., K, N] (batch indices first, contraction last / first), the result transposed to
  `spec`'s output order.  XLA:CPU runs bf16 x bf16 -> f32 only for dots it hands to its matmul library
  (YNNPACK); a batched dot with a transposed operand (e.g. attention's key gradient, contracted over the
  query axis) falls back to a generic kernel without that type combination.  The explicit layout avoids it."""
  sa, sb, so = _parse(spec)
  batch = [i for i in sa if i in sb and i in so]
  if not batch:
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)
  contract = [i for i in sa if i in sb and i not in so]
  m = [i for i in sa if i not in batch and i not in contract]
  n = [i for i in sb if i not in batch and i not in contract]
  a = jnp.transpose(a, [sa.index(i) for i in batch + m + contract])
  b = jnp.transpose(b, [sb.index(i) for i in batch + contract + n])
  nb, nm, nc = len(batch), len(m), len(contract)
  dims = ((tuple(range(nb + nm, nb + nm + nc)), tuple(range(nb, nb + nc))), (tuple(range(nb)), tuple(range(nb))))
  out = jax.lax.dot_general(a, b, dims, preferred_element_type=jnp.float32)  # [batch, m, n]
  got = batch + m + n
  return jnp.transpose(out, [got.index(i) for i in so])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3, 4))
def einsum(spec: str, a, b, compute: str = "bfloat16", out: str = "float32"):
  """einsum of two operands cast to `compute`, accumulated in and returned as float32.

  The VJP casts the cotangent to `compute` as well, so the backward products also use 16-bit operands with
  float32 accumulation; gradients come back in the operands' dtypes.  Every index must appear in at least two
  of (a, b, out) (matmul-like contractions with batch indices: what dense layers and attention use).
  """
  dt = _DTYPES[compute]
  return _product(spec, a.astype(dt), b.astype(dt)).astype(out)


def _einsum_fwd(spec, a, b, compute, out_dtype):
  dt = _DTYPES[compute]
  ac, bc = a.astype(dt), b.astype(dt)
  out = _product(spec, ac, bc).astype(out_dtype)
  # residuals: the 16-bit operands (half the bytes of float32) and the operands' dtypes (as zero-size arrays)
  return out, (ac, bc, jnp.zeros((0,), a.dtype), jnp.zeros((0,), b.dtype))


def _einsum_bwd(spec, compute, out_dtype, res, g):
  ac, bc, a_dt, b_dt = res
  sa, sb, so = _parse(spec)
  gc = g.astype(_DTYPES[compute])
  da = _product(f"{so},{sb}->{sa}", gc, bc)
  db = _product(f"{so},{sa}->{sb}", gc, ac)
  return da.astype(a_dt.dtype), db.astype(b_dt.dtype)


einsum.defvjp(_einsum_fwd, _einsum_bwd)

# Names of the policy's product outputs for jax.checkpoint policies: remat policies such as dots_saveable look for
# dot_general primitives, which sit inside the custom VJP here; recursion.remat='dots' also saves these names.
DOT_NAME = "policy_dot"  # products without batch dimensions (projections, MLP)
BATCHED_DOT_NAME = "policy_dot_batched"  # products with batch dimensions (attention)


def named_einsum(spec: str, a, b, compute: str, out: str = "float32"):
  """`einsum` with its output named DOT_NAME / BATCHED_DOT_NAME (for remat policies)."""
  from jax.ad_checkpoint import checkpoint_name

  sa, sb, so = _parse(spec)
  batched = any(i in sb and i in so for i in sa)
  return checkpoint_name(einsum(spec, a, b, compute, out), BATCHED_DOT_NAME if batched else DOT_NAME)


_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def dot_general_spec(lhs_ndim: int, rhs_ndim: int, dimension_numbers) -> str:
  """The einsum spec of lax.dot_general's dimension numbers (output: batch, lhs free, rhs free dims)."""
  (lc, rc), (lb, rb) = dimension_numbers
  lhs, rhs = [None] * lhs_ndim, [None] * rhs_ndim
  letters = iter(_LETTERS)
  batch = []
  for i, j in zip(lb, rb):
    lhs[i] = rhs[j] = next(letters)
    batch.append(lhs[i])
  for i, j in zip(lc, rc):
    lhs[i] = rhs[j] = next(letters)
  free_l = [lhs.__setitem__(i, next(letters)) or lhs[i] for i in range(lhs_ndim) if lhs[i] is None]
  free_r = [rhs.__setitem__(i, next(letters)) or rhs[i] for i in range(rhs_ndim) if rhs[i] is None]
  return f"{''.join(lhs)},{''.join(rhs)}->{''.join(batch + free_l + free_r)}"


@functools.lru_cache(maxsize=None)
def mixed_dot_general(compute: str, out: str = "float32"):
  """A lax.dot_general replacement (for flax's Dense `dot_general=`) running `einsum` under `compute`.
  Cached per dtype so modules compare/hash equal."""

  def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kw):
    del precision, preferred_element_type, kw
    return named_einsum(dot_general_spec(lhs.ndim, rhs.ndim, dimension_numbers), lhs, rhs, compute, out)

  dot_general.__name__ = f"mixed_dot_general_{compute}"
  return dot_general


@functools.lru_cache(maxsize=None)
def mixed_conv(compute: str):
  """A lax.conv_general_dilated replacement (for flax's Conv) with `compute` operands and float32
  accumulation.  Its backward pass runs in float32 on the rounded operands (the patch embedding is ~1% of a
  ViT's FLOPs and its input gradient is not needed)."""
  dt = _DTYPES[compute]

  def conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None, **kw):
    kw.pop("precision", None)
    kw.pop("preferred_element_type", None)

    @jax.custom_vjp
    def f(x, k):
      return jax.lax.conv_general_dilated(
        x.astype(dt), k.astype(dt), window_strides, padding, lhs_dilation, rhs_dilation,
        preferred_element_type=jnp.float32, **kw,
      )  # fmt: skip

    def f_fwd(x, k):
      return f(x, k), (x.astype(dt), k.astype(dt), jnp.zeros((0,), x.dtype), jnp.zeros((0,), k.dtype))

    def f_bwd(res, g):
      xc, kc, x_dt, k_dt = res
      ref = lambda x, k: jax.lax.conv_general_dilated(
        x, k, window_strides, padding, lhs_dilation, rhs_dilation, **kw
      )  # fmt: skip
      _, vjp = jax.vjp(ref, xc.astype(jnp.float32), kc.astype(jnp.float32))
      dx, dk = vjp(g.astype(jnp.float32))
      return dx.astype(x_dt.dtype), dk.astype(k_dt.dtype)

    f.defvjp(f_fwd, f_bwd)
    return f(lhs, rhs)

  conv.__name__ = f"mixed_conv_{compute}"
  return conv


def cast_compute(x, policy: Optional[Policy]):
  """x in the policy's compute dtype when mixed (e.g. keys/values kept for a KV cache), else unchanged."""
  if policy is None or not policy.mixed:
    return x
  return x.astype(policy.compute_dtype)
