"""Trains a SentencePiece tokenizer on your own captions (pure Python: sentencepiece, no TensorFlow).

    siglip-rins tokenizer train --input FILES_OR_FOLDERS... --vocab N --out M.model
        [--model-type unigram|bpe] [--byte-fallback | --no-byte-fallback] [--character-coverage F]
        [--normalization nmt_nfkc|identity|nfkc|nmt_nfkc_cf|nfkc_cf] [--fields texts,caption,text]
        [--max-sentences N] [--max-sentence-bytes B] [--seed S] [--threads T] [--pretokenization-delimiter D]

Function API: `train_tokenizer(inputs, vocab_size, out, **options) -> TrainResult` (same options, snake_case).

Inputs (each --input):
  * a folder holding `data.jsonl` (the local dataset layout, docs/data_layout.md), or a `.jsonl` file: one JSON
    object per line; the caption fields named by `fields` (default texts, caption, text) hold a string, a list of
    strings, or a dict language -> string | list of strings, which is flattened (every language is used);
  * any other file: plain UTF-8 text, one sentence per line.
  Every caption is one training sentence (surrounding whitespace stripped, empty ones dropped), in input order.

Id layout (the T5 / c4_en layout of big_vision's SigLIP tokenizers): pad 0 `<pad>`, eos 1 `</s>`, unk 2 `<unk>`,
no BOS. So `tokenize(max_len, eos='sticky')` ends every text with id 1, and `pad_value=1` (big_vision's SigLIP
setting) pads with EOS.

Defaults and why:
  * model_type 'unigram' (as T5/mT5); 'bpe' suits tiny, very regular corpora (the demo tokenizer uses it).
  * byte_fallback on: a character without a piece encodes as its UTF-8 bytes (256 `<0xNN>` pieces, part of the
    vocabulary), never as unk, so any text (CJK, Arabic, emoji) round-trips through encode/decode.
  * character_coverage 0.9995 (sentencepiece's default, suited to CJK-heavy corpora): the rarest 0.05% of
    characters get no piece of their own and fall back to bytes. Use 1.0 for small alphabets.
  * normalization 'nmt_nfkc' (sentencepiece's default and the rule of T5's models): Unicode NFKC plus removal of
    control characters. It folds compatibility forms (full-width Latin ＡＢＣ -> ABC, half-width katakana,
    Arabic presentation forms -> the base letters) so visually identical text gets the same ids; text already
    in standard form, as CJK and Arabic normally are, is unchanged. 'identity' keeps every character as
    written (decode returns the exact input; compatibility forms get their own pieces or bytes).

Determinism: the same inputs, options, seed and thread count give byte-identical model files. sentencepiece
runs on `threads` threads (default 1): with unigram, the learned pieces depend on the thread count, so keep it
fixed when you need to reproduce a model. The model stores its options, not the input paths.

Bounded memory on any input: lines are read in chunks and a line over `max_sentence_bytes` (UTF-8 bytes;
a JSONL record line over max(1 MiB, 64 x that)) is skipped and counted, never held whole. When the inputs hold
more than `max_sentences` captions, a uniform random sample of that many (reservoir sampling with `seed`,
kept in input order) is trained on, so at most max_sentences x max_sentence_bytes of text is held.

Errors (missing file, folder without data.jsonl, no caption at all, --vocab too large or too small for the
corpus, ...) raise `TokenizerTrainingError` (a ValueError) with a one-line message naming the file and the
problem; the command prints it as `error: ...` and exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import pathlib
import random
import re
import sys
from typing import Iterator, Sequence

from siglip_rins.data import fields as fields_lib  # pure Python, no TensorFlow

PAD_ID, EOS_ID, UNK_ID, BOS_ID = 0, 1, 2, -1
PAD_PIECE, EOS_PIECE, UNK_PIECE = "<pad>", "</s>", "<unk>"
MODEL_TYPES = ("unigram", "bpe")
NORMALIZATIONS = ("nmt_nfkc", "identity", "nfkc", "nmt_nfkc_cf", "nfkc_cf")
DEFAULT_FIELDS = ("texts", "caption", "text")
DEFAULT_MAX_SENTENCES = 2_000_000
DEFAULT_MAX_SENTENCE_BYTES = 4096
MIN_RECORD_BYTES = 1 << 20
_CHUNK = 1 << 16


class TokenizerTrainingError(ValueError):
  """Bad input or options; the message is one line naming the file and the problem."""


@dataclasses.dataclass
class TrainResult:
  """What `train_tokenizer` did. `skipped`: reason -> count (too_long, bad_utf8, bad_json, record_too_long,
  no_caption_field, text_not_string, text_is_null, empty_text); `seen`: captions found; `sentences`: trained on."""

  out: pathlib.Path
  vocab_size: int
  model_type: str
  sentences: int
  seen: int
  files: list
  skipped: dict

  def summary(self) -> str:
    skipped = ", ".join(f"{k} {v:,}" for k, v in sorted(self.skipped.items()) if v) or "none"
    sample = f" (a sample of {self.seen:,})" if self.seen > self.sentences else ""
    return (
      f"wrote {self.out} (vocab {self.vocab_size}, {self.model_type}): {self.sentences:,} sentences{sample} "
      f"from {len(self.files)} file(s); skipped: {skipped}"
    )


# ----------------------------------------------------------------------------------------------- reading


def _input_files(inputs: Sequence) -> list[tuple[pathlib.Path, str]]:
  """[(file, 'jsonl' | 'text')] for the --input arguments; raises naming a missing file or folder."""
  if isinstance(inputs, (str, os.PathLike)):
    inputs = [inputs]
  if not inputs:
    raise TokenizerTrainingError("no --input given (text files, .jsonl files or folders holding data.jsonl)")
  out = []
  for item in inputs:
    path = pathlib.Path(item).expanduser()
    if path.is_dir():
      if not (path / "data.jsonl").is_file():
        raise TokenizerTrainingError(f"{str(path)!r} is a folder without data.jsonl (the local dataset layout)")
      out.append((path / "data.jsonl", "jsonl"))
    elif path.is_file():
      out.append((path, "jsonl" if path.name.endswith(".jsonl") else "text"))
    else:
      raise TokenizerTrainingError(f"input {str(path)!r} does not exist")
  return out


def _bounded_lines(f, limit: int) -> Iterator[bytes | None]:
  """Lines of a binary file without their line ending (\n or \r\n); None for a line longer than `limit` bytes
  (read in chunks and dropped, so memory stays bounded whatever the file holds)."""
  while True:
    line = f.readline(limit + 2)
    if not line:
      return
    if line.endswith(b"\n") or len(line) <= limit:  # a whole line (maybe the last, without newline)
      if line.endswith(b"\n"):
        line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
      yield line if len(line) <= limit else None
      continue
    while not line.endswith(b"\n"):  # too long: skip to the end of the line
      line = f.readline(_CHUNK)
      if not line:
        break
    yield None


def _captions_of_record(record: dict, fields: Sequence[str], skipped: dict) -> list[str]:
  found, out = False, []
  for field in fields:
    if field not in record:
      continue
    found = True
    values = fields_lib.text_values(record, field, flatten=True)
    if fields_lib.is_refused(values):
      skipped[values] = skipped.get(values, 0) + 1
    else:
      out.extend(values)
  if not found:
    skipped["no_caption_field"] = skipped.get("no_caption_field", 0) + 1
  return out


def iter_captions(
  files: Sequence[tuple[pathlib.Path, str]], fields: Sequence[str], max_sentence_bytes: int, skipped: dict
) -> Iterator[str]:
  """Every caption of the files, in order (stripped, non-empty, at most max_sentence_bytes); counts what is
  skipped into `skipped`."""

  def count(reason):
    skipped[reason] = skipped.get(reason, 0) + 1

  record_limit = max(MIN_RECORD_BYTES, 64 * max_sentence_bytes)
  for path, kind in files:
    try:
      f = open(path, "rb")
    except OSError as e:
      raise TokenizerTrainingError(f"cannot read {str(path)!r}: {e.strerror}") from None
    with f:
      for raw in _bounded_lines(f, record_limit if kind == "jsonl" else max_sentence_bytes):
        if raw is None:
          count("record_too_long" if kind == "jsonl" else "too_long")
          continue
        try:
          line = raw.decode("utf-8")
        except UnicodeDecodeError:
          count("bad_utf8")
          continue
        if kind == "text":
          texts = [line]
        else:
          if not line.strip():
            continue
          try:
            record = json.loads(line)
          except ValueError:
            record = None
          if not isinstance(record, dict):
            count("bad_json")
            continue
          texts = _captions_of_record(record, fields, skipped)
        for text in texts:
          text = text.strip()
          if not text:
            continue
          try:
            size = len(text.encode("utf-8"))
          except UnicodeEncodeError:  # lone surrogates from JSON escapes such as "\ud800"
            count("bad_utf8")
            continue
          if size > max_sentence_bytes:
            count("too_long")
            continue
          yield text


def sample_sentences(sentences: Iterator[str], max_sentences: int, seed: int) -> tuple[list[str], int]:
  """(at most max_sentences of them, how many there were): all when they fit, else a uniform random sample
  (reservoir sampling, deterministic given seed) in their original order."""
  rng = random.Random(seed)
  reservoir: list[tuple[int, str]] = []
  n = 0
  for n, sentence in enumerate(sentences, 1):
    if len(reservoir) < max_sentences:
      reservoir.append((n, sentence))
    else:
      j = rng.randrange(n)
      if j < max_sentences:
        reservoir[j] = (n, sentence)
  reservoir.sort()
  return [s for _, s in reservoir], n


# ----------------------------------------------------------------------------------------------- training


def _delimiter(text: str | None) -> str:
  """'' | a literal string | 'U+E000' (a code point)."""
  if not text:
    return ""
  m = re.fullmatch(r"[Uu]\+([0-9A-Fa-f]{4,6})", text)
  return chr(int(m.group(1), 16)) if m else text


def _check_options(
  vocab_size, model_type, character_coverage, normalization, max_sentences, max_sentence_bytes, threads
):
  if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 4:
    raise TokenizerTrainingError(f"--vocab must be an integer >= 4, got {vocab_size!r}")
  if model_type not in MODEL_TYPES:
    raise TokenizerTrainingError(f"--model-type must be one of {', '.join(MODEL_TYPES)}, got {model_type!r}")
  if not 0 < float(character_coverage) <= 1:
    raise TokenizerTrainingError(f"--character-coverage must be in (0, 1], got {character_coverage!r}")
  if normalization not in NORMALIZATIONS:
    raise TokenizerTrainingError(f"--normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")
  for name, value in (("--max-sentences", max_sentences), ("--max-sentence-bytes", max_sentence_bytes)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise TokenizerTrainingError(f"{name} must be a positive integer, got {value!r}")
  if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
    raise TokenizerTrainingError(f"--threads must be a positive integer, got {threads!r}")


def _explain(error: Exception, vocab_size: int, n: int, files) -> str:
  """sentencepiece's error -> one line for the user."""
  message = " ".join(str(error).split())
  where = f"{n:,} sentences from {', '.join(repr(str(p)) for p, _ in files)}"
  m = re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)", message)
  if m:
    return (
      f"--vocab {vocab_size} is too large for this corpus ({where}): it yields at most {m.group(2)} pieces; "
      f"use --vocab {m.group(2)} or less, or give more text"
    )
  m = re.search(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)", message)
  if m:
    return (
      f"--vocab {vocab_size} is too small for this corpus ({where}): its characters and the special pieces need "
      f"{m.group(2)}; raise --vocab or lower --character-coverage"
    )
  message = re.sub(r"^\w+: src/\S+ \[.*?\] ", "", message)
  return f"sentencepiece could not train on {where}: {message}"


