"""Report writing (several rounds in one report) and supervised classifier accuracy."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_evaluators_fixtures import PlantedPredictor, make_tokenizer, write_dataset  # noqa: E402

import evaluators  # noqa: E402
from evaluators import report  # noqa: E402

NAMES = ['cat', 'dog', 'bird', 'fish', 'horse']


class RoundsPredictor(PlantedPredictor):
  """More recursion rounds → fewer planted mistakes (r=1: birds and horses wrong; r=2: horses; r>=3: none)."""

  def embed_images(self, images, rounds):
    self.image_confusion = {1: {2: 1, 4: 3}, 2: {4: 3}}.get(rounds, {})
    return super().embed_images(images, rounds)


@pytest.fixture()
def dataset(tmp_path):
  concepts = [0, 1, 2, 3, 4]
  records = [{'image': f'{i}.png', 'label': c} for i, c in enumerate(concepts)]
  return write_dataset(tmp_path / 'ds', records, {f'{i}.png': c for i, c in enumerate(concepts)})


def test_rounds_land_as_columns_of_one_report(dataset, tmp_path):
  pred = RoundsPredictor(make_tokenizer())
  ev = evaluators.build(
    'toy',
    dict(
      type='zeroshot',
      data=dict(type='jsonl', path=dataset),
      class_names=NAMES,
      templates='bare',
      show_progress=False,
    ),
  )
  out = tmp_path / 'out'
  report.write_report(ev.run(pred, rounds=[1, 2]), str(out))
  json_path, md_path = report.write_report(ev.run(pred, rounds=3), str(out))  # merged into the same report
  records = json.load(open(json_path))
  assert sorted((r['rounds'], r['metrics']['acc1']) for r in records) == [(1, 0.6), (2, 0.8), (3, 1.0)]
  md = open(md_path).read()
  header = next(line for line in md.splitlines() if line.startswith('| dataset'))
  assert header.split('|')[4:7] == [' r=1 ', ' r=2 ', ' r=3 ']
  top1_row = next(line for line in md.splitlines() if '| acc1 |' in line)
  assert [c.strip() for c in top1_row.split('|')[4:7]] == ['0.6000', '0.8000', '1.0000']
  # Re-running a rounds value replaces its record instead of duplicating it.
  report.write_report(ev.run(RoundsPredictor(make_tokenizer()), rounds=3), str(out))
  assert len(json.load(open(json_path))) == 3
  with pytest.raises(ValueError, match=r"record 0 lacks \['rounds'\]"):
    report.write_report([{'dataset': 'd', 'model': 'm', 'task': 't', 'metrics': {}, 'language': 'en'}], str(out))


def test_classifier_top1_and_real(tmp_path):
  concepts = [0, 1, 2, 3]
  records = [
    {'image': f'{i}.png', 'label': c, 'real_labels': rl}
    for i, (c, rl) in enumerate(zip(concepts, [[0], [3], [], [2, 3]]))
  ]
  folder = write_dataset(tmp_path / 'cls', records, {f'{i}.png': c for i, c in enumerate(concepts)})
  ev = evaluators.build(
    'imagenet',
    dict(
      type='classification',
      data=dict(type='jsonl', path=folder),
      real_labels_key='real_labels',
      batch_size=3,
      show_progress=False,
    ),
  )
  (rec,) = ev.run(PlantedPredictor(make_tokenizer(), image_confusion={1: 2}))
  assert rec['metrics']['acc1'] == pytest.approx(3 / 4)  # the dog image is classified as bird
  assert rec['metrics']['real_n'] == 3 and rec['metrics']['real_acc1'] == pytest.approx(2 / 3)
  assert rec['task'] == 'classification'
