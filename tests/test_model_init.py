"""`config.model_init` (siglip_rins/model_init.py) and `config.frozen` (siglip_rins/optim.py).

Sources are built in the test: random parameters of the runlocal SigLIP (2-layer towers) written as a big_vision
`.npz` (`export_big_vision_npz`) and as a Hugging Face SiglipModel folder (`export-hf` of an exported folder).
With lr = 0 (and wd = 0) a run's exported parameters equal the source's exactly; a RINS-ified fine-tune (A^2B with
adapters) from the same source lowers the loss, keeps frozen parameters bit-identical, and resumes without the
source.
"""

import io
import os
import shutil
from contextlib import redirect_stdout

import jax
import numpy as np
import pytest

from siglip_rins import config_lib, example_spec, model_init
from siglip_rins.export import export_model, export_params
from siglip_rins.interop import flatten_params, unflatten_params
from siglip_rins.interop.big_vision import export_big_vision_npz
from siglip_rins.models import build_model
from siglip_rins.models.shapes import param_shapes
from siglip_rins.train import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(args="", overrides=()):
  spec = os.path.join(ROOT, "configs", "siglip_rins.py:runlocal,steps=2" + ("," + args if args else ""))
  c = config_lib.apply_overrides(
    config_lib.load_config(spec), ["tensorboard=False", "log_every=1", "schedule.warmup_steps=0", *overrides]
  )
  c.model.image.depth = c.model.text.depth = 2  # tiny towers: one layer per block for AB
  c.evals = {}
  return c


def _exported_params(workdir, out):
  from safetensors.numpy import load_file

  export_model(workdir, out)
  return load_file(str(out / "params.safetensors"))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  """(flat source params, model config, spec, .npz path) for the runlocal AB model."""
  d = tmp_path_factory.mktemp("src")
  config = _config()
  spec = example_spec.finalize(config)
  model = build_model(config.model)
  rng = np.random.default_rng(0)
  shapes = flatten_params(param_shapes(model, spec.image.size, spec.text.max_len))
  flat = {
    k: (rng.normal(size=v.shape) * 0.1 + (1.0 if k.endswith("scale") else 0.0)).astype(np.float32)
    for k, v in shapes.items()
  }
  flat["t"], flat["b"] = np.array([2.3], np.float32), np.array([-4.0], np.float32)
  npz = export_big_vision_npz(unflatten_params(flat), d / "bv.npz", model_config=config.model.to_dict())
  return flat, config.model.to_dict(), spec, npz


def _assert_equal_to_source(got, flat):
  assert set(got) == set(flat)
  for k in flat:
    np.testing.assert_array_equal(got[k], flat[k], err_msg=k)


def test_lr0_run_from_big_vision_npz_exports_the_source_exactly(source, tmp_path):
  flat, _, _, npz = source
  config = _config(overrides=[f"model_init={npz}", "lr=0.0", "wd=0.0"])
  out = io.StringIO()
  with redirect_stdout(out):
    assert train(config, str(tmp_path / "run"), verbose=True)["stopped"] == "finished"
  assert f"model_init: {len(flat)} of {len(flat)} parameters from {npz} (big_vision)" in out.getvalue()
  _assert_equal_to_source(_exported_params(tmp_path / "run", tmp_path / "exported"), flat)


def test_lr0_run_from_hf_folder_exports_the_source_exactly(source, tmp_path):
  pytest.importorskip("transformers")
  from siglip_rins.interop.hf import export_hf_from_exported

  flat, model_cfg, spec, _ = source
  exported = export_params(unflatten_params(flat), model_cfg, tmp_path / "exported_src", spec=spec)
  hf = export_hf_from_exported(exported, tmp_path / "hf")
  assert model_init.detect_kind(hf) == "hf" and model_init.detect_kind(exported) == "exported"
  config = _config(overrides=[f"model_init={hf}", "lr=0.0", "wd=0.0"])
  train(config, str(tmp_path / "run"), verbose=False)
  _assert_equal_to_source(_exported_params(tmp_path / "run", tmp_path / "exported"), flat)


