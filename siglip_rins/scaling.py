"""Data scaling laws for RINS runs: power-law fits and the compute-optimal number of recursion rounds.

Following the paper (Sec. 6, Fig. 5), an eval metric eps (a loss or an error rate; lower is better) is modelled as
a function of the training compute x (FLOPs) by

    eps(x) = beta * x**(-c) + eps_inf,        beta > 0, c > 0, eps_inf >= 0.

`fit_power_law` fits it robustly in log space (minimising a soft-L1 loss of log(pred) - log(y) over several
starting points, with x rescaled by its smallest value for conditioning) and estimates the uncertainty of
(beta, c, eps_inf) by a bootstrap over points (or from the Jacobian covariance). `optimal_rounds` gives, for each
compute budget, the number of rounds r whose fit predicts the lowest eps (Fig. 5b).

Run folders (`load_run_curves`) hold a metrics file `metrics.jsonl`: one JSON object per line with
    "step"               int, required on every line: the training step the line refers to
    "train/flops_seen"   float, cumulative training FLOPs up to and including `step` (the x axis)
    "eval/<name>"        float, eval metrics (e.g. "eval/loss", "eval/zeroshot/err"); other keys are ignored
    "rounds"             optional int: the trained number of recursion rounds r of the run
Lines may carry any subset besides "step" (training lines and eval lines are usually separate). An eval value
whose line has no "train/flops_seen" gets the FLOPs linearly interpolated in `step` from the lines that have
it (eval points before the first FLOPs record, or at 0 FLOPs, are dropped). Non-finite values are skipped. r is taken from a "rounds" key, else from `run_info.json` ({"rounds": r}),
else from the folder name (`..._r3`, `..._A3B`), else unknown.

CLI (wired as `siglip-rins scaling`): `main(["RUN_DIR", ..., "--metric", "eval/loss", "--out", "DIR"])` writes
DIR/scaling.md (a table of fits), DIR/scaling.json and DIR/scaling.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import re
import sys
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import optimize

METRICS_FILE = "metrics.jsonl"
RUN_INFO_FILE = "run_info.json"
FLOPS_KEY = "train/flops_seen"


def power_law(x, beta: float, c: float, eps_inf: float) -> np.ndarray:
  """beta * x**(-c) + eps_inf, elementwise; x > 0 in FLOPs."""
  return beta * np.asarray(x, dtype=np.float64) ** (-c) + eps_inf


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
  """A fit of eps(x) = beta * x**(-c) + eps_inf; *_std are 1-sigma uncertainties (nan when not estimated).

  beta is in the units of the data (eps times FLOPs**c); rmse is the root-mean-square residual in eps units.
  """

  beta: float
  c: float
  eps_inf: float
  beta_std: float = math.nan
  c_std: float = math.nan
  eps_inf_std: float = math.nan
  num_points: int = 0
  rmse: float = math.nan
  x_min: float = math.nan
  x_max: float = math.nan

  def predict(self, x) -> np.ndarray:
    """Predicted eps at compute x (FLOPs), any shape."""
    return power_law(x, self.beta, self.c, self.eps_inf)


def _as_points(x, y) -> tuple[np.ndarray, np.ndarray]:
  x = np.asarray(x, dtype=np.float64).reshape(-1)
  y = np.asarray(y, dtype=np.float64).reshape(-1)
  if x.shape != y.shape:
    raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
  if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
    raise ValueError("x and y must be finite")
  if np.any(x <= 0):
    raise ValueError(f"compute x must be > 0 (FLOPs), got min {x.min()}")
  if np.any(y <= 0):
    raise ValueError(
      f"a power-law fit needs y > 0 (a loss or an error rate), got min {y.min()}; for accuracies fit 1 - accuracy"
    )
  if np.unique(x).size < 3:
    raise ValueError(f"a power-law fit needs at least 3 distinct x values, got {np.unique(x).size}")
  return x, y


def _fit_normalised(u: np.ndarray, y: np.ndarray, starts: Iterable[tuple[float, float]]) -> np.ndarray:
  """Best (log_b, c, e) for y ~ exp(log_b) * u**(-c) + e, u = x / x_min >= 1, over starting (c, e) pairs."""
  log_u, log_y = np.log(u), np.log(y)
  e_max = float(y.min()) * (1 - 1e-9)

  def residuals(p):
    log_b, c, e = p
    return np.log(np.exp(log_b - c * log_u) + e) - log_y

  def jacobian(p):
    log_b, c, e = p
    power = np.exp(log_b - c * log_u)
    inv = 1.0 / (power + e)
    return np.stack([power * inv, -log_u * power * inv, inv], axis=1)

  best, best_cost = None, math.inf
  for c0, e0 in starts:
    e0 = min(max(e0, 0.0), e_max * 0.999)
    log_b0 = float(np.mean(np.log(y - e0) + c0 * log_u))  # exact for the given (c0, e0) in the mean
    result = optimize.least_squares(
      residuals,
      x0=[log_b0, c0, e0],
      jac=jacobian,
      bounds=([-np.inf, 1e-6, 0.0], [np.inf, 10.0, e_max]),
      loss="soft_l1",
      f_scale=0.05,
      method="trf",
      max_nfev=100,
    )
    if result.status >= 0 and np.isfinite(result.cost) and result.cost < best_cost:
      best, best_cost = result.x, result.cost
  if best is None:
    raise ValueError("power-law fit did not converge from any starting point")
  return best


def fit_power_law(x, y, *, n_bootstrap: int = 100, seed: int = 0, uncertainty: str = "bootstrap") -> PowerLawFit:
  """Fits eps(x) = beta * x**(-c) + eps_inf to points (x [N] FLOPs > 0, y [N] eps > 0), N >= 3 distinct x.

  uncertainty: 'bootstrap' (refit on `n_bootstrap` resamples of the points with replacement; std over the
  resamples) or 'covariance' (from the Jacobian at the optimum, scaled by the residual variance).
  """
  if uncertainty not in ("bootstrap", "covariance"):
    raise ValueError(f"uncertainty must be 'bootstrap' or 'covariance', got {uncertainty!r}")
  x, y = _as_points(x, y)
  x_min = float(x.min())
  u = x / x_min
  y_min = float(y.min())
  starts = [(c0, f * y_min) for c0 in (0.05, 0.2, 0.5, 1.0, 2.0) for f in (0.0, 0.5, 0.9)]
  log_b, c, e = _fit_normalised(u, y, starts)
  beta = float(np.exp(log_b) * x_min**c)
  rmse = float(np.sqrt(np.mean((power_law(x, beta, c, e) - y) ** 2)))

  stds = (math.nan, math.nan, math.nan)
  n = x.size
  if uncertainty == "bootstrap" and n_bootstrap > 0:
    samples = [(f.beta, f.c, f.eps_inf) for f in _bootstrap(x, y, c, e, n_bootstrap, seed)]
    if len(samples) >= 2:
      stds = tuple(float(s) for s in np.std(np.asarray(samples), axis=0, ddof=1))
  elif uncertainty == "covariance" and n > 3:
    # Jacobian of y-space residuals w.r.t. (beta, c, eps_inf); cov = s^2 (J^T J)^-1.
    xp = x ** (-c)
    jac = np.stack([xp, -beta * np.log(x) * xp, np.ones_like(x)], axis=1)
    s2 = float(np.sum((power_law(x, beta, c, e) - y) ** 2) / (n - 3))
    cov = np.linalg.pinv(jac.T @ jac) * s2
    stds = tuple(float(v) for v in np.sqrt(np.clip(np.diag(cov), 0, None)))
  return PowerLawFit(
    beta=beta,
    c=float(c),
    eps_inf=float(e),
    beta_std=stds[0],
    c_std=stds[1],
    eps_inf_std=stds[2],
    num_points=n,
    rmse=rmse,
    x_min=x_min,
    x_max=float(x.max()),
  )


def _bootstrap(x: np.ndarray, y: np.ndarray, c: float, e: float, n_bootstrap: int, seed: int) -> list[PowerLawFit]:
  """Refits on `n_bootstrap` resamples of the points (with replacement; resamples with < 3 distinct x are
  skipped), each started from (c, e) of the full fit."""
  x_min, n = float(x.min()), x.size
  rng = np.random.default_rng(seed)
  fits = []
  for _ in range(n_bootstrap):
    idx = rng.integers(n, size=n)
    if np.unique(x[idx]).size < 3:
      continue
    xb, yb = x[idx], y[idx]
    pb = _fit_normalised(xb / x_min, yb, [(c, min(e, yb.min() * 0.999))])
    fits.append(
      PowerLawFit(
        beta=float(np.exp(pb[0]) * x_min ** pb[1]),
        c=float(pb[1]),
        eps_inf=float(pb[2]),
        num_points=n,
        x_min=float(xb.min()),
        x_max=float(xb.max()),
      )
    )
  return fits


def bootstrap_fits(x, y, fit: PowerLawFit, *, n_bootstrap: int = 100, seed: int = 0) -> list[PowerLawFit]:
  """The bootstrap replicates behind `fit_power_law`'s uncertainties: fits of eps(x) to resamples of the points
  (x, y) with replacement, each started from `fit` (the fit of all points).  For uncertainties of derived
  quantities (a crossover, a prediction far out): compute them per replicate."""
  x, y = _as_points(x, y)
  return _bootstrap(x, y, fit.c, fit.eps_inf, int(n_bootstrap), seed)


def crossover(fit_a: PowerLawFit, fit_b: PowerLawFit, lo: float, hi: float, num: int = 400) -> dict:
  """Where, on [lo, hi] FLOPs, the prediction of `fit_a` goes below that of `fit_b` (a overtakes b).

  Returns {'status': 'crosses' | 'ahead' (a below b at every point) | 'behind' (a never below b) | 'leaves'
  (a below b at lo, above from some x on), 'x': the first compute where a goes (and stays, to the next sign change)
  below b, else None}.  The crossing is located on a log grid of `num` points, then refined by bisection in log x.
  """
  if not (0 < lo < hi and math.isfinite(hi)):
    raise ValueError(f"crossover needs 0 < lo < hi, got {lo}, {hi}")
  grid = np.geomspace(lo, hi, num)
  diff = fit_a.predict(grid) - fit_b.predict(grid)
  below = diff < 0
  if below.all():
    return {"status": "ahead", "x": None}
  if not below.any():
    return {"status": "behind", "x": None}
  ups = np.flatnonzero(~below[:-1] & below[1:])  # a >= b at i, a < b at i + 1
  if ups.size == 0:
    return {"status": "leaves", "x": None}
  i = int(ups[0])
  a, b = math.log(grid[i]), math.log(grid[i + 1])
  for _ in range(60):
    m = 0.5 * (a + b)
    if fit_a.predict(math.exp(m)) - fit_b.predict(math.exp(m)) < 0:
      b = m
    else:
      a = m
  return {"status": "crosses", "x": float(math.exp(b))}


def optimal_rounds(fits_by_r: Mapping[int, PowerLawFit], compute_grid) -> np.ndarray:
  """For each compute budget (FLOPs, shape [G]), the r whose fit predicts the lowest eps: int64 [G].

  Ties go to the smaller r.
  """
  if not fits_by_r:
    raise ValueError("optimal_rounds needs at least one fit")
  grid = np.asarray(compute_grid, dtype=np.float64).reshape(-1)
  if grid.size == 0 or np.any(~np.isfinite(grid)) or np.any(grid <= 0):
    raise ValueError("compute_grid must be a non-empty list of positive FLOPs")
  rounds = sorted(int(r) for r in fits_by_r)
  predictions = np.stack([fits_by_r[r].predict(grid) for r in rounds])  # [R, G]
  return np.asarray(rounds, dtype=np.int64)[np.argmin(predictions, axis=0)]


# ---------------------------------------------------------------------------------------------------------------
# Run folders.


@dataclasses.dataclass
class RunCurves:
  """Curves of one run: metric name -> (flops [N] float64, values [N] float64), sorted by flops."""

  name: str
  path: pathlib.Path
  rounds: int | None
  curves: dict[str, tuple[np.ndarray, np.ndarray]]

  def curve(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(flops, values) of `metric`; 'loss' also finds 'eval/loss'."""
    for key in (metric, f"eval/{metric}"):
      if key in self.curves:
        return self.curves[key]
    raise ValueError(
      f"run {self.name!r} ({self.path}) has no metric {metric!r} with {FLOPS_KEY}; "
      f"available: {', '.join(sorted(self.curves)) or 'none'}"
    )


