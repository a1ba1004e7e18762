"""The pp language: parsing, rejection of bad strings, and each op's effect on known inputs."""

import io
import pathlib
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import data_fixtures  # noqa: E402

tf = pytest.importorskip("tensorflow")
from siglip_rins.data import pp  # noqa: E402
from siglip_rins.text import get_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
  return data_fixtures.tokenizer_path_for_tests(tmp_path_factory.mktemp("tok"))


def run(pp_string, **features):
  fn = pp.get_preprocess_fn(pp_string)
  out = fn({k: tf.constant(v) for k, v in features.items()})
  return {k: v.numpy() for k, v in out.items()}


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
  "pp_string",
  [
    "decode|resize(256)|value_range(-1, 1)|tokenize(max_len=64, model='demo', eos='sticky', inkey='texts', "
    "outkey='labels')|keep('image', 'labels')",
    "copy(inkey='a|b', outkey=\"c(d)\")|drop('x')",
    "resize((16, 24), method='nearest')|onehot(10, on=0.9, off=0.0)",
    "keep|flip_lr|inception_crop(size=8, area_min=50)",
    "op_with_dict({'k': [1, 2.5, None, True]}, x=-3)",
  ],
)
def test_parse_round_trip(pp_string):
  specs = pp.parse(pp_string)
  assert pp.parse(pp.to_string(specs)) == specs
  assert pp.to_string(pp.parse(pp.to_string(specs))) == pp.to_string(specs)


def test_parse_structure():
  specs = pp.parse("a|b(1, 'x|y', k=(2, 3))| c ")
  assert [s.name for s in specs] == ["a", "b", "c"]
  assert specs[1].args == (1, "x|y") and dict(specs[1].kwargs) == {"k": (2, 3)}


@pytest.mark.parametrize(
  "pp_string, fragments",
  [
    ("decode|frobnicate(3)", ["frobnicate", "unknown"]),
    ("resize(256, sizee=3)", ["resize", "sizee"]),
    ("resize('big')", ["resize", "size"]),
    ("resize(__import__('os').getcwd())", ["resize", "literal"]),
    ("value_range(1+x)", ["value_range", "literal"]),
    ("tokenize(max_len=0)", ["tokenize", "max_len"]),
    ("tokenize(64, eos='maybe')", ["tokenize", "eos"]),
    ("onehot(depth=-1)", ["onehot", "depth"]),
    ("central_crop((1, 2, 3))", ["central_crop", "size"]),
    ("resize(8", ["bracket"]),
    ("decode||keep('image')", ["empty op"]),
    ("decode(**{'a': 1})", ["decode", "**kwargs"]),
    ("", ["empty"]),
    ("inception_crop(area_min=90, area_max=10)", ["inception_crop", "area_min"]),
  ],
)
def test_bad_strings_rejected(pp_string, fragments):
  with pytest.raises(ValueError) as err:
    pp.get_preprocess_fn(pp_string)
  for fragment in fragments:
    assert fragment in str(err.value)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_parser_raises_only_value_error(text):
  try:
    pp.parse(text)
  except ValueError:
    pass


_PP_ALPHABET = st.sampled_from(
  list("|()[]{},='\"\\ _-+*.:0123456789") + ["resize", "decode", "keep", "k=", "'image'", "None", "1e9", "lambda"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_PP_ALPHABET, max_size=20).map("".join))
def test_fuzz_build_raises_only_value_error(text):
  try:
    pp.get_preprocess_fn(text)
  except ValueError:
    pass


def test_register_rejects_duplicates():
  with pytest.raises(ValueError, match="already registered"):
    pp.register("resize")(lambda: None)
  assert {"decode", "resize", "tokenize", "choice", "keep"} <= set(pp.registered_ops())


# ------------------------------------------------------------------ image ops


@pytest.mark.parametrize("fmt", ["png", "jpeg", "gif", "webp", "bmp"])
def test_decode_formats(fmt):
  image = data_fixtures.make_image(12, 20, seed=1)
  encoded = data_fixtures.encode_image(image, fmt)
  out = run("decode", image=encoded)["image"]
  assert out.shape == (12, 20, 3) and out.dtype == np.uint8
  reference = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))  # Pillow's decoding
  if fmt in ("png", "webp", "bmp"):
    np.testing.assert_array_equal(out, image)
  if fmt == "jpeg":  # libjpeg IDCT variants differ by a grey level or so
    assert np.abs(out.astype(int) - reference).mean() < 1.5
  else:
    np.testing.assert_array_equal(out, reference)


def test_decode_grayscale_and_rgba_to_rgb():
  gray = data_fixtures.make_image(6, 7, channels=1)
  out = run("decode(inkey='raw', outkey='image')", raw=data_fixtures.encode_image(gray, "png"))
  assert out["image"].shape == (6, 7, 3)
  np.testing.assert_array_equal(out["image"], np.repeat(gray, 3, axis=-1))
  rgba = data_fixtures.make_image(6, 7, channels=4)
  out = run("decode", image=data_fixtures.encode_image(rgba, "png"))["image"]
  np.testing.assert_array_equal(out, rgba[..., :3])


def test_decode_rejects_garbage():
  with pytest.raises(tf.errors.InvalidArgumentError):
    run("decode", image=b"not an image")


