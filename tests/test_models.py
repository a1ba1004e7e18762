"""Tests of the towers from `build_model`: the decoder LM's KV cache (incremental decoding, KV sharing, packing),
the two-tower / classifier output contracts, config validation, and shape-only (jax.eval_shape) builds of the
full-size models (B/16 two towers, lm_1b) on CPU.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from siglip_rins.flops import count_params
from siglip_rins.models import build_model, init_cache
from siglip_rins.models.decoder import cache_bytes
from test_recursion import random_params

VOCAB, WIDTH, HEADS = 40, 16, 2


def _decoder(signature="AB", kv_sharing=False, loop="scan", depth=2):
  return build_model(
    dict(
      name="decoder",
      vocab_size=VOCAB,
      width=WIDTH,
      depth=depth,
      mlp_dim=32,
      num_heads=HEADS,
      recursion=dict(signature=signature, kv_sharing=kv_sharing, loop=loop),
    )
  )


def _tokens(shape, seed=2):
  return jax.random.randint(jax.random.PRNGKey(seed), shape, 0, VOCAB)


# ---------------------------------------------------------------------------------------- decoder LM
@pytest.mark.parametrize(
  "signature, kv_sharing, loop", [("AB", False, "scan"), ("A^2B", False, "scan"), ("A^2B", True, "unroll")]
)
def test_incremental_decoding_reproduces_full_sequence_logits(signature, kv_sharing, loop):
  model = _decoder(signature, kv_sharing, loop)
  b, t = 2, 6
  tokens = _tokens((b, t))
  params = random_params(model, tokens)
  full = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, tokens)
  cache = init_cache(model, params, b, t)

  @jax.jit
  def step(cache, token, position):
    logits, mutated = model.apply(
      {"params": params, "cache": cache}, token, positions=position, decode=True, mutable=["cache"]
    )
    return logits, mutated["cache"]

  steps = []
  for i in range(t):
    logits, cache = step(cache, tokens[:, i : i + 1], jnp.full((b, 1), i, jnp.int32))
    steps.append(logits)
  np.testing.assert_allclose(np.concatenate(steps, axis=1), np.asarray(full), rtol=1e-4, atol=1e-4)
  # Causality is real: changing the last token does not change earlier logits but changes the last ones.
  changed = model.apply({"params": params}, tokens.at[:, -1].set((tokens[:, -1] + 1) % VOCAB))
  np.testing.assert_allclose(np.asarray(changed[:, :-1]), np.asarray(full[:, :-1]), rtol=1e-5, atol=1e-5)
  assert np.abs(np.asarray(changed[:, -1] - full[:, -1])).max() > 1e-4


@pytest.mark.parametrize("signature", ["AB", "A^2B"])
def test_decoding_without_positions_counts_the_cache(signature):
  """decode=True without `positions` takes each token at the number of tokens decoded so far (the old code
  silently used position 0 at every step)."""
  model = _decoder(signature)
  b, t = 2, 5
  tokens = _tokens((b, t))
  params = random_params(model, tokens)
  full = model.apply({"params": params}, tokens)
  cache = init_cache(model, params, b, t)
  step = jax.jit(lambda c, tok: model.apply({"params": params, "cache": c}, tok, decode=True, mutable=["cache"]))
  steps = []
  for i in range(t):
    logits, mutated = step(cache, tokens[:, i : i + 1])
    cache = mutated["cache"]
    steps.append(logits)
    assert int(cache["decode_index"]) == i + 1
  np.testing.assert_allclose(np.concatenate(steps, axis=1), np.asarray(full), rtol=1e-4, atol=1e-4)
  # Position 0 at every step (the old behaviour) gives different logits: positions matter.
  step_at_0 = jax.jit(
    lambda c, tok: model.apply(
      {"params": params, "cache": c}, tok, positions=jnp.zeros((b, 1), jnp.int32), decode=True, mutable=["cache"]
    )
  )
  cache, wrong = init_cache(model, params, b, t), []
  for i in range(t):
    logits, mutated = step_at_0(cache, tokens[:, i : i + 1])
    cache = mutated["cache"]
    wrong.append(logits)
  assert np.abs(np.concatenate(wrong, axis=1) - np.asarray(full)).max() > 1e-3


@pytest.mark.parametrize("variant, tie", [("lm_300m", True), ("lm_600m", False), ("lm_1b", True), ("lm_1b", False)])
def test_initial_lm_loss_is_about_ln_vocab_at_full_width(variant, tie):
  """At the paper's widths (1536 for lm_300m / lm_600m, 2048 for lm_1b; vocabulary 32k) the initial next-token
  cross-entropy is within 1 nat of ln V, tied or untied (the old N(0, 1) * sqrt(D) embedding with a tied
  x @ E^T output started lm_300m at ~1,500 nats).  A real init of the variant's layer shape, 2 layers deep
  (the final LayerNorm makes the logit scale independent of depth), on a short random sequence."""
  from siglip_rins.models import LM_VARIANTS

  model = build_model(dict(name="decoder", variant=variant, depth=2, tie_embeddings=tie, vocab_size=32_000))
  assert model.width == LM_VARIANTS[variant]["width"] and model.mlp_dim == LM_VARIANTS[variant]["mlp_dim"]
  tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 9), 0, 32_000)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens[:, :-1])["params"]
  assert ("head" in params) != tie
  embedding = np.asarray(params["Embed_0"]["embedding"])
  assert abs(np.linalg.norm(embedding, axis=1).mean() - 1) < 0.05  # the residual stream starts at unit norm
  del embedding
  logits = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, tokens[:, :-1])
  loss = float(-jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], -1).mean())
  assert abs(loss - np.log(32_000)) < 1.0, loss
  assert 0.5 < float(logits.std()) < 2.0


def test_predictor_axis_drives_rounds_or_repeat():
  """The demos evaluate RAO (ABAB) along repeat-all-over: Predictor(axis='repeat') passes its `rounds` as repeat."""
  from siglip_rins.predictor import Predictor

  model = _decoder("ABAB", loop="unroll")
  tokens = _tokens((2, 6))
  params = random_params(model, tokens)
  logp = lambda **kw: jax.nn.log_softmax(model.apply({"params": params}, tokens, **kw)[:, :-1])
  want = lambda **kw: np.take_along_axis(np.asarray(logp(**kw)), np.asarray(tokens)[:, 1:, None], -1)[..., 0]
  for axis in ("rounds", "repeat"):
    pred = Predictor(model, params, batch_size=2, axis=axis)
    for r in (1, 3, 2):
      np.testing.assert_allclose(pred.lm_logprobs(tokens, rounds=r), want(**{axis: r}), rtol=1e-5, atol=1e-5)
    # along either axis the count is a run-time argument: r = 1, 3, 2 share one program (bucket 1..4)
    assert pred._jitted("lm", 1) is pred._jitted("lm", 3) and pred._jitted("lm", 1)._cache_size() == 1
  assert np.abs(want(repeat=1) - want(rounds=1)).max() > 1e-3  # AB vs ABAB: the axes differ


def _cache_bytes_for(r, kv_sharing, b=2, t=8, depth=4):
  model = _decoder(f"A^{r}B", kv_sharing, depth=depth)
  tokens = jnp.zeros((b, t), jnp.int32)
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), tokens))["params"]
  return cache_bytes(jax.eval_shape(lambda p: init_cache(model, p, b, t), params))


def test_kv_sharing_cache_does_not_grow_with_rounds():
  b, t, depth = 2, 8, 4
  per_layer = 2 * b * t * WIDTH * 4  # keys + values, float32
  lpb = depth // 2
  shared = [_cache_bytes_for(r, True) for r in (2, 3, 4)]
  plain = [_cache_bytes_for(r, False) for r in (2, 3, 4)]
  assert shared == [2 * lpb * per_layer] * 3  # first round of A + B, whatever r
  assert plain == [(r + 1) * lpb * per_layer for r in (2, 3, 4)]


@pytest.mark.parametrize("signature, kv_sharing", [("AB", False), ("A^2B", True)])
def test_packed_sequences_match_separate_sequences(signature, kv_sharing):
  model = _decoder(signature, kv_sharing)
  first, second = _tokens((1, 3), seed=3), _tokens((1, 5), seed=4)
  packed = jnp.concatenate([first, second], axis=1)
  segment_ids = jnp.array([[1, 1, 1, 2, 2, 2, 2, 2]])
  positions = jnp.array([[0, 1, 2, 0, 1, 2, 3, 4]])
  params = random_params(model, packed)
  jitted = jax.jit(lambda *a, **k: model.apply({"params": params}, *a, **k))
  apply = lambda *a, **k: np.asarray(jitted(*a, **k))
  separate = np.concatenate([apply(first), apply(second)], axis=1)
  np.testing.assert_allclose(
    apply(packed, segment_ids=segment_ids, positions=positions), separate, rtol=1e-4, atol=1e-4
  )
  # Without segment_ids the second sequence sees the first one: the logits differ.
  assert np.abs(apply(packed, positions=positions)[:, 3:] - separate[:, 3:]).max() > 1e-3


# ------------------------------------------------------------------------------------ two towers etc.
TINY_TOWERS = dict(
  name="two_towers",
  image=dict(variant="mu/4", pool_type="map"),
  text=dict(variant="mu", vocab_size=VOCAB),
  out_dim=(None, 32),
  recursion=dict(signature="A^2B"),
)


def test_two_towers_contract():
  model = build_model(TINY_TOWERS)
  images = jax.random.uniform(jax.random.PRNGKey(0), (3, 8, 8, 3), minval=-1, maxval=1)
  texts = _tokens((3, 5))
  params = random_params(model, images, texts)
  assert sorted(params) == ["b", "img", "t", "txt"]
  assert "A" in params["img"]["Transformer"] and "MAPHead_0" in params["img"]
  assert params["txt"]["head"]["kernel"].shape == (64, 32)
  params = dict(params, t=jnp.log(jnp.array([10.0])), b=jnp.array([-10.0]))
  apply = jax.jit(lambda images, texts: model.apply({"params": params}, images, texts, rounds={"img": 3, "txt": 1}))
  zimg, ztxt, out = apply(images, texts)
  assert zimg.shape == (3, 64) and ztxt.shape == (3, 32)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(zimg), axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(ztxt), axis=-1), 1.0, rtol=1e-5)
  assert int(out["rounds/img"]) == 3 and int(out["rounds/txt"]) == 1
  np.testing.assert_allclose(float(out["t"]), 10.0, rtol=1e-6)
  assert float(out["b"]) == -10.0
  image_only = jax.jit(lambda images: model.apply({"params": params}, images, None))
  zimg_only, none, out = image_only(images)
  assert none is None and "rounds/txt" not in out and int(out["rounds/img"]) == 2
  # MAP pooling attends to the image tokens (a probe attending only to itself would ignore the image).
  other = image_only(images[::-1])[0]
  assert np.abs(np.asarray(other[0] - zimg_only[-1])).max() < 1e-5
  assert np.abs(np.asarray(other[0] - zimg_only[0])).max() > 1e-3


def test_classifier_and_vit_shapes():
  images = jnp.zeros((2, 8, 8, 3))
  clf = build_model(dict(name="classifier", variant="mu/4", num_classes=7, recursion=dict(signature="A^3B")))
  logits = jax.eval_shape(lambda: clf.apply(clf.init(jax.random.PRNGKey(0), images), images))
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  vit = build_model(dict(name="vit", variant="mu/4", pool_type="none"))
  tokens, aux = jax.eval_shape(lambda: vit.apply(vit.init(jax.random.PRNGKey(0), images), images))
  assert tokens.shape == (2, 4, 64)


@pytest.mark.parametrize(
  "cfg, match",
  [
    (dict(name="vit", variant="mu/4", colour=1), r"unknown key\(s\) \['colour'\]"),
    (dict(name="decoder", variant="lm_mu", heads=2), r"unknown key\(s\) \['heads'\]"),
    (dict(TINY_TOWERS, image=dict(variant="mu/4", patch=4)), r"model.image: unknown key\(s\) \['patch'\]"),
    (dict(TINY_TOWERS, text=dict(variant="mu", vocab=4)), r"model.text: unknown key\(s\) \['vocab'\]"),
    (dict(name="vit", variant="mu/4", recursion=dict(sig="AB")), r"unknown recursion key\(s\) \['sig'\]"),
    (dict(name="decoder", variant="lm_9b"), r"unknown LM variant 'lm_9b'"),
    (dict(name="vit", variant="Q/16"), r"unknown ViT variant 'Q/16'"),
    (dict(name="vit", variant="mu/4", dtype="float8"), r"model.dtype: unknown dtype 'float8'"),
    (dict(name="transformer"), r"model.name: unknown model 'transformer'"),
    (dict(name="classifier", variant="mu/4"), r"model.num_classes: a classifier needs num_classes"),
  ],
)
def test_build_model_names_bad_keys(cfg, match):
  with pytest.raises(ValueError, match=match):
    build_model(cfg)


# ------------------------------------------------------------------------ full size, shapes only (CPU)
def _layer_params(width, mlp):
  """Analytic parameter count of one pre-LN layer: q/k/v/out with biases, MLP with biases, two LayerNorms."""
  return 4 * (width * width + width) + (width * mlp + mlp) + (mlp * width + width) + 2 * 2 * width


def test_full_size_b16_two_towers_a3b_eval_shape():
  model = build_model(
    dict(
      name="two_towers",
      image=dict(variant="B/16"),
      text=dict(variant="B", vocab_size=32000),
      out_dim=(None, 768),
      recursion=dict(signature="A^3B"),
    )
  )
  images, texts = jnp.zeros((2, 256, 256, 3)), jnp.zeros((2, 64), jnp.int32)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images, texts))
  zimg, ztxt, out = jax.eval_shape(
    lambda v: model.apply(v, images, texts, train=True, rngs={"rins": jax.random.PRNGKey(1)}), variables
  )
  assert zimg.shape == (2, 768) and ztxt.shape == (2, 768)
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))
  d, m = 768, 3072
  stack = 12 * _layer_params(d, m) + 2 * d  # 12 layers as 2 blocks + final LN
  map_head = d + 4 * (d * d + d) + 2 * d + (d * m + m) + (m * d + d)  # probe, attention, LN, MLP
  image = 16 * 16 * 3 * d + d + 256 * d + stack + map_head
  text = 32000 * d + 64 * d + stack + d * d + d
  assert n == image + text + 2
  assert 195e6 < n < 210e6


def test_full_size_lm_1b_a3b_eval_shape():
  model = build_model(dict(name="decoder", variant="lm_1b", recursion=dict(signature="A^3B", kv_sharing=True)))
  tokens = jnp.zeros((1, 128), jnp.int32)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), tokens))
  logits = jax.eval_shape(lambda v: model.apply(v, tokens), variables)
  assert logits.shape == (1, 128, 32000) and logits.dtype == jnp.float32
  assert sorted(variables["params"]["Decoder"]) == ["A", "B", "encoder_norm"]
  assert len(variables["params"]["Decoder"]["A"]) == 9  # 18 layers -> 2 blocks of 9
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))
  assert n == 18 * _layer_params(2048, 8192) + 2 * 2048 + 2 * 32000 * 2048
  assert n == count_params(build_model(dict(name="decoder", variant="lm_1b")), (tokens,))  # same as AB


def test_predictors_of_equal_models_share_one_compile_per_rounds():
  """A new Predictor of an equal model (another seed's or checkpoint's params) reuses the process's jitted
  function for each (kind, rounds, axis): no new trace or compile, and the outputs are its own params'."""
  from siglip_rins import predictor as P

  P.clear_fn_memo()
  tokens = _tokens((3, 8))
  models = [_decoder("A^2B", loop="unroll") for _ in range(2)]
  params = [random_params(models[0], tokens, seed=s) for s in (0, 1)]
  first = P.Predictor(models[0], params[0], batch_size=4)
  out0 = first.lm_logprobs(tokens, rounds=2)
  fn = first._jitted("lm", 2)
  second = P.Predictor(models[1], params[1], batch_size=4)
  out1 = second.lm_logprobs(tokens, rounds=2)
  assert second._jitted("lm", 2) is fn and fn._cache_size() == 1  # one trace for both predictors
  assert first._jitted("lm", 2) is fn
  assert second._jitted("lm", 3) is fn and second._jitted("lm", 5) is not fn  # one program per bucket of rounds
  second.lm_logprobs(tokens, rounds=3)
  assert fn._cache_size() == 1  # r is an argument: no new trace
  P.clear_fn_memo()
  fresh = P.Predictor(models[1], params[1], batch_size=4)
  np.testing.assert_array_equal(out1, fresh.lm_logprobs(tokens, rounds=2))
  assert fresh._jitted("lm", 2) is not fn
  assert np.abs(out0 - out1).max() > 1e-4  # different params, different outputs
  other = P.Predictor(_decoder("A^3B", loop="unroll"), params[1], batch_size=4)
  assert other._jitted("lm", 2) is not fresh._jitted("lm", 2)  # another model config: another function


