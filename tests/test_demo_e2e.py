"""End-to-end `siglip-rins demo --quick`: trains all four variants for a few steps, evaluates and writes a report.

What it checks (the demo's contract): the report files exist and are non-empty; results.json has every variant
with metrics at r = 1 and at the trained r, as means over the seeds with their standard deviations and the
per-seed values; the recursive variants are compute-matched to the baseline (total training FLOPs within one
step's FLOPs of the baseline's) and train on fewer examples; a second run gives identical numbers; the flags are
validated.
"""

import json
import os

import pytest

from siglip_rins.demo import runner

ALL = ("baseline", "rao", "rins", "rins_stochastic")


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
  root = tmp_path_factory.mktemp("demo")
  os.environ.setdefault("SIGLIP_RINS_DATA_DIR", str(root / "data"))
  out = root / "report"
  rc = runner.main(["--quick", "--out", str(out), "--quiet"])
  assert rc == 0
  return out


@pytest.mark.slow
def test_report_files_exist(quick_report):
  for name in ("report.md", "results.json", "loss_vs_flops.png", "metrics_vs_rounds.png"):
    path = quick_report / name
    assert path.is_file() and path.stat().st_size > 0, name
  with open(quick_report / "loss_vs_flops.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  text = (quick_report / "report.md").read_text(encoding="utf-8")
  for variant in ALL:
    assert f"| {variant} |" in text
  assert "ordering" in text


@pytest.mark.slow
def test_results_have_every_variant_and_both_rounds(quick_report):
  results = json.loads((quick_report / "results.json").read_text(encoding="utf-8"))
  assert set(results["variants"]) == set(ALL)
  expected_r = {"baseline": 1, "rao": 2, "rins": 2, "rins_stochastic": 3}
  for name, res in results["variants"].items():
    assert res["trained_rounds"] == expected_r[name]
    for key in ("r1", "r_trained"):
      metrics = res["metrics"][key]
      for metric in (
        "zeroshot_top1",
        "zeroshot_top1_heldout",
        "retrieval_i2t@1",
        "retrieval_t2i@1",
        "xm3600_i2t@1",
        "xm3600_t2i@1",
      ):
        assert 0.0 <= metrics[metric] <= 1.0, (name, key, metric)
    rounds = {rec["rounds"] for rec in res["records"]}
    assert {1, res["trained_rounds"]} <= rounds
    languages = {rec["language"] for rec in res["records"] if rec["dataset"] == "shapes_xm3600"}
    assert len(languages) == 10  # 9 languages + the average
    assert res["loss_curve"] and all(l > 0 for _, l in res["loss_curve"])


@pytest.mark.slow
def test_compute_matching(quick_report):
  results = json.loads((quick_report / "results.json").read_text(encoding="utf-8"))
  variants = results["variants"]
  base = variants["baseline"]
  assert base["steps"] == runner.QUICK["steps"]
  for name, res in variants.items():
    assert abs(res["train_flops"] - base["train_flops"]) <= res["train_flops_per_step"], name
    assert res["train_flops"] == pytest.approx(res["steps"] * res["batch_size"] * res["train_flops_per_example"])
    if name != "baseline":  # recursion costs more per example, so fewer examples at the same compute
      assert res["train_flops_per_example"] > base["train_flops_per_example"]
      assert res["examples_seen"] < base["examples_seen"]
      assert results["compute_matching"][name]["within_one_step"] is True
  # Parameters: RINS / RAO share blocks, so they have the baseline's size (adapters add a few).
  assert variants["rins"]["params"] == base["params"] == variants["rao"]["params"]
  assert base["params"] < variants["rins_stochastic"]["params"] < 1.05 * base["params"]


@pytest.mark.slow
def test_seeds_mean_and_std(quick_report):
  results = json.loads((quick_report / "results.json").read_text(encoding="utf-8"))
  seeds = runner.QUICK["seeds"]
  assert seeds >= 2
  for name, res in results["variants"].items():
    assert res["seeds"] == list(range(seeds))
    assert len(res["per_seed"]) == seeds
    per_seed = [s["metrics"]["r_trained"]["zeroshot_top1"] for s in res["per_seed"]]
    assert res["metrics"]["r_trained"]["zeroshot_top1"] == pytest.approx(sum(per_seed) / seeds)
    assert res["metrics_std"]["r_trained"]["zeroshot_top1"] >= 0.0
    for s in res["per_seed"]:
      assert os.path.isfile(os.path.join(s["workdir"], "metrics.jsonl"))
    # the seeds are different runs (initialisation and data order)
    curves = [s["loss_curve"] for s in res["per_seed"]]
    assert curves[0] != curves[1], name
  eval_data = results["eval_data"]
  assert eval_data["n_images"] == runner.QUICK["eval_examples"]
  assert 0 < eval_data["zeroshot_standard_error_at_20pct"] < 0.1
  assert "rins" in results["verdicts"]
  assert "Did RINS overtake the baseline here?" in (quick_report / "report.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_second_run_gives_identical_numbers(quick_report, tmp_path):
  """Reproducible run to run: the baseline trained again (same seeds, same process) gives the same loss curves
  and the same metrics, bit for bit."""
  out = tmp_path / "again"
  assert runner.main(["--quick", "--variants", "baseline", "--out", str(out), "--quiet"]) == 0
  first = json.loads((quick_report / "results.json").read_text(encoding="utf-8"))["variants"]["baseline"]
  again = json.loads((out / "results.json").read_text(encoding="utf-8"))["variants"]["baseline"]
  for a, b in zip(first["per_seed"], again["per_seed"]):
    assert a["seed"] == b["seed"]
    assert a["loss_curve"] == b["loss_curve"]
    assert a["by_rounds"] == b["by_rounds"]


def test_bad_flags_are_refused(capsys):
  with pytest.raises(ValueError, match="unknown variant"):
    runner.parse_variants("baseline,rinz")
  assert runner.parse_variants("rins") == ["baseline", "rins"]
  with pytest.raises(SystemExit):
    runner.main(["--steps", "0"])
  assert runner.main(["--image-size", "20", "--out", "/nonexistent/never-written"]) == 1
  assert "multiple of the patch size" in capsys.readouterr().err


def test_aggregate_means_and_stds_over_seeds():
  def run(seed, top1, loss):
    m = {"zeroshot_top1": top1, "zeroshot_top1_heldout": None}
    return dict(
      name="rins",
      label="RINS",
      signature="A^2B",
      p_skip=0.0,
      adapters=False,
      seed=seed,
      trained_rounds=2,
      params=10,
      steps=5,
      batch_size=2,
      examples_seen=10,
      train_flops_per_example=1.0,
      train_flops_per_step=2.0,
      train_flops=10.0,
      final_train_loss=loss,
      train_seconds=1.0,
      eval_seconds=0.5,
      metrics={"r1": m, "r_trained": m},
      by_rounds={"1": m, "2": m},
      loss_curve=[(1.0, loss + 1), (2.0, loss)],
      records=[{"rounds": 1}],
      workdir=f"/w/{seed}",
    )

  res = runner.aggregate([run(0, 0.10, 3.0), run(1, 0.20, 4.0), run(2, 0.30, 5.0)])
  assert res["seeds"] == [0, 1, 2]
  assert res["metrics"]["r_trained"]["zeroshot_top1"] == pytest.approx(0.20)
  assert res["metrics_std"]["r_trained"]["zeroshot_top1"] == pytest.approx(0.10)  # sample std
  assert res["metrics"]["r1"]["zeroshot_top1_heldout"] is None
  assert res["final_train_loss"] == pytest.approx(4.0)
  assert res["loss_curve"] == [(1.0, 5.0), (2.0, 4.0)]
  assert res["train_seconds"] == pytest.approx(3.0)
  assert [r["seed"] for r in res["records"]] == [0, 1, 2]
  one = runner.aggregate([run(0, 0.10, 3.0)])
  assert one["metrics_std"]["r1"]["zeroshot_top1"] == 0.0
  assert "± 10.0" in runner.results_table([res])
