"""Analytic FLOPs accounting and compute matching (paper Sec. 2: comparisons at equal training FLOPs).

Conventions (stated so figures compare across frameworks):
* 2 FLOPs per multiply-add; only matrix multiplies count: q/k/v/out projections, attention scores and the
  attention-weighted sum (full T x S, masks do not reduce it), MLP, MAP head, linear heads, the patch projection
  and the LM unembedding.  Norms, softmax, GELU and embedding lookups are not counted.
* Training = 3 x forward (backward = 2 x forward), except the patch projection, whose input gradient is not needed
  (2 x forward).
* Stochastic RINS: the *expected* forward cost, each position weighted by its keep probability (1 - p).
* KV sharing: rounds after the first of the recursive block compute no key/value projections.

All numbers are per example unless the name says per step.
"""

from __future__ import annotations

from typing import Optional

import jax
import numpy as np

from siglip_rins.models import Classifier, DecoderLM, TextTransformer, TwoTowers, ViT
from siglip_rins.recursion import BlockPlan, RecursionConfig, inference_plan


def layer_flops(tokens: int, keys: int, width: int, mlp_dim: int, kv_proj: bool = True) -> float:
  """Forward FLOPs of one pre-LN layer on `tokens` queries attending over `keys` keys (per example)."""
  proj = 2 * tokens * width * width * (2 + (2 if kv_proj else 0))  # q, out (+ k, v)
  attn = 2 * 2 * tokens * keys * width  # scores + weighted sum
  mlp = 2 * 2 * tokens * width * mlp_dim
  return float(proj + attn + mlp)


def stack_flops(
  recursion: RecursionConfig,
  depth: int,
  tokens: int,
  width: int,
  mlp_dim: int,
  rounds: Optional[int] = None,
  train: bool = False,
  repeat: Optional[int] = None,
) -> dict:
  """Forward FLOPs of a RecursiveStack.  `train=True` uses the expected rounds under p_skip; otherwise the
  deterministic plan (inference: no skipping).  `rounds` / `repeat`: inference-time recursion (see
  recursion.inference_plan).  Blocks of an uneven split count their own depths.  Returns dict(flops,
  layers_run, expected_rounds) (expected executions of the first block's leading run)."""
  plan: BlockPlan = inference_plan(recursion.plan(depth), rounds, repeat)
  keep = [1.0 - p if train else 1.0 for p in plan.skip]
  full = layer_flops(tokens, tokens, width, mlp_dim, True)
  shared = layer_flops(tokens, tokens, width, mlp_dim, False)
  total, layers, pos, rounds_expected = 0.0, 0.0, 0, 0.0
  for i, run in enumerate(plan.runs()):
    depth_of_block = plan.layers(run.name)
    share = recursion.kv_sharing and i == 0 and run.count > 1  # KV sharing: the leading run (A of A^rB)
    for j in range(run.count):
      k = keep[pos + j]
      if share:
        k = 1.0 if j == 0 else k  # the first round always runs when keys/values are shared
        per = full if j == 0 else shared
      else:
        per = full
      total += k * per * depth_of_block
      layers += k * depth_of_block
      if i == 0:
        rounds_expected += k
    pos += run.count
  return dict(flops=total, layers_run=layers, expected_rounds=rounds_expected)


def _head(module_num_classes, width) -> float:
  return 2.0 * width * module_num_classes if module_num_classes else 0.0