def test_predictor_embeds_each_distinct_row_once_per_params(monkeypatch):
  """Evaluators that read the same images or texts (zero-shot, retrieval, XM3600) share the model's work: the
  predictor runs each distinct row once per (kind, rounds) and params, returns what the model computes, and
  forgets it all when the params change or its byte budget is exceeded."""
  from siglip_rins import predictor as P

  model = build_model(TINY_TOWERS)
  images = np.asarray(jax.random.uniform(jax.random.PRNGKey(0), (5, 8, 8, 3), minval=-1, maxval=1))
  texts = np.asarray(_tokens((7, 5)))
  params = [random_params(model, images, texts, seed=s) for s in (0, 1)]
  pred = P.Predictor(model, params[0], batch_size=4)
  calls = []

  def counting(kind, rounds):
    fn = P.Predictor._fn(pred, kind, rounds)
    return lambda p, x: (calls.append((kind, rounds, len(x))), fn(p, x))[1]

  monkeypatch.setattr(pred, "_fn", counting)
  want = lambda p, r: np.asarray(model.apply({"params": p}, None, texts, rounds={"txt": r})[1])
  out = pred.embed_texts(texts, rounds=2)
  np.testing.assert_allclose(out, want(params[0], 2), rtol=1e-5, atol=1e-6)
  assert calls == [("txt", 2, 4), ("txt", 2, 4)]  # 7 rows: two padded batches
  again = pred.embed_texts(np.concatenate([texts[::-1], texts[:2]]), rounds=2)  # other order, repeated rows
  assert len(calls) == 2  # nothing new to run
  np.testing.assert_array_equal(again, np.concatenate([out[::-1], out[:2]]))
  pred.embed_texts(texts[:3], rounds=1)  # another rounds value is another table
  assert calls[-1] == ("txt", 1, 4)
  dup = np.repeat(images[:2], 4, axis=0)  # 8 rows, 2 distinct: one batch
  np.testing.assert_array_equal(pred.embed_images(dup, rounds=1)[::4], pred.embed_images(images[:2], rounds=1))
  assert calls[-1] == ("img", 1, 4) and sum(c[0] == "img" for c in calls) == 1
  pred.params = params[1]  # new params: nothing remembered holds
  n = len(calls)
  np.testing.assert_allclose(pred.embed_texts(texts, rounds=2), want(params[1], 2), rtol=1e-5, atol=1e-6)
  assert len(calls) == n + 2 and np.abs(want(params[1], 2) - out).max() > 1e-3
  monkeypatch.setattr(P, "ROW_MEMO_BYTES", 64)  # smaller than one table: forgotten after every call
  pred.embed_texts(texts, rounds=2)
  pred.embed_texts(texts, rounds=2)
  assert len(calls) == n + 4 and pred._row_bytes == 0
  monkeypatch.setattr(P, "ROW_MEMO_BYTES", 64 << 20)
  monkeypatch.setattr(P, "ROW_MEMO_MAX_ROW_BYTES", 8 * 8 * 3 * 4 - 1)  # image rows too big to digest: no memo
  first = pred.embed_images(images, rounds=1)
  np.testing.assert_array_equal(pred.embed_images(images, rounds=1), first)
  assert [c[0] for c in calls[-4:]] == ["img"] * 4 and pred._row_bytes == 0  # 5 rows, twice: 2 + 2 batches


