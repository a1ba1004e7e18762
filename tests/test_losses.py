"""Tests for siglip_rins.losses: global sigmoid loss vs numpy, chunked (ring) loss vs global on 8 CPU devices."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from siglip_rins import losses


def _embeddings(batch, dim, seed=0):
  rng = np.random.default_rng(seed)
  zimg = rng.normal(size=(batch, dim)).astype(np.float32)
  ztxt = zimg + 0.5 * rng.normal(size=(batch, dim)).astype(np.float32)  # positives correlate
  zimg /= np.linalg.norm(zimg, axis=1, keepdims=True)
  ztxt /= np.linalg.norm(ztxt, axis=1, keepdims=True)
  return zimg, ztxt


def _numpy_sigmoid_loss(zimg, ztxt, t, b):
  zimg, ztxt = zimg.astype(np.float64), ztxt.astype(np.float64)
  batch = zimg.shape[0]
  total = 0.0
  for i in range(batch):
    for j in range(batch):
      logit = t * float(zimg[i] @ ztxt[j]) + b
      z = 1.0 if i == j else -1.0
      total += -np.log(1.0 / (1.0 + np.exp(-z * logit)))
  return total / batch


@pytest.mark.parametrize("t,b", [(10.0, -10.0), (1.0, 0.0), (30.0, 2.5)])
def test_sigmoid_loss_matches_numpy_reference(t, b):
  zimg, ztxt = _embeddings(6, 5, seed=int(t))
  got = losses.sigmoid_loss(jnp.asarray(zimg), jnp.asarray(ztxt), t, b)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(float(got), _numpy_sigmoid_loss(zimg, ztxt, t, b), rtol=1e-5)


def test_sigmoid_loss_bf16_inputs_use_float32_logits():
  zimg, ztxt = _embeddings(4, 8)
  got = losses.sigmoid_loss(jnp.asarray(zimg, jnp.bfloat16), jnp.asarray(ztxt, jnp.bfloat16), 10.0, -10.0)
  assert got.dtype == jnp.float32
  ref = _numpy_sigmoid_loss(
    np.asarray(jnp.asarray(zimg, jnp.bfloat16).astype(jnp.float32)),
    np.asarray(jnp.asarray(ztxt, jnp.bfloat16).astype(jnp.float32)),
    10.0,
    -10.0,
  )
  np.testing.assert_allclose(float(got), ref, rtol=1e-5)


def test_sigmoid_loss_rejects_mismatched_shapes():
  with pytest.raises(ValueError, match="same shape"):
    losses.sigmoid_loss(jnp.ones((4, 3)), jnp.ones((5, 3)), 1.0, 0.0)


def test_softmax_loss_matches_numpy_reference():
  zimg, ztxt = _embeddings(5, 4, seed=3)
  t = 7.0
  logits = t * zimg.astype(np.float64) @ ztxt.astype(np.float64).T

  def ce(lg):
    lg = lg - lg.max(axis=1, keepdims=True)
    logp = lg - np.log(np.exp(lg).sum(axis=1, keepdims=True))
    return -np.mean(np.diag(logp))

  ref = 0.5 * (ce(logits) + ce(logits.T))
  np.testing.assert_allclose(float(losses.softmax_loss(zimg, ztxt, t)), ref, rtol=1e-5)


def test_chunked_loss_single_device_equals_global():
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  zimg, ztxt = _embeddings(4, 3)
  got = losses.sharded_sigmoid_loss(zimg, ztxt, 10.0, -10.0, mesh)
  np.testing.assert_allclose(float(got), float(losses.sigmoid_loss(zimg, ztxt, 10.0, -10.0)), rtol=1e-6)


_MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import os, json
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh
    from siglip_rins import losses
    assert jax.device_count() == 8, jax.device_count()
    rng = np.random.default_rng(0)
    B, D = 32, 6
    zi = rng.normal(size=(B, D)).astype(np.float32); zi /= np.linalg.norm(zi, axis=1, keepdims=True)
    zt = zi + 0.3 * rng.normal(size=(B, D)).astype(np.float32); zt /= np.linalg.norm(zt, axis=1, keepdims=True)
    t, b = jnp.float32(10.0), jnp.float32(-4.0)
    ref_val, ref_grads = jax.value_and_grad(losses.sigmoid_loss, argnums=(0, 1, 2, 3))(zi, zt, t, b)
    out = {"ref": [float(ref_val)] + [np.asarray(g).tolist() for g in ref_grads]}
    for name, shape, axis in [("ring8", (8, 1), "data"), ("ring4x2", (4, 2), ("data", "fsdp"))]:
        mesh = Mesh(np.array(jax.devices()).reshape(shape), ("data", "fsdp"))
        fn = jax.jit(jax.value_and_grad(
            lambda a, c, tt, bb: losses.sharded_sigmoid_loss(a, c, tt, bb, mesh, axis), argnums=(0, 1, 2, 3)))
        val, grads = fn(zi, zt, t, b)
        hlo = fn.lower(zi, zt, t, b).compile().as_text()
        out[name] = [float(val)] + [np.asarray(g).tolist() for g in grads]
        out[name + "_has_global_logits"] = ("f32[32,32]" in hlo)
        out[name + "_has_collective_permute"] = ("collective-permute" in hlo)
    print("RESULT" + json.dumps(out))
""")


def test_chunked_loss_and_grads_equal_global_on_8_devices():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [sys.executable, "-c", _MULTI_DEVICE_SCRIPT], capture_output=True, text=True, env=env, timeout=300
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
  out = json.loads(line[len("RESULT") :])
  ref = out["ref"]
  for name in ("ring8", "ring4x2"):
    got = out[name]
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, err_msg=f"{name} loss")
    for k, label in zip(range(1, 5), ("d zimg", "d ztxt", "d t", "d b")):
      np.testing.assert_allclose(
        np.asarray(got[k]), np.asarray(ref[k]), rtol=1e-4, atol=1e-6, err_msg=f"{name} {label}"
      )
    assert out[name + "_has_collective_permute"], f"{name}: no ring exchange in the compiled program"
    assert not out[name + "_has_global_logits"], f"{name}: the global [B, B] logits were formed"
