"""Zero-shot classification with a two-tower (SigLIP) predictor.

Class embedding = L2-normalised mean over templates (and aliases) of L2-normalised text embeddings of
`template.format(class name)`, tokenised with SigLIP canonicalisation; prediction = argmax of cosine
similarity (temperature and bias do not change it). Metrics (CLIP_benchmark's names): acc1 / acc5 accuracy, mean_per_class_recall, optionally ImageNet ReaL
top-1 (correct when the prediction is in the image's ReaL label set; images with an empty set are excluded)
and top-1 per group (e.g. region or income bucket, see cultural.py).

Config: dict(type='zeroshot', data=dict(type='tfds', name='imagenet2012', split='validation') or
dict(type='jsonl', path=FOLDER), class_names='imagenet'|'cifar100'|'pets'|[names or alias lists]|'file.json'|
'from_data' (the dataset's own label names: TFDS ClassLabel names, or the distinct string labels of data.jsonl),
templates='openai_imagenet'|'openai_imagenet_bare'|'simple_imagenet'|'cifar100'|'pets'|'bare'|[...],
label_key='label', real_labels_key=None, class_subset=None|'imagenet_a'|'imagenet_r'|[indices],
pp_img=None (default: the run's example spec), batch_size=64, dataset=NAME, group_by=None, limit=None).
"""

from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import numpy as np

from evaluators import common
from evaluators.registry import register

_NAMED_TEMPLATES = ('openai_imagenet', 'openai_imagenet_bare', 'simple_imagenet', 'cifar100', 'pets', 'bare')


# ----------------------------------------------------------------------------------------------- resources
def resolve_class_names(spec) -> list[list[str]]:
  """Name in data/classnames.json, a JSON file path, or a list → list of alias lists (one per class)."""
  if isinstance(spec, str):
    if spec.endswith('.json'):
      if not os.path.isfile(spec):
        raise FileNotFoundError(f'class-names file {spec!r} does not exist')
      with open(spec, encoding='utf-8') as f:
        spec = json.load(f)
    else:
      shipped = common.load_data_file('classnames.json')
      if spec not in shipped:
        raise ValueError(
          f'unknown class-name set {spec!r}; shipped sets: {sorted(shipped)} (or pass a list or a .json file)'
        )
      spec = shipped[spec]
  if not isinstance(spec, (list, tuple)) or not spec:
    raise ValueError(f'class_names must be a non-empty list, got {type(spec).__name__}')
  out = []
  for i, entry in enumerate(spec):
    aliases = [entry] if isinstance(entry, str) else list(entry)
    if not aliases or not all(isinstance(a, str) and a for a in aliases):
      raise ValueError(f'class {i}: expected a name or a list of alias names, got {entry!r}')
    out.append(aliases)
  return out


def class_names_from_data(data, label_key: str = 'label') -> list[list[str]]:
  """`class_names='from_data'`: the class list from the dataset's own metadata, for sets whose class list no
  package ships (Dollar Street topics, GeoDE objects): TFDS ClassLabel names in label order, or the sorted distinct
  string labels of a local data.jsonl.  Integer labels carry no names: give class_names."""
  data = dict(data)
  if data.get('type', 'jsonl') == 'tfds':
    import tensorflow_datasets as tfds

    feature = tfds.builder(data['name'], data_dir=data.get('data_dir')).info.features[label_key]
    names = getattr(feature, 'names', None)
    if not names:
      raise ValueError(f"class_names='from_data': TFDS {data['name']!r} feature {label_key!r} has no class names")
    return [[str(n)] for n in names]
  labels = set()
  for rec in common.read_jsonl(data['path']):
    value = rec.get(label_key)
    if isinstance(value, str) and value.strip():
      labels.add(value.strip())
    elif value is not None:
      raise ValueError(
        f"class_names='from_data' needs string labels in field {label_key!r}; got {value!r}: give class_names"
      )
  if not labels:
    raise ValueError(f"class_names='from_data': no {label_key!r} labels in {data['path']}")
  return [[name] for name in sorted(labels)]


def resolve_templates(spec) -> list[str]:
  """'openai_imagenet' (80), 'openai_imagenet_bare' (80 + '{}'), 'simple_imagenet' (7), 'cifar100' (18),
  'pets' (1), 'bare' (['{}']) or a list of templates with one '{}' each."""
  if isinstance(spec, str):
    if spec not in _NAMED_TEMPLATES:
      raise ValueError(f'unknown template set {spec!r}; known: {list(_NAMED_TEMPLATES)} (or pass a list)')
    if spec == 'bare':
      return ['{}']
    shipped = common.load_data_file('templates.json')
    if spec == 'openai_imagenet_bare':
      return list(shipped['openai_imagenet']) + ['{}']
    return list(shipped[spec])
  templates = list(spec)
  if not templates:
    raise ValueError('templates must be a non-empty list')
  for t in templates:
    common.apply_template(t, 'x')  # validates the single '{}'
  return templates