def test_init_program_does_not_depend_on_repeats():
  """init applies each unique block once: AB, ABAB and A^3B (one block size) lower to the same initialiser
  program (one compile, shared through the persistent cache) and give the same parameters as the baseline; the
  adapters of A^3B come on top."""
  images = jnp.zeros((1, 8, 8, 3))
  texts = jnp.zeros((1, 5), jnp.int32)
  init_text, params = {}, {}
  for sig, adapters in (("AB", False), ("ABAB", False), ("A^3B", False), ("A^3B", True)):
    cfg = dict(TINY_TOWERS, recursion=dict(signature=sig, adapters=adapters))
    model = build_model(cfg)
    init = jax.jit(lambda r, model=model: model.init(r, images, texts)["params"])
    init_text[sig, adapters] = init.lower(jax.random.PRNGKey(0)).as_text(debug_info=False)
    params[sig, adapters] = jax.tree_util.tree_leaves_with_path(init(jax.random.PRNGKey(4)))
  assert init_text["AB", False] == init_text["ABAB", False] == init_text["A^3B", False]
  assert init_text["A^3B", True] != init_text["AB", False]
  base = {jax.tree_util.keystr(k): np.asarray(v) for k, v in params["AB", False]}
  for key in (("ABAB", False), ("A^3B", False), ("A^3B", True)):
    got = {jax.tree_util.keystr(k): np.asarray(v) for k, v in params[key]}
    extra = {k for k in got if "adapter" in k}
    assert bool(extra) == key[1] and set(got) - extra == set(base)
    for k, v in base.items():
      np.testing.assert_array_equal(got[k], v, err_msg=f"{key} {k}")
