"""Tokenizers and canonicalisation: Python vs TensorFlow equality, EOS semantics, name resolution."""

import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import data_fixtures  # noqa: E402

from siglip_rins.text import canonicalize, get_tokenizer  # noqa: E402
from siglip_rins.text.tokenizer import Tokenizer, ascii_lower, resolve_tokenizer_path  # noqa: E402

tf = pytest.importorskip("tensorflow")
from siglip_rins.text import tf_ops  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
  return data_fixtures.write_sentencepiece_model(tmp_path_factory.mktemp("sp"), vocab_size=300)


@pytest.fixture(scope="module", params=["default", "tiny"])
def tokenizer(request, tiny_model):
  if request.param == "tiny":
    return get_tokenizer(str(tiny_model))
  return get_tokenizer(data_fixtures.tokenizer_path_for_tests(tiny_model.parent))


@pytest.mark.parametrize(
  "text, expected",
  [
    ("A photo of a cat sitting on the_mat!", "a photo of a cat sitting on the mat"),
    ("  Multiple   spaces\tand\nnewlines  ", "multiple spaces and newlines"),
    ("Фотография красного автомобиля на улице.", "фотография красного автомобиля на улице"),
    ("一只猫坐在窗台上。「可爱」！", "一只猫坐在窗台上可爱"),
    ("Η γάτα ΣΤΟ ΣΠΙΤΙ", "η γάτα στο σπιτι"),
    ("don't  stop -- $5 + 3 = 8", "dont stop 5 3 8"),
    ("एक बिल्ली। सुंदर!", "एक बिल्ली सुंदर"),
    ("", ""),
  ],
)
def test_canonicalize_known(text, expected):
  assert canonicalize(text) == expected


def _tf_canon(strings):
  return [s.decode("utf-8") for s in tf_ops.canonicalize_tf(tf.constant(strings)).numpy().tolist()]


def test_canonicalize_python_equals_tf_multilingual():
  texts = data_fixtures.MULTILINGUAL_TEXTS + ["ΟΔΟΣ ΣΑΣ", "İstanbul ŞEHİR", "«quoted» „low“ ‘single’"]
  assert _tf_canon(texts) == [canonicalize(t) for t in texts]


def test_canonicalize_python_equals_tf_per_codepoint():
  # Every code point of the first planes that users' captions plausibly contain, each between letters.
  # U+2C2F (Glagolitic, Unicode 14) is the one letter in this range that TensorFlow's older ICU does not
  # lowercase; newer code points may differ the same way (documented in canonicalize.py).
  chars = [chr(c) for c in range(0x20, 0x3100) if c != 0x2C2F]
  texts = [f"a{c}b {c}" for c in chars]
  got = _tf_canon(texts)
  mismatches = [(hex(ord(c)), g, canonicalize(t)) for c, t, g in zip(chars, texts, got) if g != canonicalize(t)]
  assert not mismatches, mismatches[:10]


@pytest.mark.parametrize("max_len", [4, 12, 40])
@pytest.mark.parametrize("eos", ["none", "yes", "sticky"])
def test_python_and_tf_tokenization_identical(tokenizer, max_len, eos):
  texts = data_fixtures.MULTILINGUAL_TEXTS
  for canon in (True, False):
    py_ids = tokenizer.encode(texts, max_len, eos=eos, canonicalize=canon)
    tf_ids = tf_ops.tokenize(tokenizer, tf.constant(texts), max_len, eos=eos, canonicalize=canon).numpy()
    assert py_ids.dtype == np.int32 and py_ids.shape == (len(texts), max_len)
    np.testing.assert_array_equal(py_ids, tf_ids)
  scalar = tf_ops.tokenize(tokenizer, tf.constant(texts[2]), max_len, eos=eos).numpy()
  np.testing.assert_array_equal(scalar, tokenizer.encode([texts[2]], max_len, eos=eos)[0])


LONG_CAPTION = "A very long caption: " + " ".join(["the quick brown fox jumps over the lazy dog"] * 6)
IDENTITY_TEXTS = data_fixtures.MULTILINGUAL_TEXTS + [
  "قطة سوداء تنام على الأريكة.",  # Arabic
  "猫がソファで寝ています。カタカナ、ひらがな！",  # Japanese
  "ÀÉÎ ÕÜ Straße İstanbul ΣΑΣ",  # non-ASCII capitals (ASCII-only lower keeps them)
  LONG_CAPTION,
  "",
]
# (lower, canonicalize, add_bos, pad_value): every option the tokenize op passes on.
OPTION_SETS = [
  (False, False, False, None),
  (True, False, False, "<pad>"),
  (True, True, False, 1),
  (False, True, False, "</s>"),
  (True, False, True, "<pad>"),
  (False, True, True, -3),
]


@pytest.fixture(scope="module")
def bos_tokenizer(tmp_path_factory):
  path = data_fixtures.write_sentencepiece_model(tmp_path_factory.mktemp("sp_bos"), vocab_size=300, bos_id=3)
  return get_tokenizer(str(path))


@pytest.mark.parametrize("eos", ["none", "yes", "sticky"])
@pytest.mark.parametrize("options", OPTION_SETS)
def test_python_and_tf_identical_every_option(tokenizer, bos_tokenizer, eos, options):
  lower, canon, add_bos, pad_value = options
  tok = bos_tokenizer if add_bos else tokenizer
  kw = dict(eos=eos, canonicalize=canon, lower=lower, add_bos=add_bos, pad_value=pad_value)
  for max_len in (3, 16):
    py_ids = tok.encode(IDENTITY_TEXTS, max_len, **kw)
    tf_ids = tf_ops.tokenize(tok, tf.constant(IDENTITY_TEXTS), max_len, **kw).numpy()
    np.testing.assert_array_equal(py_ids, tf_ids)
  long_ids = tok.encode_ids(LONG_CAPTION, canonicalize=canon, lower=lower)
  assert len(long_ids) > 16  # the long caption is truncated in every mode
  grid = tf_ops.tokenize(tok, tf.constant([IDENTITY_TEXTS[:2], IDENTITY_TEXTS[2:4]]), 8, **kw).numpy()
  np.testing.assert_array_equal(grid.reshape(4, 8), tok.encode(IDENTITY_TEXTS[:4], 8, **kw))