def _rounds_from_name(name: str) -> int | None:
  match = re.search(r"(?:^|[_\-.])r(\d+)(?:$|[_\-.])", name) or re.search(r"A\^?(\d+)B", name)
  return int(match.group(1)) if match else None


def _finite_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_run_curves(run_dir: str | pathlib.Path) -> RunCurves:
  """Reads `run_dir/metrics.jsonl` (or the JSONL file itself) into a RunCurves; see the module docstring."""
  path = pathlib.Path(run_dir)
  metrics_path = path / METRICS_FILE if path.is_dir() else path
  if not metrics_path.is_file():
    raise FileNotFoundError(f"no metrics file for run {str(run_dir)!r}: {metrics_path} does not exist")
  run_path = metrics_path.parent
  flops_points: dict[int, float] = {}
  values: dict[str, list[tuple[int, float, float | None]]] = {}
  rounds = None
  with metrics_path.open(encoding="utf-8") as f:
    for line_no, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{metrics_path}:{line_no}: not a JSON object ({e.msg})") from None
      if not isinstance(row, dict) or not isinstance(row.get("step"), int) or isinstance(row.get("step"), bool):
        raise ValueError(f"{metrics_path}:{line_no}: each line must be a JSON object with an int 'step'")
      step = row["step"]
      flops = row.get(FLOPS_KEY, row.get("flops_seen"))  # the trainer writes "flops_seen"
      flops = float(flops) if _finite_number(flops) and flops >= 0 else None
      if flops is not None:
        flops_points[step] = flops
      if isinstance(row.get("rounds"), int) and not isinstance(row["rounds"], bool):
        rounds = row["rounds"]
      for key, value in row.items():
        if key.startswith("eval/") and _finite_number(value):
          values.setdefault(key, []).append((step, float(value), flops))
  if rounds is None and (run_path / RUN_INFO_FILE).is_file():
    info = json.loads((run_path / RUN_INFO_FILE).read_text(encoding="utf-8"))
    if isinstance(info, dict) and isinstance(info.get("rounds"), int):
      rounds = info["rounds"]
  if rounds is None:
    rounds = _rounds_from_name(run_path.name)

  known_steps = np.array(sorted(flops_points), dtype=np.float64)
  known_flops = np.array([flops_points[s] for s in sorted(flops_points)], dtype=np.float64)
  curves = {}
  for key, points in values.items():
    xs, ys = [], []
    for step, value, flops in points:
      if flops is None and known_steps.size >= 2 and known_steps[0] <= step <= known_steps[-1]:
        flops = float(np.interp(step, known_steps, known_flops))
      elif flops is None and known_steps.size >= 1 and step in flops_points:
        flops = flops_points[step]
      if flops is not None and flops > 0:  # a power law needs x > 0
        xs.append(flops)
        ys.append(value)
    if xs:
      order = np.argsort(xs, kind="stable")
      curves[key] = (np.asarray(xs)[order], np.asarray(ys)[order])
  return RunCurves(name=run_path.name, path=run_path, rounds=rounds, curves=curves)


