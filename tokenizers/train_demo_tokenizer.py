"""Regenerates tokenizers/demo_multilingual.model, the SentencePiece model shipped for the demo dataset.

    python tokenizers/train_demo_tokenizer.py [--out tokenizers/demo_multilingual.model] [--vocab_size 2000]
                                              [--check] [--corpus-only DIR]

A thin wrapper around `siglip-rins tokenizer train` (siglip_rins/text/train_tokenizer.py): it writes the demo
corpus as DIR/data.jsonl ({"text": sentence} per line) and trains on it with the function behind the command,
i.e. exactly what these two commands do (tokenizers/README.md):

    python tokenizers/train_demo_tokenizer.py --corpus-only /tmp/demo_corpus
    siglip-rins tokenizer train --input /tmp/demo_corpus --vocab 2000 --out tokenizers/demo_multilingual.model \
        --model-type bpe --character-coverage 1.0 --pretokenization-delimiter U+E000

Model: BPE, vocab_size 2000 (including 256 byte-fallback pieces and the 3 special ids), character_coverage 1.0,
byte_fallback=True (any text outside the demo vocabulary still encodes, as UTF-8 bytes, never as <unk>), default
`nmt_nfkc` normalisation. Demo captions encode to at most ~20 pieces (+ EOS), whole words in every language.

Why BPE and not unigram: on this tiny, extremely regular corpus SentencePiece's unigram EM collapses to ~100 pieces
per language and prunes even the most frequent words ('large', 'yellow' end up as 'la r ge', 'y e llo w'; Hindi
falls back to single characters), giving 2-4x longer sequences than BPE at the same vocabulary size.
Japanese and Chinese captions are pre-segmented at word boundaries for training (`languages.WORD_MARK`, U+E000,
passed as `--pretokenization-delimiter`, which is not part of the model): without it, pieces span colour+shape
('黄色い十字'), and a piece for a held-out (colour, shape) pair would never be seen in training.
Special ids: pad_id=0 ('<pad>'), eos_id=1 ('</s>'), unk_id=2 ('<unk>'); BOS is disabled, as in the
T5/big_vision SentencePiece models.

Training text: every caption `siglip_rins.demo.shapes` can produce (`shapes.all_captions()`, all 9 languages,
~2.6e5 strings), each also in SigLIP-canonical form (lowercase, '_' -> ' ', punctuation removed, spaces
collapsed), plus the class names of every language. Training runs single-threaded on a fixed, unshuffled
sentence order, so the output is byte-identical from run to run (`--check` verifies that against the file).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys
import tempfile
import unicodedata

from siglip_rins.demo import languages, shapes
from siglip_rins.text import train_tokenizer

DEFAULT_OUT = pathlib.Path(__file__).resolve().parent / "demo_multilingual.model"


def _canonical(text: str) -> str:
  """SigLIP-style canonical form: lowercase, '_' -> ' ', Unicode punctuation removed, spaces collapsed."""
  text = text.lower().replace("_", " ")
  text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
  return re.sub(r"\s+", " ", text).strip()


def training_sentences() -> list[str]:
  """The tokenizer's training text, in a fixed order."""
  captions = shapes.all_captions(word_sep=languages.WORD_MARK)
  names = [
    languages.class_name(code, *shapes.class_pair(k), word_sep=languages.WORD_MARK)
    for code in languages.LANGUAGES
    for k in range(shapes.NUM_CLASSES)
  ]
  return captions + [_canonical(c) for c in captions] + names


DEMO_OPTIONS = dict(
  model_type="bpe",
  byte_fallback=True,
  character_coverage=1.0,
  normalization="nmt_nfkc",
  pretokenization_delimiter=languages.WORD_MARK,
  threads=1,
)


def write_corpus(folder) -> pathlib.Path:
  """Writes the training sentences as folder/data.jsonl ({"text": ...} per line); returns the file."""
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  path = folder / "data.jsonl"
  with open(path, "w", encoding="utf-8") as f:
    for sentence in training_sentences():
      f.write(json.dumps({"text": sentence}, ensure_ascii=False) + "\n")
  return path


def train(vocab_size: int = 2000) -> bytes:
  """Trains the model with `siglip-rins tokenizer train`'s function; returns its serialized proto bytes."""
  with tempfile.TemporaryDirectory() as tmp:
    write_corpus(tmp)
    out = pathlib.Path(tmp) / "demo.model"
    train_tokenizer.train_tokenizer([tmp], vocab_size, out, **DEMO_OPTIONS)
    return out.read_bytes()


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
  parser.add_argument("--vocab_size", type=int, default=2000)
  parser.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
  parser.add_argument("--corpus-only", type=pathlib.Path, metavar="DIR", help="only write DIR/data.jsonl")
  args = parser.parse_args(argv)
  if args.corpus_only:
    print(f"wrote {write_corpus(args.corpus_only)}")
    return 0
  proto = train(args.vocab_size)
  if args.check:
    same = args.out.exists() and args.out.read_bytes() == proto
    print(f"{args.out}: {'identical' if same else 'DIFFERS from a fresh training run'}")
    return 0 if same else 1
  args.out.write_bytes(proto)
  print(f"wrote {args.out} ({len(proto)} bytes, vocab {args.vocab_size})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
