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
    ("decode(**{'a': 1})", ["decode", "**kwargs"]),
    ("inception_crop(area_min=90, area_max=10)", ["inception_crop", "area_min"]),
    ("resize(8, key=3)", ["resize", "key"]),
    ("choice(n='many')", ["choice", "n"]),
    ("choice(n=[3, 1])", ["choice", "n"]),
    ("pad_to_shape([4], where='middle')", ["pad_to_shape", "where"]),
    ("strfmt('{x:>3}')", ["strfmt", "format spec"]),
    ("value_range(in_min=[0, 1], in_max=[255, 1])", ["value_range", "differ"]),
    ("tokenize(8, model='demo', add_bos=True)", ["tokenize", "BOS"]),
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
  assert run("keep('missing')", label=np.int64(1)) == {}  # big_vision: absent keys are ignored


def test_lower_canonicalize_choice():
  # big_vision's keys: `key` names both input and output (an outkey next to key is ignored).
  out = run("lower(key='t', outkey='low')|copy('t', 'low')|canonicalize(key='t')", t="Привет, МИР_Hello!")
  assert out["low"].decode() == "Привет, МИР_hello!"  # ASCII-only lowercase
  assert out["t"].decode() == "привет мир hello"
  texts = np.array([b"", b"first", b"second", b"third"])
  assert run("choice(mode='first')", texts=texts)["texts"] == b""
  picks = set()
  for s in range(16):
    fn = pp.get_preprocess_fn("choice")
    pick = fn({"texts": tf.constant(texts), "_rng": tf.constant([s, 1])})["texts"].numpy()
    again = fn({"texts": tf.constant(texts), "_rng": tf.constant([s, 1])})["texts"].numpy()
    assert pick == again
    picks.add(pick)
  assert picks == set(texts.tolist())  # uniform over every entry, empty ones included (big_vision)
  assert run("choice(mode='first', skip_empty=True)", texts=texts)["texts"] == b"first"
  kept = {_seeded_run("choice(skip_empty=True)", [s, 1], texts=texts)["texts"] for s in range(16)}
  assert kept == {b"first", b"second", b"third"}
  assert run("choice(skip_empty=True)", texts=np.array([b"", b""]))["texts"] == b""


def test_tokenize_op_matches_tokenizer(tok_path):
  tokenizer = get_tokenizer(tok_path)
  texts = data_fixtures.MULTILINGUAL_TEXTS[:5]
  out = run(
    f"tokenize(max_len=10, model={tok_path!r}, eos='sticky', inkey='texts', outkey='labels', sample_if_multi=False)",
    texts=np.array([t.encode() for t in texts]),
  )
  np.testing.assert_array_equal(out["labels"], tokenizer.encode(texts, 10, eos="sticky", lower=True, pad_value="<pad>"))
  one = run(f"tokenize(7, model={tok_path!r}, eos='none', pad_value=-1)", texts=texts[2])["labels"]
  np.testing.assert_array_equal(one, tokenizer.encode([texts[2]], 7, eos="none", pad_value=-1, lower=True)[0])
  with pytest.raises(FileNotFoundError, match="no_such_tokenizer"):
    pp.get_preprocess_fn("tokenize(8, model='no_such_tokenizer')")


# ------------------------------------------------------------------ big_vision semantics
# Expected values below come from big_vision's definitions, computed with numpy (big_vision is not imported).


def _np_bilinear(image, out_h, out_w):
  """tf.image.resize(method='bilinear', antialias=False) by its definition: half-pixel centres, edge clamp."""

  def weights(n_in, n_out):
    src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(int), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, src - np.floor(src)

  x = image.astype(np.float64)
  lo, hi, f = weights(x.shape[0], out_h)
  x = x[lo] * (1 - f)[:, None, None] + x[hi] * f[:, None, None]
  lo, hi, f = weights(x.shape[1], out_w)
  return x[:, lo] * (1 - f)[None, :, None] + x[:, hi] * f[None, :, None]


# 2x2 -> 4x4 bilinear uses weights 0, 1/4, 3/4, 1 on each axis: every output is an exact multiple of 1/16.
CRAFTED = np.array([[[0, 10, 200], [3, 255, 17]], [[250, 1, 99], [7, 128, 64]]], np.uint8)


