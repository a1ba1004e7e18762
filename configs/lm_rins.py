"""Decoder-only language models with RINS (paper Sec. 3-4, App. E.2.1).

The paper's setup: 300M / 600M / 1B decoders (embedding 1536 / 1536 / 2048, MLP 6144 / 6144 / 8192), trained on
an equal-weight mixture of C4 (en) and SlimPajama, batch 1024 sequences x 1024 tokens, Adam lr 5e-4, wd 5e-5,
rsqrt schedule with 5k warm-up and 5k cool-down steps, c4_en SentencePiece vocabulary (32k).

  python -m siglip_rins.train --config configs/lm_rins.py:variant=lm_600m,signature=A^3B --workdir DIR
  python -m siglip_rins.train --config configs/lm_rins.py:signature=A^3B,p_skip=0.25,variant=lm_1b --workdir DIR
  python -m siglip_rins.train --config configs/lm_rins.py:seq_len=1536 --workdir DIR     # long-sequence baseline
  python -m siglip_rins.train --config configs/lm_rins.py:runlocal --workdir /tmp/lm     # seconds, offline

App. E.1 sweep: signatures whose unique blocks do not divide the depth (e.g. ABBC, AABC, ABCC on the 16 layers of
lm_600m) use the paper's split by default (split=floor: 16 // 3 = 5 layers per block, one layer dropped);
split=spread keeps every layer (blocks of 6, 5, 5), layers_per_block=N or N:M:K sets the blocks directly.
`siglip-rins sweep --depth 16` lists the sweep.

  python -m siglip_rins.train --config configs/lm_rins.py:signature=ABBC,split=spread --workdir DIR

Compute matching: the non-recursive baseline (signature AB, seq_len 1024) trains `baseline_steps` steps; every
other variant (recursive signatures, stochastic RINS by its *expected* rounds, longer sequences) gets
total_steps = baseline training FLOPs / its training FLOPs per step, derived after every override
(siglip_rins/budget.py).

Data: users prepare the TFDS datasets beforehand (nothing is downloaded at run time): `c4/en` and the Hugging
Face mirror `huggingface:cerebras__slimpajama_627b` (both have a `text` feature).  Sequence packing (the paper's
"sequence packing", input.pack, siglip_rins/data/pipeline.py): each document is tokenized whole with EOS appended,
documents are concatenated and cut into rows of seq_len + 1 tokens with segment ids and per-segment positions (a
document longer than a row continues as a new segment in the next row; attention never crosses documents).

Args: variant (lm_300m | lm_600m | lm_1b | lm_mu), signature, degree, p_skip, adapters, kv_sharing, loop, remat,
split (floor | spread | exact), layers_per_block (N or N:M:K), seq_len, batch_size, tokenizer, vocab,
baseline_steps, baseline_seq_len, runlocal, steps (runlocal baseline steps).  runlocal: the tiny `lm_mu` decoder on the built-in demo captions with the shipped 'demo' tokenizer,
seq_len 32, batch 32.  Local overrides (runlocal only): corpus (a jsonl folder/file of {"text": ...} lines instead of
the demo captions), local_tokenizer (name or .model path), local_seq_len, local_batch_size, local_variant
(siglip_rins/demo/lm_study.py uses them for its Shakespeare study).
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

C4 = "c4/en"
SLIMPAJAMA = "huggingface:cerebras__slimpajama_627b"


def lm_pp(seq_len: int, tokenizer: str, max_doc_len: int = 0, packed: bool = True) -> str:
  """Document text -> 'tokens' int32 ids (EOS appended, no lowercasing or canonicalisation).

  packed (the paper's setup, input.pack): the whole document, unpadded and untruncated (`tok`, big_vision's
  newer tokenizer op with no length); the packer concatenates documents and cuts rows of seq_len + 1, a document
  longer than a row continuing as a new segment in the next, so no tail and no EOS is lost.  Unpacked: padded or
  truncated to `max_doc_len or seq_len + 1` ids (`tokenize`)."""
  if packed:
    return f'tok(model="{tokenizer}", eos="yes", inkey="text", outkey="tokens")|keep("tokens")'
  n = max_doc_len or seq_len + 1
  return (
    f'tokenize(max_len={n}, model="{tokenizer}", eos="yes", inkey="text", outkey="tokens", '
    f'lower=False, canonicalize=False)|keep("tokens")'
  )


def get_config(arg=None):
  a = common.parse_arg(
    arg,
    variant="lm_600m",
    signature="AB",
    degree=1,
    p_skip=0.0,
    adapters=False,
    kv_sharing=False,
    loop="auto",
    remat=False,
    split="floor",
    layers_per_block="",
    seq_len=1024,
    batch_size=1024,
    tokenizer="c4_en",
    vocab=32_000,
    baseline_steps=200_000,
    baseline_seq_len=1024,
    runlocal=False,
    steps=60,
    corpus="",
    local_tokenizer="demo",
    local_seq_len=32,
    local_batch_size=32,
    local_variant="lm_mu",
  )
  if a.runlocal:
    a.variant, a.seq_len, a.baseline_seq_len = a.local_variant, a.local_seq_len, a.local_seq_len
    a.batch_size, a.tokenizer = a.local_batch_size, a.local_tokenizer
    a.baseline_steps = a.steps
  if a.tokenizer == "demo" or a.runlocal:  # a local tokenizer (name or .model path) sets the vocabulary size
    from siglip_rins.text.tokenizer import get_tokenizer

    a.vocab = get_tokenizer(a.tokenizer).vocab_size

  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = dict(name="lm")
  c.model = dict(name="decoder", variant=a.variant, vocab_size=a.vocab, recursion=common.recursion(a), dtype="float32")

  # total_steps is derived from compute_match after every override (siglip_rins/budget.py).
  c.total_steps = None
  c.compute_match = dict(
    baseline_signature="AB",
    baseline_steps=a.baseline_steps,
    baseline_examples=a.baseline_steps * a.batch_size,
    baseline_seq_len=a.baseline_seq_len,
  )

  pp = lm_pp(a.seq_len, a.tokenizer)
  c.input = dict(
    batch_size=a.batch_size,
    seq_len=a.seq_len,
    tokenizer=a.tokenizer,
    shuffle_buffer_size=250_000,
    prefetch=2,
    cache="auto",  # the pp's deterministic prefix kept in host memory when it fits (data/pipeline.py)
    cache_max_bytes=1 << 30,
    pp=pp,
    pack=dict(seq_len=a.seq_len + 1, key="tokens"),
  )  # sequence packing
  c.input.data = dict(
    type="mixture",
    sources=[  # equal weight (App. E.2.1)
      dict(weight=1.0, data=dict(type="tfds", name=C4, split="train")),
      dict(weight=1.0, data=dict(type="tfds", name=SLIMPAJAMA, split="train")),
    ],
  )

  c.lr, c.wd, c.grad_clip_norm = 5e-4, 5e-5, 1.0
  c.adapter_lr_mult = "fan_in"  # linear adapters' kernels learn at lr / D (siglip_rins/optim.py)
  c.optax_name = "scale_by_adam"
  c.schedule = common.schedule("rsqrt", warmup_steps=5000, cooldown_steps=5000)  # timescale: optim default
  c.log_every, c.ckpt_every, c.keep_ckpts = 100, 1000, 3
  c.max_bad_steps, c.tensorboard = 5, True
  c.mesh = dict(data=-1, fsdp=1)
  c.evals = {}

  if a.runlocal:
    c.input.data = dict(type="jsonl", path=a.corpus or common.demo_text_dir(("en",)))
    c.input.shuffle_buffer_size = 1024
    c.lr, c.wd = 1e-3, 1e-4
    c.schedule = common.schedule("cosine", warmup_steps=5)
    c.log_every, c.ckpt_every = 10, 0
  return c
