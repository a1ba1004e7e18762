"""HF export: a transformers SiglipModel (torch CPU, float32) computes what the JAX recursive model computes."""

import math

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from siglip_rins.export import param_shapes  # noqa: E402
from siglip_rins.interop import flatten_params, unflatten_params  # noqa: E402
from siglip_rins.interop.hf import export_hf, to_hf  # noqa: E402
from siglip_rins.models import build_model  # noqa: E402
from siglip_rins.models.vit import ViT  # noqa: E402

IMAGE_SIZE, TEXT_LEN, VOCAB, D = 16, 8, 50, 32


def make_cfg(signature, depth, **recursion):
  tower = dict(width=D, depth=depth, mlp_dim=64, num_heads=2)
  return dict(
    name="two_towers",
    out_dim=(None, D),
    recursion=dict(signature=signature, **recursion),
    image=dict(tower, patch_size=4),
    text=dict(tower, vocab_size=VOCAB),
  )


def random_flat(cfg, seed=0):
  rng = np.random.default_rng(seed)
  shapes = flatten_params(param_shapes(build_model(cfg), (IMAGE_SIZE, IMAGE_SIZE), TEXT_LEN))
  flat = {
    k: (rng.normal(size=v.shape) * 0.2 + (1.0 if k.endswith("scale") else 0.0)).astype(np.float32)
    for k, v in shapes.items()
  }
  flat["t"], flat["b"] = np.array([math.log(7.3)], np.float32), np.array([-3.1], np.float32)
  return flat


def _ln(x, scale, bias, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * scale + bias


def map_head_reference(flat, tokens):
  """MAP pooling written out in numpy: the probe attends over `tokens` [B, N, D]; then x + MLP(LN(x)).  [B, D]."""
  p, a = "img/MAPHead_0/", "img/MAPHead_0/MultiHeadDotProductAttention_0/"
  probe = np.broadcast_to(flat[p + "probe"], (tokens.shape[0], 1, D))
  q = np.einsum("btd,dhk->bthk", probe, flat[a + "query/kernel"]) + flat[a + "query/bias"]
  k = np.einsum("bsd,dhk->bshk", tokens, flat[a + "key/kernel"]) + flat[a + "key/bias"]
  v = np.einsum("bsd,dhk->bshk", tokens, flat[a + "value/kernel"]) + flat[a + "value/bias"]
  logits = np.einsum("bthk,bshk->bhts", q, k) / math.sqrt(q.shape[-1])
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  x = np.einsum("bhts,bshk,hkd->btd", w, v, flat[a + "out/kernel"]) + flat[a + "out/bias"]
  y = _ln(x, flat[p + "LayerNorm_0/scale"], flat[p + "LayerNorm_0/bias"])
  y = y @ flat[p + "MlpBlock_0/Dense_0/kernel"] + flat[p + "MlpBlock_0/Dense_0/bias"]
  y = 0.5 * y * (1 + np.tanh(math.sqrt(2 / math.pi) * (y + 0.044715 * y**3)))
  return (x + y @ flat[p + "MlpBlock_0/Dense_1/kernel"] + flat[p + "MlpBlock_0/Dense_1/bias"])[:, 0]


def _normalize(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("signature,depth,hf_layers", [("A^2B", 4, 6), ("A^3B", 6, 12)])
def test_hf_siglip_equals_jax_model(tmp_path, signature, depth, hf_layers):
  cfg = make_cfg(signature, depth)
  model = build_model(cfg)
  flat = random_flat(cfg)
  params = unflatten_params(flat)
  out = export_hf(params, cfg, tmp_path / "hf")
  hf = transformers.SiglipModel.from_pretrained(str(out)).eval()
  assert hf.config.vision_config.num_hidden_layers == hf_layers == hf.config.text_config.num_hidden_layers
  assert hf.config.vision_config.hidden_act == "gelu_pytorch_tanh"
  rng = np.random.default_rng(1)
  images = rng.uniform(-1, 1, (3, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
  tokens = rng.integers(0, VOCAB, (2, TEXT_LEN)).astype(np.int32)

  zimg, ztxt, aux = jax.jit(lambda p, i, t: model.apply({"params": p}, i, t))(params, images, tokens)
  _, vit_aux = jax.jit(lambda p, i: ViT(**model.image).apply({"params": p}, i))(params["img"], images)
  with torch.no_grad():
    o = hf(
      input_ids=torch.from_numpy(tokens.astype(np.int64)), pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2))
    )
    vision = hf.vision_model(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2)))
  # Unrolled encoder (+ final LayerNorm): every token equal.
  np.testing.assert_allclose(vision.last_hidden_state.numpy(), np.asarray(vit_aux["encoded"]), atol=1e-4)
  # MAP pooling as specified (probe attends over the tokens), then the normalised image embedding.
  pooled_ref = map_head_reference(flat, np.asarray(vit_aux["encoded"], np.float64))
  np.testing.assert_allclose(vision.pooler_output.numpy(), pooled_ref, atol=1e-4)
  np.testing.assert_allclose(o.image_embeds.numpy(), _normalize(pooled_ref), atol=1e-4)
  # Text embeddings and the learned temperature / bias.
  np.testing.assert_allclose(o.text_embeds.numpy(), np.asarray(ztxt), atol=1e-4)
  assert float(hf.logit_scale.detach().exp()) == pytest.approx(float(aux["t"]), rel=1e-6)
  assert float(hf.logit_bias.detach()) == pytest.approx(float(aux["b"]), rel=1e-6)
  # Against the JAX model's own image embedding (whose MAP head must attend over the tokens).
  assert not np.allclose(np.asarray(zimg)[0], np.asarray(zimg)[1:], atol=1e-3), "image embedding ignores the image"
  np.testing.assert_allclose(o.image_embeds.numpy(), np.asarray(zimg), atol=1e-4)
  logits = float(aux["t"]) * np.asarray(zimg) @ np.asarray(ztxt).T + float(aux["b"])
  np.testing.assert_allclose(o.logits_per_image.numpy(), logits, atol=1e-3)


