"""Limits (siglip_rins.limits): hostile inputs get one clear line and bounded memory; good inputs still work.

Every hostile input is built in a tmp dir at low memory: huge PNGs are a valid signature + IHDR + a tiny IDAT (the
caps are checked from the header), the 6 GiB file is sparse.
"""

import json
import math
import os
import shutil
import struct
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