def test_resize_truncates_like_big_vision():
  exact = _np_bilinear(CRAFTED, 4, 4)
  expected = np.trunc(exact).astype(np.uint8)  # big_vision: clip to [0, 255], then cast (truncate)
  assert (np.round(exact) != expected).mean() > 0.3  # rounding would differ on many pixels
  np.testing.assert_array_equal(run("resize(4)", image=CRAFTED)["image"], expected)
  np.testing.assert_array_equal(run("resize((4, 4), method='bilinear')", image=CRAFTED)["image"], expected)
  out = run("resize(4)|value_range(-1, 1)", image=CRAFTED)["image"]
  np.testing.assert_allclose(out, expected / 255.0 * 2 - 1, atol=1e-6)
  crop = run("inception_crop(4, area_min=100, area_max=100)", image=CRAFTED)["image"]
  np.testing.assert_array_equal(crop, expected)  # the whole 2x2 image, then the same truncating resize
  small = run("resize_small(4, method='bilinear')", image=CRAFTED)["image"]
  np.testing.assert_array_equal(small, expected)
  floats = run("resize(4)", image=CRAFTED.astype(np.float32))["image"]
  assert floats.dtype == np.float32
  np.testing.assert_allclose(floats, exact, atol=1e-4)


def test_resize_small_and_long_area_truncate():
  image = np.random.RandomState(3).randint(0, 256, (4, 6, 3)).astype(np.uint8)
  block_mean = image.astype(np.float64).reshape(2, 2, 3, 2, 3).mean(axis=(1, 3))  # 2x2 area average
  expected = np.floor(block_mean).astype(np.uint8)
  assert (np.round(block_mean) != expected).any()
  np.testing.assert_array_equal(run("resize_small(2)", image=image)["image"], expected)  # default method 'area'
  np.testing.assert_array_equal(run("resize_long(3)", image=image)["image"], expected)  # area, antialias=True
  assert run("resize_small(3)", image=np.zeros((4, 7, 3), np.uint8))["image"].shape == (3, 5, 3)  # 7*0.75 -> 5
  assert run("resize_long(14)", image=np.zeros((4, 7, 3), np.uint8))["image"].shape == (8, 14, 3)


def test_inkey_outkey_key_like_big_vision():
  image = data_fixtures.make_image(6, 8)
  out = run("resize(4, inkey='x')", x=image)
  assert out["image"].shape == (4, 4, 3) and out["x"].shape == (6, 8, 3)  # outkey keeps its default 'image'
  out = run("resize(4, key='x')", x=image)
  assert set(out) == {"x"} and out["x"].shape == (4, 4, 3)
  out = run("flip_lr(key='x')|central_crop(2, inkey='x', outkey='y')|value_range(0, 1, key='y')", x=image)
  assert out["y"].shape == (2, 2, 3) and out["y"].dtype == np.float32
  out = run("decode(inkey='raw', outkey='img')", raw=data_fixtures.encode_image(image, "png"))
  np.testing.assert_array_equal(out["img"], image)


@pytest.mark.parametrize(
  "pp_string, features, check",
  [
    ("decode||resize(8)", "png", lambda o: o["image"].shape == (8, 8, 3)),
    ("decode|resize(8)|", "png", lambda o: o["image"].shape == (8, 8, 3)),
    ("|decode", "png", lambda o: o["image"].shape == (6, 8, 3)),
    ("", "png", lambda o: isinstance(o["image"], bytes)),  # empty pp: the identity
    ("decode|resize(8, inkey='image', outkey='small')", "png", lambda o: o["small"].shape == (8, 8, 3)),
    ("decode|central_crop", "png", lambda o: o["image"].shape == (6, 6, 3)),
    ("decode|value_range(vmin=[-1, 0, 0], vmax=[1, 1, 2])", "png", lambda o: o["image"].shape == (6, 8, 3)),
    ("decode|value_range(-1, 1, in_min=[0, 0, 0], in_max=[255, 127.5, 51])", "png", lambda o: True),
    ("decode|keep('image', 'not_there')", "png", lambda o: set(o) == {"image"}),
  ],
)
def test_previously_refused_big_vision_strings(pp_string, features, check):
  image = data_fixtures.make_image(6, 8)
  out = run(pp_string, image=data_fixtures.encode_image(image, features))
  assert check(out)


