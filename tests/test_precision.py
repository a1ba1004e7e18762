"""The mixed-precision policy (siglip_rins.precision): dtypes of parameters, gradients and matmul operands, the
float32 policy unchanged, bf16 results close to float32.

Tolerances (bf16 has an 8-bit mantissa, relative rounding 2^-9 ~ 0.2% per operand): embeddings and losses of the
tiny two-tower A^2B model below agree with float32 to 2e-2 absolute (measured: embeddings 3e-3, loss 1e-3);
gradients to 5% of the largest entry of each parameter's gradient, + 1e-4 (measured: median 1%, worst 2.7%).  Speed is measured in benchmarks/bench_precision.py, not here.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from siglip_rins import precision
from siglip_rins.models import build_model

TT = dict(
  name="two_towers",
  image=dict(variant="mu/8", pool_type="map"),
  text=dict(variant="mu", vocab_size=100),
  out_dim=(None, 64),
  recursion=dict(signature="A^2B", adapters=True),
)


def _batch():
  img = jax.random.uniform(jax.random.PRNGKey(1), (4, 32, 32, 3), minval=-1, maxval=1)
  txt = jax.random.randint(jax.random.PRNGKey(2), (4, 8), 0, 100)
  return img, txt


def _loss_fn(model, img, txt):
  def f(params):
    zi, zt, out = model.apply({"params": params}, img, txt)
    logits = zi @ zt.T * out["t"] + out["b"]
    return jnp.mean(jax.nn.softplus(-logits * (2 * jnp.eye(len(zi)) - 1))), (zi, zt)

  return f


def _dots(jaxpr) -> list:
  """All dot_general / conv equations of a (closed) jaxpr, recursing into sub-jaxprs (scan, cond, custom_vjp)."""
  out = []

  def walk(jp):
    for eqn in jp.eqns:
      if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
        out.append(eqn)
      for v in eqn.params.values():
        for j in v if isinstance(v, (list, tuple)) else (v,):
          if hasattr(j, "jaxpr") and hasattr(j.jaxpr, "eqns"):
            walk(j.jaxpr)
          elif hasattr(j, "eqns"):
            walk(j)

  walk(jaxpr.jaxpr)
  return out


def test_policy_key_and_alias():
  assert precision.get_policy("bfloat16").compute_dtype == jnp.bfloat16
  assert precision.get_policy(jnp.bfloat16).name == "bfloat16"
  assert precision.get_policy(None).compute_dtype == jnp.float32
  m = build_model(dict(TT, precision="bfloat16"))
  assert m.image["dtype"] == precision.BFLOAT16 and m.text["dtype"] == precision.BFLOAT16
  assert build_model(dict(TT, dtype="bfloat16")).image["dtype"] == precision.BFLOAT16  # the older knob
  with pytest.raises(ValueError, match="disagree"):
    build_model(dict(TT, dtype="float32", precision="bfloat16"))
  with pytest.raises(ValueError, match="unknown policy"):
    build_model(dict(TT, precision="int8"))


@pytest.mark.parametrize("policy", ["bfloat16", "bfloat16_act", "bfloat16_act_res16"])
def test_bf16_params_and_grads_float32_and_close_to_float32(policy):
  img, txt = _batch()
  m32, m16 = build_model(dict(TT, precision="float32")), build_model(dict(TT, precision=policy))
  params = m32.init(jax.random.PRNGKey(0), img, txt)["params"]
  p16 = m16.init(jax.random.PRNGKey(0), img, txt)["params"]
  # same names, shapes, dtypes (float32) and values under both policies
  assert jax.tree.structure(params) == jax.tree.structure(p16)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(p16)):
    assert a.dtype == b.dtype == jnp.float32 and a.shape == b.shape
    np.testing.assert_array_equal(a, b)
  (l32, (zi32, zt32)), g32 = jax.jit(jax.value_and_grad(_loss_fn(m32, img, txt), has_aux=True))(params)
  (l16, (zi16, zt16)), g16 = jax.jit(jax.value_and_grad(_loss_fn(m16, img, txt), has_aux=True))(params)
  assert l16.dtype == zi16.dtype == zt16.dtype == jnp.float32
  np.testing.assert_allclose(zi16, zi32, atol=2e-2)
  np.testing.assert_allclose(zt16, zt32, atol=2e-2)
  np.testing.assert_allclose(l16, l32, atol=2e-2)
  flat32 = jax.tree_util.tree_flatten_with_path(g32)[0]
  for (path, a), b in zip(flat32, jax.tree.leaves(g16)):
    assert b.dtype == jnp.float32, path
    scale = float(jnp.max(jnp.abs(a))) + 1e-6
    # (+1e-4: gradients that are zero in exact arithmetic, e.g. of the key bias, are rounding noise)
    assert float(jnp.max(jnp.abs(a - b))) <= 0.05 * scale + 1e-4, (jax.tree_util.keystr(path), scale)


@pytest.mark.parametrize("policy", ["bfloat16", "bfloat16_act"])
def test_bf16_matmuls_have_bf16_operands_and_f32_accumulation(policy):
  """Every dot of the forward AND backward pass (jaxpr of value_and_grad) takes bf16 operands and returns float32;
  the compiled HLO has no float32 x float32 dot."""
  img, txt = _batch()
  m16 = build_model(dict(TT, precision=policy, recursion=dict(signature="A^2B", loop="scan")))
  params = m16.init(jax.random.PRNGKey(0), img, txt)["params"]
  f = jax.value_and_grad(_loss_fn(m16, img, txt), has_aux=True)
  dots = _dots(jax.make_jaxpr(f)(params))
  assert len(dots) > 20
  dot_ops = [e for e in dots if e.primitive.name == "dot_general"]
  # the loss's 4x4 similarity matrix (zimg @ ztxt.T, float32 by design) is the only float32 product
  f32 = [e for e in dot_ops if e.invars[0].aval.dtype == jnp.float32]
  assert all(e.invars[0].aval.shape in ((4, 64), (4, 4)) for e in f32), [e.invars[0].aval for e in f32]
  for e in dot_ops:
    if e not in f32:
      assert [v.aval.dtype for v in e.invars] == [jnp.bfloat16] * 2, e
      assert e.outvars[0].aval.dtype == jnp.float32, e
  hlo = jax.jit(f).lower(params).as_text()
  mixed = re.findall(r"stablehlo.dot_general.*bf16>.*bf16>\) -> tensor<[^>]*f32>", hlo)
  assert len(mixed) >= len(dot_ops) - len(f32) - 5


def _eqns(jaxpr) -> list:
  """All equations of a (closed) jaxpr, recursing into sub-jaxprs."""
  out = []

  def walk(jp):
    for eqn in jp.eqns:
      out.append(eqn)
      for v in eqn.params.values():
        for j in v if isinstance(v, (list, tuple)) else (v,):
          if hasattr(j, "jaxpr") and hasattr(j.jaxpr, "eqns"):
            walk(j.jaxpr)
          elif hasattr(j, "eqns"):
            walk(j)

  walk(jaxpr.jaxpr)
  return out


@pytest.mark.parametrize("policy,residual", [("bfloat16_act", jnp.float32), ("bfloat16_act_res16", jnp.bfloat16)])
def test_bf16_act_policy_activations_bf16_statistics_softmax_loss_f32(policy, residual):
  """Under the '*_act' policies (jmp/levanter compute dtype) GELU runs in bf16, while the LayerNorm statistics
  (rsqrt), the softmax and the loss (exp) run in float32; the residual stream has the policy's residual dtype."""
  img, txt = _batch()
  m = build_model(dict(TT, precision=policy, recursion=dict(signature="A^2B", loop="scan")))
  params = m.init(jax.random.PRNGKey(0), img, txt)["params"]
  p = precision.get_policy(policy)
  assert p.activation_dtype == jnp.bfloat16 and p.residual_dtype == residual
  eqns = _eqns(jax.make_jaxpr(jax.value_and_grad(lambda q: _loss_fn(m, img, txt)(q)[0]))(params))
  dt = lambda e: e.invars[0].aval.dtype
  assert {dt(e) for e in eqns if e.primitive.name == "tanh"} == {jnp.dtype(jnp.bfloat16)}  # tanh-GELU
  assert {dt(e) for e in eqns if e.primitive.name == "rsqrt"} == {jnp.dtype(jnp.float32)}  # LayerNorm
  assert {dt(e) for e in eqns if e.primitive.name == "exp"} == {jnp.dtype(jnp.float32)}  # softmax, loss
  # the residual stream: the scan carry of the recursive blocks
  carries = {v.aval.dtype for e in eqns if e.primitive.name == "scan" for v in e.outvars if v.aval.ndim == 3}
  assert jnp.dtype(residual) in carries


