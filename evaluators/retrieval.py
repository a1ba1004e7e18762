"""Image↔text retrieval Recall@K with several captions per image (COCO Karpathy 5k, Flickr30k 1k, ...).

image→text: an image is correct at K if ANY of its captions is among its K most similar captions;
text→image: a caption is correct at K if its image is among its K most similar images. Rank = number of
INCORRECT candidates scoring at least as high as the best correct one (ties count against the model, so a
constant embedding scores 0, not 1).

Config: dict(type='retrieval', data=dict(type='tfds', name='coco_captions', split='test') or
dict(type='jsonl', path=FOLDER), texts_key='captions/text' (TFDS COCO) or 'texts' (local: str or list; 'texts.fr'
selects one language of a per-language dict, flatten_texts=True pools all of them; a dict, number or null caption
is skipped and counted as metrics['skipped/<reason>'], the pipeline's rules in siglip_rins/data/fields.py),
pp_img=None, batch_size=64, ks=(1, 5, 10), dataset=NAME, limit=None).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from evaluators import common
from evaluators.registry import register

_ROW_CHUNK = 1024


def _ranks_of_best_match(queries: np.ndarray, keys: np.ndarray, match_lists: Sequence[np.ndarray]) -> np.ndarray:
  """queries [Q, D], keys [K, D]; match_lists[q] = indices of correct keys → int [Q] rank of the best one."""
  ranks = np.empty(len(queries), np.int64)
  for start in range(0, len(queries), _ROW_CHUNK):
    sims = queries[start : start + _ROW_CHUNK] @ keys.T  # [c, K]
    for row, q in enumerate(range(start, min(start + _ROW_CHUNK, len(queries)))):
      correct = sims[row, match_lists[q]]
      best = correct.max()
      ranks[q] = int((sims[row] >= best).sum() - (correct >= best).sum())
  return ranks


def retrieval_metrics(
  image_emb: np.ndarray, text_emb: np.ndarray, text_to_image: np.ndarray, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
  """image_emb [N, D], text_emb [M, D] (L2-normalised), text_to_image int [M] → {'text_retrieval_recall@K' (image→text), 'image_retrieval_recall@K' (text→image)} in [0, 1] (CLIP_benchmark's names).

  Every image needs at least one caption (else ValueError).
  """
  text_to_image = np.asarray(text_to_image, np.int64)
  n = len(image_emb)
  captions_of = [[] for _ in range(n)]
  for t, i in enumerate(text_to_image):
    captions_of[i].append(t)
  empty = [i for i, c in enumerate(captions_of) if not c]
  if empty:
    raise ValueError(f'images {empty[:5]} have no caption; every image needs at least one')
  i2t = _ranks_of_best_match(image_emb, text_emb, [np.asarray(c) for c in captions_of])
  t2i = _ranks_of_best_match(text_emb, image_emb, [np.asarray([i]) for i in text_to_image])
  metrics = {}
  for k in ks:
    metrics[f'text_retrieval_recall@{k}'] = float((i2t < k).mean())
  for k in ks:
    metrics[f'image_retrieval_recall@{k}'] = float((t2i < k).mean())
  return metrics


def caption_list(value, select: str | None = None, flatten: bool = False):
  """A caption field → (non-empty list of non-empty strings, None) or (None, reason) by the pipeline's rules
  (siglip_rins.data.fields: a string or a list of strings; a dict only with `select` or `flatten`)."""
  from siglip_rins.data import fields

  out = fields.text_values({'t': value}, 't', select=select, flatten=flatten)
  if fields.is_refused(out):
    return None, out
  caps = [c for c in out if c.strip()]
  return (caps, None) if caps else (None, 'empty_text')


def as_caption_list(value) -> list[str]:
  """A caption field (str or list of str) → non-empty list of non-empty strings ([] when refused)."""
  return caption_list(value)[0] or []


def collect_embeddings(
  evaluator, predictor, rounds_list, *, texts_field: str, extra_fields: Mapping = None, desc: str = 'images'
):
  """Reads the dataset once; returns (image_emb {rounds: [N, D]}, captions per image, extra field lists,
  image refs). Images without captions are skipped."""
  from siglip_rins.data.fields import split_text_key

  field, select = split_text_key(texts_field) if '/' not in texts_field else (texts_field, None)
  flatten = bool(getattr(evaluator, 'flatten_texts', False))
  fields = {'texts': field, **(extra_fields or {})}
  image_emb = {r: [] for r in rounds_list}
  captions, extras, refs = [], {k: [] for k in (extra_fields or {})}, []
  skipped = getattr(evaluator, 'skipped', None)
  if skipped is None:
    skipped = {}
  skipped.clear()
  batches = common.iterate_batches(
    evaluator.data,
    fields=fields,
    image_key=evaluator.image_key,
    preprocess=common.image_preprocessor(predictor, evaluator.pp_img),
    batch_size=evaluator.batch_size,
    limit=evaluator.limit,
  )
  for batch in common.progress(batches, f'{evaluator.name}: {desc}', enabled=evaluator.show_progress):
    parsed = [caption_list(t, select, flatten) for t in batch['texts']]
    for _, reason in parsed:
      if reason is not None:
        skipped[reason] = skipped.get(reason, 0) + 1
    keep = np.array([caps is not None for caps, _ in parsed], bool)
    for r in rounds_list:
      image_emb[r].append(common.embed_image_batch(predictor, batch, r)[keep])
    for j in np.flatnonzero(keep):
      captions.append(parsed[j][0])
      refs.append(batch['_image_ref'][j])
      for k in extras:
        extras[k].append(batch[k][j])
  if not captions:
    raise ValueError(
      f'evaluator {evaluator.name!r}: dataset {evaluator.data} has no image with a caption in field {texts_field!r}'
    )
  return {r: np.concatenate(v) for r, v in image_emb.items()}, captions, extras, refs


@register('retrieval')
class RetrievalEvaluator:
  """Image↔text retrieval; one record per rounds value with text_retrieval_recall@K and image_retrieval_recall@K."""

  task = 'zeroshot_retrieval'

  def __init__(
    self,
    name: str,
    data: Mapping,
    texts_key: str = 'texts',
    image_key: str = 'image',
    pp_img: str | None = None,
    batch_size: int = common.DEFAULT_BATCH_SIZE,
    ks: Sequence[int] = (1, 5, 10),
    dataset: str | None = None,
    limit: int | None = None,
    model: str | None = None,
    language: str = 'en',
    show_progress: bool = True,
    flatten_texts: bool = False,
  ):
    self.name, self.data, self.dataset = name, dict(data), dataset or name
    self.flatten_texts, self.skipped = bool(flatten_texts), {}
    self.texts_key, self.image_key = texts_key, image_key
    self.pp_img, self.batch_size = pp_img, int(batch_size)
    self.ks = tuple(int(k) for k in ks)
    if not self.ks or min(self.ks) < 1:
      raise ValueError(f'ks must be positive integers, got {ks!r}')
    self.limit, self.model, self.language = limit, model, language
    self.show_progress = show_progress

  def run(self, predictor, rounds=None) -> list[dict]:
    rounds_list = common.as_rounds_list(rounds)
    image_emb, captions, _, _ = collect_embeddings(self, predictor, rounds_list, texts_field=self.texts_key)
    flat = [c for caps in captions for c in caps]
    owner = np.repeat(np.arange(len(captions)), [len(c) for c in captions])
    records = []
    for r in rounds_list:
      text_emb = common.embed_texts(predictor, flat, r, batch_size=self.batch_size, show_progress=self.show_progress)
      metrics = retrieval_metrics(image_emb[r], text_emb, owner, self.ks)
      metrics.update(n_images=len(captions), n_texts=len(flat))
      metrics.update({f'skipped/{k}': v for k, v in sorted(self.skipped.items())})
      records.append(
        common.make_record(
          dataset=self.dataset,
          model=self.model or common.model_name(predictor),
          task=self.task,
          metrics=metrics,
          language=self.language,
          rounds=r,
        )
      )
    return records