def test_value_range_per_channel_and_central_crop_largest_square():
  image = np.array([[[0, 255, 51], [255, 0, 102]]], np.uint8)
  out = run("value_range(vmin=[-1, 0, 0], vmax=[1, 1, 2], in_min=[0, 0, 0], in_max=[255, 255, 51])", image=image)
  lo, hi = np.array([-1, 0, 0.0]), np.array([1, 1, 2.0])
  expected = lo + (image / np.array([255, 255, 51.0])) * (hi - lo)
  np.testing.assert_allclose(out["image"], expected, atol=1e-6)
  clipped = run("value_range(0, 1, in_min=[0, 0, 0], in_max=[255, 255, 51], clip_values=True)", image=image)
  np.testing.assert_allclose(clipped["image"], np.minimum(image / np.array([255, 255, 51.0]), 1), atol=1e-6)
  tall = np.arange(7 * 3 * 1).reshape(7, 3, 1)
  np.testing.assert_array_equal(run("central_crop", image=tall)["image"], tall[2:5])
  np.testing.assert_array_equal(run("central_crop(crop_size=(3, 1))", image=tall)["image"], tall[2:5, 1:2])


def test_clip_and_vgg_value_range():
  image = np.array([[[0, 128, 255], [10, 20, 30]]], np.uint8)
  clip_mean = np.array([0.48145466, 0.4578275, 0.40821073]) * 255
  clip_std = np.array([0.26862954, 0.26130258, 0.27577711]) * 255
  np.testing.assert_allclose(run("clip_value_range", image=image)["image"], (image - clip_mean) / clip_std, rtol=1e-5)
  vgg_mean, vgg_std = np.array([0.485, 0.456, 0.406]) * 255, np.array([0.229, 0.224, 0.225]) * 255
  np.testing.assert_allclose(run("vgg_value_range", image=image)["image"], (image - vgg_mean) / vgg_std, rtol=1e-5)
  out = run("vgg_value_range(mean=(1, 2, 3), std=(2, 2, 2))", image=image)["image"]
  np.testing.assert_allclose(out, (image - np.array([1, 2, 3])) / 2, rtol=1e-6)


def test_random_crop_is_a_seeded_window():
  image = np.arange(9 * 10 * 3, dtype=np.int32).reshape(9, 10, 3)
  crops = [_seeded("random_crop((4, 5))", image, [s, 3]) for s in range(8)]
  for crop in crops:
    top, left = np.argwhere(image[..., 0] == crop[0, 0, 0])[0]
    np.testing.assert_array_equal(crop, image[top : top + 4, left : left + 5])
  np.testing.assert_array_equal(_seeded("random_crop((4, 5))", image, [2, 3]), crops[2])
  assert len({c[0, 0, 0] for c in crops}) > 1
  assert _seeded("random_crop(3)", image, [0, 0]).shape == (3, 3, 3)


def test_decode_jpeg_and_inception_crop_full_area():
  image = data_fixtures.make_image(16, 16, seed=4)
  encoded = data_fixtures.encode_image(image, "jpeg")
  full = run("decode_jpeg_and_inception_crop(area_min=100)", image=encoded)["image"]
  np.testing.assert_array_equal(full, run("decode", image=encoded)["image"])
  out = _seeded("decode_jpeg_and_inception_crop(8, area_min=20)", encoded, [5, 5])
  assert out.shape == (8, 8, 3) and out.dtype == np.uint8


def test_onehot_defaults_and_multi():
  out = run("onehot(4)", labels=np.int64(2))  # default key 'labels', written back to 'labels'
  np.testing.assert_array_equal(out["labels"], [0, 0, 1, 0])
  assert out["labels"].dtype == np.float32
  out = run("onehot(5)", labels=np.array([1, 3, 3]))  # multi=True: one multi-hot vector
  np.testing.assert_array_equal(out["labels"], [0, 1, 0, 1, 0])
  out = run("onehot(5, multi=False, on=0.9, off=0.025)", labels=np.array([1, 3]))
  np.testing.assert_allclose(out["labels"], [[0.025, 0.9, 0.025, 0.025, 0.025], [0.025, 0.025, 0.025, 0.9, 0.025]])
  out = run("onehot(3, key='label', key_result='y', on=2, off=-1)", label=np.array([0, 2]))
  np.testing.assert_array_equal(out["y"], [2, -1, 2])
  np.testing.assert_array_equal(out["label"], [0, 2])
  np.testing.assert_array_equal(run("onehot(3)", labels=np.array([-1, 1]))["labels"], [0, 1, 0])


