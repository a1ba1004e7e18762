"""Tests of siglip_rins/flops.py: analytic FLOPs against XLA's own count, the bench config's size and cost,
stochastic-RINS expectations, KV sharing, compute matching, and a shape-only count of full-size SigLIP B/16."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from siglip_rins import flops
from siglip_rins.models import build_model

# The performance issue's bench config: image 64x64x3, patch 8, width 256, depth 6, heads 4, MLP 1024, learned
# posemb, MAP pooling, no image head; text vocab 32000, 16 tokens, same tower shape, last-token pooling, 256->256 head.
BENCH = dict(
  name="two_towers",
  image=dict(variant="bench/8", posemb="learn", pool_type="map"),
  text=dict(variant="bench", vocab_size=32000, pool_type="last"),
  out_dim=(None, 256),
)
BENCH_SHAPES = {"image": (64, 64), "text": 16}


def _xla_forward_flops(model, *inputs, **kw):
  """XLA's cost analysis of the compiled forward (parameters as abstract arguments; nothing runs)."""
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *inputs))["params"]
  compiled = jax.jit(lambda p, *x: model.apply({"params": p}, *x, **kw)).lower(params, *inputs).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


def _towers(signature, **rec):
  return build_model(
    dict(
      name="two_towers",
      image=dict(variant="nano/4"),
      text=dict(variant="nano", vocab_size=64),
      out_dim=(None, 32),
      recursion=dict(signature=signature, loop="unroll", **rec),
    )
  )


@pytest.mark.parametrize("signature", ["AB", "A^2B"])
def test_two_towers_flops_match_xla(signature):
  model = _towers(signature)
  b = 2
  images, texts = jnp.zeros((b, 16, 16, 3)), jnp.zeros((b, 16), jnp.int32)
  analytic = b * flops.model_flops(model, {"image": (16, 16), "text": 16})["forward"]
  xla = _xla_forward_flops(model, images, texts)
  assert abs(xla / analytic - 1) < 0.05, (xla, analytic)


@pytest.mark.parametrize("kv_sharing", [False, True])
def test_decoder_flops_match_xla(kv_sharing):
  model = build_model(
    dict(
      name="decoder",
      width=128,
      depth=2,
      mlp_dim=512,
      num_heads=4,
      vocab_size=256,
      recursion=dict(signature="A^3B", loop="unroll", kv_sharing=kv_sharing),
    )
  )
  b, t = 2, 32
  analytic = b * flops.model_flops(model, {"tokens": t})["forward"]
  xla = _xla_forward_flops(model, jnp.zeros((b, t), jnp.int32))
  assert abs(xla / analytic - 1) < 0.05, (xla, analytic)


@pytest.mark.parametrize(
  "recursion",
  [
    dict(signature="AB^2C", split="spread"),  # 5 layers -> blocks of 2, 2, 1; B (2 layers) runs twice
    dict(signature="A^2BC", split="spread"),  # the deeper block A runs twice
    dict(signature="AB^2C"),  # the paper's floor split: 1 layer per block, 2 layers dropped
    dict(signature="ABC", layers_per_block=[1, 3, 2], kv_sharing=True),
  ],
)
def test_decoder_flops_match_xla_for_uneven_splits(recursion):
  model = build_model(
    dict(
      name="decoder",
      width=128,
      depth=5,
      mlp_dim=512,
      num_heads=4,
      vocab_size=256,
      recursion=dict(loop="unroll", **recursion),
    )
  )
  b, t = 2, 32
  plan = model.recursion.plan(model.depth)
  analytic = flops.model_flops(model, {"tokens": t})["forward"]
  per_layer = flops.layer_flops(t, t, 128, 512)
  assert analytic == pytest.approx(plan.num_layers_run * per_layer + 2 * t * 128 * 256)
  xla = _xla_forward_flops(model, jnp.zeros((b, t), jnp.int32))
  assert abs(xla / (b * analytic) - 1) < 0.05, (xla, b * analytic)


def test_flops_of_rounds_and_repeat():
  kw = dict(name="decoder", width=128, depth=4, mlp_dim=512, num_heads=4, vocab_size=256)
  model = lambda sig: build_model(dict(kw, recursion=dict(signature=sig, loop="unroll", layers_per_block=2)))
  f = lambda m, **r: flops.model_flops(m, {"tokens": 16}, **r)["forward"]
  assert f(model("ABAB"), rounds=2) == f(model("ABCDE"))  # AABAB: 5 block applications
  assert f(model("ABAB"), repeat=3) == f(model("ABABAB")) == f(model("AB"), repeat=3)
  assert f(model("A^3B"), rounds=1) == f(model("AB"))
  xla = _xla_forward_flops(model("ABAB"), jnp.zeros((2, 16), jnp.int32), rounds=2)
  assert abs(xla / (2 * f(model("ABAB"), rounds=2)) - 1) < 0.05


def test_sweep_parameter_counts_match_the_models():
  rows = flops.sweep_with_params(10, degrees=(1,), split="spread", variant="lm_mu", vocab_size=64)
  floor = flops.sweep_with_params(10, degrees=(1,), variant="lm_mu", vocab_size=64)
  tokens = (jnp.zeros((1, 4), jnp.int32),)
  for row in (rows[4], rows[7], floor[7]):  # ABB (5, 5), ABBC spread (4, 3, 3), ABBC floor (3, 3, 3)
    lpb = row["layers_per_block"]
    rec = dict(signature=row["signature"], layers_per_block=lpb)
    model = build_model(dict(name="decoder", variant="lm_mu", depth=10, vocab_size=64, recursion=rec))
    assert flops.count_params(model, tokens) == row["params"], row
  assert rows[7]["params_rel"] == 1.0 and floor[7]["params_rel"] < 1.0
  assert [r["layers_per_block"] for r in (rows[7], floor[7])] == [[4, 3, 3], 3]