def resolve_class_subset(spec) -> np.ndarray | None:
  """None, 'imagenet_a' / 'imagenet_r' (200 ImageNet indices, shipped) or a list → int array [K]."""
  if spec is None:
    return None
  if isinstance(spec, str):
    shipped = common.load_data_file('imagenet_subsets.json')
    if spec not in shipped:
      raise ValueError(f'unknown class subset {spec!r}; known: {sorted(shipped)} (or pass a list)')
    spec = shipped[spec]
  return np.asarray(spec, dtype=np.int64)


def class_embeddings(
  predictor,
  class_names: Sequence[Sequence[str]],
  templates: Sequence[str],
  rounds,
  *,
  batch_size: int = common.DEFAULT_BATCH_SIZE,
  show_progress: bool = False,
) -> np.ndarray:
  """float32 [C, D]: per class, the L2-normalised mean of L2-normalised embeddings of every template × alias."""
  texts, owner = [], []
  for c, aliases in enumerate(class_names):
    for alias in aliases:
      for t in templates:
        texts.append(common.apply_template(t, alias))
        owner.append(c)
  emb = common.embed_texts(predictor, texts, rounds, batch_size=batch_size, show_progress=show_progress)
  owner = np.asarray(owner)
  sums = np.zeros((len(class_names), emb.shape[1]), np.float64)
  np.add.at(sums, owner, emb)
  counts = np.bincount(owner, minlength=len(class_names))[:, None]
  return common.l2_normalize(sums / counts)


