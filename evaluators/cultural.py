"""Cultural-diversity evaluations (Pouget et al. 2024, "No filter"): Dollar Street, GeoDE, GLDv2.

* `cultural_zeroshot`: zero-shot top-1 (zeroshot.py) plus top-1 per group: `group_by='income'` buckets a
  numeric field into quartiles of the evaluated data (or `income_edges=[...]`, monthly USD, giving
  buckets '<e0', 'e0-e1', ..., '>=en'); `group_by='region'` groups by the field's value.
* `fewshot_geoloc`: few-shot geolocalisation with big_vision's closed-form probe (fewshot_lsr): frozen
  L2-normalised image embeddings standardised with the train mean/std, a constant bias feature (100), one-hot
  targets in {-1, +1}, ridge W = (XᵀX + λI)⁻¹ XᵀY; λ is searched over 2^-10 .. 2^10 by 2-fold cross-validation on
  the shots (`l2_reg='search'`, the default) or fixed (`l2_reg=1.0`); k ∈ `shots` examples per class (country or
  region) drawn per seed, tested on the remaining examples of those classes (classes with ≤ k examples are left
  out); reports mean ± std top-1 over seeds.

Local layout: data.jsonl lines {"image": ..., "label": "<topic or class>", "country": ..., "region": ...,
"income": <number>} (Dollar Street: 96 topics; GeoDE: 40 objects; GLDv2: landmark names).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from evaluators import common
from evaluators.registry import register
from evaluators.zeroshot import ZeroShotEvaluator


def income_bucket_names(values: Sequence, edges: Sequence[float] | None = None) -> list[str]:
  """Numeric incomes → bucket names. edges=None: quartiles of `values` ('q1' lowest .. 'q4'); else names
  '<e0', 'e0-e1', ..., '>=eN'. Non-numeric / missing values → ValueError naming the value."""
  nums = []
  for v in values:
    try:
      nums.append(float(v))
    except (TypeError, ValueError):
      raise ValueError(f'income value {v!r} is not a number') from None
  nums = np.asarray(nums)
  if edges is None:
    cuts = np.quantile(nums, [0.25, 0.5, 0.75])
    return [f'q{int(np.searchsorted(cuts, x, side="right")) + 1}' for x in nums]
  edges = [float(e) for e in edges]
  if edges != sorted(edges):
    raise ValueError(f'income_edges must be increasing, got {edges}')
  labels = [f'<{edges[0]:g}'] + [f'{a:g}-{b:g}' for a, b in zip(edges, edges[1:])] + [f'>={edges[-1]:g}']
  return [labels[int(np.searchsorted(edges, x, side='right'))] for x in nums]


@register('cultural_zeroshot')
class CulturalZeroShotEvaluator(ZeroShotEvaluator):
  """Zero-shot top-1 with per-group accuracy (income buckets or region)."""

  task = 'zeroshot_classification'

  @classmethod
  def extra_options(cls):
    return ('income_edges',)

  def group_names(self, values):
    if self.group_by == 'income':
      return income_bucket_names(values, self.options.get('income_edges'))
    return [str(v) for v in values]


# ----------------------------------------------------------------------------------------------- probe
BIAS_CONSTANT = 100.0  # big_vision's constant bias feature: large, so the bias is almost unregularised
L2_GRID = tuple(2.0**k for k in range(-10, 11, 2))  # the regulariser search grid


def fit_ridge_probe(x: np.ndarray, labels: np.ndarray, num_classes: int, l2_reg: float):
  """big_vision's few-shot probe (fewshot_lsr): features standardised with the train mean/std (+1e-5), a
  constant feature BIAS_CONSTANT appended for the bias, one-hot targets in {-1, +1}, and the ridge solution
  W = (XᵀX + λI)⁻¹ XᵀY (or Xᵀ(XXᵀ + λI)⁻¹Y when there are fewer points than dimensions).
  x float [n, D], labels int [n] → (W [D+1, C], mean [D], std [D])."""
  x = np.asarray(x, np.float64)
  mean, std = x.mean(0), x.std(0) + 1e-5
  xs = np.pad((x - mean) / std, ((0, 0), (0, 1)), constant_values=BIAS_CONSTANT)
  y = -np.ones((len(labels), num_classes))
  y[np.arange(len(labels)), labels] = 1.0
  n, d = xs.shape
  if n >= d:
    w = np.linalg.solve(xs.T @ xs + l2_reg * np.eye(d), xs.T @ y)
  else:
    w = xs.T @ np.linalg.solve(xs @ xs.T + l2_reg * np.eye(n), y)
  return w, mean, std


def predict_ridge_probe(x: np.ndarray, probe) -> np.ndarray:
  """x [m, D] → predicted class int [m]."""
  w, mean, std = probe
  xs = np.pad((np.asarray(x, np.float64) - mean) / std, ((0, 0), (0, 1)), constant_values=BIAS_CONSTANT)
  return np.argmax(xs @ w, axis=1)


def select_l2_reg(x: np.ndarray, labels: np.ndarray, num_classes: int, grid=L2_GRID, folds: int = 2, seed: int = 0):
  """The regulariser of `grid` with the best mean accuracy in `folds`-fold cross-validation on the few-shot
  training set itself (the test examples are never looked at); ties → the larger (smoother) λ."""
  rng = np.random.default_rng(seed)
  fold_of = np.empty(len(labels), int)
  for c in np.unique(labels):  # stratified: each class's shots spread over the folds
    members = rng.permutation(np.flatnonzero(labels == c))
    fold_of[members] = np.arange(len(members)) % folds
  if min(np.bincount(fold_of, minlength=folds)) == 0 or len(labels) < 2 * folds:
    return float(np.median(grid))
  scores = []
  for lam in grid:
    accs = []
    for f in range(folds):
      tr, te = fold_of != f, fold_of == f
      probe = fit_ridge_probe(x[tr], labels[tr], num_classes, lam)
      accs.append((predict_ridge_probe(x[te], probe) == labels[te]).mean())
    scores.append(np.mean(accs))
  best = max(scores)
  return float(max(lam for lam, sc in zip(grid, scores) if sc >= best - 1e-12))


def fewshot_accuracy(
  embeddings: np.ndarray, labels: Sequence, shots: int, seed: int, l2_reg: float | str = 'search'
) -> float:
  """Draws `shots` train examples per class (seeded), fits the probe (l2_reg a number, or 'search': chosen by
  cross-validation on the shots, see select_l2_reg), returns top-1 on the rest (in [0, 1])."""
  labels = np.asarray(labels)
  classes, inverse = np.unique(labels, return_inverse=True)
  rng = np.random.default_rng(seed)
  train, test = [], []
  for c in range(len(classes)):
    members = np.flatnonzero(inverse == c)
    if len(members) <= shots:
      continue
    members = rng.permutation(members)
    train.extend(members[:shots])
    test.extend(members[shots:])
  if len(set(inverse[train])) < 2:
    raise ValueError(
      f'few-shot probe with {shots} shots needs at least 2 classes with more than {shots} '
      f'examples; class sizes: {np.bincount(inverse).tolist()}'
    )
  train, test = np.asarray(train), np.asarray(test)
  x_tr, y_tr = embeddings[train], inverse[train]
  lam = select_l2_reg(x_tr, y_tr, len(classes), seed=seed) if l2_reg == 'search' else float(l2_reg)
  probe = fit_ridge_probe(x_tr, y_tr, len(classes), lam)
  return float((predict_ridge_probe(embeddings[test], probe) == inverse[test]).mean())


@register('fewshot_geoloc')
class FewShotGeolocEvaluator:
  """Few-shot geolocalisation probe; metrics '{k}shot' (mean top-1) and '{k}shot_std' over seeds."""

  task = 'fewshot_geolocalization'

  def __init__(
    self,
    name: str,
    data: Mapping,
    target_key: str = 'country',
    shots: Sequence[int] = (5, 10, 25),
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    l2_reg: float | str = 'search',
    image_key: str = 'image',
    pp_img: str | None = None,
    batch_size: int = common.DEFAULT_BATCH_SIZE,
    dataset: str | None = None,
    limit: int | None = None,
    model: str | None = None,
    show_progress: bool = True,
  ):
    if l2_reg != 'search' and (isinstance(l2_reg, bool) or not isinstance(l2_reg, (int, float)) or l2_reg <= 0):
      raise ValueError(f"l2_reg must be a number > 0 or 'search', got {l2_reg!r}")
    if not shots or min(shots) < 1 or not seeds:
      raise ValueError(f'shots must be positive integers and seeds non-empty, got {shots!r}, {seeds!r}')
    self.name, self.data, self.target_key = name, dict(data), target_key
    self.dataset = dataset or f'{name}'
    self.shots, self.seeds = tuple(int(k) for k in shots), tuple(seeds)
    self.l2_reg = l2_reg if l2_reg == 'search' else float(l2_reg)
    self.image_key, self.pp_img = image_key, pp_img
    self.batch_size, self.limit, self.model, self.show_progress = int(batch_size), limit, model, show_progress

  def run(self, predictor, rounds=None) -> list[dict]:
    rounds_list = common.as_rounds_list(rounds)
    emb = {r: [] for r in rounds_list}
    targets = []
    batches = common.iterate_batches(
      self.data,
      fields={'target': self.target_key},
      image_key=self.image_key,
      preprocess=common.image_preprocessor(predictor, self.pp_img),
      batch_size=self.batch_size,
      limit=self.limit,
    )
    for batch in common.progress(batches, f'{self.name}: images', enabled=self.show_progress):
      targets.extend(str(t) for t in batch['target'])
      for r in rounds_list:
        emb[r].append(common.embed_image_batch(predictor, batch, r))
    if not targets:
      raise ValueError(f'evaluator {self.name!r}: dataset {self.data} yielded no examples')
    records = []
    for r in rounds_list:
      x = np.concatenate(emb[r])
      metrics = {'n': len(targets), 'num_classes': len(set(targets))}
      for k in self.shots:
        accs = [fewshot_accuracy(x, targets, k, seed, self.l2_reg) for seed in self.seeds]
        metrics[f'{k}shot'] = float(np.mean(accs))
        metrics[f'{k}shot_std'] = float(np.std(accs))
      records.append(
        common.make_record(
          dataset=self.dataset,
          model=self.model or common.model_name(predictor),
          task=self.task,
          metrics=metrics,
          language='en',
          rounds=r,
        )
      )
    return records