def train_tokenizer(
  inputs,
  vocab_size: int,
  out,
  *,
  model_type: str = "unigram",
  byte_fallback: bool = True,
  character_coverage: float = 0.9995,
  normalization: str = "nmt_nfkc",
  fields: Sequence[str] = DEFAULT_FIELDS,
  max_sentences: int = DEFAULT_MAX_SENTENCES,
  max_sentence_bytes: int = DEFAULT_MAX_SENTENCE_BYTES,
  seed: int = 0,
  threads: int = 1,
  pretokenization_delimiter: str = "",
) -> TrainResult:
  """Trains a SentencePiece model on the captions of `inputs` and writes it to `out` (a .model path; its
  folder is created). See the module docstring for inputs, conventions and errors."""
  import sentencepiece as spm

  _check_options(vocab_size, model_type, character_coverage, normalization, max_sentences, max_sentence_bytes, threads)
  out = pathlib.Path(out).expanduser()
  if out.suffix != ".model":
    raise TokenizerTrainingError(f"--out {str(out)!r} must end in .model (how tokenizer paths are recognised)")
  if out.is_dir():
    raise TokenizerTrainingError(f"--out {str(out)!r} is a folder; give a file name ending in .model")
  fields = [f for f in (fields.split(",") if isinstance(fields, str) else fields) if f]
  if not fields:
    raise TokenizerTrainingError("--fields is empty; name the caption fields, e.g. texts,caption,text")
  files = _input_files(inputs)
  skipped: dict = {}
  sentences, seen = sample_sentences(iter_captions(files, fields, max_sentence_bytes, skipped), max_sentences, seed)
  if not sentences:
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())) or "the files are empty"
    jsonl = any(kind == "jsonl" for _, kind in files)
    hint = f"; JSONL caption fields looked for: {','.join(fields)}" if jsonl else ""
    raise TokenizerTrainingError(
      f"no caption to train on in {', '.join(repr(str(p)) for p, _ in files)} (skipped: {reasons}{hint})"
    )
  model = io.BytesIO()
  spm.set_random_generator_seed(int(seed) & 0xFFFFFFFF)
  try:
    spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences),
      model_writer=model,
      model_type=model_type,
      vocab_size=vocab_size,
      character_coverage=float(character_coverage),
      byte_fallback=bool(byte_fallback),
      normalization_rule_name=normalization,
      pad_id=PAD_ID,
      eos_id=EOS_ID,
      unk_id=UNK_ID,
      bos_id=BOS_ID,
      pad_piece=PAD_PIECE,
      eos_piece=EOS_PIECE,
      unk_piece=UNK_PIECE,
      input_sentence_size=0,
      shuffle_input_sentence=False,
      num_threads=threads,
      max_sentence_length=max_sentence_bytes,
      pretokenization_delimiter=_delimiter(pretokenization_delimiter),
      minloglevel=2,
    )
  except RuntimeError as e:
    raise TokenizerTrainingError(_explain(e, vocab_size, len(sentences), files)) from None
  proto = model.getvalue()
  try:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_bytes(proto)
    os.replace(tmp, out)
  except OSError as e:
    raise TokenizerTrainingError(f"cannot write {str(out)!r}: {e.strerror}") from None
  return TrainResult(
    out=out,
    vocab_size=vocab_size,
    model_type=model_type,
    sentences=len(sentences),
    seen=seen,
    files=[str(p) for p, _ in files],
    skipped=skipped,
  )


