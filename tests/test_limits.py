"""Limits (siglip_rins.limits): hostile inputs get one clear line and bounded memory; good inputs still work.

Every hostile input is built in a tmp dir at low memory: huge PNGs are a valid signature + IHDR + a tiny IDAT (the
caps are checked from the header), the 6 GiB file is sparse.
"""

import json
import math
import os
import resource
import shutil
import struct
import tracemalloc
import zlib

import numpy as np
import pytest

from siglip_rins import cli, limits
from siglip_rins.models import build_model
from siglip_rins.recursion import inference_plan, make_plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "siglip_rins.py")
TINY = dict(
  name="two_towers",
  out_dim=(None, 16),
  recursion=dict(signature="A^2B"),
  image=dict(width=16, depth=2, mlp_dim=32, num_heads=2, patch_size=4),
  text=dict(vocab_size=64, width=16, depth=2, mlp_dim=32, num_heads=2),
)


def _chunk(kind: bytes, data: bytes) -> bytes:
  return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png(width: int, height: int) -> bytes:
  """A PNG whose IHDR says width x height (8-bit RGB) with a tiny (truncated) IDAT: a few hundred bytes."""
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  idat = zlib.compress(b"\0" * 4096)
  return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def good_png(size=(12, 10)) -> bytes:
  import io

  from PIL import Image

  buf = io.BytesIO()
  Image.new("RGB", size, (200, 30, 30)).save(buf, format="PNG")
  return buf.getvalue()


def _one_error_line(capsys) -> str:
  err = capsys.readouterr().err.strip()
  assert err.startswith("error:") and len(err.splitlines()) == 1, err
  return err


# ------------------------------------------------------------------------------------------------ plans
def test_exploding_signature_refused_by_flops_cli(capsys):
  assert cli.main(["flops", "--config", f"{CONFIG}:signature=(A^8)_6"]) == 1
  err = _one_error_line(capsys)
  assert "(A^8)_6" in err and "262144" in err and str(limits.MAX_PLAN_POSITIONS) in err


def test_exploding_signature_and_depth_refused_by_build_model():
  with pytest.raises(ValueError, match=r"\(A\^8\)_6.*262144.*4096"):
    build_model({**TINY, "recursion": dict(signature="(A^8)_6")})
  with pytest.raises(ValueError, match="depth = 1000000 exceeds the cap 4096"):
    build_model({**TINY, "image": {**TINY["image"], "depth": 10**6}})
  with pytest.raises(ValueError, match="width"):
    build_model({**TINY, "text": {**TINY["text"], "width": 10**7}})
  with pytest.raises(ValueError, match="layer applications"):  # 2 x 4000 layers
    make_plan("AB", 1, layers_per_block=4000)
  with pytest.raises(ValueError, match="positions"):  # many exponents add up
    make_plan("A^1024" * 5 + "B", 1, layers_per_block=1)
  with pytest.raises(ValueError, match="degree 1000000000 exceeds the cap of 12"):
    make_plan("(A)_1000000000", layers_per_block=1)
  with pytest.raises(ValueError, match="degree 1000000000 exceeds"):
    make_plan("AB", 10**9, layers_per_block=1)
  assert make_plan("(A)_12", layers_per_block=1).sequence == ("A",)
  build_model(TINY)  # a good config still builds


def test_inference_rounds_and_repeat_are_capped_before_expansion():
  plan = make_plan("A^2B", 1, 12)
  with pytest.raises(ValueError, match="rounds=1000000000.*cap is 4096"):
    inference_plan(plan, rounds=10**9)
  with pytest.raises(ValueError, match="repeat=10000000"):
    inference_plan(plan, repeat=10**7)
  with pytest.raises(ValueError, match="layer applications"):  # 3000 positions x 4 layers
    inference_plan(plan, rounds=3000)
  assert len(inference_plan(plan, rounds=8).sequence) == 9