def test_scan_is_undercounted_by_xla_but_not_analytically():
  """XLA counts a scan body once; the analytic count (the same for both loop forms) is what training costs."""
  images = jnp.zeros((2, 16, 16, 3))
  scanned = build_model(dict(name="vit", variant="mu/4", recursion=dict(signature="A^4B", loop="scan")))
  unrolled = build_model(dict(name="vit", variant="mu/4", recursion=dict(signature="A^4B", loop="unroll")))
  assert flops.model_flops(scanned, {"image": (16, 16)}) == flops.model_flops(unrolled, {"image": (16, 16)})
  assert _xla_forward_flops(scanned, images) < 0.9 * _xla_forward_flops(unrolled, images)


def test_bench_config_params_and_train_flops():
  model = build_model(BENCH)
  n = flops.count_params(model, (jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 16), jnp.int32)))
  assert n == 18_595_330
  step = 64 * flops.train_flops_per_example(model, BENCH_SHAPES)
  assert round(step / 1e9, 1) == 154.4
  # Train = 3 x forward except the patch projection (no input gradient): check the parts add up.
  fwd = flops.model_flops(model, BENCH_SHAPES)
  assert fwd["patch"] == 2 * 64 * (8 * 8 * 3) * 256
  assert step == pytest.approx(64 * (3 * fwd["forward"] - fwd["patch"]))


@pytest.mark.parametrize("p_skip", [0.25, 0.5])
def test_expected_flops_under_stochastic_rins(p_skip):
  r = 4
  model = _towers(f"A^{r}B", p_skip=p_skip)
  per_round = {
    k: flops.model_flops(model, {"image": (16, 16), "text": 16}, rounds=k)["forward"] for k in range(1, r + 1)
  }
  got = flops.model_flops(model, {"image": (16, 16), "text": 16}, train=True)
  # Binomial expectation: E[f(1 + Binomial(r-1, 1-p))], written out term by term.
  pmf = stats.binom.pmf(np.arange(r), r - 1, 1 - p_skip)
  expected = sum(pmf[k - 1] * per_round[k] for k in range(1, r + 1))
  assert got["forward"] == pytest.approx(expected, rel=1e-9)
  assert per_round[1] < got["forward"] < per_round[r]
  assert got["expected_rounds"]["img"] == pytest.approx(1 + (r - 1) * (1 - p_skip))
  # Inference (train=False) is deterministic: the trained r.
  assert flops.model_flops(model, {"image": (16, 16), "text": 16})["forward"] == per_round[r]
  assert flops.train_flops_per_example(model, {"image": (16, 16), "text": 16}) == pytest.approx(
    3 * got["forward"] - got["patch"]
  )


def test_kv_sharing_reduces_flops_by_the_skipped_projections():
  t, d, lpb = 32, 128, 1
  kw = dict(name="decoder", width=d, depth=2, mlp_dim=512, num_heads=4, vocab_size=256)
  for r in (2, 3, 4):
    plain = flops.model_flops(build_model(dict(kw, recursion=dict(signature=f"A^{r}B"))), {"tokens": t})
    shared = flops.model_flops(
      build_model(dict(kw, recursion=dict(signature=f"A^{r}B", kv_sharing=True))), {"tokens": t}
    )
    # Rounds 2..r of A skip the key and value projections: 2 matmuls of t x d x d per layer.
    assert plain["forward"] - shared["forward"] == (r - 1) * lpb * 2 * (2 * t * d * d)
  ab = build_model(dict(kw, recursion=dict(signature="AB", kv_sharing=True)))
  assert flops.model_flops(ab, {"tokens": t}) == flops.model_flops(build_model(dict(kw)), {"tokens": t})


def test_matched_budget_arithmetic():
  base, rins = _towers("AB"), _towers("A^2B")
  f_base = flops.train_flops_per_example(base, {"image": (16, 16), "text": 16})
  f_rins = flops.train_flops_per_example(rins, {"image": (16, 16), "text": 16})
  assert 1.3 < f_rins / f_base < 1.5  # one more half of each stack (~1.5x, minus the shared parts)
  out = flops.matched_budget(f_rins, f_base, baseline_examples=1_000_000, batch_size=256)
  assert out["flops_budget"] == pytest.approx(f_base * 1_000_000)
  assert out["matched_examples"] * f_rins == pytest.approx(out["flops_budget"])
  assert out["matched_steps"] == math.floor(1_000_000 * f_base / f_rins / 256)
  same = flops.matched_budget(f_base, f_base, 1000, 100)
  assert same["matched_examples"] == pytest.approx(1000) and same["matched_steps"] == 10


def test_full_size_siglip_b16_param_count():
  model = build_model(
    dict(name="two_towers", image=dict(variant="B/16"), text=dict(variant="B", vocab_size=32000), out_dim=(None, 768))
  )
  n = flops.count_params(model, (jnp.zeros((1, 256, 256, 3)), jnp.zeros((1, 64), jnp.int32)))
  print(f"SigLIP B/16 two towers (256px, text B/32000/64): {n:,} parameters")
  assert 200e6 < n < 206e6  # the released SigLIP B/16-256 has about 203M