def test_float32_policy_is_flax_default_path():
  """Under float32 no custom product is used (so results are the previous ones bit for bit)."""
  img, txt = _batch()
  m = build_model(dict(TT, precision="float32"))
  params = m.init(jax.random.PRNGKey(0), img, txt)["params"]
  jaxpr = jax.make_jaxpr(jax.grad(lambda p: _loss_fn(m, img, txt)(p)[0]))(params)
  assert "custom_vjp" not in str(jaxpr)
  assert all(v.aval.dtype == jnp.float32 for e in _dots(jaxpr) for v in e.invars)


@pytest.mark.parametrize("tie", [False, True])
def test_decoder_bf16_close_and_cache_in_bf16(tie):
  from siglip_rins.models.decoder import cache_bytes, init_cache

  cfg = dict(name="decoder", variant="lm_mu", vocab_size=100, tie_embeddings=tie, recursion=dict(signature="A^2B"))
  m32, m16 = build_model(cfg), build_model(dict(cfg, precision="bfloat16"))
  tokens = jax.random.randint(jax.random.PRNGKey(2), (2, 8), 0, 100)
  params = m32.init(jax.random.PRNGKey(0), tokens)["params"]
  l32, l16 = m32.apply({"params": params}, tokens), m16.apply({"params": params}, tokens)
  assert l16.dtype == jnp.float32
  np.testing.assert_allclose(l16, l32, atol=5e-2 * float(jnp.max(jnp.abs(l32))))
  c32, c16 = init_cache(m32, params, 2, 8), init_cache(m16, params, 2, 8)
  assert cache_bytes(c16) * 2 == cache_bytes(c32)


