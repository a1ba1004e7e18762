"""Inference throughput at inference-time rounds r: zero-shot classification images/s with cached class embeddings,
and LM decoding tokens/s with KV-cache bytes, with and without RINS KV sharing.

Usage: python -m benchmarks.bench_inference [--images 256] [--classes 1000] [--rounds 1 2 3] [--repeats 3]
    [--lm_batch 8] [--lm_len 64] [--out r.json]

Zero-shot: the bench two-tower model trained as A^3B (random weights: throughput does not depend on them);
1000 class embeddings are computed once with `Predictor.embed_texts` and cached; the timed part is
`Predictor.embed_images(images, rounds=r)` (batches of 64) plus the [N, D] x [D, 1000] matmul and argmax (jitted).
The rounds are interleaved over `--repeats` repeats; figures are medians.

LM decoding: an 'lm_mu' decoder (width 64, depth 4, 2 heads, MLP 256, vocab 32000) with signature A^3B, with
and without `kv_sharing`; `init_cache` for `--lm_len` positions, then greedy decoding of `--lm_len` tokens for a
batch of `--lm_batch` sequences inside one jitted `lax.scan` over decode steps (`decode=True`, explicit
`positions`).  tokens/s = batch * len / seconds; `cache_bytes` counts the KV tensors.
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _util as U


def zero_shot(n_images: int, n_classes: int, rounds_list, repeats: int, signature: str = "A^3B") -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  from siglip_rins.models import build_model
  from siglip_rins.predictor import Predictor

  model = build_model(U.bench_model_config(signature))
  params = jax.jit(lambda r: model.init(r, jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 16), jnp.int32))["params"])(
    jax.random.PRNGKey(0)
  )
  pred = Predictor(model, params, batch_size=64)
  rng = np.random.default_rng(0)
  class_tokens = rng.integers(1, 32000, (n_classes, 16)).astype(np.int32)
  class_emb = jnp.asarray(pred.embed_texts(class_tokens))  # cached once: [C, D]
  images = rng.uniform(-1, 1, (n_images, 64, 64, 3)).astype(np.float32)
  classify = jax.jit(lambda z, c: jnp.argmax(z @ c.T, axis=-1))

  def run(r):
    z = pred.embed_images(images, rounds=r)
    return classify(jnp.asarray(z), class_emb)

  for r in rounds_list:  # compile + warm up every rounds value
    jax.block_until_ready(run(r))
  times = {r: [] for r in rounds_list}
  for _ in range(repeats):
    for r in rounds_list:
      times[r].append(U.timed(lambda: run(r))[0])
  from siglip_rins import flops

  out = []
  for r in rounds_list:
    img_flops = flops.model_flops(model, {"image": (64, 64)}, rounds=r)["forward"]
    t = U.median(times[r])
    out.append(
      dict(
        rounds=r,
        seconds_median=t,
        images_per_s=n_images / t,
        forward_flops_per_image=img_flops,
        achieved_flops_per_s=img_flops * n_images / t,
      )
    )
  for e in out:
    e["images_per_s_over_r1"] = e["images_per_s"] / out[0]["images_per_s"]
  return dict(signature=signature, images=n_images, classes=n_classes, batch=64, entries=out)


def lm_decode(batch: int, length: int, repeats: int, signature: str = "A^3B", vocab: int = 32000) -> dict:
  import jax
  import jax.numpy as jnp
  from siglip_rins.models import build_model
  from siglip_rins.models.decoder import cache_bytes, init_cache

  results, fns = [], {}
  for share in (False, True):
    model = build_model(
      dict(name="decoder", variant="lm_mu", vocab_size=vocab, recursion=dict(signature=signature, kv_sharing=share))
    )
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]
    cache = init_cache(model, params, batch, length)

    def generate(params, cache, first, model=model):
      def body(carry, i):
        cache, tok = carry
        pos = jnp.full((tok.shape[0], 1), i, jnp.int32)
        logits, v = model.apply({"params": params, "cache": cache}, tok, positions=pos, decode=True, mutable=["cache"])
        nxt = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)[:, None]
        return (v["cache"], nxt), nxt[:, 0]

      _, toks = jax.lax.scan(body, (cache, first), jnp.arange(length))
      return toks.T  # [B, length]

    gen = jax.jit(generate)
    first = jnp.ones((batch, 1), jnp.int32)
    toks = jax.block_until_ready(gen(params, cache, first))
    fns[share] = (gen, params, cache, first)
    results.append(dict(kv_sharing=share, cache_bytes=cache_bytes(cache), tokens=toks))
  times = {False: [], True: []}
  for _ in range(repeats):
    for share, (gen, params, cache, first) in fns.items():
      times[share].append(U.timed(lambda: gen(params, cache, first))[0])
  entries = []
  for r in results:
    t = U.median(times[r["kv_sharing"]])
    entries.append(
      dict(kv_sharing=r["kv_sharing"], cache_bytes=r["cache_bytes"], seconds_median=t, tokens_per_s=batch * length / t)
    )
  return dict(
    model="lm_mu",
    vocab=vocab,
    signature=signature,
    batch=batch,
    length=length,
    entries=entries,
    cache_ratio_shared_over_full=entries[1]["cache_bytes"] / entries[0]["cache_bytes"],
    tokens_per_s_shared_over_full=entries[1]["tokens_per_s"] / entries[0]["tokens_per_s"],
  )


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--images", type=int, default=256)
  parser.add_argument("--classes", type=int, default=1000)
  parser.add_argument("--rounds", type=int, nargs="+", default=[1, 2, 3])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--lm_batch", type=int, default=8)
  parser.add_argument("--lm_len", type=int, default=64)
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  for name in ("images", "classes", "repeats", "lm_batch", "lm_len"):
    if getattr(args, name) < 1:
      raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
  if min(args.rounds) < 1:
    raise ValueError(f"--rounds must all be >= 1, got {args.rounds}")
  result = {
    "benchmark": "inference",
    "zero_shot": zero_shot(args.images, args.classes, args.rounds, args.repeats),
    "lm_decode": lm_decode(args.lm_batch, args.lm_len, args.repeats),
    "machine": U.machine_info(),
  }
  return U.emit(result, args.out)


if __name__ == "__main__":
  main()
