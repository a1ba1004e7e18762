"""Cultural-diversity evaluations (Pouget et al. 2024, "No filter"): Dollar Street, GeoDE, GLDv2.

* `cultural_zeroshot`: zero-shot top-1 (zeroshot.py) plus top-1 per group: `group_by='income'` buckets a
  numeric field into quartiles of the evaluated data (or `income_edges=[...]`, monthly USD, giving
  buckets '<e0', 'e0-e1', ..., '>=en'); `group_by='region'` groups by the field's value.
* `fewshot_geoloc`: few-shot geolocalisation. Frozen L2-normalised image embeddings; a closed-form
  L2-regularised least-squares probe W = (XᵀX + λI)⁻¹ XᵀY with X the centred train embeddings [n, D] and Y the
  centred one-hot targets [n, C]; k ∈ `shots` examples per class (country or region) drawn per seed, tested on
  the remaining examples of those classes (classes with ≤ k examples are left out); reports mean ± std top-1
  over seeds.

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
def fit_ridge_probe(x: np.ndarray, labels: np.ndarray, num_classes: int, l2_reg: float):
  """x float [n, D], labels int [n] → (W [D, C], x_mean [D], y_mean [C]); W = (XᵀX + λI)⁻¹ XᵀY, centred."""
  x = np.asarray(x, np.float64)
  y = np.zeros((len(labels), num_classes))
  y[np.arange(len(labels)), labels] = 1.0
  x_mean, y_mean = x.mean(0), y.mean(0)
  xc, yc = x - x_mean, y - y_mean
  gram = xc.T @ xc + l2_reg * np.eye(x.shape[1])
  w = np.linalg.solve(gram, xc.T @ yc)
  return w, x_mean, y_mean


def predict_ridge_probe(x: np.ndarray, probe) -> np.ndarray:
  """x [m, D] → predicted class int [m]."""
  w, x_mean, y_mean = probe
  return np.argmax((np.asarray(x, np.float64) - x_mean) @ w + y_mean, axis=1)


def fewshot_accuracy(embeddings: np.ndarray, labels: Sequence, shots: int, seed: int, l2_reg: float) -> float:
  """Draws `shots` train examples per class (seeded), fits the probe, returns top-1 on the rest (in [0, 1])."""
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
  probe = fit_ridge_probe(embeddings[train], inverse[train], len(classes), l2_reg)
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
    l2_reg: float = 1.0,
    image_key: str = 'image',
    pp_img: str | None = None,
    batch_size: int = common.DEFAULT_BATCH_SIZE,
    dataset: str | None = None,
    limit: int | None = None,
    model: str | None = None,
    show_progress: bool = True,
  ):
    if l2_reg <= 0:
      raise ValueError(f'l2_reg must be > 0, got {l2_reg}')
    if not shots or min(shots) < 1 or not seeds:
      raise ValueError(f'shots must be positive integers and seeds non-empty, got {shots!r}, {seeds!r}')
    self.name, self.data, self.target_key = name, dict(data), target_key
    self.dataset = dataset or f'{name}'
    self.shots, self.seeds, self.l2_reg = tuple(int(k) for k in shots), tuple(seeds), float(l2_reg)
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