def test_add_bos_and_pad_pieces(bos_tokenizer):
  tok = bos_tokenizer
  assert tok.bos_id == 3 and tok.piece_to_id("<pad>") == 0 and tok.piece_to_id("</s>") == 1
  ids = tok.encode_ids("a dog", canonicalize=False)
  row = tok.encode(["a dog"], len(ids) + 4, eos="sticky", add_bos=True, pad_value="</s>")[0]
  assert list(row) == [3] + ids + [1, 1, 1]
  row = tok.encode(["a dog"], 2, eos="sticky", add_bos=True)[0]
  assert list(row) == [3, 1]
  with pytest.raises(ValueError, match="pad_value"):
    tok.encode(["a"], 4, pad_value=1.5)


def test_ascii_lower_python_equals_tf_per_codepoint():
  chars = "".join(chr(c) for c in range(0x20, 0x3100) if not 0xD800 <= c < 0xE000)
  got = tf.strings.lower(tf.constant(chars)).numpy().decode("utf-8")
  assert got == ascii_lower(chars)
  assert ascii_lower("ABC Àé ΣΑΣ İ") == "abc Àé ΣΑΣ İ"


def test_encode_defaults_are_the_plain_tokenization(tokenizer):
  # Tokenizer.encode defaults: no lowercasing, no canonicalisation, sticky EOS, the model's pad id.
  text = "Two Dogs, running!"
  ids = tokenizer.encode_ids(text, canonicalize=False)
  row = tokenizer.encode([text], len(ids) + 2)[0]
  assert list(row) == ids + [tokenizer.eos_id, tokenizer.pad_id]


def test_eos_semantics(tokenizer):
  text = data_fixtures.MULTILINGUAL_TEXTS[1]
  ids = tokenizer.encode_ids(text, canonicalize=False)
  assert len(ids) > 4 and tokenizer.eos_id not in ids
  long_len = len(ids) + 3
  none = tokenizer.encode([text], long_len, eos="none")[0]
  yes = tokenizer.encode([text], long_len, eos="yes")[0]
  np.testing.assert_array_equal(none[: len(ids)], ids)
  assert list(none[len(ids) :]) == [tokenizer.pad_id] * 3
  assert yes[len(ids)] == tokenizer.eos_id and list(yes[len(ids) + 1 :]) == [tokenizer.pad_id] * 2
  short = 4
  assert list(tokenizer.encode([text], short, eos="yes")[0]) == ids[:short]  # EOS cut off
  sticky = tokenizer.encode([text], short, eos="sticky")[0]
  assert list(sticky) == ids[: short - 1] + [tokenizer.eos_id]
  padded = tokenizer.encode([text], long_len, eos="none", pad_value=-7)[0]
  assert list(padded[len(ids) :]) == [-7] * 3
  assert tokenizer.decode(tokenizer.encode([text], 64, canonicalize=True)[0]) == canonicalize(text)


def test_encode_rejects_bad_arguments(tokenizer):
  with pytest.raises(ValueError, match="max_len"):
    tokenizer.encode(["a"], 0)
  with pytest.raises(ValueError, match="eos"):
    tokenizer.encode(["a"], 4, eos="maybe")
  with pytest.raises(ValueError, match="single string"):
    tokenizer.encode("abc", 4)


def test_name_resolution_env_vars(tiny_model, tmp_path, monkeypatch):
  monkeypatch.setenv("SIGLIP_RINS_TOKENIZER_C4_EN", str(tiny_model))
  assert resolve_tokenizer_path("c4_en") == tiny_model
  assert get_tokenizer("c4_en").vocab_size == get_tokenizer(str(tiny_model)).vocab_size
  monkeypatch.delenv("SIGLIP_RINS_TOKENIZER_C4_EN")
  (tmp_path / "mc4.model").write_bytes(tiny_model.read_bytes())
  monkeypatch.setenv("SIGLIP_RINS_TOKENIZER_DIR", str(tmp_path))
  assert resolve_tokenizer_path("mc4") == tmp_path / "mc4.model"
  with pytest.raises(FileNotFoundError) as err:
    resolve_tokenizer_path("gemma")
  message = str(err.value)
  assert "gemma" in message and "SIGLIP_RINS_TOKENIZER_GEMMA" in message and str(tmp_path / "gemma.model") in message


def test_not_a_sentencepiece_model(tmp_path):
  bogus = tmp_path / "bogus.model"
  bogus.write_bytes(b"definitely not a protobuf \x00\xff" * 10)
  with pytest.raises(ValueError, match="bogus.model"):
    get_tokenizer(str(bogus))
  with pytest.raises(FileNotFoundError, match="nope.model"):
    get_tokenizer(str(tmp_path / "nope.model"))


def test_from_proto_round_trip(tokenizer):
  clone = Tokenizer(tokenizer.model_proto)
  texts = data_fixtures.MULTILINGUAL_TEXTS[:4]
  np.testing.assert_array_equal(clone.encode(texts, 16), tokenizer.encode(texts, 16))
  assert clone.eos_id == tokenizer.eos_id and clone.pad_id == tokenizer.pad_id
