"""Tests of the recursion engine (siglip_rins/recursion.py): parsing, block plans, the App. E.1 sweep, weight
sharing (A^3B == an unrolled copy), loop forms, stochastic rounds, adapters and inference-time rounds.

All models are tiny (width 16, a few tokens) so the file runs in seconds on CPU.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from siglip_rins import flops
from siglip_rins.layers import LayerConfig
from siglip_rins.models import build_model
from siglip_rins.recursion import (
  RecursionConfig,
  RecursiveStack,
  adapter_axis,
  adapter_index,
  compact_signature,
  inference_plan,
  make_plan,
  num_adapters,
  parse_signature,
  sample_rounds,
  skip_tuple,
  split_depth,
  sweep,
  DynamicRepeat,
  DynamicRounds,
  rounds_bucket,
  trained_repeats,
  trained_rounds,
  with_repeat,
  with_rounds,
)

LAYER = LayerConfig(width=16, num_heads=2, mlp_dim=32)


def _x(shape=(2, 5, 16), seed=1):
  return jax.random.normal(jax.random.PRNGKey(seed), shape)


def _stack(signature, depth=4, **kw):
  final_norm = kw.pop("final_norm", True)
  return RecursiveStack(LAYER, depth, RecursionConfig(signature, **kw), final_norm=final_norm)


def random_params(model, *inputs, seed=0, **kw):
  """Parameters for `model` drawn with numpy from the shapes of `model.init` (jax.eval_shape: nothing is
  compiled; per-shape compiles of jax.random initialisers dominate test time on a loaded CPU).  LayerNorm
  scales are 1 + noise; every other leaf is N(0, 0.3^2 / fan_in)."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *inputs, **kw))["params"]
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    noise = rng.normal(size=leaf.shape).astype(np.float32)
    if name.endswith("['scale']"):
      return jnp.asarray(1.0 + 0.1 * noise)
    fan_in = leaf.shape[0] if leaf.ndim >= 2 else 16
    return jnp.asarray(0.3 * noise / np.sqrt(fan_in))

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def a3b_params():
  """Parameters of a depth-2 A^3B stack (1 layer per block) with adapters (numpy-random, adapters included)."""
  return random_params(_stack("A^3B", depth=2, adapters=True), _x())


def _without_adapters(params):
  return {k: v for k, v in params.items() if not k.startswith("adapter_")}


def _close(a, b, tol=1e-5):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


# ------------------------------------------------------------------------------------------------ parsing
@pytest.mark.parametrize(
  "spec, letters, degree",
  [
    ("AB", "AB", 0),
    ("AAB", "AAB", 0),
    ("A^3B", "AAAB", 0),
    ("A^{3}B", "AAAB", 0),
    ("AB^2C", "ABBC", 0),
    ("(ABB)_2", "ABB", 2),
    ("(A^2B)_{3}", "AAB", 3),
    (" A^2 B ", "AAB", 0),
  ],
)
def test_parse_signature_accepts_both_spellings(spec, letters, degree):
  assert parse_signature(spec) == (letters, degree)


def test_compact_signature_round_trips():
  for letters in ["AB", "AAAB", "ABBC", "ABAB", "AABB"]:
    assert parse_signature(compact_signature(letters))[0] == letters
  assert compact_signature("AAAB") == "A^3B"


@pytest.mark.parametrize(
  "call, match",
  [
    (lambda: parse_signature(""), "signature is empty"),
    (lambda: parse_signature("A^0B"), r"exponent of 'A' must be >= 1, got 0"),
    (lambda: parse_signature("a-b"), r"invalid character 'a' at position 0"),
    (lambda: parse_signature("A-B"), r"invalid character '-' at position 1"),
    (lambda: parse_signature("(AB)_0"), "degree must be >= 1, got 0"),
    (lambda: make_plan("AB", degree=0, num_layers=4), r"degree must be an integer >= 1, got 0"),
    (lambda: make_plan("ABC", num_layers=4, split="exact"), r"depth 4 does not divide into 3 unique blocks"),
    (lambda: make_plan("(AB)_3", num_layers=4), r"depth 4 cannot be split into 8 unique blocks"),
    (lambda: make_plan("AAB", num_layers=4, p_skip=1.0), r"p_skip must be in \[0, 1\), got 1.0"),
    (lambda: make_plan("AAB", num_layers=4, p_skip=-0.1), r"p_skip must be in \[0, 1\), got -0.1"),
    (lambda: RecursionConfig("A^2B", p_skip=1.5), r"p_skip must be in \[0, 1\), got 1.5"),
    (lambda: RecursionConfig("A^2B", loop="while"), r"recursion.loop must be one of"),
    (lambda: RecursionConfig.from_dict(dict(signature="AB", rounds=3)), r"unknown recursion key\(s\) \['rounds'\]"),
    (lambda: with_rounds(make_plan("AAB", num_layers=4), 0), "rounds must be an integer >= 1, got 0"),
  ],
)
def test_bad_input_raises_value_error_naming_problem(call, match):
  with pytest.raises(ValueError, match=match):
    call()