def vit_flops(vit: ViT, image_size: tuple[int, int], rounds=None, train=False, repeat=None) -> dict:
  ph, pw = vit.patch_size
  n = (image_size[0] // ph) * (image_size[1] // pw)
  patch = 2.0 * n * ph * pw * 3 * vit.width
  tokens = n + (1 if vit.pool_type == "tok" else 0)
  st = stack_flops(vit.recursion, vit.depth, tokens, vit.width, vit.mlp_dim, rounds, train, repeat)
  head = 0.0
  if vit.pool_type == "map":  # probe query + out on 1 token, k/v over all tokens, attention, MLP on 1 token
    head += 2 * 2 * vit.width * vit.width + 2 * 2 * tokens * vit.width * vit.width + 2 * 2 * tokens * vit.width
    head += 2 * 2 * vit.width * vit.mlp_dim
  head += _head(vit.num_classes, vit.width)
  return dict(forward=patch + st["flops"] + head, patch=patch, expected_rounds=st["expected_rounds"])


def text_flops(txt: TextTransformer, seq_len: int, rounds=None, train=False, repeat=None) -> dict:
  st = stack_flops(txt.recursion, txt.depth, seq_len, txt.width, txt.mlp_dim, rounds, train, repeat)
  head = _head(txt.num_classes, txt.width)
  if txt.pool_type == "map":
    head += 2 * 2 * txt.width * txt.width + 2 * 2 * seq_len * txt.width * txt.width + 2 * 2 * seq_len * txt.width
    head += 2 * 2 * txt.width * txt.mlp_dim
  return dict(forward=st["flops"] + head, patch=0.0, expected_rounds=st["expected_rounds"])


def decoder_flops(dec: DecoderLM, seq_len: int, rounds=None, train=False, repeat=None) -> dict:
  st = stack_flops(dec.recursion, dec.depth, seq_len, dec.width, dec.mlp_dim, rounds, train, repeat)
  unembed = 2.0 * seq_len * dec.width * dec.vocab_size
  return dict(forward=st["flops"] + unembed, patch=0.0, expected_rounds=st["expected_rounds"])


def model_flops(model, input_shapes: dict, rounds=None, train: bool = False, repeat=None) -> dict:
  """Forward FLOPs per example of any model from `build_model`.

  input_shapes: {'image': (H, W)} and/or {'text': L} (two towers, vit, classifier, text) or {'tokens': T} (LM).
  `rounds` / `repeat`: inference-time recursion (ints; both towers).
  Returns dict(forward, patch, expected_rounds (dict per tower)).
  """
  parts = {}
  if isinstance(model, TwoTowers):
    if model.image is not None and "image" in input_shapes:
      parts["img"] = vit_flops(ViT(**model.image), tuple(input_shapes["image"]), rounds, train, repeat)
    if model.text is not None and "text" in input_shapes:
      parts["txt"] = text_flops(TextTransformer(**model.text), int(input_shapes["text"]), rounds, train, repeat)
  elif isinstance(model, Classifier):
    parts["img"] = vit_flops(ViT(**model.vit), tuple(input_shapes["image"]), rounds, train, repeat)
  elif isinstance(model, ViT):
    parts["img"] = vit_flops(model, tuple(input_shapes["image"]), rounds, train, repeat)
  elif isinstance(model, TextTransformer):
    parts["txt"] = text_flops(model, int(input_shapes["text"]), rounds, train, repeat)
  elif isinstance(model, DecoderLM):
    parts["lm"] = decoder_flops(model, int(input_shapes["tokens"]), rounds, train, repeat)
  else:
    raise ValueError(f"no FLOPs model for {type(model).__name__}")
  return dict(
    forward=sum(p["forward"] for p in parts.values()),
    patch=sum(p["patch"] for p in parts.values()),
    expected_rounds={k: p["expected_rounds"] for k, p in parts.items()},
  )


def train_flops_per_example(model, input_shapes: dict) -> float:
  """3 x expected forward, minus the patch projection's (unneeded) input gradient."""
  f = model_flops(model, input_shapes, train=True)
  return 3.0 * f["forward"] - f["patch"]


def count_params(model, example_inputs: tuple, **kwargs) -> int:
  """Parameter count via jax.eval_shape (no memory or compute: works for full-size models on CPU)."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *example_inputs, **kwargs))
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(shapes["params"])))


def matched_budget(
  candidate_train_flops_per_example: float,
  baseline_train_flops_per_example: float,
  baseline_examples: float,
  batch_size: int,
) -> dict:
  """Compute matching: the candidate trains on fewer (or more) examples so its training FLOPs equal the
  baseline's.  Returns matched_examples, matched_steps (rounded down to whole steps), flops_budget."""
  budget = baseline_train_flops_per_example * baseline_examples
  examples = budget / candidate_train_flops_per_example
  return dict(flops_budget=budget, matched_examples=examples, matched_steps=int(examples // batch_size))


def sweep_with_params(
  depth: Optional[int] = None,
  degrees=(1, 2, 3),
  split: str = "floor",
  variant: Optional[str] = None,
  vocab_size: int = 32_000,
) -> list[dict]:
  """App. E.1's sweep (recursion.sweep) for a baseline of `depth` layers; with an LM `variant` (models.
  LM_VARIANTS, whose depth is the default) each entry also gets `params` (the decoder's parameter count,
  embeddings and head included) and `params_rel` (relative to the baseline), from two shape-only builds."""
  from siglip_rins.models import LM_VARIANTS, build_model
  from siglip_rins.recursion import sweep

  if variant is not None and variant not in LM_VARIANTS:
    raise ValueError(f"unknown LM variant {variant!r}; allowed: {sorted(LM_VARIANTS)}")
  if depth is None:
    if variant is None:
      raise ValueError("give the baseline depth (--depth L) or an LM variant (--variant)")
    depth = LM_VARIANTS[variant]["depth"]
  entries = sweep(int(depth), tuple(degrees), split)
  if variant is not None:
    tokens = (jax.ShapeDtypeStruct((1, 2), np.int32),)

    def count(layers):
      cfg = dict(name="decoder", variant=variant, depth=layers, vocab_size=vocab_size)
      return count_params(build_model(dict(cfg, recursion=dict(signature="A"))), tokens)

    one, two = count(1), count(2)
    per_layer, rest = two - one, 2 * one - two
    for e in entries:
      e["params"] = rest + e["unique_layers"] * per_layer
      e["params_rel"] = e["params"] / (rest + depth * per_layer)
  return entries
