"""Regenerates tokenizers/demo_multilingual.model, the SentencePiece model shipped for the demo dataset.

    .venv/bin/python tokenizers/train_demo_tokenizer.py [--out tokenizers/demo_multilingual.model]
                                                         [--vocab_size 2000] [--check]

Model: BPE, vocab_size 2000 (including 256 byte-fallback pieces and the 3 special ids), character_coverage 1.0,
byte_fallback=True (any text outside the demo vocabulary still encodes, as UTF-8 bytes, never as <unk>), default
`nmt_nfkc` normalisation. Demo captions encode to at most ~20 pieces (+ EOS), whole words in every language.

Why BPE and not unigram: on this tiny, extremely regular corpus SentencePiece's unigram EM collapses to ~100 pieces
per language and prunes even the most frequent words ('large', 'yellow' end up as 'la r ge', 'y e llo w'; Hindi
falls back to single characters), giving 2-4x longer sequences than BPE at the same vocabulary size.
Japanese and Chinese captions are pre-segmented at word boundaries for training (`languages.WORD_MARK`, passed as
`pretokenization_delimiter`, which is not part of the model): without it, pieces span colour+shape ('黄色い十字'),
and a piece for a held-out (colour, shape) pair would never be seen in training.
Special ids: pad_id=0 ('<pad>'), eos_id=1 ('</s>'), unk_id=2 ('<unk>'); BOS is disabled (bos_id=-1), as in the
T5/big_vision SentencePiece models.

Training text: every caption `siglip_rins.demo.shapes` can produce (`shapes.all_captions()`, all 9 languages,
~2.6e5 strings), each also in SigLIP-canonical form (lowercase, '_' -> ' ', punctuation removed, spaces
collapsed), plus the class names of every language. Training runs single-threaded on a fixed, unshuffled
sentence order, so the output is byte-identical from run to run (`--check` verifies that against the file).
"""

from __future__ import annotations

import argparse
import io
import pathlib
import re
import sys
import unicodedata

import sentencepiece as spm

from siglip_rins.demo import languages, shapes

DEFAULT_OUT = pathlib.Path(__file__).resolve().parent / "demo_multilingual.model"
PAD_ID, EOS_ID, UNK_ID, BOS_ID = 0, 1, 2, -1


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


def train(vocab_size: int = 2000) -> bytes:
  """Trains the model; returns its serialized proto bytes."""
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(training_sentences()),
    model_writer=model,
    model_type="bpe",
    vocab_size=vocab_size,
    character_coverage=1.0,
    byte_fallback=True,
    pad_id=PAD_ID,
    eos_id=EOS_ID,
    unk_id=UNK_ID,
    bos_id=BOS_ID,
    pad_piece="<pad>",
    eos_piece="</s>",
    unk_piece="<unk>",
    input_sentence_size=0,
    shuffle_input_sentence=False,
    num_threads=1,
    max_sentence_length=4096,
    pretokenization_delimiter=languages.WORD_MARK,
    minloglevel=2,
  )
  return model.getvalue()


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
  parser.add_argument("--vocab_size", type=int, default=2000)
  parser.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
  args = parser.parse_args(argv)
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
