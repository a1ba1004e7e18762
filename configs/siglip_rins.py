"""SigLIP-RINS (paper Sec. 5, App. E.2.3): SigLIP-B/16 baseline (AB), RAO (ABAB), RINS (A^2B, A^3B),
stochastic RINS (p_skip 1/4, 1/2), the Long-Seq baseline (res 280, text 80), and the multilingual over-training
setting of Tables 3-5 (`setting=multilingual`: A^3B with p_skip in {0, 1/4, 1/2} vs SigLIP-B/16, 40B examples,
English + multilingual mixture, Gemma tokenizer).

  python -m siglip_rins.train --config configs/siglip_rins.py:signature=A^2B --workdir DIR
  python -m siglip_rins.train --config configs/siglip_rins.py:signature=A^3B,p_skip=0.25,runlocal --workdir DIR

Recursive variants train on fewer examples: total_examples is computed by compute matching against the AB
baseline's budget (`baseline_examples` examples of the baseline at res 256 / text 64).
Args: variant, txt_variant, signature, degree, p_skip, adapters, loop, remat, res, text_len, vocab, tokenizer,
batch_size, baseline_examples, setting ('paper' | 'multilingual' | 'longseq'), runlocal.
runlocal-only (the built-in shapes dataset; the demo runner sets them): steps (baseline steps), local_batch_size,
local_res, local_examples (train-split size), local_variant (tiny tower variant: 'mu', 'nano', 'bench').
"""

import ml_collections

try:
  from configs import common
except ImportError:  # loaded by path from elsewhere
  import importlib.util
  import os

  _spec = importlib.util.spec_from_file_location("configs.common", os.path.join(os.path.dirname(__file__), "common.py"))
  common = importlib.util.module_from_spec(_spec)
  _spec.loader.exec_module(common)


def get_config(arg=None):
  a = common.parse_arg(
    arg,
    variant="B/16",
    txt_variant="B",
    signature="AB",
    degree=1,
    p_skip=0.0,
    adapters=False,
    loop="auto",
    remat=False,
    res=256,
    text_len=64,
    vocab=32_000,
    tokenizer="c4_en",
    batch_size=32 * 1024,
    baseline_examples=10_000_000_000,
    setting="paper",
    runlocal=False,
    steps=60,
    kv_sharing=False,
    local_batch_size=32,
    local_res=32,
    local_examples=2048,
    local_variant="mu",
  )
  if a.setting not in ("paper", "multilingual", "longseq"):
    raise ValueError(f"setting={a.setting!r}; allowed: 'paper', 'multilingual', 'longseq'")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = dict(name="contrastive", loss="sigmoid")
  base_res, base_len = a.res, a.text_len
  if a.setting == "longseq":  # the Long-Seq baseline: 25% longer sequences, no recursion
    a.res, a.text_len = 280, 80
  if a.setting == "multilingual":
    a.tokenizer, a.vocab, a.baseline_examples = "gemma", 256_000, 40_000_000_000
  if a.runlocal:
    a.variant, a.txt_variant, a.res, a.text_len = f"{a.local_variant}/8", a.local_variant, a.local_res, 16
    a.batch_size = a.local_batch_size
    base_res, base_len = a.local_res, 16
    a.tokenizer = "demo"
    a.baseline_examples = a.steps * a.batch_size
  if a.tokenizer == "demo":
    from siglip_rins.text.tokenizer import get_tokenizer

    a.vocab = get_tokenizer("demo").vocab_size
  width = 768 if not a.runlocal else 64
  c.model = dict(
    name="two_towers",
    image=dict(variant=a.variant, pool_type="map", posemb="learn"),
    text=dict(variant=a.txt_variant, vocab_size=a.vocab),
    out_dim=(None, width),
    temperature_init=10.0,
    bias_init=-10.0,
    recursion=common.recursion(a),
    dtype="float32",
  )
  baseline_model = dict(c.model, recursion=dict(signature="AB"))
  c.total_examples = common.matched_examples(
    c.model,
    baseline_model,
    {"image": (a.res, a.res), "text": a.text_len},
    {"image": (base_res, base_res), "text": base_len},
    a.baseline_examples,
    a.batch_size,
  )
  c.compute_match = dict(
    baseline_signature="AB", baseline_examples=a.baseline_examples, baseline_res=base_res, baseline_text_len=base_len
  )

  text_pp = f'tokenize(max_len={a.text_len}, model="{a.tokenizer}", eos="sticky", inkey="texts", outkey="labels")'
  c.input = dict(
    batch_size=a.batch_size,
    image_size=a.res,
    text_len=a.text_len,
    tokenizer=a.tokenizer,
    shuffle_buffer_size=250_000,
    prefetch=1,
    pp=f'decode|resize({a.res})|value_range(-1, 1)|choice(inkey="texts")|{text_pp}|keep("image", "labels")',
  )
  if a.setting == "multilingual":
    c.input.data = dict(
      type="mixture",
      sources=[
        dict(weight=0.5, data=dict(type="tfds", name="webli_en", split="train")),
        dict(weight=0.5, data=dict(type="tfds", name="webli_multilingual", split="train")),
      ],
    )
  else:
    c.input.data = dict(type="tfds", name="coco_captions", split="train")  # replace with your image-text data
  c.lr, c.wd, c.grad_clip_norm = 1e-3, 1e-4, 1.0
  c.optax_name = "scale_by_adam"
  c.schedule = common.schedule("rsqrt", warmup_steps=5000, cooldown_steps=5000, timescale=5000)
  c.log_every, c.ckpt_every, c.keep_ckpts = 100, 1000, 3
  c.mesh = dict(data=-1, fsdp=1)
  c.evals = {}
  if a.runlocal:
    c.input.data = dict(type="jsonl", path=common.demo_data_dir("train", a.local_examples, a.local_res))
    c.input.shuffle_buffer_size = 1024
    c.schedule = common.schedule("cosine", warmup_steps=5)
    c.log_every, c.ckpt_every = 10, 0
    c.tensorboard = True
    # Zero-shot on held-out (colour, shape) pairs and retrieval on the eval split, at the end of training.
    from siglip_rins.demo import shapes

    eval_data = dict(type="jsonl", path=common.demo_data_dir("eval", 96, 32))
    c.evals.zeroshot = dict(
      type="zeroshot",
      data=eval_data,
      class_names=shapes.class_names("en"),
      templates=["{}", "a {}"],
      image_size=32,
      batch_size=32,
      every=0,
      dataset="shapes_eval",
    )
    c.evals.retrieval = dict(
      type="retrieval", data=eval_data, texts_key="texts", image_size=32, batch_size=32, every=0, dataset="shapes_eval"
    )
  return c
