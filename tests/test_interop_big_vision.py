"""big_vision .npz interop: name mapping both ways, loop and scan layouts, pos-emb resampling, clear errors."""

import numpy as np
import pytest

from siglip_rins.export import param_shapes
from siglip_rins.interop import flatten_params, unflatten_params
from siglip_rins.interop import big_vision as bv
from siglip_rins.models import build_model

IMAGE_SIZE, TEXT_LEN = (16, 16), 6


def tower(depth):
  return dict(width=16, depth=depth, mlp_dim=32, num_heads=2)


def make_cfg(signature="AB", depth=4, adapters=False):
  return dict(
    name="two_towers",
    out_dim=(None, 16),
    recursion=dict(signature=signature, adapters=adapters),
    image=dict(tower(depth), patch_size=4),
    text=dict(tower(depth), vocab_size=40),
  )


def random_flat(cfg, seed=0, image_size=IMAGE_SIZE):
  rng = np.random.default_rng(seed)
  shapes = flatten_params(param_shapes(build_model(cfg), image_size, TEXT_LEN))
  return {k: rng.normal(size=v.shape).astype(np.float32) for k, v in shapes.items()}


def big_vision_checkpoint(seed=0):
  """A random big_vision-named 4-layer checkpoint (built independently of the converter: names written here)."""
  rng = np.random.default_rng(seed)
  d, h, k, m = 16, 2, 8, 32
  layer = {
    "LayerNorm_0/scale": (d,),
    "LayerNorm_0/bias": (d,),
    "LayerNorm_1/scale": (d,),
    "LayerNorm_1/bias": (d,),
    "MlpBlock_0/Dense_0/kernel": (d, m),
    "MlpBlock_0/Dense_0/bias": (m,),
    "MlpBlock_0/Dense_1/kernel": (m, d),
    "MlpBlock_0/Dense_1/bias": (d,),
  }
  for part in ("query", "key", "value"):
    layer[f"MultiHeadDotProductAttention_0/{part}/kernel"] = (d, h, k)
    layer[f"MultiHeadDotProductAttention_0/{part}/bias"] = (h, k)
  layer["MultiHeadDotProductAttention_0/out/kernel"] = (h, k, d)
  layer["MultiHeadDotProductAttention_0/out/bias"] = (d,)
  shapes = {
    "img/embedding/kernel": (4, 4, 3, d),
    "img/embedding/bias": (d,),
    "img/pos_embedding": (1, 16, d),
    "img/Transformer/encoder_norm/scale": (d,),
    "img/Transformer/encoder_norm/bias": (d,),
    "img/MAPHead_0/probe": (1, 1, d),
    "img/MAPHead_0/LayerNorm_0/scale": (d,),
    "img/MAPHead_0/LayerNorm_0/bias": (d,),
    "txt/Embed_0/embedding": (40, d),
    "txt/pos_embedding": (1, TEXT_LEN, d),
    "txt/Encoder_0/encoder_norm/scale": (d,),
    "txt/Encoder_0/encoder_norm/bias": (d,),
    "txt/head/kernel": (d, d),
    "txt/head/bias": (d,),
    "t": (1,),
    "b": (1,),
  }
  for name, shape in layer.items():
    if not name.startswith("LayerNorm_1"):
      shapes[f"img/MAPHead_0/{name}"] = shape
  for i in range(4):
    for name, shape in layer.items():
      shapes[f"img/Transformer/encoderblock_{i}/{name}"] = shape
      shapes[f"txt/Encoder_0/encoderblock_{i}/{name}"] = shape
  return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def test_import_maps_layers_to_blocks_and_rins_model_shares_the_tree():
  ckpt = big_vision_checkpoint()
  params = bv.import_big_vision(ckpt, make_cfg("AB"))
  flat = flatten_params(params)
  assert set(flat) == {
    k.replace("encoderblock_0", "A/encoderblock_0")
    .replace("encoderblock_1", "A/encoderblock_1")
    .replace("encoderblock_2", "B/encoderblock_0")
    .replace("encoderblock_3", "B/encoderblock_1")
    for k in ckpt
  }
  np.testing.assert_array_equal(
    flat["img/Transformer/B/encoderblock_1/LayerNorm_0/scale"], ckpt["img/Transformer/encoderblock_3/LayerNorm_0/scale"]
  )
  np.testing.assert_array_equal(
    flat["txt/Encoder_0/A/encoderblock_1/MlpBlock_0/Dense_0/kernel"],
    ckpt["txt/Encoder_0/encoderblock_1/MlpBlock_0/Dense_0/kernel"],
  )
  rins = flatten_params(bv.import_big_vision(ckpt, make_cfg("A^3B")))  # same blocks A, B: identical tree
  assert set(rins) == set(flat) and all(np.array_equal(rins[k], flat[k]) for k in flat)
  with_adapters = flatten_params(bv.import_big_vision(ckpt, make_cfg("A^3B", adapters=True)))
  np.testing.assert_array_equal(with_adapters["img/Transformer/adapter_kernel"], np.stack([np.eye(16)] * 3))
  assert not with_adapters["txt/Encoder_0/adapter_bias"].any()


