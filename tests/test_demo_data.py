"""Tests of the built-in demo dataset (siglip_rins.demo) and the shipped demo tokenizer."""

import hashlib
import json
import pathlib
import unicodedata

import numpy as np
import pytest
from PIL import Image

from siglip_rins.demo import languages, shapes

REPO = pathlib.Path(__file__).resolve().parents[1]
TOKENIZER = REPO / "tokenizers" / "demo_multilingual.model"


@pytest.fixture(scope="module")
def train_records():
  return shapes.generate("train", 600, seed=3, image_size=32)


@pytest.fixture(scope="module")
def eval_records():
  return shapes.generate("eval", 2 * shapes.NUM_CLASSES, seed=3, image_size=32)


def _digest(records):
  h = hashlib.sha256()
  for r in records:
    h.update(r["image"].tobytes())
    h.update(json.dumps([r["texts"], r["label"], r["objects"]], ensure_ascii=False).encode())
  return h.hexdigest()


def test_generation_is_deterministic_by_seed_and_prefix_stable(train_records):
  again = shapes.generate("train", 600, seed=3, image_size=32)
  assert _digest(again) == _digest(train_records)
  other_seed = shapes.generate("train", 600, seed=4, image_size=32)
  assert _digest(other_seed) != _digest(train_records)
  # A shorter run is a prefix of a longer one.
  assert _digest(shapes.generate("train", 50, seed=3, image_size=32)) == _digest(train_records[:50])


def test_images_have_requested_size_and_show_the_shape_colour(train_records):
  records = shapes.generate("eval", 12, seed=0, image_size=64)
  for r in records:
    assert r["image"].shape == (64, 64, 3) and r["image"].dtype == np.uint8
  assert train_records[0]["image"].shape == (32, 32, 3)
  # One-object images: the pixel nearest the object's nominal colour is close to it (the shape is drawn).
  for r in [r for r in train_records if r["num_objects"] == 1][:40]:
    target = np.array(shapes._RGB[r["colour"]], dtype=np.float64)
    distance = np.abs(r["image"].astype(np.float64) - target).sum(-1).min()
    assert distance < 60, (r["label_name"], distance)


def test_heldout_pairs_absent_from_train_present_in_eval(train_records, eval_records):
  heldout = set(shapes.HELDOUT_PAIRS)
  assert len(heldout) >= 4
  for r in train_records:
    for colour, shape, _, _ in r["objects"]:
      assert (colour, shape) not in heldout
    assert not r["heldout"]
  eval_pairs = {(r["colour"], r["shape"]) for r in eval_records}
  assert heldout <= eval_pairs
  assert {r["label"] for r in eval_records} == set(range(shapes.NUM_CLASSES))
  # Every colour and every shape still occurs in train (in other combinations).
  assert {r["colour"] for r in train_records} == set(languages.COLOURS)
  assert {r["shape"] for r in train_records} == set(languages.SHAPES)
  assert {r["num_objects"] for r in train_records} == {1, 2}


def test_every_language_present_with_non_latin_scripts(train_records):
  assert len(languages.LANGUAGES) >= 6
  scripts = {languages.SCRIPTS[code] for code in languages.LANGUAGES}
  assert {"Latin", "Cyrillic", "Devanagari", "CJK", "Greek"} <= scripts
  unicode_names = {"Cyrillic": "CYRILLIC", "Devanagari": "DEVANAGARI", "Greek": "GREEK", "CJK": "CJK"}
  for r in train_records[:50]:
    assert r["languages"] == list(languages.LANGUAGES)
    assert len(r["texts"]) == len(r["languages"])
    for code, text in zip(r["languages"], r["texts"]):
      assert text and languages.WORD_MARK not in text
      script = languages.SCRIPTS[code]
      if script in unicode_names:
        assert any(unicode_names[script] in unicodedata.name(ch, "") for ch in text), (code, text)


def test_captions_mention_their_colour_and_shape_words(train_records):
  templates_seen = {code: set() for code in languages.LANGUAGES}
  for r in train_records:
    for code, text in zip(r["languages"], r["texts"]):
      templates_seen[code].add(text)
      for colour, shape, _, _ in r["objects"]:
        assert any(form in text for form in languages.colour_forms(code, colour)), (code, colour, text)
        assert any(form in text for form in languages.shape_forms(code, shape)), (code, shape, text)
    # English: colours of other objects' classes are not mentioned.
    mentioned = {c for c in languages.COLOURS if f" {c} " in f" {r['texts'][0]} "}
    assert mentioned == {o[0] for o in r["objects"]}
  for code in languages.LANGUAGES:  # several templates per language are in use
    assert languages.num_templates(code, 1) >= 3 and languages.num_templates(code, 2) >= 3