@pytest.mark.parametrize(
  "cfg, match",
  [
    (dict(name="vit", variant="mu/4", recursion=dict(signature="")), "model.recursion: signature is empty"),
    (dict(name="vit", variant="mu/4", recursion=dict(signature="ABC", split="exact")), "depth 4 does not divide"),
    (dict(name="vit", variant="mu/4", recursion=dict(signature="ABCDE")), "depth 4 cannot be split into 5"),
    (dict(name="vit", variant="mu/4", recursion=dict(signature="A^2B", p_skip=1.0)), r"p_skip must be in \[0, 1\)"),
    (
      dict(name="two_towers", image=dict(variant="mu/4", recursion=dict(signature="a-b")), text=None),
      r"model.image.recursion: signature 'a-b': invalid character 'a'",
    ),
  ],
)
def test_build_model_rejects_bad_recursion(cfg, match):
  with pytest.raises(ValueError, match=match):
    build_model(cfg)


# ------------------------------------------------------------------------------------------------- plans
def test_degree_two_plan_is_the_papers_expansion():
  # Paper Sec. 2: (ABB)_2 is equivalent to ABB CDD CDD.
  plan = make_plan("(ABB)_2", num_layers=4)
  assert "".join(plan.sequence) == "ABBCDDCDD"
  assert plan.num_unique_blocks == 4 and plan.layers_per_block == 1
  assert make_plan("ABB", degree=2, num_layers=4).sequence == plan.sequence


def test_skip_tuple_and_runs_of_stochastic_rins():
  plan = make_plan("A^4B", num_layers=4, p_skip=0.25)
  assert plan.skip == (0.0, 0.25, 0.25, 0.25, 0.0) == skip_tuple("AAAAB", 0.25)
  runs = plan.runs()
  assert [(r.name, r.count) for r in runs] == [("A", 4), ("B", 1)]
  assert runs[0].skip == (0.0, 0.25, 0.25, 0.25)


@pytest.mark.parametrize(
  "signature, rounds, repeat",
  [
    # rounds=k: the first block's leading run k times, the rest as trained (A^kB for every A^rB).
    ("AB", {1: "AB", 2: "AAB", 3: "AAAB"}, {1: "AB", 2: "ABAB", 3: "ABABAB"}),
    ("A^3B", {1: "AB", 2: "AAB", 4: "AAAAB"}, {1: "AAAB", 2: "AAABAAAB"}),
    ("ABAB", {1: "ABAB", 2: "AABAB", 3: "AAABAB"}, {1: "AB", 2: "ABAB", 3: "ABABAB"}),
    ("ABB", {1: "ABB", 3: "AAABB"}, {2: "ABBABB"}),
    ("AAAA", {1: "A", 2: "AA", 5: "AAAAA"}, {1: "A", 3: "AAA"}),
  ],
)
def test_rounds_run_the_leading_block_and_repeat_the_unit(signature, rounds, repeat):
  # Old behaviour (the bug): rounds=k on ABAB (and on AB, whose unit AB "repeats") ran the unit k times.
  plan = make_plan(signature, num_layers=4)
  for k, want in rounds.items():
    got = with_rounds(plan, k)
    assert "".join(got.sequence) == want and trained_rounds(got) == k
  for k, want in repeat.items():
    got = with_repeat(plan, k)
    assert "".join(got.sequence) == want and got.repeats == k
  assert "".join(inference_plan(plan).sequence) == plan.letters
  # Both axes compose: the unit is repeated, then the leading run of the first unit takes `rounds`.
  assert "".join(inference_plan(make_plan("ABAB", num_layers=4), rounds=2, repeat=3).sequence) == "AABABAB"


def test_trained_counts_and_adapter_axis():
  expected = {  # signature: (trained rounds, trained repeats, adapter axis, adapters)
    "AB": (1, 1, "rounds", 1),
    "A^2B": (2, 1, "rounds", 2),
    "A^3B": (3, 1, "rounds", 3),
    "ABAB": (1, 2, "repeat", 2),
    "ABABAB": (1, 3, "repeat", 3),
    "AAAA": (4, 4, "rounds", 4),
    "ABB": (1, 1, "rounds", 1),
  }
  for sig, (r, rep, axis, n) in expected.items():
    plan = make_plan(sig, num_layers=4)
    assert (trained_rounds(plan), trained_repeats(plan), adapter_axis(plan), num_adapters(plan)) == (r, rep, axis, n)
    assert adapter_index(plan, plan) == n  # the trained signature uses the last adapter
  abab = make_plan("ABAB", num_layers=4)
  assert [adapter_index(abab, with_repeat(abab, k)) for k in (1, 2, 3)] == [1, 2, 2]
  assert adapter_index(abab, with_rounds(abab, 3)) == 2  # rounds do not change the unit count
  a3b = make_plan("A^3B", num_layers=4)
  assert [adapter_index(a3b, with_rounds(a3b, k)) for k in (1, 2, 3, 5)] == [1, 2, 3, 3]


