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


def big_vision_checkpoint(seed=0, vocab=40):
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
    "txt/Embed_0/embedding": (vocab, d),
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


# ------------------------------------------------------------------------------ bf16 and hostile files
def test_bfloat16_npz_and_arrays_import_as_exact_float32(tmp_path):
  ml_dtypes = pytest.importorskip("ml_dtypes")
  ckpt = big_vision_checkpoint(seed=2)
  bf16 = {k: v.astype(ml_dtypes.bfloat16) for k, v in ckpt.items()}
  want = {k: v.astype(np.float32) for k, v in bf16.items()}  # bf16 -> f32 is exact
  path = tmp_path / "bf16.npz"
  np.savez(path, **{"params/" + k: v for k, v in bf16.items()})
  with np.load(path) as data:
    assert data["params/t"].dtype == np.dtype("V2")  # how np.save stores ml_dtypes' bfloat16
  stored = bv.load_npz(path)
  assert stored["img/embedding/kernel"].dtype == np.dtype("V2")
  from_file = flatten_params(bv.import_big_vision(path, make_cfg()))
  from_arrays = flatten_params(bv.import_big_vision(bf16, make_cfg()))
  reference = flatten_params(bv.import_big_vision(want, make_cfg()))
  for k in reference:
    assert from_file[k].dtype == np.float32 and np.array_equal(from_file[k], reference[k]), k
    assert np.array_equal(from_arrays[k], reference[k]), k
  np.testing.assert_array_equal(bv.to_float32("x", np.array([0x3F80, 0xC000], np.uint16).view("V2")), [1.0, -2.0])
  with pytest.raises(ValueError, match="'s'.*not a number"):
    bv.to_float32("s", np.array(["a"]))


def test_npy_renamed_npz_is_refused_in_one_line(tmp_path):
  path = tmp_path / "weights.npz"
  np.save(open(path, "wb"), np.zeros(3, np.float32))
  with pytest.raises(ValueError) as e:
    bv.load_npz(path)
  msg = str(e.value)
  assert "\n" not in msg and str(path) in msg and ".npy" in msg
  (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
  with pytest.raises(ValueError, match="junk.npz is not an .npz"):
    bv.load_npz(tmp_path / "junk.npz")


def _npy_header(shape, descr="<f4") -> bytes:
  import io

  buf = io.BytesIO()
  np.lib.format.write_array_header_1_0(buf, dict(descr=descr, fortran_order=False, shape=shape))
  return buf.getvalue()


def test_header_claiming_1e12_elements_is_refused_before_reading(tmp_path):
  import zipfile

  path = tmp_path / "huge.npz"
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("params/t.npy", _npy_header((1,)) + np.zeros(1, np.float32).tobytes())
    zf.writestr("params/img/embedding/kernel.npy", _npy_header((1_000_000, 1_000_000)) + bytes(64))
  with pytest.raises(ValueError) as e:
    bv.load_npz(path)
  msg = str(e.value)
  assert "\n" not in msg and "params/img/embedding/kernel.npy" in msg and "(1000000, 1000000)" in msg
  assert "refused before reading" in msg
  small = tmp_path / "truncated.npz"  # a header that claims more than the member holds
  with zipfile.ZipFile(small, "w") as zf:
    zf.writestr("a.npy", _npy_header((1000,)) + bytes(40))
  with pytest.raises(ValueError, match="'a.npy' claims 4,000 bytes .* holds"):
    bv.load_npz(small)
  with zipfile.ZipFile(tmp_path / "other.npz", "w") as zf:
    zf.writestr("readme.txt", "hello")
  with pytest.raises(ValueError, match="'readme.txt' is not a .npy array"):
    bv.load_npz(tmp_path / "other.npz")


def _zip_bomb(path, name: str, gib: int) -> int:
  """A valid zip64 .npz whose one member inflates to `gib` GiB of zeros (deflate blocks of 16 MiB of zeros,
  full-flushed so each block compresses to the same bytes).  Returns the file size."""
  import struct
  import zlib

  chunk = bytes(16 << 20)
  n = (gib << 30) // len(chunk)
  size = n * len(chunk)
  header = _npy_header(((size - 128) // 4,))  # float32 zeros after a 128-byte .npy header
  first_chunk = header + chunk[len(header) :]
  comp = zlib.compressobj(9, zlib.DEFLATED, -15)
  first = comp.compress(first_chunk) + comp.flush(zlib.Z_FULL_FLUSH)
  block = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)  # the same bytes for every further chunk
  data = first + block * (n - 1) + comp.flush()
  crc = zlib.crc32(first_chunk)
  for _ in range(n - 1):
    crc = zlib.crc32(chunk, crc)
  fname = name.encode()
  extra = struct.pack("<HHQQ", 1, 16, size, len(data))
  local = struct.pack(
    "<IHHHHHIIIHH", 0x04034B50, 45, 0, 8, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(fname), len(extra)
  )
  central = struct.pack(
    "<IHHHHHHIIIHHHHHII",
    0x02014B50,
    45,
    45,
    0,
    8,
    0,
    0x21,
    crc,
    0xFFFFFFFF,
    0xFFFFFFFF,
    len(fname),
    len(extra),
    0,
    0,
    0,
    0,
    0,
  )
  cd_offset = len(local) + len(fname) + len(extra) + len(data)
  cd = central + fname + extra
  eocd64 = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, 1, 1, len(cd), cd_offset)
  locator = struct.pack("<IIQI", 0x07064B50, 0, cd_offset + len(cd), 1)
  eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(cd), cd_offset, 0)
  with open(path, "wb") as f:
    f.write(local + fname + extra + data + cd + eocd64 + locator + eocd)
  return cd_offset + len(cd) + len(eocd64) + len(locator) + len(eocd)