def test_class_names_and_labels_are_consistent(eval_records):
  for code in languages.LANGUAGES:
    names = shapes.class_names(code)
    assert len(names) == shapes.NUM_CLASSES == len(set(names))
  english = shapes.class_names("en")
  for r in eval_records:
    assert english[r["label"]] == r["label_name"] == f"{r['colour']} {r['shape']}"
    assert shapes.class_pair(r["label"]) == (r["colour"], r["shape"])
  prompts = shapes.class_prompts("de")
  assert len(prompts) == shapes.NUM_CLASSES and "Kreis" in prompts[shapes.class_id("red", "circle")][0]


def test_write_jsonl_dataset_layout_readable(tmp_path):
  path = shapes.write_jsonl_dataset(tmp_path / "eval", "eval", 10, seed=1, image_size=32)
  assert path == tmp_path / "eval" / "data.jsonl"
  rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
  assert len(rows) == 10
  required = {"image", "texts", "languages", "label", "label_name", "shape", "colour", "size", "position", "split"}
  records = shapes.generate("eval", 10, seed=1, image_size=32)
  for row, record in zip(rows, records):
    assert required <= set(row)
    assert not pathlib.Path(row["image"]).is_absolute()
    with Image.open(path.parent / row["image"]) as image:
      assert image.format == "PNG" and image.size == (32, 32)
      np.testing.assert_array_equal(np.asarray(image.convert("RGB")), record["image"])
    assert row["texts"] == record["texts"] and row["languages"] == list(languages.LANGUAGES)
    assert isinstance(row["label"], int) and row["split"] == "eval"
  # Byte-identical files from a second write.
  again = shapes.write_jsonl_dataset(tmp_path / "again", "eval", 10, seed=1, image_size=32)
  assert again.read_bytes() == path.read_bytes()
  assert (again.parent / rows[3]["image"]).read_bytes() == (path.parent / rows[3]["image"]).read_bytes()


def test_bad_arguments_raise_value_errors():
  with pytest.raises(ValueError, match="split"):
    shapes.generate("validation", 3)
  with pytest.raises(ValueError, match="num_examples"):
    shapes.generate("train", -1)
  with pytest.raises(ValueError, match="image_size"):
    shapes.generate("train", 2, image_size=2)
  with pytest.raises(ValueError, match="language"):
    shapes.generate("train", 2, languages=["xx"])
  with pytest.raises(ValueError, match="colour"):
    languages.class_name("en", "teal", "circle")


def test_generation_is_fast():
  import time

  start = time.perf_counter()
  shapes.generate("train", 1000, seed=0, image_size=32)
  assert time.perf_counter() - start < 5.0  # ~0.3 s on one core


# -------------------------------------------------------------------------------------------------------------
# The shipped tokenizer.


@pytest.fixture(scope="module")
def sp():
  spm = pytest.importorskip("sentencepiece")
  assert TOKENIZER.is_file() and TOKENIZER.stat().st_size < 1_000_000
  return spm.SentencePieceProcessor(model_file=str(TOKENIZER))


def test_tokenizer_special_ids(sp):
  assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
  assert 1000 <= sp.vocab_size() <= 2048


def test_tokenizer_encodes_every_language_without_unknowns(sp, train_records):
  longest = 0
  for r in train_records[:200]:
    for code, text in zip(r["languages"], r["texts"]):
      for variant in (text, text.lower()):
        ids = sp.encode(variant)
        assert sp.unk_id() not in ids, (code, variant)
        assert not any(sp.is_byte(i) for i in ids), (code, variant)  # in-vocabulary pieces, no byte fallback
        assert sp.decode(ids) == unicodedata.normalize("NFKC", variant)  # nmt_nfkc normaliser
        longest = max(longest, len(ids))
  assert longest <= 30  # captions fit a 32-token text tower with EOS
  for code in languages.LANGUAGES:
    for name in shapes.class_names(code):
      assert sp.unk_id() not in sp.encode(name)
  # Text outside the demo vocabulary still avoids <unk> (byte fallback).
  assert sp.unk_id() not in sp.encode("Ünïcødé → ☃ 🙂")


def test_tokenizer_pieces_do_not_span_colour_and_shape(sp):
  # Japanese / Chinese have no spaces; the pieces must stop at word boundaries so that held-out pairs
  # are made of trained pieces.
  for code in ("ja", "zh"):
    for colour, shape in shapes.HELDOUT_PAIRS:
      pieces = sp.encode(languages.class_name(code, colour, shape), out_type=str)
      joined = "".join(pieces).replace("▁", "")
      colour_word = languages.colour_forms(code, colour)[0]
      assert joined == languages.class_name(code, colour, shape)
      assert not any(colour_word in p and languages.shape_forms(code, shape)[0] in p for p in pieces), pieces


def test_shipped_tokenizer_matches_training_script_settings():
  model_pb2 = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")
  proto = model_pb2.ModelProto()
  proto.ParseFromString(TOKENIZER.read_bytes())
  spec = proto.trainer_spec
  assert spec.vocab_size == len(proto.pieces) == 2000
  assert spec.character_coverage == 1.0 and spec.byte_fallback
  assert (spec.pad_id, spec.eos_id, spec.unk_id, spec.bos_id) == (0, 1, 2, -1)
  assert spec.pretokenization_delimiter == languages.WORD_MARK
