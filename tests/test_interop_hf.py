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
  assert (config.text_config.eos_token_id, config.text_config.pad_token_id) == (tok.eos_id, tok.pad_id)
  assert (out / "tokenizer.model").read_bytes() == tok.model_proto
  assert (out / "model.safetensors").is_file()