# ----------------------------------------------------------------------------------------------- metrics
def topk_hits(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
  """scores [N, C], labels int [N] → bool [N]: label among the k highest scores (k clipped to C)."""
  k = min(k, scores.shape[1])
  top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
  return (top == labels[:, None]).any(axis=1)


def mean_per_class_recall(predictions: np.ndarray, labels: np.ndarray) -> float:
  """CLIP_benchmark's mean_per_class_recall: the mean over classes present in `labels` of their recall."""
  classes = np.unique(labels)
  return float(np.mean([(predictions[labels == c] == c).mean() for c in classes]))


def real_hits(predictions: np.ndarray, label_sets: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
  """ReaL: predictions int [N], label sets → (hit bool [N], valid bool [N]); valid = non-empty set."""
  valid = np.array([len(s) > 0 for s in label_sets], bool)
  hit = np.array([int(p) in set(int(x) for x in s) for p, s in zip(predictions, label_sets)], bool)
  return hit & valid, valid


def labels_to_indices(labels: Sequence, class_names: Sequence[Sequence[str]]) -> np.ndarray:
  """Int labels pass through; string labels match a class name/alias (exact, then case-insensitive)."""
  lookup, lookup_lower = {}, {}
  for c, aliases in enumerate(class_names):
    for a in aliases:
      lookup.setdefault(a, c)
      lookup_lower.setdefault(a.lower(), c)
  out = []
  for lab in labels:
    if isinstance(lab, (int, np.integer)) and not isinstance(lab, bool):
      out.append(int(lab))
    elif isinstance(lab, str) and lab.lstrip('-').isdigit():
      out.append(int(lab))
    elif isinstance(lab, str) and (lab in lookup or lab.lower() in lookup_lower):
      out.append(lookup.get(lab, lookup_lower.get(lab.lower())))
    else:
      raise ValueError(f'label {lab!r} is neither a class index nor one of the class names')
  return np.asarray(out, np.int64)


# ----------------------------------------------------------------------------------------------- evaluator
@register('zeroshot')
class ZeroShotEvaluator:
  """Zero-shot classification; `run(predictor, rounds)` → one record per rounds value."""

  task = 'zeroshot_classification'
  default_class_names = None
  default_templates = 'openai_imagenet_bare'

  def __init__(
    self,
    name: str,
    data: Mapping,
    class_names=None,
    templates=None,
    label_key: str = 'label',
    real_labels_key: str | None = None,
    class_subset=None,
    image_key: str = 'image',
    pp_img: str | None = None,
    batch_size: int = common.DEFAULT_BATCH_SIZE,
    dataset: str | None = None,
    group_by: str | None = None,
    limit: int | None = None,
    model: str | None = None,
    language: str = 'en',
    show_progress: bool = True,
    **extra,
  ):
    common.check_keys(extra, self.extra_options(), f'evaluator {name!r} ({self.type_name})')
    class_names = class_names if class_names is not None else self.default_class_names
    if class_names is None:
      raise ValueError(f"evaluator {name!r}: 'class_names' is required (a shipped set name, a list or a JSON file)")
    self.name, self.data, self.dataset = name, dict(data), dataset or name
    self._from_data = class_names == 'from_data'
    self.class_names = None if self._from_data else resolve_class_names(class_names)
    self.templates = resolve_templates(templates if templates is not None else self.default_templates)
    self.class_subset = resolve_class_subset(class_subset)
    if self.class_names and self.class_subset is not None and self.class_subset.max() >= len(self.class_names):
      raise ValueError(f'class_subset index {self.class_subset.max()} >= {len(self.class_names)} classes')
    self.label_key, self.real_labels_key, self.image_key = label_key, real_labels_key, image_key
    self.pp_img, self.batch_size = pp_img, int(batch_size)
    self.group_by, self.limit = group_by, limit
    self.model, self.language, self.show_progress = model, language, show_progress
    self.options = dict(extra)

  @classmethod
  def extra_options(cls) -> tuple[str, ...]:
    return ()

  # -- hooks for subclasses (cultural.py)
  def group_names(self, values: list) -> list:
    """Values of the `group_by` field → group names (identity here)."""
    return [str(v) for v in values]

  def _fields(self) -> dict:
    fields = {'label': self.label_key} if self.label_key else {}
    if self.real_labels_key:
      fields['real'] = self.real_labels_key
    if self.group_by:
      fields['group'] = self.group_by
    return fields

  def run(self, predictor, rounds=None) -> list[dict]:
    rounds_list = common.as_rounds_list(rounds)
    if self._from_data and self.class_names is None:
      self.class_names = class_names_from_data(self.data, self.label_key)
    active_names = self.class_names if self.class_subset is None else [self.class_names[i] for i in self.class_subset]
    scores = {r: [] for r in rounds_list}
    class_emb = {}  # computed once per run, per rounds value
    labels, reals, groups, n_seen = [], [], [], 0
    for r in rounds_list:
      class_emb[r] = class_embeddings(
        predictor,
        active_names,
        self.templates,
        r,
        batch_size=self.batch_size,
        show_progress=self.show_progress,
      )
    batches = common.iterate_batches(
      self.data,
      fields=self._fields(),
      image_key=self.image_key,
      preprocess=common.image_preprocessor(predictor, self.pp_img),
      batch_size=self.batch_size,
      limit=self.limit,
    )
    for batch in common.progress(batches, f'{self.name}: images', enabled=self.show_progress):
      labels.extend(batch.get('label', []))
      n_seen += int(np.sum(batch['_mask']))
      reals.extend(batch.get('real', []))
      groups.extend(batch.get('group', []))
      for r in rounds_list:
        scores[r].append(common.embed_image_batch(predictor, batch, r) @ class_emb[r].T)
    if not n_seen:
      raise ValueError(f'evaluator {self.name!r}: dataset {self.data} yielded no examples')
    label_idx = labels_to_indices(labels, self.class_names) if self.label_key else None
    return [self._record(predictor, r, np.concatenate(scores[r]), label_idx, reals, groups) for r in rounds_list]

  def _record(self, predictor, r, scores, label_idx, reals, groups) -> dict:
    subset = self.class_subset
    to_full = (lambda idx: idx) if subset is None else (lambda idx: subset[idx])
    predictions = to_full(np.argmax(scores, axis=1))
    metrics = {'n': len(predictions)}
    if label_idx is not None:
      if subset is None:
        scored_labels = label_idx
      else:  # labels live in the full index space; map to subset positions (−1 = not in the subset)
        position = {int(c): i for i, c in enumerate(subset)}
        scored_labels = np.array([position.get(int(l), -1) for l in label_idx])
        if (scored_labels < 0).any():
          bad = label_idx[scored_labels < 0][:5].tolist()
          raise ValueError(f'{self.name}: labels {bad} are not in the class subset')
      hits1 = predictions == label_idx
      metrics['acc1'] = hits1.mean()
      metrics['acc5'] = topk_hits(scores, scored_labels, 5).mean()
      metrics['mean_per_class_recall'] = mean_per_class_recall(predictions, label_idx)
      if self.group_by:
        names = np.array(self.group_names(groups), dtype=object)
        for g in sorted(set(names.tolist())):
          metrics[f'acc1/{g}'] = hits1[names == g].mean()
    if self.real_labels_key:
      reals = [[] if s is None else ([s] if isinstance(s, int) else s) for s in reals]
      hit, valid = real_hits(predictions, reals)
      metrics['real_acc1'] = hit[valid].mean() if valid.any() else float('nan')
      metrics['real_n'] = int(valid.sum())
    return common.make_record(
      dataset=self.dataset,
      model=self.model or common.model_name(predictor),
      task=self.task,
      metrics=metrics,
      language=self.language,
      rounds=r,
    )