def test_lower_op_ascii_only_default_key_text():
  out = run("lower", text="The CAT. Ünïcode ΣΑΣ İ!", texts="UNTOUCHED")
  assert out["text"].decode() == "the cat. Ünïcode ΣΑΣ İ!" and out["texts"] == b"UNTOUCHED"
  out = run("lower(inkey='texts', outkey='low')", texts=np.array([b"AB", b"Cd"]))
  assert out["low"].tolist() == [b"ab", b"cd"]


def test_choice_like_big_vision():
  a, b = np.arange(6), np.arange(6) * 10
  out = _seeded_run("choice(n=3, key=['a', 'b'])", [1, 2], a=a, b=b)
  assert out["a"].shape == (3,) and list(out["a"]) == sorted(out["a"]) and len(set(out["a"])) == 3
  np.testing.assert_array_equal(out["b"], out["a"] * 10)  # the same entries of every key
  sizes = {len(_seeded_run("choice(n=[1, 4], key='a')", [s, 0], a=a)["a"]) for s in range(16)}
  assert sizes <= {1, 2, 3, 4} and len(sizes) > 1
  out = _seeded_run("choice(inkey=['a', 'b'], outkey=['{key}_one', 'pick'])", [0, 1], a=a, b=b)
  assert out["pick"] == out["a_one"] * 10 and out["a_one"].shape == ()
  out = _seeded_run("choice(n=10, key='a', fewer_ok=True)", [0, 1], a=a)
  np.testing.assert_array_equal(out["a"], a)
  with pytest.raises(tf.errors.InvalidArgumentError):
    _seeded_run("choice(n=10, key='a')", [0, 1], a=a)
  assert run("choice(n=2, key='a', mode='first')", a=a)["a"].tolist() == [0, 1]


def _seeded_run(pp_string, seed, **features):
  fn = pp.get_preprocess_fn(pp_string)
  out = fn({**{k: tf.constant(v) for k, v in features.items()}, "_rng": tf.constant(seed, tf.int32)})
  return {k: v.numpy() for k, v in out.items()}


def test_setdefault_flatten_coco_captions_strfmt():
  out = run("setdefault('t', 'none')|setdefault('u', 7)", t=np.array([], dtype=bytes))
  assert out["t"].tolist() == [b"none"] and out["u"] == 7
  assert run("setdefault('t', 'none')", t=np.array([b"x", b"y"]))["t"].tolist() == [b"x", b"y"]
  nested = {
    "image": tf.constant([1]),
    "captions": {"text": tf.constant([b"a", b"b"]), "id": tf.constant([4, 5])},
    "objects": {"bbox": {"x": tf.constant(1)}},
  }
  flat = pp.get_preprocess_fn("flatten")(nested)
  assert set(flat) == {"image", "captions/text", "captions/id", "objects/bbox/x"}
  part = pp.get_preprocess_fn("flatten(['captions'])")(nested)
  assert set(part) == {"image", "captions/text", "captions/id", "objects"}
  caps = pp.get_preprocess_fn("coco_captions")(nested)
  assert caps["captions"].numpy().tolist() == [b"a", b"b"]
  caps = pp.get_preprocess_fn("coco_captions(outkey='texts')")(nested)
  assert caps["texts"].numpy().tolist() == [b"a", b"b"]
  out = run("strfmt('a photo of {name}, class {label} {v}.{}', outkey='q')", name="a cat", label=3, v=[1, 2])
  assert out["q"] == b"a photo of a cat, class 3 [1 2]."
  assert run("strfmt('{t}!')", t="hi")["text"] == b"hi!"