def _adapter_used(stack, params, x, **kw):
  """(info, 1-based index of the adapter whose affine map explains the output) for random adapters."""
  plain = _stack(stack.recursion.signature, depth=stack.num_layers, final_norm=False, loop="unroll")
  y, info = stack.apply({"params": params}, x, **kw)
  base, _ = plain.apply({"params": _without_adapters(params)}, x, **kw)
  kern, bias = params["adapter_kernel"], params["adapter_bias"]
  errors = [float(np.abs(np.asarray(y - (base @ kern[j] + bias[j]))).max()) for j in range(kern.shape[0])]
  (used,) = [j + 1 for j, e in enumerate(errors) if e < 1e-4]
  return {k: int(v) for k, v in info.items()}, used


@pytest.mark.parametrize(
  "signature, calls",
  [
    # (apply kwargs, info rounds, info repeats, adapter)
    ("AB", [({}, 1, 1, 1), (dict(rounds=3), 3, 1, 1), (dict(repeat=2), 1, 2, 1)]),
    ("A^3B", [({}, 3, 1, 3), (dict(rounds=1), 1, 1, 1), (dict(rounds=2), 2, 1, 2), (dict(repeat=2), 3, 2, 3)]),
    # Old behaviour (the bug): ABAB reported rounds 1 with 2 adapters, so the trained model used adapter 1.
    ("ABAB", [({}, 1, 2, 2), (dict(repeat=1), 1, 1, 1), (dict(rounds=2), 2, 2, 2), (dict(repeat=3), 1, 3, 2)]),
  ],
)
def test_info_and_adapter_choice_for_each_signature(signature, calls):
  x = _x()
  stack = _stack(signature, depth=2, adapters=True, final_norm=False, loop="unroll")
  params = random_params(stack, x)
  n = num_adapters(stack.trained_plan())
  assert params["adapter_kernel"].shape == (n, 16, 16)
  params = dict(
    params,
    adapter_kernel=jax.random.normal(jax.random.PRNGKey(7), (n, 16, 16)),
    adapter_bias=jax.random.normal(jax.random.PRNGKey(8), (n, 16)),
  )
  for kw, rounds, repeats, adapter in calls:
    info, used = _adapter_used(stack, params, x, **kw)
    assert (info["rounds"], info["repeats"], used) == (rounds, repeats, adapter), (kw, info, used)


def test_rounds_and_repeat_reuse_parameters_of_abab():
  x = _x()
  abab = _stack("ABAB", depth=2, loop="unroll")
  params = random_params(abab, x)
  distinct = lambda order: _stack("".join(chr(ord("A") + i) for i in range(len(order))), layers_per_block=1)
  for kw, order in [(dict(rounds=2), "AABAB"), (dict(repeat=3), "ABABAB"), (dict(repeat=1), "AB"), ({}, "ABAB")]:
    want = distinct(order).apply({"params": _copy_blocks(params, order)}, x)[0]
    _close(abab.apply({"params": params}, x, **kw)[0], want)


def test_stochastic_repeats_count_units_that_ran():
  stack = _stack("ABABAB", depth=2, p_skip=0.5)  # skips (0, p, p, p, p, 0): the middle unit may vanish
  x = _x()
  params = random_params(stack, x)
  fn = jax.jit(jax.vmap(lambda k: stack.apply({"params": params}, x, train=True, rngs={"rins": k})[1]))
  info = fn(jax.random.split(jax.random.PRNGKey(0), 64))
  assert set(np.asarray(info["repeats"]).tolist()) == {2, 3}
  assert (np.asarray(info["rounds"]) == 1).all()


@pytest.mark.parametrize("kw", [dict(rounds=2), dict(repeat=2)])
def test_degree_two_refuses_inference_rounds(kw):
  plan = make_plan("(ABB)_2", num_layers=4)
  call = (lambda: with_rounds(plan, 2)) if "rounds" in kw else (lambda: with_repeat(plan, 2))
  with pytest.raises(ValueError, match=r"degree-1 signatures .*'\(AB\^2\)_2' has degree 2"):
    call()
  stack = _stack("(ABB)_2", depth=4)
  params = random_params(stack, _x())
  with pytest.raises(ValueError, match="degree 2"):
    stack.apply({"params": params}, _x(), **kw)
  stack.apply({"params": params}, _x())  # the trained nesting itself runs