# ----------------------------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
  """The `siglip-rins tokenizer train` flags."""
  a = parser.add_argument
  a("--input", nargs="+", required=True, metavar="FILE_OR_FOLDER", help="text files, .jsonl files, data.jsonl folders")
  a(
    "--vocab",
    type=int,
    required=True,
    help="vocabulary size (includes pad/eos/unk and, with byte fallback, the 256 byte pieces)",
  )
  a("--out", required=True, help="the .model file to write")
  a("--model-type", choices=MODEL_TYPES, default="unigram")
  a("--byte-fallback", action=argparse.BooleanOptionalAction, default=True, help="unknown characters as bytes")
  a("--character-coverage", type=float, default=0.9995)
  a("--normalization", choices=NORMALIZATIONS, default="nmt_nfkc")
  a("--fields", default=",".join(DEFAULT_FIELDS), help="JSONL caption fields, comma-separated")
  a("--max-sentences", type=int, default=DEFAULT_MAX_SENTENCES, help="sample this many captions if there are more")
  a("--max-sentence-bytes", type=int, default=DEFAULT_MAX_SENTENCE_BYTES, help="skip longer captions (counted)")
  a("--seed", type=int, default=0, help="seed of the sample taken when there are more than --max-sentences")
  a("--threads", type=int, default=1, help="sentencepiece threads (unigram pieces depend on it; 1 = reproducible)")
  a("--pretokenization-delimiter", default="", help="no piece crosses it; a string or a code point like U+E000")
  return parser


def run_from_args(args) -> int:
  result = train_tokenizer(
    args.input,
    args.vocab,
    args.out,
    model_type=args.model_type,
    byte_fallback=args.byte_fallback,
    character_coverage=args.character_coverage,
    normalization=args.normalization,
    fields=args.fields,
    max_sentences=args.max_sentences,
    max_sentence_bytes=args.max_sentence_bytes,
    seed=args.seed,
    threads=args.threads,
    pretokenization_delimiter=args.pretokenization_delimiter,
  )
  print(result.summary())
  return 0


def main(argv=None) -> int:
  """`python -m siglip_rins.text.train_tokenizer ...` (the same as `siglip-rins tokenizer train ...`)."""
  parser = add_arguments(
    argparse.ArgumentParser(prog="siglip-rins tokenizer train", description=__doc__.splitlines()[0])
  )
  args = parser.parse_args(argv)
  try:
    return run_from_args(args)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
