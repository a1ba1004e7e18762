"""One reading of an example: training pipeline, evaluators and exported models see the same pixels and ids."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from siglip_rins import config_lib, example_spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAPTIONS = [
  "A red circle, next to a BLUE square!",
  "دائرة حمراء بجانب مربع أزرق",
  "青い四角の隣にある赤い丸",
  "a very long caption that keeps going " * 8,
]


def _textured(h, w, seed):
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:h, 0:w]
  base = np.stack([(x * 7 + y * 3) % 256, (x * y) % 256, (x ^ y) % 256], -1).astype(np.float64)
  return np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)


def write_images(folder) -> list[str]:
  """A textured 512x384 JPEG, a 37x211 PNG, a CMYK JPEG and a palette PNG."""
  os.makedirs(folder, exist_ok=True)
  names = ["textured.jpg", "thin.png", "cmyk.jpg", "palette.png"]
  Image.fromarray(_textured(384, 512, 0)).save(os.path.join(folder, names[0]), quality=90)
  Image.fromarray(_textured(211, 37, 1)).save(os.path.join(folder, names[1]))
  Image.fromarray(_textured(120, 90, 2)).convert("CMYK").save(os.path.join(folder, names[2]), quality=90)
  Image.fromarray(_textured(64, 80, 3)).convert("P").save(os.path.join(folder, names[3]))
  assert Image.open(os.path.join(folder, names[2])).mode == "CMYK"
  assert Image.open(os.path.join(folder, names[3])).mode == "P"
  return names


def runlocal_config(**over):
  config = config_lib.load_config(os.path.join(REPO, "configs", "siglip_rins.py") + ":runlocal")
  config_lib.apply_overrides(config, [f"{k}={v!r}" for k, v in over.items()])
  return config


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  folder = tmp_path_factory.mktemp("spec_data")
  names = write_images(folder)
  with open(folder / "data.jsonl", "w", encoding="utf-8") as f:
    for name, caption in zip(names, CAPTIONS):
      f.write(json.dumps({"image": name, "texts": caption}, ensure_ascii=False) + "\n")
  return folder, names


def test_training_evaluator_and_exported_model_read_identical_tensors(dataset, tmp_path):
  from siglip_rins.data import pipeline
  from siglip_rins.evaluation import make_predictor
  from siglip_rins.export import export_params, load_exported
  from siglip_rins.models import build_model
  from evaluators import common
  import jax

  folder, names = dataset
  config = runlocal_config()
  config.input.data = dict(type="jsonl", path=str(folder))
  config.input.shuffle_buffer_size = 1
  spec = example_spec.finalize(config)
  assert spec.text.pad_value == spec.text.eos_id == 1 and spec.text.eos == "sticky"

  # 1. The training pipeline (the run's own pp, in file order).
  it = pipeline.make_train_iterator(config.input, global_batch_size=len(names))
  train = next(it)
  assert train["image"].shape == (4, 32, 32, 3) and train["labels"].shape == (4, 16)

  # 2. An evaluator's reading (the predictor carries the spec).
  model = build_model(config.model)
  params = model.init(jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3), np.float32), np.zeros((1, 16), np.int32))[
    "params"
  ]
  predictor = make_predictor(model, params, spec)
  (batch,) = list(
    common.iterate_batches(
      dict(type="jsonl", path=str(folder)),
      fields={"texts": "texts"},
      preprocess=common.image_preprocessor(predictor),
      batch_size=4,
    )
  )
  eval_ids = common.tokenize(predictor, batch["texts"])

  # 3. An exported model.
  out = export_params(params, config.model, tmp_path / "model", spec=spec)
  em = load_exported(out)
  exported_images = np.stack([em.preprocess_image(os.path.join(folder, n)) for n in names])
  exported_ids = em.tokenize(CAPTIONS)

  np.testing.assert_allclose(batch["image"], train["image"], atol=1e-5, rtol=0)
  np.testing.assert_allclose(exported_images, train["image"], atol=1e-5, rtol=0)
  np.testing.assert_array_equal(eval_ids, train["labels"])
  np.testing.assert_array_equal(exported_ids, train["labels"])
  # Sticky EOS, padded with EOS: the pooled (last) position reads EOS for every caption, the long one included.
  assert (train["labels"][:, -1] == spec.text.eos_id).all()
  assert json.loads((out / "config.json").read_text())["example_spec"]["text"]["pad_value"] == 1


def test_spec_derives_sizes_and_vocab_and_refuses_mismatches():
  config = runlocal_config()
  spec = example_spec.finalize(config)
  assert config.input.image_size == 32 and config.input.text_len == 16
  assert config.model.text.vocab_size == spec.text.vocab_size == 2000
  bad = runlocal_config()
  bad.model.text.vocab_size = 1000
  with pytest.raises(ValueError, match=r"2000 pieces .* vocab_size=1000"):
    example_spec.finalize(bad)
  stale = runlocal_config()
  with stale.input.ignore_type():
    stale.input.image_size = 64
  with pytest.raises(ValueError, match=r"config.input.image_size=64 disagrees"):
    example_spec.finalize(stale)


def test_runlocal_honours_tokenizer_and_text_len(tmp_path):
  from siglip_rins.text.tokenizer import REPO_TOKENIZER_DIR

  path = str(REPO_TOKENIZER_DIR / "demo_multilingual.model")
  config = config_lib.load_config(
    os.path.join(REPO, "configs", "siglip_rins.py") + f":runlocal,tokenizer={path},text_len=24"
  )
  spec = example_spec.finalize(config)
  assert spec.text.tokenizer == path and spec.text.max_len == 24 and config.input.text_len == 24


def test_spec_json_round_trip():
  spec = example_spec.finalize(runlocal_config())
  again = example_spec.ExampleSpec.from_json(spec.to_json())
  assert again == spec and not spec.differences(again)


def test_pooling_warning_names_the_problem():
  config = runlocal_config()
  config.input.pp = config.input.pp.replace("pad_value=1", "pad_value=0")
  spec = example_spec.finalize(config)
  assert "reads PAD" in example_spec.check_text_pooling(config, spec)
  ok = runlocal_config()
  assert example_spec.check_text_pooling(ok, example_spec.finalize(ok)) is None


@pytest.mark.slow
def test_cli_run_records_the_spec_and_eval_overrides(tmp_path):
  """A user's path: relative workdir, a config override, the recorded spec, eval with --config.* overrides."""
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  cfg = os.path.join(REPO, "configs", "siglip_rins.py") + ":runlocal,steps=8"
  run = [sys.executable, "-m", "siglip_rins.cli"]
  r = subprocess.run(
    run + ["train", "--config", cfg, "--workdir", "wd", "--config.log_every=1"],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  recorded = example_spec.load(tmp_path / "wd")
  assert recorded is not None and recorded.image.size == (32, 32) and recorded.text.pad_value == 1
  r = subprocess.run(
    run + ["eval", "--config", cfg, "--workdir", "wd", "--rounds", "1", "--config.evals.zeroshot.templates=['{}']"],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  results = json.loads((tmp_path / "wd" / "eval_results.json").read_text())
  assert any("acc1" in rec["metrics"] for rec in results)
  assert any("text_retrieval_recall@1" in rec["metrics"] for rec in results)
  r = subprocess.run(
    run + ["eval", "--config", cfg, "--workdir", "wd", "--config.evals.nosuch.every=1"],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert r.returncode == 1 and r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_custom_tokenizer_user_path(tmp_path):
  """tokenizer train -> train runlocal with it (vocab derived) -> export -> classify; a vocab mismatch is one line."""
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  run = [sys.executable, "-m", "siglip_rins.cli"]
  from siglip_rins.demo import shapes

  (tmp_path / "captions.txt").write_text(
    "\n".join(shapes.all_captions(("en", "ja", "zh", "ru"))[:4000]), encoding="utf-8"
  )

  def cli(*args):
    return subprocess.run(run + list(args), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)

  r = cli("tokenizer", "train", "--input", "captions.txt", "--vocab", "300", "--out", "tok/mine.model")
  assert r.returncode == 0, r.stderr[-2000:]
  cfg = os.path.join(REPO, "configs", "siglip_rins.py") + ":runlocal,steps=8,tokenizer=tok/mine.model,text_len=20"
  r = cli("train", "--config", cfg, "--workdir", "run", "--config.schedule.warmup_steps=1", "--config.evals={}")
  assert r.returncode == 0, r.stderr[-3000:]
  config = json.loads((tmp_path / "run" / "config.json").read_text())
  assert config["model"]["text"]["vocab_size"] == 300 and config["input"]["text_len"] == 20
  r = cli("export", "--workdir", "run", "--out", "model")
  assert r.returncode == 0, r.stderr[-2000:]
  Image.fromarray(_textured(40, 60, 5)).save(tmp_path / "x.png")
  r = cli("classify", "--model", "model", "--labels", "red circle,blue square", "x.png")
  assert r.returncode == 0 and "red circle" in r.stdout, r.stderr[-2000:]
  from siglip_rins.text.tokenizer import Tokenizer

  mine = Tokenizer.from_file(tmp_path / "tok" / "mine.model")
  assert (tmp_path / "model" / "tokenizer.model").read_bytes() == mine.model_proto
  r = cli("train", "--config", cfg, "--workdir", "run2", "--config.model.text.vocab_size=1000")
  assert r.returncode == 1 and "300 pieces" in r.stderr and "vocab_size=1000" in r.stderr
  assert len(r.stderr.strip().splitlines()) == 1, r.stderr
