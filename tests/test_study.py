"""`siglip-rins study`: budget parsing, sweep planning, crossover analysis, and the --quick end-to-end run.

The end-to-end run (marked slow) trains the quick study (baseline and RINS at 4 compute points), and checks the
outputs, the plan against the budget and the power-law fits of the tiny run.
"""

import json
import math
import os

import numpy as np
import pytest

from siglip_rins import scaling
from siglip_rins.demo import study


def test_parse_budget():
  assert study.parse_budget("60m") == 3600
  assert study.parse_budget("1h30m") == 5400
  assert study.parse_budget("900s") == 900
  assert study.parse_budget("900") == 900
  assert study.parse_budget("1.5h") == 5400
  for bad in ("", "m", "60 minutes", "1h30", "-5m", "0s", "5d"):
    with pytest.raises(ValueError, match="--budget"):
      study.parse_budget(bad)


def test_point_steps_span_the_decades():
  steps = study.point_steps(10_000, 6, 1.5)
  assert len(steps) == 6 and steps[-1] == 10_000 and steps == sorted(set(steps))
  assert math.log10(steps[-1] / steps[0]) == pytest.approx(1.5, abs=0.01)
  assert study.point_steps(4, 4, 1.5) == [1, 2, 3, 4]  # never repeats a point


COSTS = {
  "baseline": dict(overhead_s=8.0, step_s=0.03, steps_ratio=1.0),
  "rins": dict(overhead_s=9.0, step_s=0.045, steps_ratio=0.66),
}


def test_plan_fits_the_time_left_and_uses_it():
  plan = study.plan_sweep(3000.0, COSTS, decades=1.5, seeds=1)
  assert plan["feasible"] and plan["points"] == 6
  assert plan["predicted_s"] <= study.SAFETY * 3000.0 + 1.0
  assert plan["predicted_s"] >= 0.95 * study.SAFETY * 3000.0  # rounding aside, the whole time is used
  assert math.log10(plan["steps"][-1] / plan["steps"][0]) >= 1.49
  # twice the time: more compute at every point; two seeds: less compute per point
  longer = study.plan_sweep(6000.0, COSTS, decades=1.5, seeds=1)
  assert longer["steps"][-1] > 2 * plan["steps"][-1]
  two = study.plan_sweep(3000.0, COSTS, decades=1.5, seeds=2)
  assert two["steps"][-1] < plan["steps"][-1]
  assert study.predict_seconds(plan["steps"], COSTS, 1) == pytest.approx(plan["predicted_s"])


def test_plan_with_little_time_drops_points_then_says_so():
  few = study.plan_sweep(400.0, COSTS, decades=1.5, seeds=1, min_steps=100)
  assert few["points"] < 6 or few["note"]
  none = study.plan_sweep(50.0, COSTS, decades=1.5, seeds=1, min_steps=100)
  assert not none["feasible"] and none["note"]
  capped = study.plan_sweep(3000.0, COSTS, decades=1.0, seeds=1, points=4, min_steps=1, max_steps=24)
  assert capped["steps"][-1] == 24 and capped["points"] == 4


def test_refit_costs_recovers_a_linear_cost():
  runs = [dict(variant="baseline", steps=s, train_seconds=5.0 + 0.02 * s, eval_seconds=1.0) for s in (40, 100, 300)] + [
    dict(variant="rins", steps=20, train_seconds=9.0, eval_seconds=1.0)
  ]
  model = study.refit_costs(COSTS, runs, {})
  assert model["baseline"]["step_s"] == pytest.approx(0.02)
  assert model["baseline"]["overhead_s"] == pytest.approx(6.0)
  assert model["rins"] == COSTS["rins"]  # one step count: the probe's estimate stays


def test_replan_keeps_the_range_then_respaces_to_fit():
  import time

  assert study.respace(100, 1000, 3) == [215, 464, 1000]
  assert study.respace(100, 50, 3) == [101, 102, 103]  # never below or onto point k
  settings = dict(budget_s=1000.0, seeds=1, decades=1.2)  # target: 100 x 10^1.2 = 1585 baseline steps
  t0 = time.time()
  steps = [100, 200, 400, 800, 1600]

  def slower(f):
    return {k: dict(v, step_s=v["step_s"] * f) for k, v in COSTS.items()}

  # 5x slower per step: four more points do not fit up to the target, three do: a point is dropped, range kept
  new = study.replan(steps, 0, slower(5), settings, t0, reserve=0.0)
  assert len(new) == 4 and new[0] == 100 and new[-1] >= 1585
  assert study.predict_seconds(new[1:], slower(5), 1) <= study.SAFETY * 1000.0
  # 8x slower: not even three reach it: three points, as far as they fit, evenly spaced in log steps
  new = study.replan(steps, 0, slower(8), settings, t0, reserve=0.0)
  assert len(new) == 4 and 100 < new[1] < new[2] < new[3] < 1585
  assert study.predict_seconds(new[1:], slower(8), 1) <= study.SAFETY * 1000.0
  ratios = [b / a for a, b in zip(new, new[1:])]
  assert max(ratios) / min(ratios) < 1.05
  # 4x faster: grows, at most 2x, every point kept
  grown = study.replan(steps, 0, slower(0.25), settings, t0, reserve=0.0)
  assert len(grown) == 5 and 1600 < grown[-1] <= 3200


def _fit(beta, c, e):
  return scaling.PowerLawFit(beta=beta, c=c, eps_inf=e)