def test_rounds_choose_the_unrolled_depth_and_layers_repeat_weights():
  cfg = make_cfg("A^3B", 6)
  flat = random_flat(cfg)
  for rounds, layers in ((1, 6), (3, 12), (5, 18)):
    config, sd = to_hf(unflatten_params(flat), cfg, rounds=rounds)
    assert config["vision_config"]["num_hidden_layers"] == layers == config["text_config"]["num_hidden_layers"]
  config, sd = to_hf(unflatten_params(flat), cfg, rounds={"img": 2, "txt": None})
  assert config["vision_config"]["num_hidden_layers"] == 9 and config["text_config"]["num_hidden_layers"] == 12
  q = "vision_model.encoder.layers.{}.mlp.fc1.weight"
  a1 = flat["img/Transformer/A/encoderblock_1/MlpBlock_0/Dense_0/kernel"].T
  np.testing.assert_array_equal(sd[q.format(1)], a1)
  np.testing.assert_array_equal(sd[q.format(4)], a1)  # A's layer 1 again in round 2
  np.testing.assert_array_equal(sd[q.format(8)], flat["img/Transformer/B/encoderblock_2/MlpBlock_0/Dense_0/kernel"].T)


def test_refusals_explain_what_cannot_be_expressed():
  adapters = make_cfg("A^2B", 4, adapters=True)
  flat = random_flat(adapters)
  with pytest.raises(ValueError, match="adapter 2 .* not the identity"):
    to_hf(unflatten_params(flat), adapters)
  flat["img/Transformer/adapter_kernel"] = np.stack([np.eye(D, dtype=np.float32)] * 2)
  flat["img/Transformer/adapter_bias"] = np.zeros((2, D), np.float32)
  flat["txt/Encoder_0/adapter_kernel"] = flat["img/Transformer/adapter_kernel"]
  flat["txt/Encoder_0/adapter_bias"] = flat["img/Transformer/adapter_bias"]
  config, _ = to_hf(unflatten_params(flat), adapters)  # identity adapters export exactly
  assert config["vision_config"]["num_hidden_layers"] == 6
  shared = make_cfg("A^2B", 4, kv_sharing=True)
  with pytest.raises(ValueError, match="KV sharing"):
    to_hf(unflatten_params(random_flat(shared)), shared)
  gap = make_cfg("A^2B", 4)
  gap["image"]["pool_type"] = "gap"
  with pytest.raises(ValueError, match="MAP head"):
    to_hf(unflatten_params(random_flat(gap)), gap)
  vit = dict(name="vit", width=D, depth=4, mlp_dim=64, num_heads=2, patch_size=4)
  with pytest.raises(ValueError, match="two_towers"):
    to_hf({}, vit)


