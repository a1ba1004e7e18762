"""Exported models (siglip_rins.export) and robust image reading (siglip_rins.image_io).

The model-based tests use tiny towers; parameters are random (built from the model's own parameter shapes, so no
slow `model.init`) or planted by hand so that the right answer of `classify` is known in advance.
"""

import io
import json
import math
import pathlib

import jax
import numpy as np
import pytest
from PIL import Image

from siglip_rins import image_io
from siglip_rins.export import (
  FORMAT_VERSION,
  add_cli,
  classify_main,
  export_model,
  export_params,
  load_exported,
  param_shapes,
  retrieve_main,
)
from siglip_rins.interop import flatten_params, unflatten_params
from siglip_rins.models import build_model
from siglip_rins.text.tokenizer import get_tokenizer

TOKENIZER = get_tokenizer("demo")
IMAGE_SIZE, TEXT_LEN = (16, 16), 8


def random_params(model, image_size, text_len, seed=0):
  """Random float32 params of `model` (LayerNorm scales near 1), from its abstract parameter shapes."""
  rng = np.random.default_rng(seed)
  shapes = flatten_params(param_shapes(model, image_size, text_len))
  flat = {
    k: (rng.normal(size=v.shape) * 0.2 + (1.0 if k.endswith("scale") else 0.0)).astype(np.float32)
    for k, v in shapes.items()
  }
  flat["t"], flat["b"] = np.array([math.log(7.3)], np.float32), np.array([-3.1], np.float32)
  return unflatten_params(flat)


RINS_CFG = dict(
  name="two_towers",
  out_dim=(None, 32),
  recursion=dict(signature="A^2B"),
  image=dict(width=32, depth=4, mlp_dim=64, num_heads=2, patch_size=4),
  text=dict(vocab_size=TOKENIZER.vocab_size, width=32, depth=4, mlp_dim=64, num_heads=2),
)


@pytest.fixture(scope="module")
def rins_export(tmp_path_factory):
  model = build_model(RINS_CFG)
  params = random_params(model, IMAGE_SIZE, TEXT_LEN)
  out = export_params(params, RINS_CFG, tmp_path_factory.mktemp("rins") / "model", tokenizer="demo")
  return model, params, out


def test_exported_embeddings_equal_training_model(rins_export):
  model, params, out = rins_export
  em = load_exported(out)
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (3, *IMAGE_SIZE, 3), dtype=np.uint8)
  texts = ["a red square", "ein blaues Dreieck", "一只猫"]
  # Without a run's spec, export uses big_vision SigLIP's text convention: ASCII lower, sticky EOS, EOS padding.
  tokens = TOKENIZER.encode(texts, TEXT_LEN, eos="sticky", pad_value=TOKENIZER.eos_id, lower=True)
  x = images.astype(np.float32) / 127.5 - 1.0
  for rounds in (None, 3):
    ref = jax.jit(lambda p, i, t: model.apply({"params": p}, i, t, rounds=rounds))
    zimg, ztxt, aux = ref(params, x, tokens)
    np.testing.assert_allclose(em.encode_images(list(images), rounds=rounds), zimg, atol=1e-5)
    np.testing.assert_allclose(em.encode_images(x, rounds=rounds), zimg, atol=1e-5)  # preprocessed batch
    np.testing.assert_allclose(em.encode_texts(texts, rounds=rounds), ztxt, atol=1e-5)
  assert em.temperature == pytest.approx(7.3, rel=1e-6) and em.bias == pytest.approx(-3.1)
  np.testing.assert_array_equal(em.tokenize(texts), tokens)