def _sweep_by_rules(num_layers):
  """App. E.1, written independently: baseline A; RAO AA, AAA, AAAA; nine signatures x degrees 1-3 whose
  layers per unique block (num_layers // distinct_letters ** degree) is positive."""
  entries = [("A", 1)] + [("A" * n, 1) for n in (2, 3, 4)]
  others = ["ABB", "ABA", "AAB", "ABBC", "AABC", "ABCC", "ABBB", "AAAB", "AABB"]
  entries += list(itertools.product(others, (1, 2, 3)))
  kept = []
  for sig, degree in entries:
    distinct = len(sorted({c for c in sig}))
    unique_blocks = distinct**degree
    if num_layers // unique_blocks > 0:
      kept.append((sig, degree, unique_blocks, num_layers // unique_blocks))
  return kept


def test_sweep_matches_app_e1_rules_for_12_layers():
  got = [(e["signature"], e["degree"], e["unique_blocks"], e["layers_per_block"]) for e in sweep(12)]
  expected = _sweep_by_rules(12)
  assert got == expected
  # 4 (baseline + RAO) + 6 two-letter signatures x 3 degrees (2, 4, 8 unique blocks <= 12)
  # + 3 three-letter signatures x 2 degrees (3, 9 <= 12 < 27).
  assert len(got) == 4 + 6 * 3 + 3 * 2
  for e in sweep(12):
    plan = make_plan(e["signature"], e["degree"], layers_per_block=e["layers_per_block"])
    assert plan.num_unique_blocks == e["unique_blocks"]  # the engine builds as many blocks as the rule
    assert e["exact"] == (plan.num_layers_param == 12)
  assert sweep(2) == [e for e in sweep(2) if e["unique_blocks"] <= 2]


def _spread_by_rules(num_layers, unique_blocks):
  """The documented 'spread' split, written independently: all layers kept, earlier blocks get the extra ones."""
  sizes = [0] * unique_blocks
  for i in range(num_layers):
    sizes[i % unique_blocks] += 1
  return sizes


def test_split_depth_rules():
  assert split_depth(12, 3) == (4, 4, 4) == split_depth(12, 3, "spread") == split_depth(12, 3, "exact")
  assert split_depth(10, 3) == (3, 3, 3)  # the paper's App. E.1 rule: 10 // 3 layers each, one dropped
  assert split_depth(10, 3, "spread") == (4, 3, 3)
  assert split_depth(16, 9, "spread") == (2,) * 7 + (1, 1)
  with pytest.raises(ValueError, match=r"depth 10 does not divide into 3 unique blocks .*split='floor'"):
    split_depth(10, 3, "exact")
  with pytest.raises(ValueError, match=r"depth 2 cannot be split into 3 unique blocks"):
    split_depth(2, 3, "spread")
  with pytest.raises(ValueError, match=r"recursion.split must be one of"):
    RecursionConfig("AB", split="even")


@pytest.mark.parametrize("split", ["floor", "spread"])
def test_sweep_for_an_indivisible_depth(split):
  got = sweep(10, split=split)
  rules = _sweep_by_rules(10)
  assert [(e["signature"], e["degree"], e["unique_blocks"]) for e in got] == [r[:3] for r in rules]
  # 4 + 6 two-letter signatures x 3 degrees (2, 4, 8 <= 10) + 3 three-letter x 2 degrees (3, 9 <= 10 < 27)
  assert len(got) == 28
  for e, (sig, degree, n, floor_lpb) in zip(got, rules):
    sizes = [floor_lpb] * n if split == "floor" else _spread_by_rules(10, n)
    assert e["layers_per_block"] == (sizes[0] if len(set(sizes)) == 1 else sizes)
    assert e["unique_layers"] == sum(sizes) and e["dropped_layers"] == 10 - sum(sizes)
    assert e["exact"] == (sum(sizes) == 10) and e["param_layers_rel"] == sum(sizes) / 10
    plan = make_plan(sig, degree, num_layers=10, split=split)
    assert e["layers_run"] == sum(plan.layers(b) for b in plan.sequence) == round(e["compute_rel"] * 10)
  by_sig = {(e["signature"], e["degree"]): e for e in got}
  if split == "floor":
    assert by_sig[("ABBC", 1)]["layers_per_block"] == 3 and by_sig[("ABBC", 1)]["dropped_layers"] == 1
    assert by_sig[("ABB", 2)]["layers_per_block"] == 2 and by_sig[("ABB", 2)]["dropped_layers"] == 2
  else:
    assert by_sig[("ABBC", 1)]["layers_per_block"] == [4, 3, 3] and by_sig[("ABBC", 1)]["layers_run"] == 13
    assert by_sig[("AABC", 1)]["layers_run"] == 14  # the deeper block A runs twice
  assert [e["degree"] for e in sweep(10, degrees=(2,))] == [2] * 9


def test_uneven_split_runs_its_layers_in_order():
  """ABC over 5 layers, spread: blocks of 2, 2, 1 layers, equal to one 5-layer block with the same layers."""
  x = _x()
  uneven = _stack("ABC", depth=5, split="spread", loop="unroll")
  assert uneven.trained_plan().block_layers == (2, 2, 1)
  params = random_params(uneven, x)
  assert {k: sorted(v) for k, v in params.items() if k != "encoder_norm"} == {
    "A": ["encoderblock_0", "encoderblock_1"],
    "B": ["encoderblock_0", "encoderblock_1"],
    "C": ["encoderblock_0"],
  }
  layers = [params[b][f"encoderblock_{j}"] for b, n in (("A", 2), ("B", 2), ("C", 1)) for j in range(n)]
  flat = {"A": {f"encoderblock_{i}": p for i, p in enumerate(layers)}, "encoder_norm": params["encoder_norm"]}
  _close(uneven.apply({"params": params}, x)[0], _stack("A", layers_per_block=5).apply({"params": flat}, x)[0])
  # The same blocks from an explicit per-block list, and the paper's floor split (one layer dropped).
  listed = _stack("ABC", layers_per_block=[2, 2, 1], loop="unroll")
  _close(listed.apply({"params": params}, x)[0], uneven.apply({"params": params}, x)[0])
  assert _stack("ABC", depth=5).trained_plan().block_layers == (1, 1, 1)
  with pytest.raises(ValueError, match=r"one integer per unique block \(3 blocks"):
    _stack("ABC", layers_per_block=[2, 2]).trained_plan()


@pytest.mark.parametrize("split, lpb, params_layers", [("floor", None, 9), ("spread", None, 10), (None, [2, 3, 5], 10)])
def test_indivisible_decoder_config_builds_and_runs(split, lpb, params_layers):
  rec = dict(signature="AB^2C")
  if split:
    rec["split"] = split
  if lpb:
    rec["layers_per_block"] = lpb
  kw = dict(name="decoder", vocab_size=32, width=16, depth=10, mlp_dim=32, num_heads=2)
  model = build_model(dict(kw, recursion=rec))
  tokens = jnp.arange(8, dtype=jnp.int32).reshape(2, 4)
  params = random_params(model, tokens)
  logits = jax.jit(lambda p, t: model.apply({"params": p}, t))(params, tokens)
  assert logits.shape == (2, 4, 32) and np.isfinite(np.asarray(logits)).all()
  per_layer = flops.count_params(build_model(dict(kw, depth=2)), (tokens,)) - flops.count_params(
    build_model(dict(kw, depth=1, recursion=dict(signature="A"))), (tokens,)
  )
  base = flops.count_params(build_model(kw), (tokens,))
  assert flops.count_params(model, (tokens,)) == base - (10 - params_layers) * per_layer
  if lpb is None:  # the sweep's parameter count (two shape-only builds) agrees with the model's own
    (entry,) = [e for e in sweep(10, degrees=(1,), split=split) if e["signature"] == "ABBC"]
    assert entry["unique_layers"] == params_layers


def test_equal_parameter_counts_across_signatures():
  tokens = jnp.zeros((1, 4), jnp.int32)
  counts = {}
  for sig in ["AB", "AAB", "ABAB", "AAAB", "A^8B"]:
    model = build_model(
      dict(name="text", vocab_size=32, width=16, depth=4, mlp_dim=32, num_heads=2, recursion=dict(signature=sig))
    )
    counts[sig] = flops.count_params(model, (tokens,))
  assert len(set(counts.values())) == 1, counts
  assert counts["AB"] > 0


# -------------------------------------------------------------------------------------- weight sharing
def _copy_blocks(params, order):
  """Distinct-block params {'A': src[order[0]], 'B': src[order[1]], ...} plus the final norm."""
  out = {chr(ord("A") + i): params[name] for i, name in enumerate(order)}
  out["encoder_norm"] = params["encoder_norm"]
  return out


@pytest.mark.parametrize("loop", ["scan", "unroll"])
def test_shared_a3b_equals_unrolled_distinct_copies(loop, a3b_params):
  x = _x()
  params = _without_adapters(a3b_params)
  y_shared, info = _stack("A^3B", depth=2, loop=loop).apply({"params": params}, x)
  distinct = _stack("ABCD", layers_per_block=1, loop=loop)
  y_distinct, _ = distinct.apply({"params": _copy_blocks(params, "AAAB")}, x)
  _close(y_shared, y_distinct)
  assert int(info["rounds"]) == 3
  # Sanity: the copies matter (A,B,B,B is a different function).
  y_other, _ = distinct.apply({"params": _copy_blocks(params, "ABBB")}, x)
  assert np.abs(np.asarray(y_other - y_shared)).max() > 1e-3


def test_shared_tower_equals_distinct_tower():
  """The same through a whole tower from build_model (text tower, parameter tree 'Encoder_0')."""
  tokens = jnp.arange(10, dtype=jnp.int32).reshape(2, 5)
  base = dict(name="text", vocab_size=16, width=16, depth=2, mlp_dim=32, num_heads=2, num_classes=8)
  shared = build_model({**base, "recursion": dict(signature="A^3B")})
  distinct = build_model({**base, "recursion": dict(signature="ABCD", layers_per_block=1, loop="unroll")})
  params = random_params(shared, tokens)
  dparams = dict(params, Encoder_0=_copy_blocks(params["Encoder_0"], "AAAB"))
  _close(shared.apply({"params": params}, tokens)[0], distinct.apply({"params": dparams}, tokens)[0])


def test_degree_two_equals_flattened_distinct_blocks():
  x = _x()
  nested = _stack("(AAB)_2", depth=4, loop="unroll")  # 4 unique blocks of 1 layer; runs AAB AAB CCD
  plan = nested.trained_plan()
  assert "".join(plan.sequence) == "AABAABCCD"
  params = random_params(nested, x)
  assert sorted(params) == ["A", "B", "C", "D", "encoder_norm"]
  flat = _stack("ABCDEFGHI", layers_per_block=1, loop="unroll")
  _close(nested.apply({"params": params}, x)[0], flat.apply({"params": _copy_blocks(params, plan.sequence)}, x)[0])
  # The scanned form of the nested plan agrees too.
  _close(_stack("(AAB)_2", depth=4).apply({"params": params}, x)[0], nested.apply({"params": params}, x)[0])


def _loss_and_grad(stack, params, x, **kw):
  def loss(p):
    y, _ = stack.apply({"params": p}, x, **kw)
    return jnp.sum(y**2) / y.size

  return jax.jit(jax.value_and_grad(loss))(params)


def test_scan_unroll_and_remat_agree_on_outputs_and_gradients(a3b_params):
  x = _x()
  params = _without_adapters(a3b_params)
  loss_ref, grad_ref = _loss_and_grad(_stack("A^3B", depth=2, loop="unroll"), params, x)
  forms = [("scan", False), ("scan", True), ("unroll", True), ("scan", "dots"), ("scan", "dots_no_batch")]
  for loop, remat in forms + [("unroll", "dots")]:
    loss, grad = _loss_and_grad(_stack("A^3B", depth=2, loop=loop, remat=remat), params, x)
    _close(loss, loss_ref)
    jax.tree.map(lambda a, b: _close(a, b, 1e-4), grad, grad_ref)
  assert float(jnp.abs(grad_ref["A"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["kernel"]).max()) > 0
  # Same with stochastic skipping (the same 'rins' key draws the same rounds in both loop forms).
  rngs = {"rins": jax.random.PRNGKey(3)}
  outs = [
    _stack("A^3B", depth=2, loop=loop, p_skip=0.5).apply({"params": params}, x, train=True, rngs=rngs)
    for loop in ("scan", "unroll")
  ]
  _close(outs[0][0], outs[1][0])
  assert int(outs[0][1]["rounds"]) == int(outs[1][1]["rounds"])


# ------------------------------------------------------------------------------------ stochastic rounds
IMAGES = jax.random.uniform(jax.random.PRNGKey(5), (2, 8, 8, 3), minval=-1, maxval=1)


def _tiny_a4b(p_skip, adapters=False):
  """Image-only two towers (4 patches of 4x4, width 16) with signature A^4B."""
  return build_model(
    dict(
      name="two_towers",
      image=dict(width=16, depth=2, mlp_dim=32, num_heads=2, patch_size=4, pool_type="gap"),
      recursion=dict(signature="A^4B", p_skip=p_skip, adapters=adapters),
    )
  )


def _apply_over_keys(model, params, n, seed=0, train=True):
  """(zimg [n, B, D], rounds/img [n]) for n different 'rins' keys (one jitted, vmapped apply)."""
  keys = jax.random.split(jax.random.PRNGKey(seed), n)
  fn = jax.jit(jax.vmap(lambda k: model.apply({"params": params}, IMAGES, train=train, rngs={"rins": k})))
  z, _, out = fn(keys)
  return np.asarray(z), np.asarray(out["rounds/img"])


@pytest.mark.parametrize("p_skip", [0.25, 0.5])
def test_drawn_rounds_follow_one_plus_binomial(p_skip):
  model = _tiny_a4b(p_skip)
  params = random_params(model, IMAGES)
  n, r = 4000, 4
  _, rounds = _apply_over_keys(model, params, n)
  observed = np.bincount(rounds, minlength=r + 1)[1 : r + 1]
  assert observed.sum() == n  # always between 1 and r
  expected = n * stats.binom.pmf(np.arange(r), r - 1, 1 - p_skip)  # rounds = 1 + Binomial(r-1, 1-p)
  assert stats.chisquare(observed, expected).pvalue > 1e-3, (observed, expected)
  assert abs(rounds.mean() - (1 + (r - 1) * (1 - p_skip))) < 0.05
  # The engine's helper draws from the same law.
  helper = np.asarray(sample_rounds(jax.random.PRNGKey(1), r, p_skip, (n,)))
  assert stats.chisquare(np.bincount(helper, minlength=r + 1)[1:], expected).pvalue > 1e-3


def test_stochastic_forward_equals_deterministic_forward_at_drawn_rounds():
  model = _tiny_a4b(0.5, adapters=True)
  params = random_params(model, IMAGES)  # random (non-identity) adapters: the adapter choice shows
  z, rounds = _apply_over_keys(model, params, 16, seed=1)
  assert len(set(rounds.tolist())) >= 2, rounds
  for k in sorted(set(rounds.tolist())):
    z_det = model.apply({"params": params}, IMAGES, rounds=k)[0]
    for i in np.flatnonzero(rounds == k):
      _close(z[i], z_det, 1e-4)
  z_other = model.apply({"params": params}, IMAGES, rounds=int(rounds[0]) % 4 + 1)[0]
  assert np.abs(z[0] - np.asarray(z_other)).max() > 1e-4


def test_stochastic_gradients_equal_deterministic_gradients_at_drawn_rounds():
  """Gradient flow through skipped rounds (nn.cond): a step that drew k rounds has exactly the gradients of the
  deterministic A^kB model -- block A gets the gradient of its k applications, only adapter k gets one."""
  model = _tiny_a4b(0.5, adapters=True)
  params = random_params(model, IMAGES)
  target = jax.random.normal(jax.random.PRNGKey(3), (2, 16))

  def loss(p, key=None, rounds=None):
    kw = dict(train=True, rngs={"rins": key}) if key is not None else dict(rounds=rounds)
    z, _, out = model.apply({"params": p}, IMAGES, **kw)
    return jnp.sum((z - target) ** 2), out["rounds/img"]

  grad_at = jax.jit(jax.grad(lambda p, key: loss(p, key=key), has_aux=True))
  grad_det = jax.jit(jax.grad(lambda p, k: loss(p, rounds=k), has_aux=True), static_argnums=1)
  seen = set()
  for seed in range(12):
    g, k = grad_at(params, jax.random.PRNGKey(seed))
    k = int(k)
    if k in seen:
      continue
    seen.add(k)
    want, _ = grad_det(params, k)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g), jax.tree.leaves(want)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6, err_msg=f"{path} k={k}")
    adapter_grad = np.asarray(g["img"]["Transformer"]["adapter_kernel"])
    used = [bool(np.abs(adapter_grad[j]).max() > 0) for j in range(4)]
    assert used == [j == k - 1 for j in range(4)], (k, used)
    assert (
      np.abs(np.asarray(g["img"]["Transformer"]["A"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["kernel"])).max() > 0
    )
  assert len(seen) >= 2, seen


def test_p_skip_zero_and_eval_are_deterministic():
  for p_skip, train in [(0.0, True), (0.5, False)]:
    model = _tiny_a4b(p_skip)
    params = random_params(model, IMAGES)
    z, rounds = _apply_over_keys(model, params, 32, train=train)
    assert (rounds == 4).all()
    np.testing.assert_array_equal(z, np.broadcast_to(z[:1], z.shape))


# ------------------------------------------------------------------------------------------- adapters
def test_adapters_at_identity_init_leave_outputs_unchanged():
  x = _x()
  a3b_params = jax.jit(_stack("A^3B", depth=2, adapters=True).init)(jax.random.PRNGKey(0), x)["params"]
  np.testing.assert_array_equal(np.asarray(a3b_params["adapter_kernel"]), np.broadcast_to(np.eye(16), (3, 16, 16)))
  np.testing.assert_array_equal(np.asarray(a3b_params["adapter_bias"]), np.zeros((3, 16)))
  with_ad, plain = _stack("A^3B", depth=2, adapters=True, loop="unroll"), _stack("A^3B", depth=2, loop="unroll")
  for rounds in (None, 1, 5):
    _close(
      with_ad.apply({"params": a3b_params}, x, rounds=rounds)[0],
      plain.apply({"params": _without_adapters(a3b_params)}, x, rounds=rounds)[0],
    )


def test_kth_adapter_is_applied_after_k_rounds(a3b_params):
  x = _x()
  with_ad = _stack("A^3B", depth=2, adapters=True, final_norm=False, loop="unroll")
  plain = _stack("A^3B", depth=2, final_norm=False, loop="unroll")
  kernels = jax.random.normal(jax.random.PRNGKey(7), (3, 16, 16))
  biases = jax.random.normal(jax.random.PRNGKey(8), (3, 16))
  params = dict(a3b_params, adapter_kernel=kernels, adapter_bias=biases)
  for rounds, k in [(1, 1), (2, 2), (3, 3), (5, 3)]:  # above r_max = 3 the last adapter is used
    y, info = with_ad.apply({"params": params}, x, rounds=rounds)
    base, _ = plain.apply({"params": _without_adapters(params)}, x, rounds=rounds)
    assert int(info["rounds"]) == rounds
    errors = [float(np.abs(np.asarray(y - (base @ kernels[j] + biases[j]))).max()) for j in range(3)]
    assert errors[k - 1] < 1e-4 and all(e > 1e-2 for j, e in enumerate(errors) if j != k - 1), (rounds, errors)


# ------------------------------------------------------------------------------- inference-time rounds
def test_inference_rounds_reuse_parameters(a3b_params):
  x = _x()
  params = _without_adapters(a3b_params)
  a2b = _stack("A^2B", depth=2, loop="unroll")
  # rounds=1 is the AB model with the same parameters.
  _close(a2b.apply({"params": params}, x, rounds=1)[0], _stack("AB", depth=2).apply({"params": params}, x)[0])
  outs = []
  for k in range(1, 6):
    y, info = a2b.apply({"params": params}, x, rounds=k)  # no new parameters: the same variables apply
    assert int(info["rounds"]) == k
    # A^kB equals k copies of A then B as distinct blocks.
    distinct = _stack("".join(chr(ord("A") + i) for i in range(k + 1)), layers_per_block=1, loop="unroll")
    _close(y, distinct.apply({"params": _copy_blocks(params, "A" * k + "B")}, x)[0])
    outs.append(np.asarray(y))
  assert all(np.abs(outs[i] - outs[i + 1]).max() > 1e-4 for i in range(4))
  _close(a2b.apply({"params": params}, x)[0], outs[1])  # the default is the trained r = 2
  # The scanned default loop runs extra rounds the same way.
  _close(_stack("A^2B", depth=2).apply({"params": params}, x, rounds=5)[0], outs[4])
  assert jax.tree.map(jnp.shape, jax.eval_shape(lambda: a2b.init(jax.random.PRNGKey(0), x, rounds=5))) == jax.tree.map(
    jnp.shape, {"params": params}
  )


def test_remat_dots_policy_saves_mixed_precision_products():
  """Under the bf16 policy the products sit inside a custom VJP; remat='dots' saves them by name, so the scanned
  backward pass does not recompute them (the loss and gradients equal the non-remat ones)."""
  from siglip_rins.models import build_model

  base = dict(name="vit", variant="mu/8", pool_type="gap", precision="bfloat16")
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 3), minval=-1, maxval=1)
  plain = build_model({**base, "recursion": dict(signature="A^3B", loop="scan")})
  dots = build_model({**base, "recursion": dict(signature="A^3B", loop="scan", remat="dots")})
  params = plain.init(jax.random.PRNGKey(1), x)["params"]

  def loss(m):
    return jax.jit(jax.value_and_grad(lambda p: jnp.sum(m.apply({"params": p}, x)[0] ** 2)))(params)

  (l0, g0), (l1, g1) = loss(plain), loss(dots)
  _close(l1, l0)
  jax.tree.map(lambda a, b: _close(a, b, 1e-4), g1, g0)
  jaxpr = str(jax.make_jaxpr(jax.grad(lambda p: jnp.sum(dots.apply({"params": p}, x)[0] ** 2)))(params))
  assert "policy_dot" in jaxpr


