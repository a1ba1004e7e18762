"""Cultural evaluations: per-income/per-region zero-shot and the few-shot geolocalisation probe."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_evaluators_fixtures import PlantedPredictor, make_tokenizer, write_dataset  # noqa: E402

import evaluators  # noqa: E402
from evaluators import cultural  # noqa: E402

NAMES = ['cat', 'dog', 'bird', 'fish', 'horse']


@pytest.fixture(scope='module')
def tokenizer():
  return make_tokenizer()


def test_income_buckets():
  assert cultural.income_bucket_names([10, 20, 30, 40, 50, 60, 70, 80]) == [
    'q1',
    'q1',
    'q2',
    'q2',
    'q3',
    'q3',
    'q4',
    'q4',
  ]
  assert cultural.income_bucket_names([50, 200, 1000, 5000], edges=[100, 1000]) == [
    '<100',
    '100-1000',
    '>=1000',
    '>=1000',
  ]
  with pytest.raises(ValueError, match="income value 'rich' is not a number"):
    cultural.income_bucket_names(['rich'])


def test_dollar_street_style_accuracy_by_income(tokenizer, tmp_path):
  # 4 images; the poorest two are confused (bird → dog, horse → fish), the richest two are right.
  concepts = [2, 4, 0, 1]
  incomes = [30, 80, 900, 4000]
  records = [
    {'image': f'{i}.png', 'label': NAMES[c], 'income': inc, 'country': 'x'}
    for i, (c, inc) in enumerate(zip(concepts, incomes))
  ]
  folder = write_dataset(tmp_path / 'ds', records, {f'{i}.png': c for i, c in enumerate(concepts)})
  ev = evaluators.build(
    'dollar_street',
    dict(
      type='cultural_zeroshot',
      data=dict(type='jsonl', path=folder),
      class_names=NAMES,
      templates='bare',
      group_by='income',
      income_edges=[100],
      show_progress=False,
    ),
  )
  (rec,) = ev.run(PlantedPredictor(tokenizer, image_confusion={2: 1, 4: 3}))
  assert rec['metrics']['acc1'] == 0.5
  assert rec['metrics']['acc1/<100'] == 0.0 and rec['metrics']['acc1/>=100'] == 1.0
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['bogus'\]"):
    evaluators.build('d', dict(type='cultural_zeroshot', data={}, class_names=NAMES, bogus=1))


def test_ridge_probe_recovers_planted_linear_signal():
  rng = np.random.default_rng(0)
  num_classes, dim, per_class = 4, 16, 40
  directions = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:num_classes] * 5.0  # orthogonal class signals
  labels = np.repeat(np.arange(num_classes), per_class)
  x = directions[labels] + rng.normal(size=(len(labels), dim))
  countries = np.array(['fr', 'in', 'jp', 'ng'])[labels]
  acc = cultural.fewshot_accuracy(x, countries, shots=10, seed=0, l2_reg=1.0)
  assert acc > 0.95
  shuffled = rng.permutation(countries)  # no signal → near chance (0.25)
  assert cultural.fewshot_accuracy(x, shuffled, shots=10, seed=0, l2_reg=1.0) < 0.5
  # big_vision's probe: standardised features plus a constant bias feature, targets in {-1, +1}; λ → 0 gives the
  # least-squares solution of that system.
  w, mean, std = cultural.fit_ridge_probe(x, labels, num_classes, 1e-6)
  np.testing.assert_allclose(mean, x.mean(0)) and np.testing.assert_allclose(std, x.std(0) + 1e-5)
  xs = np.pad((x - mean) / std, ((0, 0), (0, 1)), constant_values=cultural.BIAS_CONSTANT)
  expected = np.linalg.lstsq(xs, 2 * np.eye(num_classes)[labels] - 1, rcond=None)[0]
  np.testing.assert_allclose(w, expected, atol=1e-4)
  # The regulariser search never looks at the test examples and picks a λ of the grid; with a clean signal the
  # searched probe is as good as a fixed one.
  assert cultural.fewshot_accuracy(x, countries, shots=10, seed=0) > 0.95
  lam = cultural.select_l2_reg(x[:40], labels[:40] % 2, 2)
  assert lam in cultural.L2_GRID


def test_regulariser_search_prefers_strong_regularisation_on_noise_dimensions():
  """Few shots, many noisy dimensions: cross-validation must pick a large λ over a tiny one."""
  rng = np.random.default_rng(1)
  labels = np.repeat(np.arange(2), 6)
  x = rng.normal(size=(12, 200))
  x[:, 0] += 3.0 * (2 * labels - 1)  # one informative dimension among 200
  assert cultural.select_l2_reg(x, labels, 2) >= 1.0


def test_fewshot_geoloc_evaluator_mean_and_std_over_seeds(tokenizer, tmp_path):
  # Region follows the image concept (learnable); each region has 4 images.
  records, images = [], {}
  for i in range(12):
    concept = i % 3
    records.append({'image': f'{i}.png', 'region': ['africa', 'asia', 'europe'][concept]})
    images[f'{i}.png'] = concept
  folder = write_dataset(tmp_path / 'geo', records, images)
  ev = evaluators.build(
    'geode_region',
    dict(
      type='fewshot_geoloc',
      data=dict(type='jsonl', path=folder),
      target_key='region',
      shots=[1, 2],
      seeds=[0, 1, 2],
      show_progress=False,
    ),
  )
  (rec,) = ev.run(PlantedPredictor(tokenizer))
  assert rec['task'] == 'fewshot_geolocalization'
  assert rec['metrics']['1shot'] == 1.0 and rec['metrics']['2shot'] == 1.0 and rec['metrics']['1shot_std'] == 0
  assert rec['metrics']['num_classes'] == 3
  # With the europe images looking like asia ones, the probe cannot separate them: 1/3 of the test set wrong.
  (rec,) = ev.run(PlantedPredictor(tokenizer, image_confusion={2: 1}))
  assert rec['metrics']['2shot'] <= 2 / 3 + 1e-9
  with pytest.raises(ValueError, match='needs at least 2 classes'):
    cultural.fewshot_accuracy(np.eye(3), ['a', 'b', 'c'], shots=1, seed=0, l2_reg=1.0)


def test_class_names_from_the_datasets_own_labels(tokenizer, tmp_path):
  """Dollar Street / GeoDE: no package ships their class lists; class_names='from_data' reads the labels."""
  from evaluators import zeroshot

  records = [{'image': f'{i}.png', 'label': ['dog', 'cat', 'bird'][i % 3], 'region': 'x'} for i in range(6)]
  folder = write_dataset(tmp_path / 'geo', records, {f'{i}.png': [1, 0, 2][i % 3] for i in range(6)})
  assert zeroshot.class_names_from_data(dict(type='jsonl', path=folder)) == [['bird'], ['cat'], ['dog']]
  ev = evaluators.build(
    'geode',
    dict(type='cultural_zeroshot', data=dict(type='jsonl', path=folder), class_names='from_data', group_by='region'),
  )
  ev.show_progress = False
  (rec,) = ev.run(PlantedPredictor(tokenizer))
  assert rec['metrics']['acc1'] == 1.0 and rec['metrics']['n'] == 6
  bad = write_dataset(tmp_path / 'ints', [{'image': '0.png', 'label': 3}], {'0.png': 0})
  with pytest.raises(ValueError, match='string labels'):
    zeroshot.class_names_from_data(dict(type='jsonl', path=bad))