# ----------------------------------------------------------------------------------------- exported models
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  from siglip_rins.export import export_params
  from siglip_rins.interop import flatten_params, unflatten_params
  from siglip_rins.models.shapes import param_shapes

  from siglip_rins.text.tokenizer import get_tokenizer

  cfg = {**TINY, "text": {**TINY["text"], "vocab_size": get_tokenizer("demo").vocab_size}}
  model = build_model(cfg)
  rng = np.random.default_rng(0)
  flat = {
    k: (rng.normal(size=v.shape) * 0.1).astype(np.float32)
    for k, v in flatten_params(param_shapes(model, (16, 16), 8)).items()
  }
  flat["t"], flat["b"] = np.array([math.log(10.0)], np.float32), np.array([-3.0], np.float32)
  return export_params(
    unflatten_params(flat), cfg, tmp_path_factory.mktemp("lim") / "model", tokenizer="demo", text_len=8
  )


def _copy(exported, tmp_path):
  out = tmp_path / "m"
  shutil.copytree(exported, out)
  return out


def test_exported_config_with_huge_depth_refused_fast(exported, tmp_path):
  from siglip_rins.export import load_exported

  out = _copy(exported, tmp_path)
  config = json.loads((out / "config.json").read_text())
  config["model"]["image"]["depth"] = 10**6
  (out / "config.json").write_text(json.dumps(config))
  with pytest.raises(ValueError, match="model.image.depth = 1000000 exceeds the cap"):
    load_exported(out)


@pytest.mark.parametrize("corrupt", ["float16", "int8", "nan"])
def test_exported_weights_must_be_float32_and_finite(exported, tmp_path, corrupt, capsys):
  from safetensors.numpy import load_file, save_file

  from siglip_rins.export import load_exported

  out = _copy(exported, tmp_path)
  flat = load_file(str(out / "params.safetensors"))
  name = "img/embedding/kernel"
  if corrupt == "nan":
    flat[name] = flat[name].copy()
    flat[name].flat[3] = np.nan
  else:
    flat[name] = flat[name].astype(corrupt)
  save_file(flat, str(out / "params.safetensors"))
  with pytest.raises(ValueError, match=f"'{name}'.*" + ("non-finite" if corrupt == "nan" else corrupt)):
    load_exported(out)
  img = tmp_path / "a.png"
  img.write_bytes(good_png())
  assert cli.main(["classify", "--model", str(out), "--labels", "red,blue", str(img)]) == 1
  assert name in _one_error_line(capsys)


def test_good_export_still_loads(exported):
  from siglip_rins.export import load_exported

  m = load_exported(exported)
  assert np.isfinite(m.encode_texts(["red"])).all()


# ------------------------------------------------------------------------------------------------ images
def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _tiff_with_size(data: bytes, width: int, height: int) -> bytes:
  """A little-endian TIFF from PIL with its first IFD's ImageWidth / ImageLength rewritten (LONG values)."""
  import struct

  data = bytearray(data)
  (ifd,) = struct.unpack("<I", data[4:8])
  (count,) = struct.unpack("<H", data[ifd : ifd + 2])
  for k in range(count):
    at = ifd + 2 + 12 * k
    tag = struct.unpack("<H", data[at : at + 2])[0]
    if tag in (256, 257):
      data[at + 2 : at + 12] = struct.pack("<HII", 4, 1, width if tag == 256 else height)
  return bytes(data)


def _big_endian_tiff(width: int, height: int) -> bytes:
  import struct

  entries = [struct.pack(">HHII", 256, 4, 1, width), struct.pack(">HHIHH", 257, 3, 1, height & 0xFFFF, 0)]
  if height > 0xFFFF:
    entries[1] = struct.pack(">HHII", 257, 4, 1, height)
  return b"MM\0*" + struct.pack(">I", 8) + struct.pack(">H", len(entries)) + b"".join(entries) + b"\0" * 4