def test_rinsified_finetune_lowers_the_loss_freezes_and_resumes_without_the_source(source, tmp_path, capsys):
  """AB source -> A^2B with adapters (stochastic, p_skip 0.5): blocks A, B and every other name come from the
  source, the adapters start fresh (identity) and are listed; frozen parameters stay bit-identical."""
  import json

  flat, _, _, npz = source
  src = tmp_path / "bv.npz"
  shutil.copy(npz, src)
  args = "signature=A^2B,adapters=True,p_skip=0.5,steps=16"
  config = _config(args, [f"model_init={src}", "lr=0.003", "ckpt_every=4", "frozen=('img/embedding/.*', 't')"])
  workdir = str(tmp_path / "run")
  summary = train(config, workdir, verbose=True, stop_after=4)
  assert summary["stopped"] == "stop_after"
  log = capsys.readouterr().out
  assert "initialised fresh (4): img/Transformer/adapter_bias, img/Transformer/adapter_kernel, " in log
  # the source's 2-layer stacks fill A (layer 0) and B (layer 1) of A^2B: every source name is used
  assert f"model_init: {len(flat)} of {len(flat) + 4} parameters from {src} (big_vision)" in log
  assert "not used" not in log
  os.remove(src)  # a resumed run never reads model_init again
  summary = train(config, workdir, verbose=True)
  assert summary["stopped"] == "finished" and "resumed from step 4" in capsys.readouterr().out
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  losses = [r["train/loss"] for r in rows if "train/loss" in r]
  assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05, losses
  got = _exported_params(workdir, tmp_path / "exported")
  for k in ("img/embedding/kernel", "img/embedding/bias", "t"):
    np.testing.assert_array_equal(got[k], flat[k], err_msg=k)
  assert not np.array_equal(
    got["img/Transformer/A/encoderblock_0/MlpBlock_0/Dense_0/kernel"],
    flat["img/Transformer/A/encoderblock_0/MlpBlock_0/Dense_0/kernel"],
  )


def test_posemb_is_resampled_and_mismatches_are_listed_one_per_line(source, tmp_path):
  flat, model_cfg, _, npz = source
  # a 64 px model (8x8 grid) from the 32 px source (4x4 grid)
  config = _config(overrides=[f"model_init={npz}"])
  config.input.pp = config.input.pp.replace("resize(32)", "resize(64)")
  example_spec.finalize(config)
  model = build_model(config.model)
  params = jax.tree.map(
    np.asarray, jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), param_shapes(model, (64, 64), config.input.text_len))
  )
  lines = []
  new = model_init.apply(config, params, log=lines.append)
  assert "model_init: img/pos_embedding: resampled the 4x4 grid to 8x8" in lines
  pos = np.asarray(new["img"]["pos_embedding"])
  assert pos.shape == (1, 64, flat["img/pos_embedding"].shape[-1])
  np.testing.assert_allclose(pos.mean(), flat["img/pos_embedding"].mean(), atol=0.02)
  np.testing.assert_array_equal(new["txt"]["Embed_0"]["embedding"], flat["txt/Embed_0/embedding"])
  # a wider model: one line per mismatched name, then an error
  config = _config(overrides=[f"model_init={npz}"])
  config.model.out_dim = (None, 32)
  example_spec.finalize(config)
  model = build_model(config.model)
  params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), param_shapes(model, (32, 32), config.input.text_len))
  with pytest.raises(
    ValueError,
    match=r"2 shape mismatch\(es\).*\n  txt/head/bias: source \(64,\) != model \(32,\)"
    r"\n  txt/head/kernel: source \(64, 64\) != model \(64, 32\)",
  ):
    model_init.apply(config, params, log=None)
  # reinit lists them as fresh instead
  with config.ignore_type():
    config.model_init = dict(path=str(npz), reinit=[r"txt/head/.*"])
  lines = []
  model_init.apply(config, params, log=lines.append)
  assert any("initialised fresh (2): txt/head/bias, txt/head/kernel" in line for line in lines)
  # a stack that does not fit the model's blocks (3 unique blocks of 2 layers: 6 layers, the source has 2)
  config = _config(overrides=[f"model_init={npz}"])
  config.model.image.depth = config.model.text.depth = 6
  config.model.recursion.signature = "ABC"
  example_spec.finalize(config)
  params = jax.tree.map(
    lambda s: np.zeros(s.shape, s.dtype), param_shapes(build_model(config.model), (32, 32), config.input.text_len)
  )
  with pytest.raises(
    ValueError,
    match=r"\n  img/Transformer: the source has 2 layers, the model's unique blocks "
    r"\['A', 'B', 'C'\] hold 6\n  txt/Encoder_0: ",
  ):
    model_init.apply(config, params, log=None)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    model_init.detect_kind(tmp_path / "missing")


