"""Supervised classifier accuracy from `predictor.classify_logits(images, rounds) -> [N, C]`.

Metrics (CLIP_benchmark's names): acc1, acc5 and mean_per_class_recall against `label_key`; with `real_labels_key` also ImageNet ReaL top-1 (the prediction
is in the image's ReaL label set; images with an empty set are excluded, `real_n` counts the rest).
ImageNet val: TFDS imagenet2012 'validation'; ReaL: TFDS imagenet2012_real 'validation' with
label_key='original_label', real_labels_key='real_label'; v2: TFDS imagenet_v2 'test'. Local layout: data.jsonl
lines {"image": ..., "label": int, "real_labels": [int, ...]}.
Config: dict(type='classification', data=..., label_key='label', real_labels_key=None, pp_img=None,
batch_size=64, dataset=NAME).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from evaluators import common
from evaluators.registry import register
from evaluators.zeroshot import mean_per_class_recall, real_hits, topk_hits


@register('classification')
class ClassificationEvaluator:
  task = 'classification'

  def __init__(
    self,
    name: str,
    data: Mapping,
    label_key: str | None = 'label',
    real_labels_key: str | None = None,
    image_key: str = 'image',
    pp_img: str | None = None,
    batch_size: int = common.DEFAULT_BATCH_SIZE,
    dataset: str | None = None,
    limit: int | None = None,
    model: str | None = None,
    show_progress: bool = True,
  ):
    if not label_key and not real_labels_key:
      raise ValueError(f'evaluator {name!r}: set label_key and/or real_labels_key')
    self.name, self.data, self.dataset = name, dict(data), dataset or name
    self.label_key, self.real_labels_key, self.image_key = label_key, real_labels_key, image_key
    self.pp_img, self.batch_size = pp_img, int(batch_size)
    self.limit, self.model, self.show_progress = limit, model, show_progress

  def run(self, predictor, rounds=None) -> list[dict]:
    rounds_list = common.as_rounds_list(rounds)
    fields = {}
    if self.label_key:
      fields['label'] = self.label_key
    if self.real_labels_key:
      fields['real'] = self.real_labels_key
    logits = {r: [] for r in rounds_list}
    labels, reals = [], []
    batches = common.iterate_batches(
      self.data,
      fields=fields,
      image_key=self.image_key,
      preprocess=common.image_preprocessor(predictor, self.pp_img),
      batch_size=self.batch_size,
      limit=self.limit,
    )
    for batch in common.progress(batches, f'{self.name}: images', enabled=self.show_progress):
      labels.extend(batch.get('label', []))
      reals.extend(batch.get('real', []))
      mask = np.asarray(batch['_mask'])
      for r in rounds_list:
        logits[r].append(np.asarray(predictor.classify_logits(batch['image'], r), np.float32)[mask])
    if not any(len(v) for v in logits.values()) or not sum(len(x) for x in logits[rounds_list[0]]):
      raise ValueError(f'evaluator {self.name!r}: dataset {self.data} yielded no examples')
    records = []
    for r in rounds_list:
      scores = np.concatenate(logits[r])
      predictions = scores.argmax(1)
      metrics = {'n': len(predictions)}
      if self.label_key:
        y = np.asarray([int(v) for v in labels])
        metrics['acc1'] = float((predictions == y).mean())
        metrics['acc5'] = float(topk_hits(scores, y, 5).mean())
        metrics['mean_per_class_recall'] = mean_per_class_recall(predictions, y)
      if self.real_labels_key:
        hit, valid = real_hits(predictions, [[] if s is None else s for s in reals])
        metrics['real_acc1'] = float(hit[valid].mean()) if valid.any() else float('nan')
        metrics['real_n'] = int(valid.sum())
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