def test_stochastic_rounds_keep_only_the_carry_of_rounds_that_may_be_skipped():
  """A differentiated cond returns the union of its branches' residuals (zeros from the skipped branch), so the
  remat of a round that may be skipped sits inside the taken branch and loop='auto' keeps only its carry: the
  compiled gradient's scratch memory stays near the deterministic carry-only (remat=True) step's, far below the
  un-rematerialised stochastic scan's (which writes a full round of residuals even for skipped rounds)."""

  def temp_bytes(p_skip, loop, remat):
    m = build_model(
      dict(
        name="vit",
        variant="mu/8",
        posemb="learn",
        pool_type="map",
        num_classes=0,
        recursion=dict(signature="A^4B", p_skip=p_skip, loop=loop, remat=remat),
      )
    )
    x = jnp.zeros((8, 32, 32, 3))
    params = m.init(jax.random.PRNGKey(0), x)["params"]

    def loss(p, k):
      out = m.apply({"params": p}, x, train=True, rngs={"rins": k})
      return jnp.sum((out[0] if isinstance(out, tuple) else out) ** 2)

    compiled = jax.jit(jax.grad(loss)).lower(params, jax.random.PRNGKey(1)).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  stochastic_auto = temp_bytes(0.5, "auto", False)
  assert stochastic_auto < 0.5 * temp_bytes(0.5, "scan", False)
  assert stochastic_auto < 2.5 * temp_bytes(0.0, "scan", True)


