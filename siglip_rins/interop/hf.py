"""Hugging Face `transformers` SiglipModel export: the recursion is unrolled into consecutive layers.

A tower with signature A^3B and 3 layers per block becomes 12 HF encoder layers: A's 3 layers three times, then B's
(weights copied, so the HF model computes exactly what the JAX model computes at that number of rounds).  The
exported model runs a fixed plan: `rounds=k` unrolls A^kB (default: the trained signature).

What maps (siglip_rins -> transformers):
  img/embedding (conv [p, p, 3, D])           -> vision_model.embeddings.patch_embedding (Conv2d [D, 3, p, p])
  img/pos_embedding [1, N, D] (or sincos2d)    -> vision_model.embeddings.position_embedding.weight [N, D]
  <block>/encoderblock_j/LayerNorm_0|1         -> encoder.layers[n].layer_norm1|2
  .../MultiHeadDotProductAttention_0/{query,key,value,out} ([D, H, K] / [H, K, D])
                                               -> self_attn.{q,k,v,out}_proj (Linear [out, in])
  .../MlpBlock_0/Dense_0|1                     -> mlp.fc1|fc2
  img/Transformer/encoder_norm                 -> vision_model.post_layernorm
  img/MAPHead_0/{probe, attention, LayerNorm_0, MlpBlock_0}
                                               -> vision_model.head.{probe, attention (packed in_proj), layernorm, mlp}
  txt/Embed_0, txt/pos_embedding               -> text_model.embeddings.{token,position}_embedding
  txt/Encoder_0/encoder_norm, txt/head         -> text_model.final_layer_norm, text_model.head
  t, b                                         -> logit_scale, logit_bias
GELU is the tanh approximation (flax `nn.gelu` default) -> hidden_act 'gelu_pytorch_tanh'; LayerNorm eps 1e-6.
HF's text tower pools the last token, as ours ('last') does.

Refused (ValueError saying why): models that are not two towers with a MAP-pooled image tower without a head and a
last-token text tower; non-square images or patches; KV sharing across rounds (later rounds read the first round's
keys/values, which an HF layer cannot); linear adapters that are not exactly the identity for the exported number of
rounds (HF has no linear map between the last layer and the final LayerNorm).  Stochastic depth (p_skip > 0) is a
training-time setting: evaluation (and the export) runs every round of the chosen plan.

Preprocessing (`export_hf_from_exported`, command `siglip-rins export-hf`): next to the model it writes, from the
exported folder's example spec, what `AutoProcessor`, `AutoTokenizer` and `pipeline("zero-shot-image-classification")`
read:
  preprocessor_config.json  SiglipImageProcessor: size = the spec's (H, W), resample = PIL code of its resize method
                            (bilinear 2, bicubic 3, nearest 0, area 4), rescale 1/255, normalise as the eval pp's
                            value_range / vgg_value_range / clip_value_range (value_range(lo, hi): mean =
                            -lo / (hi - lo), std = 1 / (hi - lo), 0.5 / 0.5 for [-1, 1]), convert to RGB;
                            resize_small(s)|central_crop(h, w) becomes shortest_edge s + a center crop.
  spiece.model              the SentencePiece model (also kept as tokenizer.model).
  tokenizer_config.json     SiglipTokenizer: eos / unk = the model's pieces, pad = the piece of the spec's pad id
  special_tokens_map.json   ('</s>' for EOS padding), model_max_length = the model's text length,
                            model_input_names = ['input_ids'] (the text tower attends to every position, pads
                            included, and pools the last one: an attention mask would move its embeddings; 0.11
                            to 0.13 on the tests' tiny model), do_lower_case = spec lower or canonicalize.
  processor_config.json     SiglipProcessor.
With `processor(text=..., images=..., padding="max_length", truncation=True)` the ids equal siglip_rins's (sticky
EOS, EOS/pad filled to the model's length) for captions whose punctuation is ASCII and that have no '_'.

What remains different (export-hf prints each as one line and lists them in siglip_rins_export.json):
  * texts: SiglipTokenizer always deletes ASCII punctuation and collapses whitespace.  siglip_rins's
    canonicalisation also deletes Unicode punctuation and turns '_' into a space; a spec that does not
    canonicalise (big_vision imports: lower=True only) keeps punctuation, which SiglipTokenizer drops.
  * transformers' zero-shot pipeline pads SigLIP texts to 64 tokens (padding="max_length", max_length=64; its
    tokenizer_kwargs are not passed on), so it only runs models with 64 text positions; export-hf says so.
  * images that need resizing: PIL antialiases when shrinking and rounds to uint8; the training pipeline's
    resize (big_vision's: tf.image.resize(antialias=False), truncated to uint8), which load_exported runs too,
    does neither.  Images already at the model's size are not resized, and logits agree to 2e-6.  Measured (PIL
    backend of transformers 5.23, siglip_rins.data.preprocess; values in [-1, 1], i.e. 0.0078 per uint8 level):
      smooth synthetic images to 16x16: upscaled from 10x12: max 0.0078 (one level), mean 0.0043 (truncation vs
        rounding); downscaled from 12x20 .. 64x96: max 0.055-0.094, mean 0.009-0.013; tests' tiny model: logits
        within 0.014 (asserted <= 0.1), same ranking;
      two 720x477 photos to 224 / 256 / 384: max 0.35-0.54 / 0.38-0.45 / 0.17-0.29, mean 0.028-0.057 /
        0.023-0.046 / 0.012-0.022;
      uniform noise (all frequencies) downscaled 40x28 -> 16x16: mean 0.21 (rankings change).
    For exact parity resize images to the model's size first (e.g. with `siglip_rins.data.preprocess`).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Mapping, Optional, Union

import numpy as np

from siglip_rins import paths
from siglip_rins.exported_format import example_spec_of, read_exported_config, read_params
from siglip_rins.interop import flatten_params, unflatten_params

HF_ACT = "gelu_pytorch_tanh"
LAYER_NORM_EPS = 1e-6
Rounds = Union[None, int, Mapping[str, Optional[int]]]


def _import_hf():
  try:
    import torch
    import transformers
  except ImportError as e:
    raise ImportError(
      f"the Hugging Face export needs torch and transformers (pip install 'siglip_rins[hf]'): {e}"
    ) from None
  return torch, transformers


def _plan_layers(kw: dict, rounds: Optional[int], stack: str) -> tuple[list[tuple[str, int]], Any, Any]:
  """Unrolled (block name, layer j) list of a tower, the plan run, and the trained plan."""
  from siglip_rins.recursion import with_rounds

  trained = kw["recursion"].plan(kw.get("depth", 12))
  plan = trained if rounds is None else with_rounds(trained, int(rounds))
  layers = [(name, j) for name in plan.sequence for j in range(plan.layers(name))]
  return layers, plan, trained


def _check_adapters(flat: Mapping[str, np.ndarray], stack: str, kw: dict, plan, trained) -> None:
  from siglip_rins.recursion import adapter_axis, adapter_index

  if not kw["recursion"].adapters:
    return
  kernel, bias = flat[f"{stack}/adapter_kernel"], flat[f"{stack}/adapter_bias"]
  ran = plan.repeats if adapter_axis(trained) == "repeat" else plan.runs()[0].count
  k = adapter_index(trained, plan) - 1
  if not (np.array_equal(kernel[k], np.eye(kernel.shape[-1], dtype=kernel.dtype)) and not np.any(bias[k])):
    raise ValueError(
      f"{stack}: linear adapter {k + 1} (applied after {ran} rounds) is not the identity, and a transformers "
      f"SiglipModel has no place for a linear map between the last encoder layer and the final LayerNorm; this "
      f"model cannot be exported exactly.  Export a model trained without adapters, or choose rounds whose "
      f"adapter is still the identity"
    )


def _attn(flat, p: str, d: int) -> dict[str, np.ndarray]:
  """Our MultiHeadDotProductAttention params under prefix p -> torch Linear weights [out, in] / biases."""
  out = {}
  for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v")):
    out[f"{theirs}.weight"] = flat[f"{p}/{ours}/kernel"].reshape(d, -1).T
    out[f"{theirs}.bias"] = flat[f"{p}/{ours}/bias"].reshape(-1)
  out["out.weight"] = flat[f"{p}/out/kernel"].reshape(-1, d).T
  out["out.bias"] = flat[f"{p}/out/bias"].reshape(-1)
  return out


def _layer(flat, p: str, d: int, q: str) -> dict[str, np.ndarray]:
  """One encoder layer: our prefix p -> HF prefix q (…encoder.layers.n)."""
  a = _attn(flat, f"{p}/MultiHeadDotProductAttention_0", d)
  sd = {
    f"{q}.layer_norm1.weight": flat[f"{p}/LayerNorm_0/scale"],
    f"{q}.layer_norm1.bias": flat[f"{p}/LayerNorm_0/bias"],
    f"{q}.layer_norm2.weight": flat[f"{p}/LayerNorm_1/scale"],
    f"{q}.layer_norm2.bias": flat[f"{p}/LayerNorm_1/bias"],
    f"{q}.mlp.fc1.weight": flat[f"{p}/MlpBlock_0/Dense_0/kernel"].T,
    f"{q}.mlp.fc1.bias": flat[f"{p}/MlpBlock_0/Dense_0/bias"],
    f"{q}.mlp.fc2.weight": flat[f"{p}/MlpBlock_0/Dense_1/kernel"].T,
    f"{q}.mlp.fc2.bias": flat[f"{p}/MlpBlock_0/Dense_1/bias"],
  }
  for t in ("q", "k", "v", "out"):
    sd[f"{q}.self_attn.{t}_proj.weight"] = a[f"{t}.weight"]
    sd[f"{q}.self_attn.{t}_proj.bias"] = a[f"{t}.bias"]
  return sd


def to_hf(
  params: Mapping[str, Any],
  model_config: Mapping[str, Any],
  *,
  image_size: Any = None,
  text_len: Optional[int] = None,
  rounds: Rounds = None,
  pad_token_id: Optional[int] = None,
  eos_token_id: Optional[int] = None,
) -> tuple[dict, dict[str, np.ndarray]]:
  """(SiglipConfig kwargs {'text_config', 'vision_config'}, state dict of float32 numpy arrays).

  rounds: None (trained plan), an int (A^kB in both towers) or {'img': k1, 'txt': k2}.
  image_size: pixels (int or (H, W), must be square); default: from img/pos_embedding and the patch size.
  text_len: default the length of txt/pos_embedding.
  """
  from siglip_rins.example_spec import size_pair
  from siglip_rins.layers import sincos2d
  from siglip_rins.models.shapes import check_rounds, image_size_from_params
  from siglip_rins.models import build_model

  cfg = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
  if cfg.get("name") != "two_towers":
    raise ValueError(f"HF export needs a two_towers (SigLIP) model, got {cfg.get('name')!r}")
  model = build_model(cfg)
  if model.image is None or model.text is None:
    raise ValueError("HF export needs both towers (SiglipModel has an image and a text model)")
  rounds = check_rounds(rounds)
  r = rounds if isinstance(rounds, Mapping) else {"img": rounds, "txt": rounds}
  flat = {k: np.asarray(v, dtype=np.float32) for k, v in flatten_params(params).items()}
  img, txt = model.image, model.text
  problems = []
  if img.get("pool_type", "map") != "map":
    problems.append(f"image pool_type is {img.get('pool_type')!r}; SiglipVisionModel pools with a MAP head ('map')")
  if img.get("num_classes"):
    problems.append("the image tower has a linear head (out_dim set); SiglipVisionModel has none after the MAP head")
  if txt.get("pool_type", "last") != "last":
    problems.append(f"text pool_type is {txt.get('pool_type')!r}; SiglipTextModel pools the last token ('last')")
  for name, kw in (("image", img), ("text", txt)):
    if kw["recursion"].kv_sharing:
      problems.append(f"{name} tower uses KV sharing across rounds, which transformers layers cannot express")
  ph, pw = img.get("patch_size", (16, 16))
  if ph != pw:
    problems.append(f"patch size {(ph, pw)} is not square (SiglipVisionConfig.patch_size is one int)")
  if problems:
    raise ValueError("cannot export to transformers SiglipModel exactly: " + "; ".join(problems))
  size = image_size_from_params(model, flat, None if image_size is None else size_pair(image_size, "image_size"))
  if size[0] != size[1]:
    raise ValueError(f"image size {size} is not square (SiglipVisionConfig.image_size is one int)")
  if text_len is None:
    text_len = int(flat["txt/pos_embedding"].shape[1])

  sd: dict[str, np.ndarray] = {}
  d_img, d_txt = img.get("width", 768), txt.get("width", 768)
  # ---- vision
  sd["vision_model.embeddings.patch_embedding.weight"] = flat["img/embedding/kernel"].transpose(3, 2, 0, 1)
  sd["vision_model.embeddings.patch_embedding.bias"] = flat["img/embedding/bias"]
  grid = (size[0] // ph, size[1] // pw)
  if img.get("posemb", "learn") == "learn":
    sd["vision_model.embeddings.position_embedding.weight"] = flat["img/pos_embedding"][0]
  else:  # fixed sin-cos table: an exact constant for a learned-embedding slot
    sd["vision_model.embeddings.position_embedding.weight"] = sincos2d(*grid, d_img)[0]
  img_layers, img_plan, img_trained = _plan_layers(img, r.get("img"), "img/Transformer")
  _check_adapters(flat, "img/Transformer", img, img_plan, img_trained)
  for n, (block, j) in enumerate(img_layers):
    sd.update(_layer(flat, f"img/Transformer/{block}/encoderblock_{j}", d_img, f"vision_model.encoder.layers.{n}"))
  sd["vision_model.post_layernorm.weight"] = flat["img/Transformer/encoder_norm/scale"]
  sd["vision_model.post_layernorm.bias"] = flat["img/Transformer/encoder_norm/bias"]
  h = "vision_model.head"
  sd[f"{h}.probe"] = flat["img/MAPHead_0/probe"]
  a = _attn(flat, "img/MAPHead_0/MultiHeadDotProductAttention_0", d_img)
  sd[f"{h}.attention.in_proj_weight"] = np.concatenate([a["q.weight"], a["k.weight"], a["v.weight"]], 0)
  sd[f"{h}.attention.in_proj_bias"] = np.concatenate([a["q.bias"], a["k.bias"], a["v.bias"]], 0)
  sd[f"{h}.attention.out_proj.weight"] = a["out.weight"]
  sd[f"{h}.attention.out_proj.bias"] = a["out.bias"]
  sd[f"{h}.layernorm.weight"] = flat["img/MAPHead_0/LayerNorm_0/scale"]
  sd[f"{h}.layernorm.bias"] = flat["img/MAPHead_0/LayerNorm_0/bias"]
  for i, fc in ((0, "fc1"), (1, "fc2")):
    sd[f"{h}.mlp.{fc}.weight"] = flat[f"img/MAPHead_0/MlpBlock_0/Dense_{i}/kernel"].T
    sd[f"{h}.mlp.{fc}.bias"] = flat[f"img/MAPHead_0/MlpBlock_0/Dense_{i}/bias"]
  # ---- text
  sd["text_model.embeddings.token_embedding.weight"] = flat["txt/Embed_0/embedding"]
  sd["text_model.embeddings.position_embedding.weight"] = flat["txt/pos_embedding"][0]
  txt_layers, txt_plan, txt_trained = _plan_layers(txt, r.get("txt"), "txt/Encoder_0")
  _check_adapters(flat, "txt/Encoder_0", txt, txt_plan, txt_trained)
  for n, (block, j) in enumerate(txt_layers):
    sd.update(_layer(flat, f"txt/Encoder_0/{block}/encoderblock_{j}", d_txt, f"text_model.encoder.layers.{n}"))
  sd["text_model.final_layer_norm.weight"] = flat["txt/Encoder_0/encoder_norm/scale"]
  sd["text_model.final_layer_norm.bias"] = flat["txt/Encoder_0/encoder_norm/bias"]
  if "txt/head/kernel" in flat:
    sd["text_model.head.weight"] = flat["txt/head/kernel"].T
    sd["text_model.head.bias"] = flat["txt/head/bias"]
  else:  # no text head: an exact identity projection
    sd["text_model.head.weight"] = np.eye(d_txt, dtype=np.float32)
    sd["text_model.head.bias"] = np.zeros(d_txt, np.float32)
  projection = sd["text_model.head.weight"].shape[0]
  if projection != d_img:
    raise ValueError(f"text embedding size {projection} differs from the image embedding size {d_img}")
  sd["logit_scale"] = flat["t"].reshape(1)
  sd["logit_bias"] = flat["b"].reshape(1)

  text_config = dict(
    vocab_size=int(txt.get("vocab_size", 32_000)),
    hidden_size=d_txt,
    intermediate_size=int(txt.get("mlp_dim", 3072)),
    num_hidden_layers=len(txt_layers),
    num_attention_heads=int(txt.get("num_heads", 12)),
    max_position_embeddings=int(text_len),
    hidden_act=HF_ACT,
    layer_norm_eps=LAYER_NORM_EPS,
    projection_size=int(projection),
  )
  # Token ids the tokenizer defines (HF's defaults, 49406/49407, are CLIP's and may lie outside a small vocab).
  text_config["bos_token_id"] = None
  text_config["eos_token_id"] = None if eos_token_id is None else int(eos_token_id)
  text_config["pad_token_id"] = None if pad_token_id is None else int(pad_token_id)
  vision_config = dict(
    hidden_size=d_img,
    intermediate_size=int(img.get("mlp_dim", 3072)),
    num_hidden_layers=len(img_layers),
    num_attention_heads=int(img.get("num_heads", 12)),
    num_channels=3,
    image_size=int(size[0]),
    patch_size=int(ph),
    hidden_act=HF_ACT,
    layer_norm_eps=LAYER_NORM_EPS,
    vision_use_head=True,
  )
  info = dict(
    image_signature="".join(img_plan.sequence),
    text_signature="".join(txt_plan.sequence),
    image_layers=[f"{b}/encoderblock_{j}" for b, j in img_layers],
    text_layers=[f"{b}/encoderblock_{j}" for b, j in txt_layers],
  )
  return dict(text_config=text_config, vision_config=vision_config, siglip_rins=info), sd


def export_hf(
  params: Mapping[str, Any],
  model_config: Mapping[str, Any],
  out_dir: str | os.PathLike,
  *,
  image_size: Any = None,
  text_len: Optional[int] = None,
  rounds: Rounds = None,
  pad_token_id: Optional[int] = None,
  eos_token_id: Optional[int] = None,
  extra_info: Optional[Mapping[str, Any]] = None,
) -> paths.Path:
  """Writes a transformers SiglipModel folder (config.json + model.safetensors) plus `siglip_rins_export.json`
  (the unrolled layer list and preprocessing notes).  See `to_hf` for the arguments."""
  torch, transformers = _import_hf()
  config_kw, sd = to_hf(
    params,
    model_config,
    image_size=image_size,
    text_len=text_len,
    rounds=rounds,
    pad_token_id=pad_token_id,
    eos_token_id=eos_token_id,
  )
  info = config_kw.pop("siglip_rins")
  config = transformers.SiglipConfig(text_config=config_kw["text_config"], vision_config=config_kw["vision_config"])
  model = transformers.SiglipModel(config).eval()
  state = {k: torch.from_numpy(np.array(v, dtype=np.float32, copy=True)) for k, v in sd.items()}
  missing, unexpected = model.load_state_dict(state, strict=False)
  missing = [k for k in missing if not k.endswith("position_ids")]
  if missing or unexpected:
    raise ValueError(
      f"state dict does not match transformers {transformers.__version__} SiglipModel: "
      f"missing {sorted(missing)}, unexpected {sorted(unexpected)}"
    )
  out = paths.makedirs(paths.workdir_path(out_dir))  # through the path layer: gs:// works too
  # Saving diffs the config against a default SiglipConfig, whose CLIP token ids (49406/49407) fall outside
  # the default vocabulary: transformers then warns about that default, not about this model.  Silenced.
  verbosity = transformers.logging.get_verbosity()
  transformers.logging.set_verbosity_error()
  try:
    if paths.is_local(out):
      model.save_pretrained(str(out), safe_serialization=True)
    else:  # transformers writes local files: stage them, then copy each through the path layer
      import tempfile

      with tempfile.TemporaryDirectory() as staging:
        model.save_pretrained(staging, safe_serialization=True)
        for name in sorted(os.listdir(staging)):
          paths.write_bytes(out / name, paths.read_bytes(paths.Path(staging) / name))
  finally:
    transformers.logging.set_verbosity(verbosity)
  info = dict(
    info,
    transformers_version=transformers.__version__,
    preprocessing="pixel_values: float32 [N, 3, image_size, image_size] as the model was trained (see "
    "preprocessor_config.json); input_ids: padded to max_position_embeddings, no attention mask",
    **dict(extra_info or {}),
  )
  paths.write_text(out / "siglip_rins_export.json", json.dumps(info, indent=2))
  return out


# ----------------------------------------------------------------------- exported folder (no export.py)
PIPELINE_TEXT_LEN = 64  # transformers' zero-shot-image-classification pipeline pads SigLIP texts to 64 tokens
# siglip_rins resize methods (tf.image.resize) -> PIL resampling codes of transformers image processors.
PIL_RESAMPLE = {"nearest": 0, "lanczos3": 1, "lanczos5": 1, "bilinear": 2, "bicubic": 3, "area": 4}


def read_exported(model_dir: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray], Optional[bytes], Any]:
  """(config, flat float32 params, tokenizer.model bytes or None, ExampleSpec) of an exported model folder, read
  without importing siglip_rins.export (which imports this module lazily)."""
  model_dir = paths.workdir_path(model_dir)
  config = read_exported_config(model_dir)
  params_path = model_dir / config.get("params_file", "params.safetensors")
  flat = read_params(params_path)  # size-checked from its header first (siglip_rins.limits)
  text = config.get("text") or {}
  tok_path = model_dir / text.get("tokenizer_file", "tokenizer.model")
  if (text or (config.get("example_spec") or {}).get("text")) and not tok_path.is_file():
    raise FileNotFoundError(f"{tok_path} not found (the exported folder is incomplete)")
  proto = paths.read_bytes(tok_path) if tok_path.is_file() else None
  spec = example_spec_of(config, tok_path if proto is not None else None)
  return config, flat, proto, spec


_NORMALIZE_OPS = ("value_range", "vgg_value_range", "clip_value_range")
# big_vision's vgg_value_range / clip_value_range statistics on the 0..255 scale (siglip_rins.data.ops_image).
_VGG = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


def _normalization(image) -> tuple[list[float], list[float]]:
  """image_mean / image_std (on x / 255) equal to the last normalising op of the spec's eval pp (value_range,
  vgg_value_range, clip_value_range), or to its value_range when the pp has none."""
  from siglip_rins.data import pp as pp_lib

  def three(v):
    return [float(x) for x in np.broadcast_to(np.asarray(v, np.float64), (3,))]

  lo, hi = image.value_range
  mean, std = three(-lo / (hi - lo)), three(1 / (hi - lo))
  for op in pp_lib.parse(image.pp(decode=False)):
    kw = dict(op.kwargs)
    if op.name == "value_range":
      names = ("vmin", "vmax", "in_min", "in_max")
      kw.update(zip(names, op.args))
      vmin, vmax = np.asarray(kw.get("vmin", -1), np.float64), np.asarray(kw.get("vmax", 1), np.float64)
      in_min, in_max = np.asarray(kw.get("in_min", 0), np.float64), np.asarray(kw.get("in_max", 255), np.float64)
      # vmin + (255 u - in_min) / (in_max - in_min) * (vmax - vmin) == (u - mean) / std, u = x / 255
      s = (in_max - in_min) / (255.0 * (vmax - vmin))
      mean, std = three(in_min / 255.0 - vmin * s), three(s)
    elif op.name in ("vgg_value_range", "clip_value_range"):
      m, sd = _VGG if op.name == "vgg_value_range" else _CLIP
      if op.name == "vgg_value_range":
        kw.update(zip(("mean", "std"), op.args))
        if "mean" in kw:
          m = np.asarray(kw["mean"], np.float64) / 255.0
        if "std" in kw:
          sd = np.asarray(kw["std"], np.float64) / 255.0
      mean, std = three(m), three(sd)
  return mean, std


def _image_processor_config(image) -> tuple[dict, list[str]]:
  """preprocessor_config.json (SiglipImageProcessor) for an ImageSpec, and notes on what differs."""
  from siglip_rins.data import pp as pp_lib  # the parser is pure Python

  notes = []
  mean, std = _normalization(image)
  cfg = dict(
    image_processor_type="SiglipImageProcessor",
    processor_class="SiglipProcessor",
    do_convert_rgb=True,
    do_resize=True,
    size=dict(height=int(image.size[0]), width=int(image.size[1])),
    resample=PIL_RESAMPLE.get(image.resize_method, 2),
    do_rescale=True,
    rescale_factor=1 / 255,
    do_normalize=True,
    image_mean=mean,
    image_std=std,
  )
  if image.resize_method not in PIL_RESAMPLE:
    notes.append(f"resize method {image.resize_method!r} has no PIL counterpart; the HF processor resizes bilinear")
  ops = [op for op in pp_lib.parse(image.pp(decode=False)) if op.name not in _NORMALIZE_OPS]
  names = [op.name for op in ops]
  if names == ["resize_small", "central_crop"]:
    small = ops[0].args[0] if ops[0].args else dict(ops[0].kwargs)["smaller_size"]
    method = ops[0].args[1] if len(ops[0].args) > 1 else dict(ops[0].kwargs).get("method", "area")
    cfg.update(
      size=dict(shortest_edge=int(small)),
      resample=PIL_RESAMPLE.get(method, 2),
      do_center_crop=True,
      crop_size=dict(height=int(image.size[0]), width=int(image.size[1])),
    )
    notes.append(
      f"images: resize_small({small}) + central_crop maps to shortest_edge + center crop; the longer side may "
      f"differ by a pixel (HF truncates it, the pp op rounds)"
    )
  elif names != ["resize"]:
    notes.append(f"image pp {image.eval_pp!r}: the HF processor only resizes to {tuple(image.size)}")
  if not image.antialias:
    notes.append(
      "images: PIL resizing antialiases when it shrinks an image, siglip_rins's tf.image.resize (antialias=False) "
      "does not; images already at the model's size are not resized by either"
    )
  return cfg, notes


def _tokenizer_files(text, proto: bytes, text_len: int) -> tuple[dict[str, Any], list[str]]:
  """tokenizer_config.json and special_tokens_map.json (SiglipTokenizer over spiece.model) for a TextSpec, and
  notes on the tokenisation differences that remain."""
  import sentencepiece

  sp = sentencepiece.SentencePieceProcessor()
  sp.LoadFromSerializedProto(proto)
  eos_id = int(sp.eos_id())
  if eos_id < 0:
    raise ValueError("the tokenizer has no EOS piece; SiglipTokenizer appends one to every text")
  pieces = dict(eos_token=sp.IdToPiece(eos_id), pad_token=sp.IdToPiece(int(text.pad_value)))
  pieces["unk_token"] = sp.IdToPiece(int(sp.unk_id())) if sp.unk_id() >= 0 else "<unk>"
  ids = {name: int(sp.PieceToId(piece)) for name, piece in pieces.items()}
  lower = bool(text.lower or text.canonicalize)
  config = dict(
    tokenizer_class="SiglipTokenizer",
    processor_class="SiglipProcessor",
    model_max_length=int(text_len),
    # The text tower attends to every position (pads included) and pools the last one: no attention mask.
    model_input_names=["input_ids"],
    padding_side="right",
    truncation_side="right",
    do_lower_case=lower,
    sp_model_kwargs={},
    additional_special_tokens=[],
    added_tokens_decoder={
      str(ids[name]): dict(content=piece, lstrip=False, normalized=False, rstrip=False, single_word=False, special=True)
      for name, piece in sorted(pieces.items())
    },
    **pieces,
  )
  notes = []
  if text.canonicalize:
    notes.append(
      "texts: SiglipTokenizer deletes ASCII punctuation (string.punctuation, '_' included); siglip_rins's "
      "canonicalisation also deletes Unicode punctuation (e.g. '«»—。') and turns '_' into a space"
    )
  else:
    notes.append(
      "texts: SiglipTokenizer always deletes ASCII punctuation and collapses whitespace; this model's texts are "
      "not canonicalised (lower=%s), so captions with punctuation tokenize differently" % bool(text.lower)
    )
  if text.eos != "sticky":
    notes.append(f"texts: SiglipTokenizer appends EOS and keeps it when truncating; this model used eos={text.eos!r}")
  if getattr(text, "add_bos", False):
    notes.append("texts: this model's texts start with BOS, which SiglipTokenizer does not add")
  return dict(config=config, special_tokens_map=pieces), notes


def hf_processor_files(spec, tokenizer_proto: Optional[bytes], text_len: Optional[int]) -> tuple[dict, list[str]]:
  """{file name: JSON object or bytes} that AutoProcessor / AutoTokenizer / pipeline() read next to a
  SiglipModel, for an ExampleSpec; and the notes on remaining differences (one line each)."""
  files: dict[str, Any] = {}
  notes: list[str] = []
  if spec.image is not None:
    files["preprocessor_config.json"], more = _image_processor_config(spec.image)
    notes += more
  if spec.text is not None and tokenizer_proto is not None:
    tok, more = _tokenizer_files(spec.text, tokenizer_proto, text_len or spec.text.max_len)
    files["spiece.model"] = bytes(tokenizer_proto)
    files["tokenizer.model"] = bytes(tokenizer_proto)
    files["tokenizer_config.json"] = tok["config"]
    files["special_tokens_map.json"] = tok["special_tokens_map"]
    notes += more
    n = int(text_len or spec.text.max_len)
    if n < PIPELINE_TEXT_LEN:
      notes.insert(
        0,
        f"the model has {n} text positions but transformers' zero-shot-image-classification pipeline pads "
        f"SigLIP texts to {PIPELINE_TEXT_LEN} tokens and fails on this model; use SiglipModel with AutoProcessor("
        f"padding='max_length', truncation=True), or export a model with {PIPELINE_TEXT_LEN} text positions",
      )
  if spec.image is not None and spec.text is not None:
    files["processor_config.json"] = dict(processor_class="SiglipProcessor")
  return files, notes


def export_hf_from_exported(
  model_dir: str | os.PathLike, out_dir: str | os.PathLike, rounds: Rounds = None, log: Any = None
) -> paths.Path:
  """HF export of an exported siglip_rins model folder: the SiglipModel (`export_hf`) plus the files with which
  `AutoProcessor`, `AutoTokenizer` and `pipeline("zero-shot-image-classification")` preprocess as the folder's
  example spec says (`hf_processor_files`).  Remaining differences are printed to `log` (default stderr), one
  line each, and listed in siglip_rins_export.json."""
  config, flat, proto, spec = read_exported(model_dir)
  text_len = None if spec.text is None else int(spec.text.max_len)
  eos_id = None
  if spec.text is not None:
    eos_id = spec.text.eos_id
    if eos_id is None:
      from siglip_rins.text.tokenizer import Tokenizer

      eos_id = Tokenizer(proto).eos_id
  files, notes = hf_processor_files(spec, proto, text_len)
  out = export_hf(
    unflatten_params(dict(flat)),
    config["model"],
    out_dir,
    image_size=None if spec.image is None else spec.image.size,
    text_len=text_len,
    rounds=rounds,
    pad_token_id=None if spec.text is None else int(spec.text.pad_value),
    eos_token_id=None if eos_id is None or eos_id < 0 else int(eos_id),
    extra_info=dict(example_spec=spec.to_dict(), differences=notes),
  )
  for name, content in files.items():
    path = paths.Path(out) / name
    if isinstance(content, bytes):
      paths.write_bytes(path, content)
    else:
      paths.write_text(path, json.dumps(content, indent=2, sort_keys=True))
  for line in notes:
    print(f"note: {line}", file=log or sys.stderr)
  return out


__all__ = ["to_hf", "export_hf", "export_hf_from_exported", "read_exported", "example_spec_of", "hf_processor_files"]