def test_crossover_of_known_power_laws():
  # b: 1 x^-0.5 + 0.5 ; a: 10 x^-0.5 + 0.3  ->  a < b when 9 x^-0.5 < 0.2, x > 2025
  a, b = _fit(10.0, 0.5, 0.3), _fit(1.0, 0.5, 0.5)
  c = scaling.crossover(a, b, 1.0, 1e6)
  assert c["status"] == "crosses" and c["x"] == pytest.approx(2025.0, rel=1e-6)
  assert scaling.crossover(a, b, 1e4, 1e6)["status"] == "ahead"
  assert scaling.crossover(a, b, 1.0, 1e3)["status"] == "behind"
  assert scaling.crossover(b, a, 1.0, 1e6)["status"] == "leaves"
  with pytest.raises(ValueError):
    scaling.crossover(a, b, 10.0, 1.0)


def test_bootstrap_fits_match_fit_power_law_uncertainty():
  rng = np.random.default_rng(0)
  x = np.geomspace(1e9, 1e11, 8)
  y = 30.0 * (x / 1e9) ** -0.4 * 0.1 + 0.2 + rng.normal(0, 0.01, x.size)
  fit = scaling.fit_power_law(x, y, n_bootstrap=50, seed=3)
  boots = scaling.bootstrap_fits(x, y, fit, n_bootstrap=50, seed=3)
  assert len(boots) >= 40
  assert np.std([f.c for f in boots], ddof=1) == pytest.approx(fit.c_std)
  assert np.std([f.eps_inf for f in boots], ddof=1) == pytest.approx(fit.eps_inf_std)


def test_analysis_finds_a_planted_crossover():
  """Synthetic runs whose errors follow known power laws: the analysis recovers the crossover within its range."""
  rows = []
  a, b = _fit(10.0, 0.5, 0.3), _fit(1.0, 0.5, 0.5)
  for k, x in enumerate(np.geomspace(100.0, 1e5, 6)):
    for v, f in (("baseline", b), ("rins", a)):
      err = float(f.predict(x))
      rows.append(
        dict(
          variant=v,
          seed=0,
          point=k,
          baseline_steps=10 * (k + 1),
          steps=10 * (k + 1),
          train_flops=float(x),
          zeroshot_error=err,
          zeroshot_top1=1 - err,
          zeroshot_top1_r1=1 - err,
          train_loss=err + 1.0,
        )
      )
  settings = dict(variants=["baseline", "rins"], bootstrap=20, eval_examples=1920)
  result = study.analyse(rows, settings)
  c = result["zeroshot_error"]["crossovers"]["rins"]
  assert c["status"] == "crosses" and c["x"] == pytest.approx(2025.0, rel=0.05)
  assert result["zeroshot_error"]["observed_orderings"][0]["ordering"] == "baseline > rins"
  assert result["zeroshot_error"]["observed_orderings"][-1]["ordering"] == "rins > baseline"
  orders = [o["ordering"] for o in result["zeroshot_error"]["predicted_orderings"]]
  assert orders == ["baseline > rins", "rins > baseline"]
  assert "overtakes the baseline at" in result["verdict"]["text"]


def test_bad_flags(capsys):
  assert study.main(["--budget", "soon", "--out", "/nonexistent/never"]) == 1
  assert "--budget" in capsys.readouterr().err
  assert study.main(["--variants", "baseline,rinz", "--out", "/nonexistent/never"]) == 1
  assert "unknown variant" in capsys.readouterr().err
  assert study.main(["--points", "3", "--out", "/nonexistent/never"]) == 1
  assert "--points" in capsys.readouterr().err


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
  root = tmp_path_factory.mktemp("study")
  os.environ.setdefault("SIGLIP_RINS_DATA_DIR", str(root / "data"))
  out = root / "report"
  rc = study.main(["--quick", "--out", str(out), "--quiet"])
  assert rc == 0
  return out


@pytest.mark.slow
def test_quick_study_outputs_and_fits(quick_study):
  for name in ("report.md", "results.json", "error_vs_flops.png", "loss_vs_flops.png"):
    path = quick_study / name
    assert path.is_file() and path.stat().st_size > 0, name
  results = json.loads((quick_study / "results.json").read_text(encoding="utf-8"))
  variants = results["settings"]["variants"]
  assert variants == ["baseline", "rins"]
  points = results["plan"][-1]["steps"]
  assert len(points) == 4 and points == sorted(set(points))
  assert len(results["runs"]) == 4 * len(variants)
  for run in results["runs"]:
    assert 0.0 <= run["zeroshot_top1"] <= 1.0 and run["train_loss"] > 0
  # compute matching at every point: within one of the variant's steps of the baseline's FLOPs
  for k in range(4):
    base = next(r for r in results["runs"] if r["point"] == k and r["variant"] == "baseline")
    for r in results["runs"]:
      if r["point"] == k:
        assert abs(r["train_flops"] - base["train_flops"]) <= r["train_flops_per_step"]
  # the fits: one per variant and metric, with finite parameters, on the run's points
  for metric in ("zeroshot_error", "train_loss"):
    fits = results["analysis"][metric]["fits"]
    assert set(fits) == set(variants), (metric, results["analysis"][metric]["fit_errors"])
    for f in fits.values():
      assert f["beta"] > 0 and f["c"] > 0 and f["eps_inf"] >= 0 and math.isfinite(f["rmse"])
    assert "rins" in results["analysis"][metric]["crossovers"]
  t = results["timing"]
  assert t["total_s"] > t["probe_s"] > 0 and t["planned_total_s"] > 0
  text = (quick_study / "report.md").read_text(encoding="utf-8")
  assert "Did RINS overtake the baseline?" in text and "actual wall time" in text