# ----------------------------------------------------------------------- rounds / repeats given at run time
_DYNAMIC = {"rounds": DynamicRounds, "repeat": DynamicRepeat}


@pytest.mark.parametrize(
  "axis, signature, kw",
  [
    ("rounds", "AB", {}),
    ("rounds", "A^3B", dict(adapters=True)),
    ("rounds", "ABAB", {}),
    ("rounds", "A^2B", dict(kv_sharing=True)),
    ("rounds", "A^2B", dict(loop="unroll")),
    ("rounds", "AAAA", dict(adapters=True)),
    ("repeat", "ABAB", {}),
    ("repeat", "ABAB", dict(adapters=True)),
    ("repeat", "A^2B", {}),
    ("repeat", "AB", dict(loop="unroll")),
    ("repeat", "AAAA", {}),
  ],
)
def test_dynamic_count_equals_the_static_plan(axis, signature, kw):
  """One program (the count along `axis` -- the first block's rounds, A^kB, or the unit's repeats, RAO's
  (unit)^k -- a traced argument; bucket 4 or 8) gives what the static plan gives for every k in the bucket: the
  same output within float tolerance, the same info['rounds'] / ['repeats'] and so the same adapter; values
  outside 1..bucket are clipped."""
  model = _stack(signature, depth=2 if signature == "AAAA" else 4, **kw)
  x = _x()
  params = random_params(model, x, seed=3)
  dynamic = _DYNAMIC[axis]
  run = jax.jit(lambda k, m: model.apply({"params": params}, x, **{axis: dynamic(k, m)}), static_argnums=1)
  for k in range(1, 7):
    want, want_info = model.apply({"params": params}, x, **{axis: k})
    got, info = run(jnp.int32(k), rounds_bucket(k))
    _close(got, want)
    assert int(info["rounds"]) == int(want_info["rounds"]) and int(info["repeats"]) == int(want_info["repeats"])
    assert int(info["rounds" if axis == "rounds" else "repeats"]) == k
  assert run._cache_size() == 2  # k = 1..4 and 5..6: two programs
  _close(run(jnp.int32(9), 4)[0], model.apply({"params": params}, x, **{axis: 4})[0])
  _close(run(jnp.int32(0), 4)[0], model.apply({"params": params}, x, **{axis: 1})[0])
  with pytest.raises(ValueError, match="inference"):
    model.apply({"params": params}, x, train=True, **{axis: dynamic(2, 4)}, rngs={"rins": jax.random.PRNGKey(0)})
  with pytest.raises(ValueError, match="only one"):
    model.apply({"params": params}, x, rounds=DynamicRounds(2, 4), repeat=DynamicRepeat(2, 4))


def test_rounds_bucket():
  assert [rounds_bucket(k) for k in (1, 4, 5, 8, 9)] == [4, 4, 8, 8, 12]
  with pytest.raises(ValueError, match="rounds"):
    rounds_bucket(0)