def test_exported_folder_contents(rins_export):
  _, params, out = rins_export
  config = json.loads((out / "config.json").read_text())
  assert config["format_version"] == FORMAT_VERSION
  assert config["text"] == dict(
    tokenizer_file="tokenizer.model", max_len=TEXT_LEN, eos="sticky", canonicalize=False, lower=True, pad_value=1
  )
  spec = config["example_spec"]
  assert spec["text"]["tokenizer"] == "tokenizer.model" and spec["text"]["pad_value"] == spec["text"]["eos_id"] == 1
  assert spec["image"]["eval_pp"].startswith("decode|resize(")
  assert config["image"]["size"] == list(IMAGE_SIZE) and config["image"]["value_range"] == [-1.0, 1.0]
  assert config["model"]["recursion"] == {"signature": "A^2B"}
  assert (out / "tokenizer.model").read_bytes() == TOKENIZER.model_proto
  from safetensors.numpy import load_file  # no pickle involved

  stored = load_file(str(out / "params.safetensors"))
  flat = flatten_params(params)
  assert set(stored) == set(flat) and "img/Transformer/A/encoderblock_0/MlpBlock_0/Dense_0/kernel" in stored
  for k in flat:
    np.testing.assert_array_equal(stored[k], flat[k])


def test_newer_format_version_and_broken_folders_fail_clearly(rins_export, tmp_path):
  _, params, out = rins_export
  newer = tmp_path / "newer"
  newer.mkdir()
  config = json.loads((out / "config.json").read_text())
  (newer / "config.json").write_text(json.dumps(dict(config, format_version=FORMAT_VERSION + 1)))
  with pytest.raises(ValueError, match=f"format version {FORMAT_VERSION + 1}.*upgrade"):
    load_exported(newer)
  with pytest.raises(FileNotFoundError, match="config.json"):
    load_exported(tmp_path / "nothing")
  (newer / "config.json").write_text(json.dumps(config))
  with pytest.raises(FileNotFoundError, match="params.safetensors"):
    load_exported(newer)
  bad = flatten_params(params)
  bad["img/extra_param"] = np.zeros(3, np.float32)
  del bad["txt/head/bias"]
  with pytest.raises(
    ValueError,
    match=r"missing 1 key\(s\): \['txt/head/bias'\].*unexpected 1 key\(s\): "
    r"\['img/extra_param'\]",
  ):
    export_params(unflatten_params(bad), RINS_CFG, tmp_path / "bad", tokenizer="demo")


def test_export_model_from_training_workdir(tmp_path):
  from siglip_rins.checkpoint import CheckpointManager

  cfg = dict(RINS_CFG, recursion=dict(signature="AB"))
  model = build_model(cfg)
  params = random_params(model, (12, 12), 6, seed=3)
  workdir = tmp_path / "run"
  run_config = dict(
    model=cfg,
    input=dict(
      pp_img="decode|resize(12)|value_range(-1, 1)",
      pp_txt="tokenize(max_len=6, model='demo', eos='sticky')",
      batch_size=4,
    ),
  )
  with CheckpointManager(workdir, async_save=False) as mgr:
    mgr.save(7, dict(params=params, opt_state={}, step=np.int32(7)), {"note": "test"})
  (workdir / "config.json").write_text(json.dumps(run_config))
  out = export_model(workdir, tmp_path / "exported")
  config = json.loads((out / "config.json").read_text())
  assert config["text"]["max_len"] == 6 and config["image"]["size"] == [12, 12]
  assert config["source"]["step"] == 7
  em = load_exported(out)
  for k, v in flatten_params(params).items():
    np.testing.assert_array_equal(np.asarray(flatten_params(em.params)[k]), v)
  with pytest.raises(FileNotFoundError, match="config.json"):
    export_model(tmp_path / "not_a_run", tmp_path / "x")


def test_example_spec_reads_the_training_pp():
  from siglip_rins.example_spec import from_pp

  s = from_pp("decode|inception_crop(224)|flip_lr|value_range(-1, 1)|tokenize(16, 'yes', 'demo')")
  assert (s.text.max_len, s.text.tokenizer, s.text.eos, s.image.size) == (16, "demo", "yes", (224, 224))
  # The eval counterpart of a random crop: resize_small(size / 0.875) then a central crop; flips are dropped.
  assert s.image.eval_pp == "decode|resize_small(256)|central_crop((224, 224))|value_range(-1, 1)"
  s = from_pp('decode|resize((32, 48))|tokenize(max_len=8, model="demo", eos="sticky", pad_value=1)')
  assert (s.text.max_len, s.text.pad_value, s.text.eos_id, s.image.size) == (8, 1, 1, (32, 48))