def test_header_sizes_and_caps():
  assert limits.image_header_size(huge_png(20000, 20000)) == (20000, 20000)
  assert limits.image_header_size(good_png((12, 10))) == (12, 10)
  import io

  from PIL import Image

  for fmt in ("JPEG", "GIF", "BMP", "WEBP", "TIFF"):
    buf = io.BytesIO()
    Image.new("RGB", (37, 21), (1, 2, 3)).save(buf, format=fmt)
    assert limits.image_header_size(buf.getvalue()) == (37, 21), fmt
  for byteorder in ("II", "MM"):  # a 40000 x 30000 TIFF header (no pixel data): refused before decoding
    buf = io.BytesIO()
    Image.new("RGB", (3, 2)).save(buf, format="TIFF")
    tiff = _tiff_with_size(buf.getvalue(), 40000, 30000) if byteorder == "II" else _big_endian_tiff(40000, 30000)
    assert limits.image_header_size(tiff) == (40000, 30000), byteorder
    with pytest.raises(ValueError, match="40000x30000 = 1200000000 pixels exceeds"):
      limits.check_image_bytes(tiff, "x.tif")
  with pytest.raises(ValueError, match="20000x20000 = 400000000 pixels exceeds the image pixel cap of 100000000"):
    limits.check_image_bytes(huge_png(20000, 20000), "x.png")
  with limits.image_caps(max_pixels=10**9):
    limits.check_image_bytes(huge_png(20000, 20000), "x.png")  # a raised cap lets it through
  assert limits.max_image_pixels() == limits.DEFAULT_MAX_IMAGE_PIXELS


def test_preprocessor_refuses_huge_and_sparse_files_with_bounded_memory(tmp_path, monkeypatch):
  from siglip_rins.data.preprocess import ImagePreprocessor, ImageReadError

  pre = ImagePreprocessor("decode|resize(8)|value_range(-1, 1)")
  png = tmp_path / "huge.png"
  png.write_bytes(huge_png(20000, 20000))
  sparse = tmp_path / "sparse.png"
  with open(sparse, "wb") as f:
    f.truncate(6 << 30)
  good = tmp_path / "good.png"
  good.write_bytes(good_png())
  rss = _peak_rss_mb()
  tracemalloc.start()
  with pytest.raises(ImageReadError, match=r"huge.png: 20000x20000 = 400000000 pixels exceeds .* cap of 100000000"):
    pre(png)
  with pytest.raises(
    ImageReadError, match=rf"sparse.png: {6 << 30} bytes exceeds the image file-size cap of {64 << 20}"
  ):
    pre(sparse)
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  assert peak < 16 << 20 and _peak_rss_mb() - rss < 300  # nothing read whole, nothing decoded
  assert pre(good).shape == (8, 8, 3)
  monkeypatch.setenv(limits.ENV_MAX_PIXELS, "100")
  with pytest.raises(ImageReadError, match="12x10 = 120 pixels exceeds the image pixel cap of 100"):
    ImagePreprocessor("decode|resize(8)")(good)
  monkeypatch.setenv(limits.ENV_MAX_BYTES, "50")
  with pytest.raises(ImageReadError, match="exceeds the image file-size cap of 50 bytes"):
    ImagePreprocessor("decode|resize(8)")(good)


def test_preprocessor_reads_each_file_once_per_process_until_it_changes(tmp_path):
  """Later reads of the same file through the same pp (the demo's next run, another evaluator) come from the
  process's memo, equal and safe to modify; a rewritten file is read again."""
  import io

  from PIL import Image

  from siglip_rins.data import preprocess

  preprocess.clear_file_memo()
  path = tmp_path / "a.png"
  path.write_bytes(good_png())
  first = preprocess.ImagePreprocessor("decode|resize(8)|value_range(-1, 1)")
  a = first(path)
  second = preprocess.ImagePreprocessor("decode|resize(8)|value_range(-1, 1)")  # a new predictor, same pp
  reads = []
  original = second._read_file
  second._read_file = lambda *args: reads.append(args) or original(*args)
  b = second(path)
  assert not reads and np.array_equal(a, b)
  b[...] = 0  # the caller's copy
  assert np.array_equal(second(path), a) and not reads
  buf = io.BytesIO()
  Image.new("RGB", (12, 10), (10, 200, 30)).save(buf, format="PNG")
  path.write_bytes(buf.getvalue())
  os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
  c = second(path)
  assert len(reads) == 1 and not np.array_equal(c, a)
  preprocess.clear_file_memo()