def test_pad_to_shape_squeeze_reshape_concat():
  x = np.array([[1, 2], [3, 4]], np.int32)
  out = run("pad_to_shape((3, 4), pad_value=-1, key='x')", x=x)["x"]
  np.testing.assert_array_equal(out, [[1, 2, -1, -1], [3, 4, -1, -1], [-1, -1, -1, -1]])
  out = run("pad_to_shape((3, None), where='before', key='x')", x=x)["x"]
  np.testing.assert_array_equal(out, [[0, 0], [1, 2], [3, 4]])
  out = run("pad_to_shape((2, 5), where='both', key='x')", x=x)["x"]
  np.testing.assert_array_equal(out, [[0, 1, 2, 0, 0], [0, 3, 4, 0, 0]])
  out = run("pad_to_shape(inkey='real_label', outkey='label', shape=[4], pad_value=-1)", real_label=[7, 8])
  np.testing.assert_array_equal(out["label"], [7, 8, -1, -1])
  assert run("squeeze_last_dim(key='m')", m=np.zeros((2, 3, 1)))["m"].shape == (2, 3)
  assert run("reshape([3, -1], key='x')", x=np.arange(6))["x"].shape == (3, 2)
  out = run("concat(['a', 'b'], outkey='c', axis=0)", a=[1, 2], b=[3])
  np.testing.assert_array_equal(out["c"], [1, 2, 3])


# ------------------------------------------------------------------ tokenize like big_vision


def _sp(tok_path):
  import sentencepiece

  return sentencepiece.SentencePieceProcessor(model_file=tok_path)


def _row(ids, max_len, pad):
  return np.array(ids + [pad] * (max_len - len(ids)), np.int32)


def test_tokenize_defaults_ascii_lower_keeps_punctuation(tok_path):
  sp = _sp(tok_path)
  eos, pad = sp.eos_id(), sp.PieceToId("<pad>")
  text = "A Photo, of ÀN Éclair! ΣΑΣ"
  out = run(f"tokenize(24, 'sticky', model={tok_path!r}, inkey='texts')", texts=text)["labels"]
  ids = sp.EncodeAsIds("a photo, of Àn Éclair! ΣΑΣ")  # tf.strings.lower: ASCII letters only
  np.testing.assert_array_equal(out, _row(ids + [eos], 24, pad))
  canon = run(f"tokenize(24, 'sticky', model={tok_path!r}, canonicalize=True)", texts=text)["labels"]
  np.testing.assert_array_equal(canon, _row(sp.EncodeAsIds("a photo of àn éclair σας") + [eos], 24, pad))
  raw = run(f"tokenize(24, 'none', model={tok_path!r}, lower=False)", texts=text)["labels"]
  np.testing.assert_array_equal(raw, _row(sp.EncodeAsIds(text), 24, pad))
  np.testing.assert_array_equal(  # key='t': read and write 't'
    run(f"tokenize(24, 'sticky', model={tok_path!r}, key='t')", t=text)["t"], out
  )


def test_tokenize_default_model_is_c4_en(tok_path, monkeypatch):
  monkeypatch.setenv("SIGLIP_RINS_TOKENIZER_C4_EN", tok_path)
  out = run("tokenize(8, 'yes')", texts="a cat")["labels"]
  np.testing.assert_array_equal(out, _row(_sp(tok_path).EncodeAsIds("a cat") + [1], 8, 0))
  monkeypatch.delenv("SIGLIP_RINS_TOKENIZER_C4_EN")
  monkeypatch.delenv("SIGLIP_RINS_TOKENIZER_DIR", raising=False)
  with pytest.raises(FileNotFoundError, match="c4_en"):
    pp.get_preprocess_fn("tokenize(8, 'yes')")


