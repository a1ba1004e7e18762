"""The `siglip-rins` command line end to end: train (with in-training evals) -> eval at two rounds from the
checkpoint -> export -> classify / eval from the exported model; flops JSON; one-line errors."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from siglip_rins import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "siglip_rins.py")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  work = tmp_path_factory.mktemp("cli") / "run"
  rc = cli.main(
    [
      "train",
      "--config",
      f"{CONFIG}:runlocal,steps=8,signature=A^2B",
      "--workdir",
      str(work),
      "--config.log_every=4",
      "--config.tensorboard=False",
    ]
  )
  assert rc == 0
  return work


@pytest.mark.slow
def test_train_writes_metrics_checkpoint_and_in_training_evals(run_dir):
  rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
  config = json.load(open(run_dir / "config.json"))
  total = config["total_steps"]  # derived from compute_match at train start
  assert total == int(8 / 1.48)  # A^2B is compute-matched to 8 AB steps (1.48x the FLOPs per step)
  logged = [r["step"] for r in rows if "train/loss" in r]
  assert logged == sorted(set(list(range(4, total + 1, 4)) + [total]))
  assert all(np.isfinite(r["train/loss"]) for r in rows if "train/loss" in r)
  train_rows = [r for r in rows if "train/loss" in r]
  assert train_rows[-1]["flops_seen"] > train_rows[0]["flops_seen"] > 0
  assert any(k.startswith("eval/zeroshot/") for r in rows for k in r)
  records = json.load(open(run_dir / "eval_results.json"))
  assert {r["task"] for r in records} >= {"zeroshot_classification", "retrieval"} or len(records) >= 2
  info = json.load(open(run_dir / "run_info.json"))
  assert info["rounds"] == 2
  assert info["host_memory"]["mode"] == "reuse"  # recorded: how the run's host memory was set up
  assert (run_dir / "checkpoints" / str(total)).is_dir()


@pytest.mark.slow
def test_eval_two_rounds_from_checkpoint_land_in_one_report(run_dir, tmp_path, capsys):
  out = tmp_path / "report"
  rc = cli.main(
    [
      "eval",
      "--config",
      f"{CONFIG}:runlocal,steps=8,signature=A^2B",
      "--workdir",
      str(run_dir),
      "--rounds",
      "1,3",
      "--out",
      str(out),
    ]
  )
  assert rc == 0
  records = json.load(open(out / "eval_results.json"))
  assert {r["rounds"] for r in records} == {1, 3}
  zs = {r["rounds"]: r["metrics"]["acc1"] for r in records if "acc1" in r["metrics"]}
  assert set(zs) == {1, 3} and all(0.0 <= v <= 1.0 for v in zs.values())
  md = (out / "eval_report.md").read_text()
  assert "1" in md and "3" in md


@pytest.mark.slow
def test_eval_along_repeat_is_a_column_of_its_own(run_dir, tmp_path, capsys):
  """`--axis repeat` makes --rounds count repeats of the signature's unit (RAO's axis, how the demo scales ABAB):
  for the A^2B run, repeat=1 is the trained plan, i.e. rounds=2; records carry axis='repeat' and land in their
  own report columns next to the rounds-axis ones in the same --out."""
  out = tmp_path / "report"
  base = ["eval", "--config", f"{CONFIG}:runlocal,steps=8,signature=A^2B", "--workdir", str(run_dir)]
  assert cli.main(base + ["--rounds", "2", "--out", str(out)]) == 0
  assert cli.main(base + ["--rounds", "1,2", "--axis", "repeat", "--out", str(out)]) == 0
  records = json.load(open(out / "eval_results.json"))
  cols = {(r.get("axis", "rounds"), r["rounds"]) for r in records}
  assert cols == {("rounds", 2), ("repeat", 1), ("repeat", 2)}
  by = {(r.get("axis", "rounds"), r["rounds"], r["dataset"], r["task"]): r["metrics"] for r in records}
  same = [k for k in by if k[:2] == ("repeat", 1)]
  assert same and all(by[k] == by[("rounds", 2) + k[2:]] for k in same)  # (AAB)^1 is A^2B
  assert any(by[("repeat", 2) + k[2:]] != by[k] for k in same)  # (AAB)^2 is another model
  md = (out / "eval_report.md").read_text()
  assert "| r=2 | repeat=1 | repeat=2 |" in md
  capsys.readouterr()
  assert cli.main(base + ["--axis", "repeat"]) == 1
  assert "error: --axis repeat" in capsys.readouterr().err


@pytest.mark.slow
def test_export_classify_and_eval_exported(run_dir, tmp_path, capsys):
  model_dir = tmp_path / "model"
  assert cli.main(["export", "--workdir", str(run_dir), "--out", str(model_dir)]) == 0
  assert (model_dir / "params.safetensors").is_file() and (model_dir / "config.json").is_file()
  img = tmp_path / "red.png"
  Image.new("RGB", (40, 40), (220, 30, 30)).save(img)
  bad = tmp_path / "broken.jpg"
  bad.write_bytes(b"not an image")
  capsys.readouterr()
  rc = cli.main(["classify", "--model", str(model_dir), "--labels", "red circle,blue square", str(img), str(bad)])
  captured = capsys.readouterr()
  assert "red circle" in captured.out and "blue square" in captured.out
  assert "broken.jpg" in captured.err and rc == 1  # one clear line for the unreadable file, the rest ran
  out = tmp_path / "exported_report"
  rc = cli.main(
    [
      "eval",
      "--config",
      f"{CONFIG}:runlocal,steps=8,signature=A^2B",
      "--model",
      str(model_dir),
      "--rounds",
      "2",
      "--out",
      str(out),
    ]
  )
  assert rc == 0
  assert {r["rounds"] for r in json.load(open(out / "eval_results.json"))} == {2}


def test_flops_json_with_baseline(capsys):
  rc = cli.main(["flops", "--config", f"{CONFIG}:signature=A^3B", "--baseline", CONFIG])
  assert rc == 0
  out = json.loads(capsys.readouterr().out)
  assert out["params"] == out["baseline"]["params"]  # recursion shares parameters
  ratio = out["train_flops_per_step"] / out["baseline"]["train_flops_per_step"]
  assert 1.9 < ratio < 2.1  # A^3B runs 4 half-depth blocks vs 2
  assert out["matched_steps"] == int(out["baseline"]["total_steps"] / ratio)


def test_bad_inputs_give_one_line_errors(capsys):
  assert cli.main(["flops", "--config", f"{CONFIG}:signature=A^0B"]) == 1
  err = capsys.readouterr().err.strip()
  assert err.startswith("error:") and "exponent" in err and len(err.splitlines()) == 1
  assert cli.main(["flops", "--config", f"{CONFIG}:nonsense=1"]) == 1
  assert "nonsense" in capsys.readouterr().err
  assert cli.main(["eval", "--config", CONFIG, "--workdir", "/nonexistent"]) == 1