def test_export_from_exported_folder_copies_tokenizer(tmp_path):
  from siglip_rins.export import export_params
  from siglip_rins.interop.hf import export_hf_from_exported
  from siglip_rins.text.tokenizer import get_tokenizer

  tok = get_tokenizer("demo")
  cfg = make_cfg("A^2B", 4)
  cfg["text"]["vocab_size"] = tok.vocab_size
  folder = export_params(unflatten_params(random_flat(cfg)), cfg, tmp_path / "exported", tokenizer=tok)
  out = export_hf_from_exported(folder, tmp_path / "hf", rounds=3)
  config = transformers.SiglipConfig.from_pretrained(str(out))
  assert config.text_config.num_hidden_layers == 8 and config.vision_config.image_size == IMAGE_SIZE
  # export_params without a spec uses big_vision's convention: texts padded with EOS.
  assert (config.text_config.eos_token_id, config.text_config.pad_token_id) == (tok.eos_id, tok.eos_id)
  assert (out / "tokenizer.model").read_bytes() == tok.model_proto
  assert (out / "model.safetensors").is_file()


# ------------------------------------------------------------------- AutoProcessor / pipeline() on exports
def write_exported(folder, cfg, flat, spec, tokenizer):
  """An exported model folder (export_params with the run's example spec)."""
  from siglip_rins.export import export_params

  return export_params(unflatten_params(flat), cfg, folder, spec=spec, tokenizer=tokenizer)


def demo_spec(text_len, image_size=IMAGE_SIZE):
  import hashlib

  from siglip_rins.example_spec import ExampleSpec, ImageSpec, TextSpec
  from siglip_rins.text.tokenizer import get_tokenizer

  tok = get_tokenizer("demo")
  text = TextSpec(
    tokenizer="demo",
    max_len=text_len,
    eos="sticky",
    pad_value=tok.eos_id,
    lower=True,
    canonicalize=True,
    vocab_size=tok.vocab_size,
    tokenizer_sha256=hashlib.sha256(tok.model_proto).hexdigest(),
    eos_id=tok.eos_id,
  )
  return ExampleSpec(image=ImageSpec(size=(image_size, image_size)), text=text), tok


def hf_export(tmp_path, text_len, capsys=None):
  """(exported folder, HF folder, stderr of export-hf) of a tiny random A^2B model with the demo tokenizer."""
  from siglip_rins.interop.hf import export_hf_from_exported

  spec, tok = demo_spec(text_len)
  cfg = make_cfg("A^2B", 4)
  cfg["text"]["vocab_size"] = tok.vocab_size
  rng = np.random.default_rng(3)
  shapes = flatten_params(param_shapes(build_model(cfg), (IMAGE_SIZE, IMAGE_SIZE), text_len))
  flat = {
    k: (rng.normal(size=v.shape) * 0.2 + (1.0 if k.endswith("scale") else 0.0)).astype(np.float32)
    for k, v in shapes.items()
  }
  flat["t"], flat["b"] = np.array([math.log(10.0)], np.float32), np.array([-1.0], np.float32)
  exported = write_exported(tmp_path / f"exported{text_len}", cfg, flat, spec, tok)
  import io

  log = io.StringIO()
  out = export_hf_from_exported(exported, tmp_path / f"hf{text_len}", log=log)
  return exported, out, log.getvalue()


LABELS = ["red square", "blue circle", "green triangle", "a dog", "yellow star", "purple car"]
TEMPLATE = "This is a photo of {}."  # the pipeline's default hypothesis_template