def test_zip_bomb_is_refused_without_inflating(tmp_path):
  import tracemalloc
  import zipfile

  path = tmp_path / "bomb.npz"
  nbytes = _zip_bomb(path, "params/txt/Embed_0/embedding.npy", gib=5)
  assert nbytes < 6 << 20  # ~5 MB on disk
  with zipfile.ZipFile(path) as zf:  # a well-formed archive that claims 5 GiB
    assert zf.infolist()[0].file_size == 5 << 30
  tracemalloc.start()  # numpy and zlib buffers are traced
  try:
    with pytest.raises(ValueError) as e:
      bv.load_npz(path)
    peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
  finally:
    tracemalloc.stop()
  msg = str(e.value)
  assert "\n" not in msg and "params/txt/Embed_0/embedding.npy" in msg and "5,368,709,120" in msg
  assert peak_mib < 50
  # Under the per-array limit, the compression ratio alone refuses it.
  with pytest.raises(ValueError, match="zip bomb"):
    bv.load_npz(path, max_member_bytes=8 << 30)


# ------------------------------------------------------------------------------ import-big-vision command
CONFIG_FILE = """
import ml_collections


def get_config(arg=None):
  tower = dict(width=16, depth=4, mlp_dim=32, num_heads=2)
  c = ml_collections.ConfigDict()
  c.model = dict(
    name="two_towers",
    out_dim=(None, 16),
    recursion=dict(signature="AB"),
    image=dict(tower, patch_size=4),
    text=dict(tower, vocab_size={vocab}),
  )
  return c
"""