def test_rinsify_recipe_arms_are_compute_matched():
  """configs/rinsify.py: the AB continuation and A^3B (stochastic, adapters) from the same checkpoint, at equal
  training FLOPs (total_steps derived from compute_match)."""
  from siglip_rins import budget
  from siglip_rins.train import validate_config

  arms = {}
  for arm in ("continue", "rins"):
    c = config_lib.load_config(
      os.path.join(ROOT, "configs", f"rinsify.py:init=/ckpt/ab.npz,arm={arm},runlocal,steps=40")
    )
    validate_config(c)
    example_spec.finalize(c)
    arms[arm] = (c, budget.finalize(c))
  (cont, m_cont), (rins, m_rins) = arms["continue"], arms["rins"]
  assert cont.model.recursion.signature == "AB" and cont.total_steps == 40
  assert rins.model.recursion.signature == "A^3B" and rins.model.recursion.adapters
  assert rins.model.recursion.p_skip == 0.5
  assert cont.model_init == rins.model_init == "/ckpt/ab.npz"
  assert m_rins["flops_budget"] == m_cont["flops_budget"]
  spent = [c.total_steps * c.input.batch_size * m["train_flops_per_example"] for c, m in arms.values()]
  assert rins.total_steps < cont.total_steps and abs(spent[1] - spent[0]) <= m_rins["train_flops_per_example"] * 32
  with pytest.raises(ValueError, match="init=PATH"):
    config_lib.load_config(os.path.join(ROOT, "configs", "rinsify.py:arm=rins,runlocal"))


SHARDED_CHECK = r"""
import sys
import jax, numpy as np
from siglip_rins import config_lib, example_spec, model_init, sharding
from siglip_rins.interop import flatten_params
from siglip_rins.models import build_model
from siglip_rins.models.shapes import param_shapes
from siglip_rins.optim import _path_str

c = config_lib.apply_overrides(
  config_lib.load_config(sys.argv[1] + "/configs/siglip_rins.py:runlocal"), ["model_init=" + sys.argv[2]]
)
c.model.image.depth = c.model.text.depth = 2
spec = example_spec.finalize(c)
mesh = sharding.make_mesh(dict(data=2, fsdp=2))
abstract = param_shapes(build_model(c.model), spec.image.size, spec.text.max_len)
shardings = sharding.param_shardings(abstract, mesh)
params = jax.jit(lambda: jax.tree.map(lambda s: jax.numpy.zeros(s.shape, s.dtype), abstract), out_shardings=shardings)()
new = model_init.apply(c, params, log=None)
src = dict(np.load(sys.argv[2]))
leaves = jax.tree_util.tree_flatten_with_path(new)[0]
assert all(x.sharding == y.sharding for x, y in zip(jax.tree.leaves(new), jax.tree.leaves(params)))
assert any(len(x.sharding.device_set) == 4 and not x.is_fully_replicated for x in jax.tree.leaves(new))
np.testing.assert_array_equal(np.asarray(new["txt"]["Embed_0"]["embedding"]), src["params/txt/Embed_0/embedding"])
print("SHARDED_OK", len(leaves))
"""


def test_model_init_keeps_fsdp_shardings(source):
  """On a 2x2 ('data', 'fsdp') mesh of 4 CPU devices the loaded parameters keep the initialised shardings."""
  import subprocess
  import sys

  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [sys.executable, "-c", SHARDED_CHECK, ROOT, str(source[3])], env=env, capture_output=True, text=True, timeout=120
  )
  assert "SHARDED_OK" in proc.stdout, proc.stderr[-3000:]


def test_exported_folder_and_workdir_sources(source, tmp_path):
  """The other two kinds carry siglip_rins names: every parameter comes back exactly."""
  from siglip_rins.checkpoint import CheckpointManager

  flat, model_cfg, spec, _ = source
  exported = export_params(unflatten_params(flat), model_cfg, tmp_path / "exported", spec=spec)
  workdir = tmp_path / "run"
  with CheckpointManager(workdir, async_save=False) as mgr:
    mgr.save(3, dict(params=unflatten_params(flat), opt_state={}, step=np.int32(3)), {})
  (workdir / "config.json").write_text('{"model": {"name": "two_towers"}}')
  for path, kind in ((exported, "exported"), (workdir, "workdir")):
    assert model_init.detect_kind(path) == kind
    config = _config(overrides=[f"model_init={path}"])
    example_spec.finalize(config)
    params = jax.tree.map(
      lambda s: np.zeros(s.shape, s.dtype), param_shapes(build_model(config.model), (32, 32), config.input.text_len)
    )
    lines = []
    got = flatten_params(model_init.apply(config, params, log=lines.append))
    assert lines == [f"model_init: {len(flat)} of {len(flat)} parameters from {path} ({kind})"]
    _assert_equal_to_source(got, flat)