def test_tokenize_sample_if_multi_picks_one_caption(tok_path):
  sp = _sp(tok_path)
  captions = [b"a dog", b"a red car", b"two cats"]
  expected = {tuple(_row(sp.EncodeAsIds(c.decode()) + [1], 8, 0)) for c in captions}
  fn = pp.get_preprocess_fn(f"tokenize(8, 'sticky', model={tok_path!r}, inkey='texts')")
  picks = set()
  for s in range(12):
    feats = {"texts": tf.constant(captions), "_rng": tf.constant([s, 9])}
    labels = fn(feats)["labels"].numpy()
    assert labels.shape == (8,) and tuple(labels) in expected
    np.testing.assert_array_equal(fn(feats)["labels"].numpy(), labels)  # same seed, same pick
    picks.add(tuple(labels))
  assert len(picks) > 1
  empty = run(f"tokenize(8, 'sticky', model={tok_path!r})", texts=np.array([], dtype=bytes))["labels"]
  np.testing.assert_array_equal(empty, _row(sp.EncodeAsIds("") + [1], 8, 0))  # setdefault '' first
  every = run(f"tokenize(8, 'sticky', model={tok_path!r}, sample_if_multi=False)", texts=np.array(captions))
  assert every["labels"].shape == (3, 8)


def test_tokenize_eos_and_pad_like_big_vision_docstring(tok_path):
  # big_vision's table with id('</s>')=1: "a" -> [a, 1, 0] (yes/sticky); too long: 'yes' loses the EOS,
  # 'sticky' keeps it; sticky with pad_value=1 pads with EOS.
  sp = _sp(tok_path)
  short, long_ = "cat", "a photo of a red car in the street"
  s_ids, l_ids = sp.EncodeAsIds(short), sp.EncodeAsIds(long_)
  n = len(s_ids) + 3
  assert len(l_ids) > n

  def tok(text, **kw):
    args = ", ".join(f"{k}={v!r}" for k, v in kw.items())
    return list(run(f"tokenize({n}, model={tok_path!r}, {args})", texts=text)["labels"])

  assert tok(short, eos="none") == s_ids + [0, 0, 0]
  assert tok(short, eos="yes") == s_ids + [1, 0, 0]
  assert tok(short, eos="sticky") == s_ids + [1, 0, 0]
  assert tok(short, eos="sticky", pad_value=1) == s_ids + [1, 1, 1]
  assert tok(short, eos="yes", pad_value="</s>") == s_ids + [1, 1, 1]
  assert tok(short, eos="none", pad_value="<pad>") == s_ids + [0, 0, 0]
  assert tok(long_, eos="none") == l_ids[:n]
  assert tok(long_, eos="yes") == l_ids[:n]
  assert tok(long_, eos="sticky") == l_ids[: n - 1] + [1]


def test_tokenize_add_bos(tmp_path):
  model = data_fixtures.write_sentencepiece_model(tmp_path, bos_id=3)
  ids = _sp(str(model)).EncodeAsIds("a dog")
  out = run(f"tokenize(8, 'sticky', model={str(model)!r}, add_bos=True, pad_value=1)", texts="A dog")["labels"]
  np.testing.assert_array_equal(out, _row([3] + ids + [1], 8, 1))
  np.testing.assert_array_equal(
    out, get_tokenizer(str(model)).encode(["A dog"], 8, lower=True, add_bos=True, pad_value=1)[0]
  )


def test_tok_like_big_vision(tok_path):
  # SigLIP 2's string: lower(key="text")|tok(length=..., model=..., bos="no", eos="sticky", key="text").
  sp = _sp(tok_path)
  out = run(f"lower(key='text')|tok(length=8, model={tok_path!r}, bos='no', eos='sticky', key='text')", text="A Dog")
  np.testing.assert_array_equal(out["text"], _row(sp.EncodeAsIds("a dog") + [1], 8, 0))
  out = run(f"tok({tok_path!r}, inkey='t', outkey='ids')", t="A Dog")  # eos='no', no length: unpadded
  np.testing.assert_array_equal(out["ids"], sp.EncodeAsIds("A Dog"))
  long_ids = sp.EncodeAsIds("a photo of a red car in the street")
  out = run(f"tok({tok_path!r}, 4, eos='yes', key='t')", t="a photo of a red car in the street")
  np.testing.assert_array_equal(out["t"], long_ids[:4])
  out = run(f"tok({tok_path!r}, 5, eos='yes', text='a dog', outkey='c')")
  np.testing.assert_array_equal(out["c"], _row(sp.EncodeAsIds("a dog") + [1], 5, 0))
  with pytest.raises(ValueError, match="bos"):
    pp.get_preprocess_fn(f"tok({tok_path!r}, bos='yes', key='t')")  # the demo model has no BOS
  with pytest.raises(ValueError, match="single string"):
    run(f"tok({tok_path!r}, key='t')", t=np.array([b"a", b"b"]))


