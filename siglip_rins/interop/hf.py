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
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Mapping, Optional, Union

import numpy as np

from siglip_rins.interop import flatten_params

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
  from siglip_rins.export import _size_pair, check_rounds, image_size_from_params
  from siglip_rins.layers import sincos2d
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
  size = image_size_from_params(model, flat, None if image_size is None else _size_pair(image_size, "image_size"))
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
) -> pathlib.Path:
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
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  model.save_pretrained(str(out), safe_serialization=True)
  info = dict(
    info,
    transformers_version=transformers.__version__,
    preprocessing="images: resize to image_size (bilinear), values in [-1, 1]; texts: SigLIP-canonicalised, "
    "EOS appended, padded to max_position_embeddings (padding='max_length')",
    **dict(extra_info or {}),
  )
  (out / "siglip_rins_export.json").write_text(json.dumps(info, indent=2))
  return out


def export_hf_from_exported(
  model_dir: str | os.PathLike, out_dir: str | os.PathLike, rounds: Rounds = None
) -> pathlib.Path:
  """HF export of an exported siglip_rins model folder (see `siglip_rins.export`); copies its tokenizer model."""
  from siglip_rins.export import load_exported

  em = load_exported(model_dir)
  tok = em.tokenizer
  out = export_hf(
    em.params,
    em.config["model"],
    out_dir,
    image_size=em.image_size,
    text_len=em.text_len,
    rounds=rounds,
    pad_token_id=None if tok is None else tok.pad_id,
    eos_token_id=None if tok is None or tok.eos_id < 0 else tok.eos_id,
    extra_info=dict(text=em.config.get("text"), image=em.config.get("image")),
  )
  if tok is not None:
    (pathlib.Path(out) / "tokenizer.model").write_bytes(tok.model_proto)
  return out


__all__ = ["to_hf", "export_hf", "export_hf_from_exported"]
