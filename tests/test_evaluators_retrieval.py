"""Retrieval (several captions per image) and XM3600 per-language retrieval."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_evaluators_fixtures import PlantedPredictor, make_tokenizer, write_dataset  # noqa: E402

import evaluators  # noqa: E402
from evaluators import report, retrieval, xm3600  # noqa: E402


@pytest.fixture(scope='module')
def tokenizer():
  return make_tokenizer()


CAPTIONS = {0: ['A cat on a mat.', 'the small cat'], 1: ['a dog running', 'Dog!'], 2: ['a bird', 'bird in the sky']}


def _caption_set(folder):
  records = [{'image': f'{c}.png', 'texts': caps} for c, caps in CAPTIONS.items()]
  return write_dataset(folder, records, {f'{c}.png': c for c in CAPTIONS})


def test_perfect_predictor_has_recall_one(tokenizer, tmp_path):
  ev = evaluators.build(
    'coco',
    dict(
      type='retrieval',
      data=dict(type='jsonl', path=_caption_set(tmp_path / 'r')),
      batch_size=2,
      show_progress=False,
    ),
  )
  (rec,) = ev.run(PlantedPredictor(tokenizer))
  assert rec['metrics']['n_images'] == 3 and rec['metrics']['n_texts'] == 6
  for key in tuple(f'{d}_retrieval_recall@{k}' for d in ('text', 'image') for k in (1, 5, 10)):
    assert rec['metrics'][key] == 1.0, key


def test_planted_confusion_gives_hand_computed_recalls(tokenizer, tmp_path):
  ev = evaluators.build(
    'coco',
    dict(type='retrieval', data=dict(type='jsonl', path=_caption_set(tmp_path / 'r')), show_progress=False),
  )
  # The bird image looks like a dog. i2t: cat/dog images rank their captions first; the bird image has its
  # captions (sim 0) tied with the 4 others → rank 4. t2i: cat captions rank 0; dog captions tie between the
  # dog and bird images → rank 1; bird captions tie with all 3 images → rank 2 (ties count against the model).
  (rec,) = ev.run(PlantedPredictor(tokenizer, image_confusion={2: 1}))
  m = rec['metrics']
  assert m['text_retrieval_recall@1'] == pytest.approx(2 / 3) and m['text_retrieval_recall@5'] == 1.0
  assert m['image_retrieval_recall@1'] == pytest.approx(2 / 6) and m['image_retrieval_recall@5'] == 1.0


def test_retrieval_metrics_constant_embeddings_score_zero_at_one():
  img = np.ones((4, 3), np.float32) / np.sqrt(3)
  m = retrieval.retrieval_metrics(img, img[[0, 0, 1, 2, 3]], np.array([0, 0, 1, 2, 3]), ks=(1,))
  assert m == {'text_retrieval_recall@1': 0.0, 'image_retrieval_recall@1': 0.0}
  with pytest.raises(ValueError, match=r'images \[1\] have no caption'):
    retrieval.retrieval_metrics(img[:2], img[:1], np.array([0]))


def test_xm3600_every_language_including_non_latin_scripts(tokenizer, tmp_path):
  words = {
    'en': ['cat', 'dog', 'bird'],
    'ja': ['ねこ', 'いぬ', 'とり'],
    'ru': ['кошка', 'собака', 'птица'],
    'el': ['γάτα', 'σκύλος', 'πουλί'],
    'hi': ['बिल्ली', 'कुत्ता', 'पक्षी'],
  }
  # Layout 1: one line per image with a language → captions dict (ja lacks the bird image).
  records = []
  for c in range(3):
    texts = {lg: [f'{w[c]} photo', f'the {w[c]}'] for lg, w in words.items() if not (lg == 'ja' and c == 2)}
    records.append({'image': f'{c}.png', 'texts': texts})
  folder = write_dataset(tmp_path / 'xm', records, {f'{c}.png': c for c in range(3)})
  ev = evaluators.build('xm', dict(type='xm3600', data=dict(type='jsonl', path=folder), show_progress=False))
  pred = PlantedPredictor(tokenizer, image_confusion={2: 1})
  recs = ev.run(pred, rounds=2)
  by_lang = {r['language']: r['metrics'] for r in recs}
  assert set(by_lang) == set(words) | {'avg'}
  assert by_lang['ja']['n_images'] == 2 and by_lang['en']['n_images'] == 3
  assert by_lang['ja']['text_retrieval_recall@1'] == 1.0  # the confused bird image is not in the ja gallery
  assert by_lang['en']['text_retrieval_recall@1'] == pytest.approx(2 / 3)
  mean = np.mean([by_lang[lg]['image_retrieval_recall@1'] for lg in words])
  assert by_lang['avg']['image_retrieval_recall@1'] == pytest.approx(mean) and by_lang['avg']['n_languages'] == 5

  table = xm3600.language_table(recs)
  rows = [line.split('|')[1].strip() for line in table.splitlines()[2:]]
  assert rows == ['el', 'en', 'hi', 'ja', 'ru', 'avg']
  assert 'text_retrieval_recall@1 (r=2)' in table and '66.7' in table

  md = report.markdown_report(recs)
  for lg in words:
    assert f'| {lg} |' in md


def test_xm3600_one_line_per_language_layout(tokenizer, tmp_path):
  records = [
    {'image': '0.png', 'language': 'en', 'texts': ['cat']},
    {'image': '0.png', 'language': 'ru', 'texts': ['кошка']},
    {'image': '1.png', 'language': 'en', 'texts': 'dog'},
    {'image': '1.png', 'language': 'ru', 'texts': ['собака']},
  ]
  folder = write_dataset(tmp_path / 'xm2', records, {'0.png': 0, '1.png': 1})
  ev = evaluators.build(
    'xm',
    dict(type='xm3600', data=dict(type='jsonl', path=folder), languages=['ru', 'en'], show_progress=False),
  )
  recs = ev.run(PlantedPredictor(tokenizer))
  assert [r['language'] for r in recs] == ['ru', 'en', 'avg']
  assert all(r['metrics']['text_retrieval_recall@1'] == 1.0 and r['metrics']['n_images'] == 2 for r in recs[:2])
  assert len(xm3600.XM3600_LANGUAGES) == 36
  bad = evaluators.build(
    'xm', dict(type='xm3600', data=dict(type='jsonl', path=folder), languages=['de'], show_progress=False)
  )
  with pytest.raises(ValueError, match=r"languages \['de'\] requested but absent"):
    bad.run(PlantedPredictor(tokenizer))