@pytest.mark.parametrize("layout", ["loop", "scan"])
@pytest.mark.parametrize("prefix", ["params/", ""])
def test_npz_round_trip_is_bit_equal(tmp_path, layout, prefix):
  cfg = make_cfg("A^2B")
  flat = random_flat(cfg)
  path = bv.export_big_vision_npz(
    unflatten_params(flat), tmp_path / "ckpt.npz", layout=layout, prefix=prefix, model_config=cfg, allow_recursive=True
  )
  with np.load(path, allow_pickle=False) as data:
    names = set(data.files)
  assert all(n.startswith(prefix) for n in names)
  block = "encoderblock/" if layout == "scan" else "encoderblock_3/"
  assert f"{prefix}img/Transformer/{block}MlpBlock_0/Dense_0/kernel" in names
  assert f"{prefix}txt/Encoder_0/{block}MultiHeadDotProductAttention_0/out/kernel" in names
  if layout == "scan":
    assert np.load(path)[f"{prefix}img/Transformer/encoderblock/LayerNorm_0/scale"].shape == (4, 16)
  back = flatten_params(bv.import_big_vision(path, cfg))
  assert set(back) == set(flat)
  for k in flat:
    assert back[k].dtype == np.float32 and np.array_equal(back[k], flat[k]), k
  # big_vision names survive the other direction too: npz -> tree -> npz gives the same arrays.
  again = bv.to_big_vision(unflatten_params(back), layout)
  stored = bv.load_npz(path)
  assert set(again) == set(stored) and all(np.array_equal(again[k], stored[k]) for k in stored)


def test_scan_and_loop_layouts_import_identically():
  ckpt = big_vision_checkpoint(seed=1)
  scan = {k: v for k, v in ckpt.items() if "encoderblock_" not in k}
  for stack in ("img/Transformer", "txt/Encoder_0"):
    leaves = {k.split("/", 3)[3] for k in ckpt if k.startswith(f"{stack}/encoderblock_")}
    for leaf in leaves:
      scan[f"{stack}/encoderblock/{leaf}"] = np.stack([ckpt[f"{stack}/encoderblock_{i}/{leaf}"] for i in range(4)])
  a = flatten_params(bv.import_big_vision(ckpt, make_cfg()))
  b = flatten_params(bv.import_big_vision(scan, make_cfg()))
  assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_pos_embedding_is_resampled_for_another_resolution():
  ckpt = big_vision_checkpoint()
  params = bv.import_big_vision(ckpt, make_cfg(), image_size=24)  # 4x4 grid -> 6x6 grid
  assert params["img"]["pos_embedding"].shape == (1, 36, 16)
  constant = np.ones((1, 16, 5), np.float32) * np.arange(5, dtype=np.float32)
  np.testing.assert_allclose(bv.resample_posemb(constant, (7, 3)), np.ones((1, 21, 5)) * np.arange(5), atol=1e-6)
  ramp = np.repeat(np.arange(4, dtype=np.float32), 4).reshape(1, 16, 1)  # value = row index
  up = bv.resample_posemb(ramp, (8, 4)).reshape(8, 4)
  assert np.all(np.diff(up[:, 0]) >= 0) and up[0, 0] == 0 and up[-1, 0] == 3  # monotone, ends preserved
  np.testing.assert_array_equal(bv.resample_posemb(ramp, (4, 4)), ramp)


def test_missing_and_unknown_keys_are_listed():
  ckpt = big_vision_checkpoint()
  broken = dict(ckpt)
  del broken["img/Transformer/encoderblock_2/LayerNorm_1/bias"]
  broken["txt/some_new_thing"] = np.zeros(3, np.float32)
  with pytest.raises(ValueError) as e:
    bv.import_big_vision(broken, make_cfg())
  msg = str(e.value)
  assert "img/Transformer/B/encoderblock_0/LayerNorm_1/bias" in msg and "txt/some_new_thing" in msg
  assert "missing 1" in msg and "unexpected 1" in msg
  deeper = dict(ckpt, **{"img/Transformer/encoderblock_4/LayerNorm_0/scale": np.ones(16, np.float32)})
  with pytest.raises(ValueError, match="encoderblock_4"):  # a 5th layer has no block in a 4-layer model
    bv.import_big_vision(deeper, make_cfg())
  with pytest.raises(ValueError, match="img/embedding/kernel"):
    bv.import_big_vision(dict(ckpt, **{"img/embedding/kernel": np.zeros((4, 4, 3, 8), np.float32)}), make_cfg())


def test_export_refusals(tmp_path):
  cfg = make_cfg("A^2B")
  params = unflatten_params(random_flat(cfg))
  with pytest.raises(ValueError, match="runs each layer once"):
    bv.export_big_vision_npz(params, tmp_path / "x.npz", model_config=cfg)
  adapters = unflatten_params(random_flat(make_cfg("A^2B", adapters=True)))
  with pytest.raises(ValueError, match="adapters have no big_vision equivalent"):
    bv.to_big_vision(adapters)
  with pytest.raises(ValueError, match="layout"):
    bv.to_big_vision(params, layout="stacked")
  flat = flatten_params(params)
  holes = {k: v for k, v in flat.items() if "/A/encoderblock_1/" not in k}
  with pytest.raises(ValueError, match="not a plain block stack"):
    bv.to_big_vision(unflatten_params(holes))
  path = tmp_path / "pickled.npz"
  np.savez(path, obj=np.array([{"a": 1}], dtype=object))
  with pytest.raises(ValueError, match="pickle"):
    bv.load_npz(path)
  with pytest.raises(FileNotFoundError):
    bv.load_npz(tmp_path / "absent.npz")
