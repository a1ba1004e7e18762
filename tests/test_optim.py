"""Tests for siglip_rins.optim: exact update formula, kernel-only weight decay, schedules, bf16 moments."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from siglip_rins import optim


def _params():
  return {
    "img": {
      "Dense_0": {"kernel": jnp.full((2, 3), 0.5), "bias": jnp.full((3,), 0.25)},
      "LayerNorm_0": {"scale": jnp.ones((3,))},
    },
    "txt": {"head": {"kernel": jnp.full((3, 2), -1.0), "bias": jnp.zeros((2,))}},
    "t": jnp.asarray(2.3),
    "b": jnp.asarray(-10.0),
  }


def test_update_follows_decoupled_wd_formula_kernels_only():
  lr, wd, total = 0.1, 0.01, 100
  cfg = dict(lr=lr, wd=wd, schedule=dict(decay_type="constant", warmup_steps=10))
  tx, sched = optim.make_optimizer(cfg, total_steps=total)
  params = _params()
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), params)
  state = tx.init(params)
  updates, state = jax.jit(tx.update)(grads, state, params)
  for leaf in jax.tree.leaves(updates):
    np.testing.assert_allclose(np.asarray(leaf), 0.0, atol=0)  # warm-up multiplier 0 at step 0
  # Check the full formula at step 1 of a 2-step warm-up (multiplier 0.5); step 0 gets zero gradients.
  cfg2 = dict(lr=lr, wd=wd, schedule=dict(decay_type="constant", warmup_steps=2))
  tx2, sched2 = optim.make_optimizer(cfg2, total_steps=total)
  state2 = tx2.init(params)
  update2 = jax.jit(tx2.update)
  _, state2 = update2(jax.tree.map(jnp.zeros_like, grads), state2, params)  # step 0
  # Adam count is now 2 after a zero first gradient: mu = (1-b1) g, nu = (1-b2) g^2, bias-corrected by count 2.
  updates2, _ = update2(grads, state2, params)
  m = 0.5  # warm-up multiplier at step 1 of 2
  b1, b2, eps = 0.9, 0.999, 1e-8

  def expected(path, p, g):
    mu = (1 - b1) * g
    nu = (1 - b2) * g * g
    adam = (mu / (1 - b1**2)) / (jnp.sqrt(nu / (1 - b2**2)) + eps)
    name = "/".join(str(k.key) for k in path)
    decay = wd * p if name.endswith("/kernel") else 0.0
    return -m * (lr * adam + decay)

  want = jax.tree_util.tree_map_with_path(expected, params, grads)
  for (path, got), w in zip(jax.tree_util.tree_leaves_with_path(updates2), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(w), rtol=2e-5, err_msg=jax.tree_util.keystr(path))
  np.testing.assert_allclose(float(sched2(1)), lr * m, rtol=1e-7)


def test_weight_decay_not_multiplied_by_lr():
  # With zero gradients, only the decay term acts: update = -m * wd * theta, independent of lr.
  params = _params()
  zeros = jax.tree.map(jnp.zeros_like, params)
  results = []
  for lr in (1e-3, 1.0):
    tx, _ = optim.make_optimizer(dict(lr=lr, wd=0.1, schedule=dict(decay_type="constant")), total_steps=10)
    updates, _ = tx.update(zeros, tx.init(params), params)
    results.append(updates)
    np.testing.assert_allclose(np.asarray(updates["img"]["Dense_0"]["kernel"]), -0.1 * 0.5, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(updates["txt"]["head"]["kernel"]), -0.1 * -1.0, rtol=1e-6)
    for leaf in (updates["img"]["Dense_0"]["bias"], updates["img"]["LayerNorm_0"]["scale"], updates["t"], updates["b"]):
      np.testing.assert_array_equal(np.asarray(leaf), 0.0)


def test_custom_wd_and_lr_mults():
  params = _params()
  grads = jax.tree.map(jnp.ones_like, params)
  cfg = dict(
    lr=0.5,
    wd=0.2,
    schedule=dict(decay_type="constant"),
    wd_mults=[("img/.*/kernel", 2.0), (".*/bias", 1.0)],
    lr_mults=[("txt/.*", 0.0)],
  )
  tx, _ = optim.make_optimizer(cfg, total_steps=10)
  updates, _ = tx.update(grads, tx.init(params), params)
  adam = 1.0 / (1.0 + 1e-8)
  np.testing.assert_allclose(np.asarray(updates["img"]["Dense_0"]["kernel"]), -(0.5 * adam + 0.4 * 0.5), rtol=2e-5)
  np.testing.assert_allclose(np.asarray(updates["img"]["Dense_0"]["bias"]), -(0.5 * adam + 0.2 * 0.25), rtol=2e-5)
  np.testing.assert_array_equal(np.asarray(updates["txt"]["head"]["kernel"]), 0.0)  # lr 0, no wd rule
  np.testing.assert_array_equal(np.asarray(updates["txt"]["head"]["bias"]), 0.0)  # lr 0, bias wd on zeros
  np.testing.assert_allclose(np.asarray(updates["t"]), -0.5 * adam, rtol=2e-5)


def test_grad_clip_by_global_norm():
  params = {"w": {"kernel": jnp.zeros((4,))}}
  tx, _ = optim.make_optimizer(
    dict(lr=1.0, grad_clip_norm=1.0, optax_name="identity", schedule=dict(decay_type="constant")), total_steps=5
  )
  grads = {"w": {"kernel": jnp.array([3.0, 4.0, 0.0, 0.0])}}  # norm 5 -> clipped to norm 1
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(np.asarray(updates["w"]["kernel"]), [-0.6, -0.8, 0.0, 0.0], rtol=1e-6)


def test_schedule_values_at_known_steps():
  lr = 2.0
  mult = optim.make_schedule(dict(decay_type="cosine", warmup_steps=10, min_lr=0.2), lr, total_steps=110)
  np.testing.assert_allclose(float(mult(0)), 0.0)
  np.testing.assert_allclose(float(mult(5)), 0.5, rtol=1e-6)  # linear warm-up
  np.testing.assert_allclose(float(mult(10)), 1.0, rtol=1e-6)
  np.testing.assert_allclose(float(mult(60)), 0.1 + 0.9 * 0.5, rtol=1e-6)  # cosine half-way
  np.testing.assert_allclose(float(mult(110)), 0.1, rtol=1e-6)  # cosine end = min_lr / lr

  rs = optim.make_schedule(dict(decay_type="rsqrt", warmup_steps=4, timescale=100), lr, total_steps=1000)
  np.testing.assert_allclose(float(rs(2)), 0.5, rtol=1e-6)
  np.testing.assert_allclose(float(rs(4)), 1.0, rtol=1e-6)
  np.testing.assert_allclose(float(rs(304)), math.sqrt(100 / 400), rtol=1e-6)

  lin = optim.make_schedule(dict(decay_type="linear", linear_end=0.5), lr, total_steps=100)
  np.testing.assert_allclose(float(lin(50)), 1 + (0.25 - 1) * 0.5, rtol=1e-6)
  np.testing.assert_allclose(float(lin(100)), 0.25, rtol=1e-6)

  cool = optim.make_schedule(dict(decay_type="rsqrt", timescale=10, cooldown_steps=20), lr, total_steps=100)
  np.testing.assert_allclose(float(cool(90)), math.sqrt(10 / 100) * 0.5, rtol=1e-6)
  np.testing.assert_allclose(float(cool(100)), 0.0, atol=1e-7)


def test_duration_units():
  kw = dict(lr=1.0, total_steps=1000, batch_size=32, steps_per_epoch=50)
  for sched in (dict(warmup_steps=100), dict(warmup_examples=3200), dict(warmup_epochs=2), dict(warmup_percent=0.1)):
    mult = optim.make_schedule(dict(decay_type="constant", **sched), **kw)
    np.testing.assert_allclose(float(mult(50)), 0.5, rtol=1e-6, err_msg=str(sched))
    np.testing.assert_allclose(float(mult(100)), 1.0, rtol=1e-6, err_msg=str(sched))


def test_bf16_first_moment():
  cfg = ml_collections.ConfigDict(
    dict(lr=1e-3, wd=1e-4, optax=dict(mu_dtype="bfloat16", b2=0.95), schedule=dict(decay_type="cosine", warmup_steps=2))
  )
  tx, _ = optim.make_optimizer(cfg, total_steps=10)
  params = _params()
  state = tx.init(params)
  adam_states = [
    s
    for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
    if isinstance(s, optax.ScaleByAdamState)
  ]
  assert len(adam_states) == 1
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(adam_states[0].mu))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(adam_states[0].nu))
  updates, state = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), state, params)
  assert all(u.dtype == jnp.float32 for u in jax.tree.leaves(updates))


@pytest.mark.parametrize(
  "cfg,match",
  [
    (dict(lr=1.0, schedule=dict(decay_type="exp")), "decay_type"),
    (dict(lr=1.0, schedule=dict(warmup=10)), "unknown key"),
    (dict(lr=1.0, schedule=dict(warmup_steps=10, warmup_epochs=1)), "at most one"),
    (dict(lr=1.0, schedule=dict(warmup_examples=100)), "batch_size"),
    (dict(lr=1.0, schedule=dict(warmup_percent=10)), "fraction"),
    (dict(lr=1.0, optax_name="adamw_typo"), "optax_name"),
    (dict(lr=1.0, optax=dict(mu_dtype="int8")), "mu_dtype"),
    (dict(lr=1.0, optax=dict(beta1=0.9)), "optax"),
    (dict(lr=-1.0), "lr"),
    (dict(lr=1.0, wd_mults=[("(", 1.0)]), "wd_mults"),
  ],
)
def test_bad_config_raises_named_value_error(cfg, match):
  with pytest.raises(ValueError, match=match):
    optim.make_optimizer(cfg, total_steps=100)


# ------------------------------------------------------------------------------------------ linear adapters
def _with_adapters(d=8, r=3):
  params = _params()
  params["img"]["Transformer"] = {
    "adapter_kernel": jnp.broadcast_to(jnp.eye(d), (r, d, d)),
    "adapter_bias": jnp.zeros((r, d)),
    "encoder_norm": {"scale": jnp.ones((d,))},
  }
  return params


@pytest.mark.parametrize(
  "value, want", [(None, 1 / 8), ("fan_in", 1 / 8), (0.5, 0.5), ("0.5", 0.5), (1.0, 1.0), (0, 0.0)]
)
def test_adapter_kernels_learn_at_lr_over_width(value, want):
  """SGD (optax 'identity'), unit gradients: the adapters' kernels move by lr * adapter_mult, 1/D by default;
  their biases and every other leaf by lr; adapters are not weight-decayed by the default wd_mults."""
  params = _with_adapters(d=8)
  grads = jax.tree.map(jnp.ones_like, params)
  cfg = dict(lr=0.1, wd=0.5, optax_name="identity", schedule=dict(decay_type="constant"))
  if value is not None:
    cfg["adapter_lr_mult"] = value
  tx, _ = optim.make_optimizer(cfg, total_steps=10)
  updates, _ = tx.update(grads, tx.init(params), params)
  ad = updates["img"]["Transformer"]
  np.testing.assert_allclose(np.asarray(ad["adapter_kernel"]), -0.1 * want, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(ad["adapter_bias"]), -0.1, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(ad["encoder_norm"]["scale"]), -0.1, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(updates["img"]["Dense_0"]["kernel"]), -(0.1 + 0.5 * 0.5), rtol=1e-6)
  assert optim.adapter_mult("img/Transformer/adapter_kernel", (3, 8, 8)) == 1 / 8
  assert optim.adapter_mult("adapter_kernel", (2, 64, 64)) == 1 / 64
  assert optim.adapter_mult("img/Transformer/adapter_bias", (3, 8)) == 1.0
  assert optim.adapter_mult("img/Dense_0/kernel", (8, 8)) == 1.0


def test_adam_moves_an_adapter_by_at_most_lr_in_spectral_norm():
  """Why 1/D: an Adam step of a D x D matrix with a rank-one gradient is a sign matrix of spectral norm lr * D;
  with the default adapter_lr_mult it is lr (the relative step of a gain or a bias)."""
  d, lr = 16, 1e-2
  params = {"stack": {"adapter_kernel": jnp.eye(d)[None], "adapter_bias": jnp.zeros((1, d))}}
  u, v = jnp.linspace(-1, 1, d) + 0.05, jnp.cos(jnp.arange(d))  # a rank-one gradient, no zero entries
  grads = {"stack": {"adapter_kernel": jnp.outer(u, v)[None], "adapter_bias": jnp.zeros((1, d))}}
  for value, bound in (("fan_in", lr), (1.0, lr * d)):
    tx, _ = optim.make_optimizer(
      dict(lr=lr, adapter_lr_mult=value, schedule=dict(decay_type="constant")), total_steps=10
    )
    step = tx.update(grads, tx.init(params), params)[0]["stack"]["adapter_kernel"][0]
    np.testing.assert_allclose(float(jnp.linalg.norm(step, 2)), bound, rtol=1e-3)


@pytest.mark.parametrize("bad", ["1/D", "-1", -1.0, True, float("inf"), [1]])
def test_bad_adapter_lr_mult_is_refused(bad):
  with pytest.raises(ValueError, match="adapter_lr_mult.*'fan_in' or a number >= 0"):
    optim.make_optimizer(dict(lr=0.1, adapter_lr_mult=bad), total_steps=10)


def test_adapter_lr_mult_keeps_the_optimizer_state_structure():
  """The adapter factor lives in the lr-scaling step (no extra transformation): the optimiser state has one
  structure whatever adapter_lr_mult is, so checkpoints written before the key existed still resume."""
  params = _with_adapters()
  structures = {
    str(jax.tree_util.tree_structure(optim.make_optimizer(dict(lr=0.1, wd=0.1, adapter_lr_mult=v), 10)[0].init(params)))
    for v in ("fan_in", 1.0, 0.25)
  }
  assert len(structures) == 1, structures