def test_resize_and_resize_small():
  image = data_fixtures.make_image(24, 32)
  out = run("resize(8)", image=image)["image"]
  assert out.shape == (8, 8, 3) and out.dtype == np.uint8
  out = run("resize((6, 10), method='nearest')", image=image)["image"]
  assert out.shape == (6, 10, 3)
  out = run("resize_small(12)", image=image)["image"]
  assert out.shape == (12, 16, 3)
  flat = np.full((4, 4, 3), 77, np.uint8)
  np.testing.assert_array_equal(run("resize(9)", image=flat)["image"], np.full((9, 9, 3), 77, np.uint8))


def test_central_crop_content():
  image = np.arange(8 * 10 * 3, dtype=np.int32).reshape(8, 10, 3)
  np.testing.assert_array_equal(run("central_crop(4)", image=image)["image"], image[2:6, 3:7])
  np.testing.assert_array_equal(run("central_crop((2, 6))", image=image)["image"], image[3:5, 2:8])


def _seeded(pp_string, image, seed):
  fn = pp.get_preprocess_fn(pp_string)
  return fn({"image": tf.constant(image), "_rng": tf.constant(seed, tf.int32)})["image"].numpy()


def test_inception_crop_deterministic_by_seed():
  image = data_fixtures.make_image(32, 40)
  a = _seeded("inception_crop(8, area_min=20)", image, [1, 2])
  b = _seeded("inception_crop(8, area_min=20)", image, [1, 2])
  assert a.shape == (8, 8, 3)
  np.testing.assert_array_equal(a, b)
  crops = [_seeded("inception_crop(8, area_min=20)", image, [s, 0]) for s in range(6)]
  assert any(not np.array_equal(crops[0], c) for c in crops[1:])
  uncropped = _seeded("inception_crop(area_min=100)", image, [3, 4])
  np.testing.assert_array_equal(uncropped, image)


def test_flip_lr_deterministic_and_both_outcomes():
  image = data_fixtures.make_image(5, 6)
  outs = [_seeded("flip_lr", image, [s, 7]) for s in range(12)]
  flipped = [np.array_equal(o, image[:, ::-1]) for o in outs]
  same = [np.array_equal(o, image) for o in outs]
  assert all(f or s for f, s in zip(flipped, same)) and any(flipped) and any(same)
  np.testing.assert_array_equal(_seeded("flip_lr", image, [3, 7]), outs[3])


def test_value_range():
  image = np.array([[[0, 255, 51]]], np.uint8)
  np.testing.assert_allclose(run("value_range(-1, 1)", image=image)["image"], [[[-1, 1, -0.6]]], atol=1e-6)
  np.testing.assert_allclose(
    run("value_range(0, 1, in_min=0, in_max=51, clip_values=True)", image=image)["image"], [[[0, 1, 1]]], atol=1e-6
  )


# ------------------------------------------------------------------ common and text ops


def test_keep_drop_copy_onehot():
  out = run(
    "copy('label', 'y')|onehot(4, key='y', on=0.9, off=0.1)|drop('a')|keep('y', 'label')",
    label=np.int64(2),
    a=b"x",
    b=b"z",
  )
  assert set(out) == {"y", "label"}
  np.testing.assert_allclose(out["y"], [0.1, 0.1, 0.9, 0.1], atol=1e-6)
  assert out["label"] == 2
  with pytest.raises(ValueError, match="keep"):
    run("keep('missing')", label=np.int64(1))


def test_lower_canonicalize_choice():
  out = run("lower(key='t', outkey='low')|canonicalize(key='t')", t="Привет, МИР_Hello!")
  assert out["low"].decode() == "привет, мир_hello!"
  assert out["t"].decode() == "привет мир hello"
  texts = np.array([b"", b"first", b"second", b"third"])
  assert run("choice(mode='first')", texts=texts)["texts"] == b"first"
  picks = set()
  for s in range(12):
    fn = pp.get_preprocess_fn("choice")
    pick = fn({"texts": tf.constant(texts), "_rng": tf.constant([s, 1])})["texts"].numpy()
    again = fn({"texts": tf.constant(texts), "_rng": tf.constant([s, 1])})["texts"].numpy()
    assert pick == again and pick != b""
    picks.add(pick)
  assert picks == {b"first", b"second", b"third"}


def test_tokenize_op_matches_tokenizer(tok_path):
  tokenizer = get_tokenizer(tok_path)
  texts = data_fixtures.MULTILINGUAL_TEXTS[:5]
  out = run(
    f"tokenize(max_len=10, model={tok_path!r}, eos='sticky', inkey='texts', outkey='labels')",
    texts=np.array([t.encode() for t in texts]),
  )
  np.testing.assert_array_equal(out["labels"], tokenizer.encode(texts, 10, eos="sticky"))
  one = run(f"tokenize(7, model={tok_path!r}, eos='none', pad_value=-1)", texts=texts[2])["labels"]
  np.testing.assert_array_equal(one, tokenizer.encode([texts[2]], 7, eos="none", pad_value=-1)[0])
  with pytest.raises(FileNotFoundError, match="no_such_tokenizer"):
    pp.get_preprocess_fn("tokenize(8, model='no_such_tokenizer')")