def test_classify_skips_huge_images_and_goes_on(exported, tmp_path, capsys):
  (tmp_path / "huge.png").write_bytes(huge_png(18000, 18000))
  with open(tmp_path / "sparse.png", "wb") as f:
    f.truncate(6 << 30)
  (tmp_path / "good.png").write_bytes(good_png())
  rss = _peak_rss_mb()
  paths = [str(tmp_path / n) for n in ("huge.png", "sparse.png", "good.png")]
  rc = cli.main(["classify", "--model", str(exported), "--labels", "red,blue", *paths])
  captured = capsys.readouterr()
  assert rc == 1  # some images could not be read
  skips = [line for line in captured.err.splitlines() if line.startswith("skipping")]
  assert len(skips) == 2 and "18000x18000" in skips[0] and "sparse.png" in skips[1]
  assert "good.png" in captured.out
  assert _peak_rss_mb() - rss < 500  # the naive decode is 1 GB of uint8 (+ a 4 GB float copy)


def _tok(tmp_path_factory):
  import sys

  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import data_fixtures

  return data_fixtures


def test_training_pipeline_counts_too_large_and_bad_paths(tmp_path):
  data_fixtures = _tok(None)
  from siglip_rins.data import pipeline

  root = tmp_path / "ds"
  path = data_fixtures.write_jsonl_dataset(root, 3, (12, 14))
  tok = data_fixtures.tokenizer_path_for_tests(tmp_path / "tok")
  (root / "images" / "huge.png").write_bytes(huge_png(20000, 20000))
  with open(root / "images" / "sparse.png", "wb") as f:
    f.truncate(6 << 30)
  (root / "images" / "big.jpeg").write_bytes(data_fixtures.encode_image(data_fixtures.make_image(40, 40), "jpeg"))
  (tmp_path / "outside.jpeg").write_bytes(data_fixtures.encode_image(data_fixtures.make_image(12, 14), "jpeg"))
  extra = [
    {"image": "images/huge.png", "texts": "huge", "label": 10},
    {"image": "images/sparse.png", "texts": "sparse", "label": 11},
    {"image": "../outside.jpeg", "texts": "escape", "label": 12},
    {"image": "images/../../outside.jpeg", "texts": "escape 2", "label": 13},
    {"image": str(tmp_path / "outside.jpeg"), "texts": "absolute is fine", "label": 14},
    {"image": "images/big.jpeg", "texts": "40x40 above a 1000-pixel cap", "label": 15},
  ]
  with open(path, "a") as f:
    f.writelines(json.dumps(r) + "\n" for r in extra)
  pp = f"decode|resize(8)|value_range(-1, 1)|tokenize(max_len=6, model={tok!r}, inkey='texts', outkey='labels')"
  cfg = dict(data=dict(type="jsonl", path=str(path)), pp=pp + "|keep('image', 'label')", prefetch=1)
  rss = _peak_rss_mb()
  it = pipeline.make_eval_iterator({**cfg, "max_image_pixels": 1000}, batch_size=4)
  labels = sorted(int(x) for b in it for x in b["label"][b["_mask"]])
  assert labels == [0, 1, 2, 14]
  stats = it.stats()
  assert stats["skipped/too_large"] == 3 and stats["skipped/bad_image_path"] == 2, stats
  assert stats.get("skipped/undecodable", 0) == 0
  assert _peak_rss_mb() - rss < 500
  it = pipeline.make_eval_iterator(cfg, batch_size=4)  # default cap: the 40x40 JPEG is fine
  assert sorted(int(x) for b in it for x in b["label"][b["_mask"]]) == [0, 1, 2, 14, 15]


def test_evaluator_reader_refuses_escaping_paths(tmp_path):
  from evaluators.common import read_jsonl

  (tmp_path / "data.jsonl").write_text('{"image": "a.png"}\n{"image": "/abs/b.png"}\n{"image": "../c.png"}\n')
  with pytest.raises(ValueError, match=r"data.jsonl:3: image path '../c.png' leaves the dataset folder"):
    read_jsonl(str(tmp_path / "data.jsonl"))
  (tmp_path / "data.jsonl").write_text('{"image": "a.png"}\n{"image": "/abs/b.png"}\n')
  assert [r["image"] for r in read_jsonl(str(tmp_path / "data.jsonl"))] == [str(tmp_path / "a.png"), "/abs/b.png"]