def smooth_image(h, w, seed):
  """A smooth RGB image (sums of low-frequency sinusoids), uint8 [h, w, 3]."""
  r = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
  chans = [127 + 120 * np.sin(2 * np.pi * (r.uniform(0.3, 1.5) * xx + r.uniform(0.3, 1.5) * yy) + r.uniform(0, 6))]
  chans += [127 + 120 * np.sin(2 * np.pi * (r.uniform(0.3, 1.5) * xx + r.uniform(0.3, 1.5) * yy) + r.uniform(0, 6))]
  chans += [127 + 120 * np.sin(2 * np.pi * (r.uniform(0.3, 1.5) * xx + r.uniform(0.3, 1.5) * yy) + r.uniform(0, 6))]
  return np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)


def reference_logits(em, images):
  """load_exported's logits exp(t) <image, class embedding> + b for LABELS with TEMPLATE, [N, C]."""
  zc = em.class_embeddings(LABELS, [TEMPLATE])
  return em.temperature * em.encode_images(list(images)) @ zc.T + em.bias


def test_auto_processor_and_siglip_model_match_load_exported(tmp_path):
  from PIL import Image

  from siglip_rins.export import load_exported

  exported, out, log = hf_export(tmp_path, text_len=16)
  # export-hf says, in one line, that the pipeline cannot run a 16-token model.
  lines = [l for l in log.splitlines() if "pipeline" in l]
  assert len(lines) == 1 and "16 text positions" in lines[0] and "64" in lines[0]
  names = {p.name for p in out.iterdir()}
  assert {"preprocessor_config.json", "tokenizer_config.json", "spiece.model", "special_tokens_map.json"} <= names
  processor = transformers.AutoProcessor.from_pretrained(str(out))
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
  assert type(tokenizer).__name__ == "SiglipTokenizer" and tokenizer.model_max_length == 16
  assert tokenizer.pad_token == "</s>" and tokenizer.model_input_names == ["input_ids"]
  em = load_exported(exported)
  texts = [TEMPLATE.format(l) for l in LABELS] + ["Ein Hund, der über die Wiese läuft!", "a " * 40]
  hf_ids = tokenizer(texts, padding="max_length", truncation=True)["input_ids"]
  np.testing.assert_array_equal(np.array(hf_ids), em.tokenize(texts))  # ids (and EOS padding) identical

  hf = transformers.SiglipModel.from_pretrained(str(out)).eval()
  images = np.random.default_rng(5).integers(0, 256, (4, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
  inputs = processor(
    text=[TEMPLATE.format(l) for l in LABELS],
    images=[Image.fromarray(a) for a in images],
    padding="max_length",
    truncation=True,
    return_tensors="pt",
  )
  assert set(inputs) == {"input_ids", "pixel_values"}  # no attention mask: the text tower reads every position
  with torch.no_grad():
    logits = hf(**inputs).logits_per_image.numpy()
  ours = reference_logits(em, images)
  np.testing.assert_allclose(logits, ours, atol=1e-3)
  assert (np.argsort(-logits, axis=1) == np.argsort(-ours, axis=1)).all()


# PIL (HF) vs tf.image.resize (siglip_rins) on smooth images, in [-1, 1] units: measured max 0.094 / mean 0.013
# (see siglip_rins.interop.hf's docstring); asserted with some slack.
RESIZE_PIXEL_MAX, RESIZE_PIXEL_MEAN, RESIZE_LOGIT_MAX = 0.12, 0.02, 0.1


def test_pipeline_zero_shot_matches_load_exported_with_and_without_resize(tmp_path):
  from PIL import Image

  from siglip_rins.data.preprocess import ImagePreprocessor
  from siglip_rins.export import load_exported

  exported, out, log = hf_export(tmp_path, text_len=64)
  assert "pipeline" not in log
  em = load_exported(exported)
  spec, _ = demo_spec(64)
  pipe = transformers.pipeline("zero-shot-image-classification", model=str(out))
  square = list(np.random.default_rng(6).integers(0, 256, (3, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8))
  resized = [smooth_image(h, w, i) for i, (h, w) in enumerate([(10, 12), (12, 20), (24, 40), (48, 32)])]
  pre = ImagePreprocessor(spec)
  for images, resize in ((square, False), (resized, True)):
    ours = reference_logits(em, images)
    theirs = []
    for image, row in zip(images, ours):
      result = pipe(Image.fromarray(image), candidate_labels=LABELS)
      assert [r["label"] for r in result] == [LABELS[i] for i in np.argsort(-row, kind="stable")]
      score = {r["label"]: r["score"] for r in result}
      theirs.append([math.log(score[l] / (1 - score[l])) for l in LABELS])
    diff = np.abs(np.array(theirs) - ours)
    pixels = pipe.image_processor(images=[Image.fromarray(a) for a in images], return_tensors="np")["pixel_values"]
    pixel_diff = np.abs(pixels.transpose(0, 2, 3, 1) - pre.batch(images))
    if not resize:
      assert diff.max() < 1e-3 and pixel_diff.max() < 1e-6
    else:
      assert pixel_diff.max() <= RESIZE_PIXEL_MAX and pixel_diff.mean() <= RESIZE_PIXEL_MEAN
      assert diff.max() <= RESIZE_LOGIT_MAX


def test_exported_tokenizer_follows_the_spec_and_names_the_differences(tmp_path):
  from siglip_rins.example_spec import ExampleSpec, ImageSpec, TextSpec
  from siglip_rins.interop.hf import example_spec_of, hf_processor_files
  from siglip_rins.text.tokenizer import get_tokenizer

  tok = get_tokenizer("demo")
  spec, _ = demo_spec(16)
  files, notes = hf_processor_files(spec, tok.model_proto, 16)
  ip = files["preprocessor_config.json"]
  assert ip["size"] == {"height": IMAGE_SIZE, "width": IMAGE_SIZE} and ip["resample"] == 2  # PIL bilinear
  assert ip["image_mean"] == [0.5] * 3 and ip["image_std"] == [0.5] * 3 and ip["rescale_factor"] == 1 / 255
  assert files["tokenizer_config.json"]["do_lower_case"] is True
  # big_vision convention: lowercase, no canonicalisation, EOS-padded; a [0, 1] value range.
  bv_text = TextSpec(tokenizer="demo", max_len=64, eos="sticky", pad_value=1, lower=True, canonicalize=False)
  bv_spec = ExampleSpec(image=dataclasses_replace(spec.image, value_range=(0.0, 1.0)), text=bv_text)
  files, notes = hf_processor_files(bv_spec, tok.model_proto, 64)
  assert files["tokenizer_config.json"]["pad_token"] == "</s>" and files["tokenizer_config.json"]["do_lower_case"]
  assert files["preprocessor_config.json"]["image_mean"] == [0.0] * 3
  assert files["preprocessor_config.json"]["image_std"] == [1.0] * 3
  assert any("not canonicalised" in n for n in notes) and not any("pipeline" in n for n in notes)
  pad0 = ExampleSpec(image=None, text=TextSpec(tokenizer="demo", max_len=8, eos="yes", pad_value=0))
  files, notes = hf_processor_files(pad0, tok.model_proto, 8)
  assert files["tokenizer_config.json"]["pad_token"] == "<pad>" and not files["tokenizer_config.json"]["do_lower_case"]
  assert any("eos='yes'" in n for n in notes) and "preprocessor_config.json" not in files
  # The ImageNet-style evaluation crop (from inception_crop training) maps to shortest_edge + center crop.
  crop = ExampleSpec(
    image=ImageSpec(size=(16, 16), eval_pp="decode|resize_small(18)|central_crop((16, 16))|value_range(-1, 1)"),
    text=None,
  )
  ip = hf_processor_files(crop, None, None)[0]["preprocessor_config.json"]
  assert ip["size"] == {"shortest_edge": 18} and ip["do_center_crop"] and ip["resample"] == 4  # 'area' -> PIL box
  assert ip["crop_size"] == {"height": 16, "width": 16}
  processor = transformers.AutoImageProcessor.from_pretrained(_write_json(tmp_path, ip))
  pixels = processor(images=[np.zeros((20, 30, 3), np.uint8)], return_tensors="np")["pixel_values"]
  assert pixels.shape == (1, 3, 16, 16)
  # The format-1 sections alone give the same spec fields.
  legacy = {
    "text": dict(tokenizer_file="tokenizer.model", max_len=16, eos="sticky", canonicalize=True, pad_value=None),
    "image": dict(size=[16, 16], resize_method="bicubic", antialias=False, value_range=[-1, 1]),
  }
  (tmp_path / "tokenizer.model").write_bytes(tok.model_proto)
  old = example_spec_of(legacy, tmp_path / "tokenizer.model")
  assert (old.text.max_len, old.text.pad_value, old.text.eos_id, old.text.canonicalize) == (16, tok.pad_id, 1, True)
  assert old.image.size == (16, 16) and old.image.resize_method == "bicubic"
  assert hf_processor_files(old, tok.model_proto, 16)[0]["preprocessor_config.json"]["resample"] == 3


def _write_json(folder, content, name="preprocessor_config.json"):
  import json

  (folder / name).write_text(json.dumps(content))
  return str(folder)


def dataclasses_replace(obj, **kw):
  import dataclasses

  d = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
  d.update(kw)
  d["eval_pp"] = ""
  return type(obj)(**d)


@pytest.mark.parametrize(
  "module,other", [("siglip_rins.interop.hf", "siglip_rins.export"), ("siglip_rins.export", "siglip_rins.interop.hf")]
)
def test_export_and_hf_modules_do_not_import_each_other(module, other):
  import ast
  import pathlib
  import subprocess
  import sys

  code = f"import sys, {module}; assert {other!r} not in sys.modules, 'imported'"
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  # hf.py never imports export.py, not even inside a function; export.py may only import hf lazily.
  root = pathlib.Path(__file__).resolve().parents[1] / "siglip_rins"
  tree = ast.parse((root / "interop" / "hf.py").read_text())
  imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
  imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
  assert "siglip_rins.export" not in imported
  top = ast.parse((root / "export.py").read_text()).body
  assert not any(isinstance(n, ast.ImportFrom) and n.module == "siglip_rins.interop.hf" for n in top)


def test_cli_export_hf_prints_the_pipeline_note(tmp_path, capsys):
  from siglip_rins import cli

  exported, _, _ = hf_export(tmp_path, text_len=16)
  assert cli.main(["export-hf", "--model", str(exported), "--out", str(tmp_path / "cli"), "--rounds", "3"]) == 0
  err = capsys.readouterr().err
  assert sum("note: the model has 16 text positions" in line for line in err.splitlines()) == 1
  config = transformers.SiglipConfig.from_pretrained(str(tmp_path / "cli"))
  assert config.text_config.num_hidden_layers == 8 and config.text_config.max_position_embeddings == 16
  assert transformers.AutoTokenizer.from_pretrained(str(tmp_path / "cli")).model_max_length == 16


@pytest.mark.parametrize(
  "norm",
  ["value_range(-1, 1)", "value_range(0, 1)", "vgg_value_range", "clip_value_range", "value_range(-1, 1, 10, 200)"],
)
def test_image_processor_normalises_like_the_eval_pp(tmp_path, norm):
  from siglip_rins.data.preprocess import ImagePreprocessor
  from siglip_rins.example_spec import ExampleSpec, ImageSpec
  from siglip_rins.interop.hf import hf_processor_files

  image = ImageSpec(size=(8, 8), eval_pp=f'decode|resize((8, 8), method="bilinear")|{norm}')
  ip = hf_processor_files(ExampleSpec(image=image, text=None), None, None)[0]["preprocessor_config.json"]
  processor = transformers.AutoImageProcessor.from_pretrained(_write_json(tmp_path, ip))
  pixels = np.random.default_rng(7).integers(10, 201, (2, 8, 8, 3), dtype=np.uint8)  # no resize
  theirs = processor(images=list(pixels), return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)
  np.testing.assert_allclose(theirs, ImagePreprocessor(image).batch(pixels), atol=1e-5)