# ---------------------------------------------------------------------------------------------------------------
# Report.


def _fmt(value: float, std: float = math.nan) -> str:
  text = f"{value:.4g}"
  return text if math.isnan(std) else f"{text} ± {std:.2g}"


def scaling_report(
  run_dirs: Sequence[str | pathlib.Path],
  metric: str,
  out_dir: str | pathlib.Path,
  *,
  one_minus: bool = False,
  min_flops: float = 0.0,
  n_bootstrap: int = 100,
  seed: int = 0,
) -> dict:
  """Fits each run's `metric` curve and writes out_dir/scaling.{md,json,png}.

  one_minus: fit 1 - metric (turns an accuracy into an error). min_flops: ignore points below this compute
  (e.g. the warm-up). When >= 2 runs have distinct known rounds r, also reports the optimal r over a log-spaced
  compute grid spanning the data and 10x beyond. Returns {'fits': {run name: PowerLawFit}, 'optimal': [...],
  'markdown': path, 'json': path, 'plot': path}.
  """
  if not run_dirs:
    raise ValueError("scaling_report needs at least one run folder")
  runs = [load_run_curves(d) for d in run_dirs]
  names = [r.name for r in runs]
  if len(set(names)) != len(names):
    names = [str(r.path) for r in runs]
  fits, data = {}, {}
  for name, run in zip(names, runs):
    x, y = run.curve(metric)
    if one_minus:
      y = 1.0 - y
    keep = x >= min_flops
    x, y = x[keep], y[keep]
    try:
      fits[name] = fit_power_law(x, y, n_bootstrap=n_bootstrap, seed=seed)
    except ValueError as e:
      raise ValueError(f"run {name!r}, metric {metric!r}: {e}") from None
    data[name] = (x, y)

  by_rounds = {run.rounds: fits[name] for name, run in zip(names, runs) if run.rounds is not None}
  optimal = []
  if len(by_rounds) >= 2 and len(by_rounds) == sum(run.rounds is not None for run in runs):
    lo = min(f.x_min for f in fits.values())
    hi = max(f.x_max for f in fits.values()) * 10
    grid = np.geomspace(lo, hi, 13)
    best = optimal_rounds(by_rounds, grid)
    optimal = [
      {
        "flops": float(g),
        "best_rounds": int(b),
        "predicted": {int(r): float(f.predict(g)) for r, f in sorted(by_rounds.items())},
      }
      for g, b in zip(grid, best)
    ]

  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  label = f"1 - {metric}" if one_minus else metric
  lines = [
    f"# Scaling fits: {label}",
    "",
    "eps(x) = beta * x^(-c) + eps_inf, x = training FLOPs; ± is one bootstrap standard deviation.",
    "",
    "| run | r | points | FLOPs range | beta | c | eps_inf | rmse | last eps |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for name, run in zip(names, runs):
    f = fits[name]
    r = "?" if run.rounds is None else str(run.rounds)
    lines.append(
      f"| {name} | {r} | {f.num_points} | {f.x_min:.3g} – {f.x_max:.3g} | {_fmt(f.beta, f.beta_std)} | "
      f"{_fmt(f.c, f.c_std)} | {_fmt(f.eps_inf, f.eps_inf_std)} | {f.rmse:.3g} | "
      f"{data[name][1][-1]:.4g} |"
    )
  if optimal:
    lines += [
      "",
      "## Compute-optimal rounds (lowest predicted eps)",
      "",
      "| FLOPs | best r | predicted eps by r |",
      "|---|---|---|",
    ]
    for row in optimal:
      preds = ", ".join(f"r={r}: {v:.4g}" for r, v in row["predicted"].items())
      lines.append(f"| {row['flops']:.3g} | {row['best_rounds']} | {preds} |")
  md_path = out / "scaling.md"
  md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  json_path = out / "scaling.json"
  json_fits = {
    name: {
      k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in dataclasses.asdict(fits[name]).items()
    }
    | {"rounds": run.rounds}
    for name, run in zip(names, runs)
  }
  json_path.write_text(
    json.dumps({"metric": metric, "one_minus": one_minus, "fits": json_fits, "optimal_rounds": optimal}, indent=2),
    encoding="utf-8",
  )
  plot_path = out / "scaling.png"
  _plot(names, data, fits, optimal, label, plot_path)
  return {"fits": fits, "optimal": optimal, "markdown": md_path, "json": json_path, "plot": plot_path}


def _plot(names, data, fits, optimal, label, path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  ncols = 2 if optimal else 1
  fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4.2), squeeze=False)
  ax = axes[0, 0]
  for i, name in enumerate(names):
    x, y = data[name]
    f = fits[name]
    colour = f"C{i % 10}"
    ax.scatter(x, y, s=10, color=colour, alpha=0.6)
    xs = np.geomspace(x.min(), x.max() * 10, 200)
    ax.plot(xs, f.predict(xs), color=colour, label=f"{name}: c={f.c:.3g}, eps_inf={f.eps_inf:.3g}")
  ax.set_xscale("log")
  ax.set_xlabel("training FLOPs")
  ax.set_ylabel(label)
  ax.legend(fontsize=7)
  ax.grid(True, which="both", alpha=0.3)
  if optimal:
    ax2 = axes[0, 1]
    ax2.step([row["flops"] for row in optimal], [row["best_rounds"] for row in optimal], where="mid")
    ax2.set_xscale("log")
    ax2.set_xlabel("training FLOPs")
    ax2.set_ylabel("optimal r")
    ax2.set_yticks(sorted({int(r) for row in optimal for r in row["predicted"]}))
    ax2.grid(True, which="both", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
  """`siglip-rins scaling RUN_DIR... --metric NAME --out DIR [--one_minus] [--min_flops F] [--bootstrap N]`."""
  parser = argparse.ArgumentParser(
    prog="siglip-rins scaling", description="Fit eps(x) = beta x^-c + eps_inf to runs' eval curves."
  )
  parser.add_argument(
    "run_dirs", nargs="+", metavar="RUN_DIR", help=f"run folders holding {METRICS_FILE} (or the JSONL files)"
  )
  parser.add_argument("--metric", default="eval/loss", help="metric key, e.g. eval/loss (default)")
  parser.add_argument("--out", default="scaling_report", help="output folder (default: scaling_report)")
  parser.add_argument("--one_minus", action="store_true", help="fit 1 - metric (for accuracies)")
  parser.add_argument("--min_flops", type=float, default=0.0, help="ignore points below this compute")
  parser.add_argument("--bootstrap", type=int, default=100, help="bootstrap resamples (0: none)")
  args = parser.parse_args(argv)
  try:
    result = scaling_report(
      args.run_dirs,
      args.metric,
      args.out,
      one_minus=args.one_minus,
      min_flops=args.min_flops,
      n_bootstrap=args.bootstrap,
    )
  except (ValueError, FileNotFoundError) as e:
    print(f"siglip-rins scaling: error: {e}", file=sys.stderr)
    return 2
  print(result["markdown"].read_text(encoding="utf-8"))
  print(f"wrote {result['markdown']}, {result['json']}, {result['plot']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