def test_model_init_refuses_non_finite_exported_source(exported, tmp_path):
  from safetensors.numpy import load_file, save_file

  from siglip_rins import model_init

  out = _copy(exported, tmp_path)
  flat = load_file(str(out / "params.safetensors"))
  assert model_init.load_source(out, "exported").keys() == flat.keys()
  flat["t"] = np.array([np.inf], np.float32)
  save_file(flat, str(out / "params.safetensors"))
  with pytest.raises(ValueError, match="tensor 't' has 1 non-finite"):
    model_init.load_source(out, "exported")
  values, report = model_init.map_params({"t": np.array([np.nan], np.float32)}, {"t": np.zeros(1, np.float32)})
  assert not values and "non-finite" in report["mismatches"][0]


def test_tf_header_check_matches_python_and_decode_op_refuses():
  import io

  import tensorflow as tf
  from PIL import Image

  from siglip_rins.data import pp as pp_lib

  variants = [(f, "RGB", (1, 2, 3), {}) for f in ("PNG", "JPEG", "GIF", "BMP", "WEBP")]
  variants += [("WEBP", "RGB", (1, 2, 3), dict(lossless=True)), ("WEBP", "RGBA", (1, 2, 3, 100), {})]
  kinds = set()  # WebP's VP8 (lossy), VP8L (lossless) and VP8X (extended: here for the alpha) headers
  for fmt, mode, color, kw in variants:
    buf = io.BytesIO()
    Image.new(mode, (30, 20), color).save(buf, format=fmt, **kw)
    if fmt == "WEBP":
      kinds.add(buf.getvalue()[12:16])
    data = tf.constant(buf.getvalue())
    assert not bool(limits.tf_image_too_large(data, 600, 1 << 20)), fmt
    assert bool(limits.tf_image_too_large(data, 599, 1 << 20)), fmt
    assert bool(limits.tf_image_too_large(data, 600, 10)), fmt  # the byte cap
  assert kinds == {b"VP8 ", b"VP8L", b"VP8X"}, kinds
  decode = pp_lib.get_preprocess_fn("decode")
  with pytest.raises(tf.errors.InvalidArgumentError, match="too_large"):
    decode({"image": tf.constant(huge_png(20000, 20000))})
  assert decode({"image": tf.constant(good_png())})["image"].shape == (10, 12, 3)


# -------------------------------------------------------------------------------------------- weights
def _safetensors(header: dict, data: bytes) -> bytes:
  import struct

  raw = json.dumps(header).encode()
  return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize(
  "header, message",
  [
    (
      {"img/embedding/kernel": {"dtype": "F32", "shape": [100000, 100000], "data_offsets": [0, 16]}},
      r"tensor 'img/embedding/kernel' declares shape \[100000, 100000\] F32 = 40000000000 bytes, above the cap",
    ),
    (
      {"t": {"dtype": "F32", "shape": [3, 3], "data_offsets": [0, 16]}},
      r"tensor 't' declares 36 bytes .* does not match it or lies outside the file",
    ),
    ({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1 << 40]}}, r"tensor 't' declares 16 bytes"),
    ({"t": {"dtype": "X9", "shape": [4], "data_offsets": [0, 16]}}, r"tensor 't' has unknown dtype 'X9'"),
  ],
)
def test_params_file_header_checked_before_loading(exported, tmp_path, header, message, capsys):
  from siglip_rins.export import load_exported

  out = _copy(exported, tmp_path)
  (out / "params.safetensors").write_bytes(_safetensors(header, b"\0" * 16))
  with pytest.raises(ValueError, match=message):
    load_exported(out)
  img = tmp_path / "a.png"
  img.write_bytes(good_png())
  assert cli.main(["classify", "--model", str(out), "--labels", "red,blue", str(img)]) == 1
  assert "params.safetensors" in _one_error_line(capsys)


def test_params_file_size_cap(exported, monkeypatch):
  from siglip_rins.export import load_exported

  monkeypatch.setenv(limits.ENV_MAX_PARAMS_BYTES, "1000")
  with pytest.raises(ValueError, match=r"params.safetensors is \d+ bytes, above the cap of 1000 bytes"):
    load_exported(exported)
