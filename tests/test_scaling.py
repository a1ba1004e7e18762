"""Tests of siglip_rins.scaling: power-law fits, optimal rounds, run-folder loading and the report."""

import json

import numpy as np
import pytest

from siglip_rins import scaling

X = np.geomspace(1e15, 1e19, 30)  # training FLOPs
PLANTED = {1: (3.0e4, 0.30, 0.60), 2: (3.0e5, 0.36, 0.50), 3: (2.0e6, 0.40, 0.45)}  # r -> (beta, c, eps_inf)


def _noisy(beta, c, eps_inf, seed, noise=0.002, x=X):
  rng = np.random.default_rng(seed)
  return scaling.power_law(x, beta, c, eps_inf) * (1 + noise * rng.standard_normal(x.shape))


@pytest.mark.parametrize("r", sorted(PLANTED))
def test_fit_recovers_planted_parameters(r):
  beta, c, eps_inf = PLANTED[r]
  fit = scaling.fit_power_law(X, _noisy(beta, c, eps_inf, seed=r), n_bootstrap=30, seed=0)
  assert fit.c == pytest.approx(c, rel=0.1)
  assert fit.eps_inf == pytest.approx(eps_inf, rel=0.03)
  assert fit.num_points == X.size and fit.rmse < 0.01
  # The planted values lie within a few bootstrap standard deviations, and those are non-trivial.
  assert 0 < fit.c_std < 0.1 and abs(fit.c - c) < 4 * fit.c_std + 0.01
  assert 0 < fit.eps_inf_std and abs(fit.eps_inf - eps_inf) < 4 * fit.eps_inf_std + 0.005
  # Predictions at the data agree with the noiseless curve.
  np.testing.assert_allclose(fit.predict(X), scaling.power_law(X, beta, c, eps_inf), rtol=0.01)


def test_fit_is_robust_to_an_outlier_and_reports_covariance_uncertainty():
  beta, c, eps_inf = PLANTED[2]
  y = _noisy(beta, c, eps_inf, seed=7)
  y[12] *= 1.5  # one bad eval point
  fit = scaling.fit_power_law(X, y, uncertainty="covariance")
  assert fit.c == pytest.approx(c, rel=0.15)
  assert fit.eps_inf == pytest.approx(eps_inf, rel=0.05)
  assert np.isfinite(fit.c_std) and np.isfinite(fit.eps_inf_std)


def test_fit_rejects_bad_input():
  with pytest.raises(ValueError, match="y > 0"):
    scaling.fit_power_law([1, 2, 3, 4], [1.0, 0.5, -0.1, 0.2])
  with pytest.raises(ValueError, match="3 distinct"):
    scaling.fit_power_law([1, 1, 2], [1.0, 0.9, 0.8])
  with pytest.raises(ValueError, match="same length"):
    scaling.fit_power_law([1, 2, 3], [1.0, 0.9])
  with pytest.raises(ValueError, match="uncertainty"):
    scaling.fit_power_law([1, 2, 3], [1.0, 0.9, 0.8], uncertainty="magic")


def test_optimal_rounds_picks_planted_winner():
  fits = {r: scaling.PowerLawFit(beta=b, c=c, eps_inf=e) for r, (b, c, e) in PLANTED.items()}
  grid = np.geomspace(1e12, 1e24, 40)
  best = scaling.optimal_rounds(fits, grid)
  truth = np.array(sorted(PLANTED))[np.argmin([scaling.power_law(grid, *PLANTED[r]) for r in sorted(PLANTED)], axis=0)]
  np.testing.assert_array_equal(best, truth)
  assert best[0] == 1 and best[-1] == 3  # larger r wins with more compute (paper Fig. 5b)
  assert np.all(np.diff(best) >= 0)
  with pytest.raises(ValueError):
    scaling.optimal_rounds({}, grid)
  with pytest.raises(ValueError):
    scaling.optimal_rounds(fits, [-1.0])


def _write_run(folder, r, seed, with_rounds_key=True):
  """A run folder with separate training lines (FLOPs) and eval lines (no FLOPs; interpolated by step)."""
  folder.mkdir(parents=True)
  beta, c, eps_inf = PLANTED[r]
  flops_per_step = 1e15 * r
  steps = np.unique(np.geomspace(1, 10_000, 30).astype(int))
  lines = []
  if with_rounds_key:
    lines.append({"step": 0, "rounds": r})
  for step in range(0, 10_001, 500):
    lines.append({"step": step, "train/flops_seen": step * flops_per_step, "train/loss": 9.0})
  values = _noisy(beta, c, eps_inf, seed, x=steps * flops_per_step)
  for step, value in zip(steps, values):
    lines.append({"step": int(step), "eval/loss": float(value), "eval/acc": float("nan")})
  with (folder / "metrics.jsonl").open("w") as f:
    for line in lines:
      f.write(json.dumps(line) + "\n")
  return steps * flops_per_step, values


def test_load_run_curves_interpolates_flops_and_finds_rounds(tmp_path):
  x, y = _write_run(tmp_path / "lm_A2B", 2, seed=1, with_rounds_key=False)
  run = scaling.load_run_curves(tmp_path / "lm_A2B")
  assert run.rounds == 2 and run.name == "lm_A2B"
  fx, fy = run.curve("loss")  # short name finds eval/loss
  np.testing.assert_allclose(fx, x, rtol=1e-9)  # FLOPs interpolated linearly in step
  np.testing.assert_allclose(fy, y)
  assert "eval/acc" not in run.curves  # NaN values are skipped
  with pytest.raises(ValueError, match="no metric 'eval/ppl'"):
    run.curve("eval/ppl")
  with pytest.raises(FileNotFoundError, match="metrics"):
    scaling.load_run_curves(tmp_path / "missing")
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "metrics.jsonl").write_text('{"step": 1}\n{"no_step": 2}\n')
  with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
    scaling.load_run_curves(bad)


def test_scaling_report_and_cli_write_files(tmp_path, capsys):
  dirs = []
  for r in sorted(PLANTED):
    _write_run(tmp_path / f"run{r}", r, seed=10 + r)
    dirs.append(tmp_path / f"run{r}")
  result = scaling.scaling_report(dirs, "eval/loss", tmp_path / "report", n_bootstrap=5)
  markdown = result["markdown"].read_text()
  assert "| run1 | 1 |" in markdown and "Compute-optimal rounds" in markdown
  assert result["plot"].stat().st_size > 5_000 and result["plot"].read_bytes()[:4] == b"\x89PNG"
  stored = json.loads(result["json"].read_text())
  assert set(stored["fits"]) == {"run1", "run2", "run3"}
  assert stored["fits"]["run3"]["c"] == pytest.approx(PLANTED[3][1], rel=0.15)
  assert result["optimal"][-1]["best_rounds"] == 3

  assert (
    scaling.main([str(d) for d in dirs] + ["--metric", "eval/loss", "--out", str(tmp_path / "cli"), "--bootstrap", "0"])
    == 0
  )
  assert (tmp_path / "cli" / "scaling.md").is_file() and (tmp_path / "cli" / "scaling.png").is_file()
  assert scaling.main([str(dirs[0]), "--metric", "eval/nope", "--out", str(tmp_path / "x")]) == 2
  assert "eval/nope" in capsys.readouterr().err