def test_import_big_vision_command_writes_an_exported_folder(tmp_path, capsys):
  import importlib.util
  import json

  import jax
  import ml_dtypes

  from siglip_rins import cli
  from siglip_rins.export import load_exported
  from siglip_rins.text.tokenizer import get_tokenizer, resolve_tokenizer_path

  tok = get_tokenizer("demo")
  ckpt = {k: v.astype(ml_dtypes.bfloat16) for k, v in big_vision_checkpoint(seed=3, vocab=tok.vocab_size).items()}
  npz = tmp_path / "siglip_bf16.npz"
  np.savez(npz, **{"params/" + k: v for k, v in ckpt.items()})
  config = tmp_path / "bv_config.py"
  config.write_text(CONFIG_FILE.format(vocab=tok.vocab_size))
  out = tmp_path / "imported"
  base = ["import-big-vision", "--npz", str(npz), "--config", f"{config}:", "--tokenizer"]
  base += [str(resolve_tokenizer_path("demo")), "--config.model.recursion.signature=A^2B"]
  assert cli.main(base + ["--out", str(out)]) == 0
  assert "imported" in capsys.readouterr().out
  written = json.loads((out / "config.json").read_text())
  assert written["model"]["recursion"]["signature"] == "A^2B"  # the --config.* override reached the model
  spec = written["example_spec"]
  assert spec["image"]["eval_pp"] == 'decode|resize((16, 16), method="bilinear")|value_range(-1, 1)'
  assert spec["image"]["resize_method"] == "bilinear" and spec["image"]["antialias"] is False
  assert spec["image"]["value_range"] == [-1.0, 1.0]
  text = spec["text"]
  assert (text["eos"], text["pad_value"], text["eos_id"], text["lower"], text["max_len"]) == ("sticky", 1, 1, True, 6)
  assert text["canonicalize"] is False

  # Exact parity with the JAX model on the imported parameters (bf16 values, exactly converted).
  cfg = dict(written["model"])
  params = bv.import_big_vision({k: v.astype(np.float32) for k, v in ckpt.items()}, cfg)
  model = build_model(cfg)
  em = load_exported(out)
  texts = ["a red square", "a blue circle on a green background"]
  tokens = em.tokenize(texts)
  assert (tokens[:, -1] == tok.eos_id).all()  # EOS-padded: the pooled position reads EOS
  images = np.random.default_rng(4).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
  zimg, ztxt, _ = jax.jit(lambda p, i, t: model.apply({"params": p}, i, t))(params, images / 127.5 - 1.0, tokens)
  np.testing.assert_allclose(em.encode_images(list(images)), zimg, atol=1e-5)
  np.testing.assert_allclose(em.encode_texts(texts), ztxt, atol=1e-5)
  assert em.classify(list(images), ["red square", "blue circle"])[0][0][0] in ("red square", "blue circle")
  import io

  from PIL import Image

  from siglip_rins.export import retrieve_main

  photos = tmp_path / "photos"
  photos.mkdir()
  for i, image in enumerate(images):
    Image.fromarray(image).save(photos / f"{i}.png")
  listing = io.StringIO()
  assert retrieve_main(out, "a red square", photos, top_k=2, out=listing) == 0
  assert len(listing.getvalue().splitlines()) == 2
  if importlib.util.find_spec("transformers") and importlib.util.find_spec("torch"):  # export-hf reads it too
    from siglip_rins.interop.hf import export_hf_from_exported

    hf = export_hf_from_exported(out, tmp_path / "hf", log=io.StringIO())
    tok_cfg = json.loads((hf / "tokenizer_config.json").read_text())
    assert (tok_cfg["pad_token"], tok_cfg["do_lower_case"], tok_cfg["model_max_length"]) == ("</s>", True, 6)

  # A shorter text length keeps the first positions; bad arguments give one line and exit status 1.
  short = tmp_path / "short"
  assert cli.main(base + ["--out", str(short), "--text-len", "4"]) == 0
  assert json.loads((short / "config.json").read_text())["example_spec"]["text"]["max_len"] == 4
  assert cli.main(base + ["--out", str(tmp_path / "long"), "--text-len", "7"]) == 1
  assert "1..6" in capsys.readouterr().err
  assert cli.main(base + ["--out", str(tmp_path / "x"), "--bogus"]) == 1
  assert "--bogus" in capsys.readouterr().err