# ------------------------------------------------------------------------ planted model: known answers
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
D = 8


def _colour_vector(rgb):
  """The 8-d feature the planted image tower computes for a pure colour (pixel values in [-1, 1], zero padded)."""
  return np.concatenate([np.asarray(rgb, np.float64) / 127.5 - 1.0, np.zeros(D - 3)])


def _layer_norm(v):
  v = v - v.mean()
  return v / np.sqrt((v**2).mean())


def planted_model(tmp_path):
  """A model whose image embedding is LayerNorm(mean colour) and whose text embedding for 'red'/'green'/'blue' is
  LayerNorm(that colour): every layer is made an identity (zero output projections) except one uniform-attention
  text layer that copies the colour token's embedding onto the last (pooled) position."""
  cfg = dict(
    name="two_towers",
    out_dim=(None, D),
    recursion=dict(signature="A^2B"),
    image=dict(width=D, depth=2, mlp_dim=16, num_heads=2, patch_size=4, pool_type="gap"),
    text=dict(vocab_size=TOKENIZER.vocab_size, width=D, depth=2, mlp_dim=16, num_heads=2),
  )
  model = build_model(cfg)
  flat = flatten_params(random_params(model, (8, 8), TEXT_LEN, seed=5))
  for k in flat:
    if k.endswith("scale"):
      flat[k] = np.ones_like(flat[k])
    if (
      "/out/" in k
      or "Dense_1" in k
      or k.endswith("pos_embedding")
      or k.endswith("LayerNorm_0/bias")
      or k.endswith("LayerNorm_1/bias")
      or "encoder_norm/bias" in k
    ):
      flat[k] = np.zeros_like(flat[k])
  kernel = np.zeros((4, 4, 3, D), np.float32)
  for c in range(3):
    kernel[:, :, c, c] = 1.0 / 16
  flat["img/embedding/kernel"], flat["img/embedding/bias"] = kernel, np.zeros(D, np.float32)
  emb = np.zeros((TOKENIZER.vocab_size, D), np.float32)
  ids = {name: TOKENIZER.encode_ids(name) for name in COLOURS}
  for name, rgb in COLOURS.items():
    unique = [i for i in ids[name] if all(i not in ids[o] for o in COLOURS if o != name)]
    assert unique, f"the demo tokenizer gives {name!r} no piece of its own"
    emb[unique] = _colour_vector(rgb)
  flat["txt/Embed_0/embedding"] = emb
  attn = "txt/Encoder_0/A/encoderblock_0/MultiHeadDotProductAttention_0"
  for part in ("query", "key"):  # zero queries/keys: uniform attention over all positions
    flat[f"{attn}/{part}/kernel"] = np.zeros((D, 2, D // 2), np.float32)
    flat[f"{attn}/{part}/bias"] = np.zeros((2, D // 2), np.float32)
  flat[f"{attn}/value/kernel"] = np.eye(D, dtype=np.float32).reshape(D, 2, D // 2)
  flat[f"{attn}/value/bias"] = np.zeros((2, D // 2), np.float32)
  flat[f"{attn}/out/kernel"] = np.eye(D, dtype=np.float32).reshape(2, D // 2, D)
  flat["txt/head/kernel"], flat["txt/head/bias"] = np.eye(D, dtype=np.float32), np.zeros(D, np.float32)
  flat["t"], flat["b"] = np.array([math.log(10.0)], np.float32), np.array([-5.0], np.float32)
  return export_params(unflatten_params(flat), cfg, tmp_path / "planted", tokenizer="demo", text_len=TEXT_LEN)


def _write_images(folder: pathlib.Path) -> dict:
  """Pure-colour files in several modes -> {path: colour name}; 20x24 pixels (the model resizes to 8x8)."""
  folder.mkdir(parents=True, exist_ok=True)
  files = {}
  Image.new("RGB", (24, 20), COLOURS["red"]).save(folder / "red_rgb.png")
  files[folder / "red_rgb.png"] = "red"
  Image.new("RGBA", (24, 20), COLOURS["green"] + (90,)).save(folder / "green_rgba.png")
  files[folder / "green_rgba.png"] = "green"
  Image.new("RGB", (24, 20), COLOURS["blue"]).convert("P").save(folder / "blue_palette.png")
  files[folder / "blue_palette.png"] = "blue"
  Image.new("CMYK", (24, 20), (0, 255, 255, 0)).save(folder / "red_cmyk.jpg", quality=95)
  files[folder / "red_cmyk.jpg"] = "red"
  Image.new("RGB", (24, 20), COLOURS["green"]).save(folder / "green.webp", lossless=True)
  files[folder / "green.webp"] = "green"
  return files


def _write_bad_files(folder: pathlib.Path) -> list:
  (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 20)
  (folder / "empty.png").write_bytes(b"")
  (folder / "notes.png").write_text("this is a text file, not an image\n")
  return [folder / "corrupt.jpg", folder / "empty.png", folder / "notes.png"]


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory):
  return planted_model(tmp_path_factory.mktemp("planted"))


def test_classify_planted_model_gives_known_labels_and_sigmoid_probabilities(tmp_path, planted_dir):
  em = load_exported(planted_dir)
  files = _write_images(tmp_path / "images")
  labels = ["green", "blue", "red"]
  results = em.classify(list(files), labels)
  lbl = np.stack([_layer_norm(_colour_vector(COLOURS[l])) for l in labels])
  lbl /= np.linalg.norm(lbl, axis=1, keepdims=True)
  for (path, colour), ranking in zip(files.items(), results):
    assert ranking[0][0] == colour, (path.name, ranking)
    probs = [p for _, p in ranking]
    assert probs == sorted(probs, reverse=True)
    if path.suffix == ".png" or path.suffix == ".webp":  # lossless: the expected probabilities are exact
      img = _layer_norm(_colour_vector(COLOURS[colour]))
      expected = 1 / (1 + np.exp(-(10.0 * lbl @ (img / np.linalg.norm(img)) - 5.0)))
      got = dict(ranking)
      np.testing.assert_allclose([got[l] for l in labels], expected, atol=2e-3)
      assert got[colour] == pytest.approx(1 / (1 + math.exp(-5.0)), abs=2e-3)
  # Templates are averaged: a template adding no colour piece leaves the answers unchanged; top_k truncates.
  again = em.classify(list(files), labels, templates=["{}", "a {} one"], top_k=1, rounds=3)
  assert [r[0][0] for r in again] == list(files.values()) and all(len(r) == 1 for r in again)


def test_cli_classify_and_retrieve_skip_unreadable_files(tmp_path, capsys, planted_dir):
  model_dir = planted_dir
  files = _write_images(tmp_path / "images")
  bad = _write_bad_files(tmp_path / "images")
  status = classify_main(
    model_dir, ["red", "green", "blue"], [str(p) for p in [*files, *bad, tmp_path / "missing.png"]], top_k=2
  )
  out, err = capsys.readouterr()
  assert status == 1
  err_lines = err.strip().splitlines()
  assert len(err_lines) == 4
  for path, line in zip([*bad, tmp_path / "missing.png"], err_lines):
    assert str(path) in line
  lines = out.strip().splitlines()
  assert len(lines) == 3 * len(files)
  for i, (path, colour) in enumerate(files.items()):
    assert lines[3 * i] == str(path)
    assert lines[3 * i + 1].split()[1] == colour and 0.9 < float(lines[3 * i + 1].split()[0]) <= 1.0

  status = retrieve_main(model_dir, "blue", tmp_path / "images", top_k=3)
  out, err = capsys.readouterr()
  assert status == 1 and len(err.strip().splitlines()) == 3
  ranked = out.strip().splitlines()
  assert len(ranked) == 3 and ranked[0].split()[-1] == str(tmp_path / "images" / "blue_palette.png")
  assert ranked[0].split()[0] == "1" and float(ranked[0].split()[1]) > 0.9


def test_add_cli_registers_subcommands():
  import argparse

  parser = argparse.ArgumentParser(prog="siglip-rins")
  add_cli(parser.add_subparsers(dest="command", required=True))
  args = parser.parse_args(["classify", "--model", "m", "--labels", "cat, dog", "--top_k", "2", "a.jpg", "b.png"])
  assert (args.model, args.labels, args.images, args.top_k, args.rounds) == (
    "m",
    "cat, dog",
    ["a.jpg", "b.png"],
    2,
    None,
  )
  args = parser.parse_args(["retrieve", "--model", "m", "--query", "a cat", "--folder", "f", "--rounds", "4"])
  assert (args.query, args.folder, args.rounds) == ("a cat", "f", 4) and callable(args.func)
  args = parser.parse_args(["export", "--workdir", "w", "--out", "o"])
  assert (args.workdir, args.out, args.step) == ("w", "o", None)
  with pytest.raises(FileNotFoundError, match="config.json"):  # the wired function runs the real export
    args.func(args)


# ---------------------------------------------------------------------------------------------- image_io
def _png_bytes(img: Image.Image) -> bytes:
  buf = io.BytesIO()
  img.save(buf, format="PNG")
  return buf.getvalue()


@pytest.mark.parametrize(
  "mode,make,expected",
  [
    ("RGBA", lambda: Image.new("RGBA", (5, 4), (10, 20, 30, 0)), (10, 20, 30)),
    ("LA", lambda: Image.new("LA", (5, 4), (77, 128)), (77, 77, 77)),
    ("L", lambda: Image.new("L", (5, 4), 200), (200, 200, 200)),
    ("P", lambda: Image.new("RGB", (5, 4), (0, 0, 255)).convert("P"), (0, 0, 255)),
    ("1", lambda: Image.new("1", (5, 4), 1), (255, 255, 255)),
    ("I;16", lambda: Image.fromarray(np.full((4, 5), 65535 // 2, np.uint16)), (127, 127, 127)),
  ],
)
def test_read_image_png_modes(tmp_path, mode, make, expected):
  img = make()
  path = tmp_path / f"img_{mode.replace(';', '_')}.png"
  path.write_bytes(_png_bytes(img))
  arr = image_io.read_image(path)
  assert arr.dtype == np.uint8 and arr.shape == (4, 5, 3)
  np.testing.assert_array_equal(arr[0, 0], expected)


def test_read_image_16bit_gradient_and_cmyk_jpeg(tmp_path):
  ramp = np.tile(np.array([0, 257 * 100, 65535], np.uint16), (2, 1))
  Image.fromarray(ramp).save(tmp_path / "ramp16.png")
  assert image_io.read_image(tmp_path / "ramp16.png")[0, :, 0].tolist() == [0, 100, 255]
  Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
  pixel = image_io.read_image(tmp_path / "cmyk.jpg")[4, 4].astype(int)
  assert pixel[0] > 240 and pixel[1] < 15 and pixel[2] < 15


def test_read_image_errors_name_the_file(tmp_path):
  bad = _write_bad_files(tmp_path)
  reasons = {}
  for path in bad:
    with pytest.raises(image_io.ImageReadError) as e:
      image_io.read_image(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    reasons[path.name] = str(e.value)
  assert "0 bytes" in reasons["empty.png"]
  with pytest.raises(FileNotFoundError, match="missing.png"):
    image_io.read_image(tmp_path / "missing.png")
  results = list(image_io.read_images([*bad, tmp_path / "missing.png"]))
  assert [r[1] is None for r in results] == [True] * 4 and all(r[2] for r in results)
