"""Crossmodal-3600 (XM3600): retrieval per language, R@{1,5,10} both ways, plus the mean over languages.

For a language L the gallery is every image with at least one caption in L and the queries are the L captions.
Every language present in the data is evaluated (the real set has the 36 in `XM3600_LANGUAGES`).

Local layout (not in TFDS): data.jsonl with either one line per image,
  {"image": "img/x.jpg", "texts": {"en": ["a dog ..."], "de": ["ein Hund ..."], ...}}
or one line per (image, language): {"image": "img/x.jpg", "language": "de", "texts": ["ein Hund ..."]}.
Config: dict(type='xm3600', data=dict(type='jsonl', path=FOLDER), texts_key='texts', language_key='language',
pp_img=None, batch_size=64, ks=(1, 5, 10), languages=None (= all present)).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from evaluators import common
from evaluators.registry import register
from evaluators.retrieval import as_caption_list, retrieval_metrics

XM3600_LANGUAGES = (
  'ar',
  'bn',
  'cs',
  'da',
  'de',
  'el',
  'en',
  'es',
  'fa',
  'fi',
  'fil',
  'fr',
  'hi',
  'hr',
  'hu',
  'id',
  'it',
  'iw',
  'ja',
  'ko',
  'mi',
  'nl',
  'no',
  'pl',
  'pt',
  'quz',
  'ro',
  'ru',
  'sv',
  'sw',
  'te',
  'th',
  'tr',
  'uk',
  'vi',
  'zh',
)
AVERAGE = 'avg'


@register('xm3600')
class XM3600Evaluator:
  """Per-language retrieval; records: one per (language, rounds) plus language='avg' per rounds."""

  task = 'zeroshot_retrieval'

  def __init__(
    self,
    name: str,
    data: Mapping,
    texts_key: str = 'texts',
    language_key: str = 'language',
    image_key: str = 'image',
    pp_img: str | None = None,
    batch_size: int = common.DEFAULT_BATCH_SIZE,
    ks: Sequence[int] = (1, 5, 10),
    languages: Sequence[str] | None = None,
    dataset: str = 'xm3600',
    limit: int | None = None,
    model: str | None = None,
    show_progress: bool = True,
  ):
    self.name, self.data, self.dataset = name, dict(data), dataset
    self.texts_key, self.language_key, self.image_key = texts_key, language_key, image_key
    self.pp_img, self.batch_size = pp_img, int(batch_size)
    self.ks, self.languages = tuple(int(k) for k in ks), (list(languages) if languages else None)
    self.limit, self.model, self.show_progress = limit, model, show_progress

  def _read(self, predictor, rounds_list):
    """→ (image_emb {r: [N, D]} over distinct images, {language: [(image index, caption), ...]})."""
    fields = {'texts': self.texts_key, 'language': self.language_key + '?'}
    emb = {r: [] for r in rounds_list}
    index_of_ref, by_lang = {}, {}
    batches = common.iterate_batches(
      self.data,
      fields=fields,
      image_key=self.image_key,
      preprocess=common.image_preprocessor(predictor, self.pp_img),
      batch_size=self.batch_size,
      limit=self.limit,
    )
    for batch in common.progress(batches, f'{self.name}: images', enabled=self.show_progress):
      batch_emb = {r: common.embed_image_batch(predictor, batch, r) for r in rounds_list}
      for j, (texts, lang, ref) in enumerate(zip(batch['texts'], batch['language'], batch['_image_ref'])):
        if isinstance(texts, Mapping):
          per_lang = {str(k): as_caption_list(v) for k, v in texts.items()}
        elif lang is None:
          raise ValueError(
            f'{self.name}: example with image {ref!r} has captions but neither a '
            f'{self.language_key!r} field nor a language → captions dict'
          )
        else:
          per_lang = {str(lang): as_caption_list(texts)}
        if ref not in index_of_ref:
          index_of_ref[ref] = len(index_of_ref)
          for r in rounds_list:
            emb[r].append(batch_emb[r][j])
        for lg, caps in per_lang.items():
          by_lang.setdefault(lg, []).extend((index_of_ref[ref], c) for c in caps)
    if not by_lang:
      raise ValueError(f'{self.name}: dataset {self.data} has no captions')
    return {r: np.stack(v) for r, v in emb.items()}, by_lang

  def run(self, predictor, rounds=None) -> list[dict]:
    rounds_list = common.as_rounds_list(rounds)
    image_emb, by_lang = self._read(predictor, rounds_list)
    languages = self.languages or sorted(by_lang)
    missing = [lg for lg in languages if lg not in by_lang]
    if missing:
      raise ValueError(f'{self.name}: languages {missing} requested but absent; present: {sorted(by_lang)}')
    model = self.model or common.model_name(predictor)
    records = []
    for r in rounds_list:
      per_language = []
      for lg in common.progress(languages, f'{self.name}: languages', enabled=self.show_progress):
        pairs = by_lang[lg]
        images = sorted({i for i, _ in pairs})
        local = {g: k for k, g in enumerate(images)}
        text_emb = common.embed_texts(predictor, [c for _, c in pairs], r, batch_size=self.batch_size)
        metrics = retrieval_metrics(image_emb[r][images], text_emb, np.array([local[i] for i, _ in pairs]), self.ks)
        per_language.append(metrics)
        records.append(
          common.make_record(
            dataset=self.dataset,
            model=model,
            task=self.task,
            metrics={**metrics, 'n_images': len(images), 'n_texts': len(pairs)},
            language=lg,
            rounds=r,
          )
        )
      mean = {k: float(np.mean([m[k] for m in per_language])) for k in per_language[0]}
      mean['n_languages'] = len(per_language)
      records.append(
        common.make_record(dataset=self.dataset, model=model, task=self.task, metrics=mean, language=AVERAGE, rounds=r)
      )
    return records


def language_table(
  records: Sequence[Mapping],
  metrics: Sequence[str] = ('text_retrieval_recall@1', 'image_retrieval_recall@1'),
  dataset: str = 'xm3600',
  percent: bool = True,
) -> str:
  """Markdown table like the paper's Table 4: rows = languages (then 'avg'), columns = metric × rounds."""
  recs = [r for r in records if r['dataset'] == dataset]
  if not recs:
    raise ValueError(f'no records for dataset {dataset!r}')
  rounds_values = sorted({r['rounds'] for r in recs}, key=lambda v: (v is not None, v or 0))
  langs = sorted({r['language'] for r in recs} - {AVERAGE}) + (
    [AVERAGE] if any(r['language'] == AVERAGE for r in recs) else []
  )
  value = {(r['language'], r['rounds'], m): v for r in recs for m, v in r['metrics'].items()}
  header = ['Language'] + [f'{m} ({_rounds_label(rv)})' for m in metrics for rv in rounds_values]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for lg in langs:
    cells = [lg]
    for m in metrics:
      for rv in rounds_values:
        v = value.get((lg, rv, m))
        cells.append('–' if v is None else f'{100 * v:.1f}' if percent else f'{v:.4f}')
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def _rounds_label(rounds) -> str:
  return 'r=trained' if rounds is None else f'r={rounds}'