def test_mixed_einsum_gradients_match_float32_reference():
  a = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 7))
  b = jax.random.normal(jax.random.PRNGKey(1), (7, 4))
  f16 = lambda a, b: jnp.sum(precision.einsum("btd,de->bte", a, b, "bfloat16") ** 2)
  f32 = lambda a, b: jnp.sum(jnp.einsum("btd,de->bte", a, b) ** 2)
  for x, y in zip(jax.grad(f16, (0, 1))(a, b), jax.grad(f32, (0, 1))(a, b)):
    assert x.dtype == jnp.float32
    np.testing.assert_allclose(x, y, rtol=3e-2, atol=3e-2 * float(jnp.max(jnp.abs(y))))
  with pytest.raises(ValueError, match="at least two"):
    precision.einsum("btd,de->b", a, b, "bfloat16")
  assert precision.dot_general_spec(3, 2, (((2,), (0,)), ((), ()))) == "bca,ad->bcd"


def test_float32_custom_policy_matches_float32():
  """'float32_custom' (float32 operands through the policy's own products and VJP) equals 'float32' up to rounding."""
  img, txt = _batch()
  m32, mc = build_model(dict(TT, precision="float32")), build_model(dict(TT, precision="float32_custom"))
  params = m32.init(jax.random.PRNGKey(0), img, txt)["params"]
  (l32, _), g32 = jax.jit(jax.value_and_grad(_loss_fn(m32, img, txt), has_aux=True))(params)
  (lc, _), gc = jax.jit(jax.value_and_grad(_loss_fn(mc, img, txt), has_aux=True))(params)
  np.testing.assert_allclose(lc, l32, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g32), jax.tree.leaves(gc)):
    assert b.dtype == jnp.float32
    np.testing.assert_allclose(b, a, atol=1e-5 * (float(jnp.max(jnp.abs(a))) + 1e-3))


@pytest.mark.parametrize("policy", ["float32", "bfloat16", "bfloat16_act"])
def test_fused_attention_matches_einsum_attention(policy):
  """model.attention='fused' (jax.nn.dot_product_attention; cuDNN on GPUs) computes the same attention as the
  default einsum path, with a padding mask, in value and gradient (within the policy's rounding)."""
  from siglip_rins.layers import dot_product_attention

  kq, kk, kv = jax.random.split(jax.random.PRNGKey(0), 3)
  q = jax.random.normal(kq, (2, 5, 4, 16))
  k = jax.random.normal(kk, (2, 7, 4, 16))
  v = jax.random.normal(kv, (2, 7, 4, 16))
  mask = (jnp.arange(7) < jnp.array([7, 4])[:, None])[:, None, None, :]  # [B, 1, 1, S]: the 2nd row pads 3 keys
  outs = {}
  for att in ("einsum", "fused"):
    pol = precision.Policy(policy, attention=att)
    f = lambda q, k, v: dot_product_attention(q, k, v, mask, pol)
    y = f(q, k, v)
    g = jax.grad(lambda q, k, v: (f(q, k, v).astype(jnp.float32) ** 2).sum(), argnums=(0, 1, 2))(q, k, v)
    outs[att] = (y, g)
  tol = 1e-5 if policy == "float32" else 3e-2
  assert outs["fused"][0].dtype == outs["einsum"][0].dtype
  np.testing.assert_allclose(np.float32(outs["fused"][0]), np.float32(outs["einsum"][0]), atol=tol, rtol=tol)
  for a, b in zip(outs["fused"][1], outs["einsum"][1]):
    np.testing.assert_allclose(np.float32(a), np.float32(b), atol=5 * tol, rtol=5 * tol)
  # the padded keys get no weight on the fused path either: changing them leaves the 2nd row unchanged
  v2 = v.at[1, 4:].set(100.0)
  pol = precision.Policy(policy, attention="fused")
  np.testing.assert_allclose(
    np.float32(dot_product_attention(q, k, v2, mask, pol)[1]), np.float32(outs["fused"][0][1]), atol=tol
  )


def test_attention_key_validated_and_reaches_every_layer():
  with pytest.raises(ValueError, match="model.attention.*'flash'.*allowed"):
    build_model(dict(name="vit", variant="mu/8", attention="flash"))
  m = build_model(dict(name="vit", variant="mu/8", attention="fused", precision="bfloat16"))
  assert m.dtype == precision.Policy("bfloat16", attention="fused")