def test_op_modules_do_not_import_the_parser():
  import subprocess

  code = "import sys, siglip_rins.data.ops_text; print('siglip_rins.data.pp' in sys.modules)"
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
  assert result.stdout.strip().splitlines()[-1] == "False"


def _choice_records(count=120):
  rng = np.random.default_rng(1)
  texts, labels = [], []
  for _ in range(count):
    k = int(rng.integers(0, 5))
    texts.append([bytes(rng.choice([b"", b"a", b"bb", b"ccc"])) for _ in range(k)])
    labels.append([[int(x) for x in rng.integers(0, 9, 4)] for _ in range(k)])
  texts[3] = [b"", b""]  # only empty captions: skip_empty falls back to all of them
  labels[7] = labels[7][:-1] if labels[7] else [[1, 2, 3, 4]]  # keys differ in length: the op raises
  return texts, labels, rng.integers(-(10**9), 10**9, (count, 2))


@pytest.mark.parametrize(
  "pp_string",
  [
    "choice(inkey=['texts', 'labels'], skip_empty=True)|keep('texts', 'labels')",
    "choice(inkey=['texts', 'labels'])|drop('img')",
    "choice(inkey=['texts', 'labels'], mode='first', outkey=['t', 'l'])",
    "choice()",
  ],
)
def test_batched_choice_equals_per_example(pp_string):
  """The batched form of a pp (a block of examples at once, pipeline._block_stream) gives every row what the
  per-example pp gives it for the same '_rng', and marks the rows where the per-example pp raises."""
  tf = pytest.importorskip("tensorflow")
  texts, labels, rngs = _choice_records()
  per_example, batched = pp.get_preprocess_fn(pp_string), pp.get_batched_preprocess_fn(pp_string)
  assert batched is not None
  block = {
    "texts": tf.ragged.constant(texts, dtype=tf.string),
    "labels": tf.ragged.constant(labels, dtype=tf.int32, ragged_rank=1, inner_shape=(4,)),
    "img": tf.zeros([len(texts), 2]),
    "_rng": tf.constant(rngs, tf.int64),
  }
  out, ok = batched(block, tf.ones([len(texts)], tf.bool))
  raised = 0
  for i in range(len(texts)):
    one = {
      "texts": tf.constant(texts[i], tf.string, shape=[len(texts[i])]),
      "labels": tf.constant(labels[i], tf.int32, shape=[len(labels[i]), 4]),
      "img": tf.zeros([2]),
      "_rng": tf.constant(rngs[i], tf.int64),
    }
    try:
      want = per_example(one)
    except tf.errors.InvalidArgumentError:
      raised += 1
      assert not bool(ok[i]), i
      continue
    assert bool(ok[i]), i
    assert set(want) == set(out), (sorted(want), sorted(out))
    for key in want:
      np.testing.assert_array_equal(np.asarray(out[key][i]), np.asarray(want[key]), err_msg=f"{key} row {i}")
  assert raised >= 2  # the empty rows and the mismatched one


def test_batched_form_only_where_every_op_has_one():
  tf = pytest.importorskip("tensorflow")
  assert pp.get_batched_preprocess_fn("choice(n=2)") is None
  assert pp.get_batched_preprocess_fn("choice()|flip_lr") is None
  identity = pp.get_batched_preprocess_fn("")
  ok = tf.constant([True, False])
  assert identity({"x": tf.constant([1, 2])}, ok)[1] is ok
  with pytest.raises(ValueError, match="unknown pp op 'nope'"):
    pp.get_batched_preprocess_fn("choice()|nope")
  # a block with no entries at all (every row bad) still runs
  empty = {"texts": tf.ragged.constant([[], []], dtype=tf.string), "_rng": tf.zeros([2, 2], tf.int64)}
  out, ok = pp.get_batched_preprocess_fn("choice(skip_empty=True)")(empty, tf.ones([2], tf.bool))
  assert out["texts"].numpy().tolist() == [b"", b""] and ok.numpy().tolist() == [False, False]
