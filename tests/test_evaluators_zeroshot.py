"""Zero-shot classification, registry and shipped class-name/template data."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_evaluators_fixtures import PlantedPredictor, make_tokenizer, write_dataset  # noqa: E402

import evaluators  # noqa: E402
from evaluators import zeroshot  # noqa: E402

NAMES = ['cat', 'dog', 'bird', 'fish', 'horse']


@pytest.fixture(scope='module')
def tokenizer():
  return make_tokenizer()


def _classification_set(folder, concepts, label_as_name=False, extra=None):
  images = {f'{i}.png': c for i, c in enumerate(concepts)}
  records = []
  for i, c in enumerate(concepts):
    rec = {'image': f'{i}.png', 'label': NAMES[c] if label_as_name else c}
    rec.update((extra or {}).get(i, {}))
    records.append(rec)
  return write_dataset(folder, records, images)


def test_registry_unknown_type_lists_known_types():
  with pytest.raises(ValueError, match=r"unknown type 'nope'.*'retrieval'.*'zeroshot'"):
    evaluators.build('x', dict(type='nope'))
  with pytest.raises(ValueError, match="no 'type'"):
    evaluators.build('x', dict(every=10))
  import ml_collections

  evals = ml_collections.ConfigDict(
    {'pets': dict(type='zeroshot', every=500, data=dict(type='jsonl', path='p'), class_names='pets', templates='pets')}
  )
  built = evaluators.build_all(evals)
  assert built['pets'].dataset == 'pets' and len(built['pets'].class_names) == 37
  assert built['pets'].templates == ['a photo of a {}, a type of pet.']


def test_shipped_class_names_and_templates():
  assert len(zeroshot.resolve_class_names('imagenet')) == 1000
  assert len(zeroshot.resolve_class_names('pets')) == 37
  cifar = [a[0] for a in zeroshot.resolve_class_names('cifar100')]
  assert len(cifar) == len(set(cifar)) == 100 and cifar == sorted(cifar)  # CIFAR-100 fine labels are sorted
  assert len(zeroshot.resolve_templates('openai_imagenet')) == 80
  bare = zeroshot.resolve_templates('openai_imagenet_bare')
  assert len(bare) == 81 and bare[-1] == '{}'
  assert len(zeroshot.resolve_templates('simple_imagenet')) == 7
  for subset in ('imagenet_a', 'imagenet_r'):
    idx = zeroshot.resolve_class_subset(subset)
    assert len(idx) == 200 and len(set(idx.tolist())) == 200 and idx.max() < 1000
  with pytest.raises(ValueError, match="unknown template set 'x'"):
    zeroshot.resolve_templates('x')
  with pytest.raises(ValueError, match="exactly one"):
    zeroshot.resolve_templates(['no placeholder'])


def test_class_embedding_is_normalised_mean_of_template_embeddings(tokenizer):
  pred = PlantedPredictor(tokenizer)
  # 'cat' templates hit concept 0; the second alias 'dog' hits concept 1 → mean of one-hots, normalised.
  emb = zeroshot.class_embeddings(pred, [['cat', 'dog'], ['bird']], ['a photo of a {}.', '{}'], None)
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(emb[0, :2], [np.sqrt(0.5)] * 2, rtol=1e-6)
  np.testing.assert_allclose(emb[1, 2], 1.0, rtol=1e-6)


def test_zeroshot_planted_confusion_gives_hand_computed_accuracy(tokenizer, tmp_path):
  concepts = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
  folder = _classification_set(tmp_path / 'ds', concepts, label_as_name=True)
  # Planted: every bird image looks like a dog, every horse like a fish → 6 of 10 correct.
  pred = PlantedPredictor(tokenizer, image_confusion={2: 1, 4: 3})
  ev = evaluators.build(
    'toy',
    dict(
      type='zeroshot',
      every=100,
      data=dict(type='jsonl', path=folder),
      class_names=NAMES,
      templates='simple_imagenet',
      batch_size=4,
      show_progress=False,
    ),
  )
  (rec,) = ev.run(pred)
  assert rec['metrics']['acc1'] == pytest.approx(6 / 10)
  assert rec['metrics']['n'] == 10
  assert rec['dataset'] == 'toy' and rec['task'] == 'zeroshot_classification' and rec['rounds'] is None
  # class embeddings once per rounds value: 5 classes x 7 templates = 35 texts = 9 batches of 4
  assert pred.calls['embed_texts'] == 9
  perfect = ev.run(PlantedPredictor(tokenizer), rounds=[1, 2])
  assert [r['rounds'] for r in perfect] == [1, 2] and all(r['metrics']['acc1'] == 1.0 for r in perfect)


def test_real_masking_excludes_empty_label_sets(tokenizer, tmp_path):
  concepts = [0, 1, 2, 3]
  extra = {
    0: {'real_labels': [0, 3]},  # prediction 0 in set → hit
    1: {'real_labels': [2]},  # prediction 1 not in set → miss
    2: {'real_labels': []},  # excluded
    3: {'real_labels': [3]},
  }  # hit
  folder = _classification_set(tmp_path / 'real', concepts, extra=extra)
  ev = evaluators.build(
    'real',
    dict(
      type='zeroshot',
      data=dict(type='jsonl', path=folder),
      class_names=NAMES,
      templates='bare',
      real_labels_key='real_labels',
      show_progress=False,
    ),
  )
  (rec,) = ev.run(PlantedPredictor(tokenizer))
  assert rec['metrics']['real_n'] == 3
  assert rec['metrics']['real_acc1'] == pytest.approx(2 / 3)
  assert rec['metrics']['acc1'] == 1.0


def test_class_subset_restricts_predictions(tokenizer, tmp_path):
  # Images of concept 2 (bird) confused with concept 1 (dog), but the subset only has {0, 2, 3}: dog is not
  # a candidate, the one-hot image embedding matches none of the subset classes → argmax ties at index 0.
  folder = _classification_set(tmp_path / 'sub', [0, 2, 3])
  ev = evaluators.build(
    'sub',
    dict(
      type='zeroshot',
      data=dict(type='jsonl', path=folder),
      class_names=NAMES,
      templates='bare',
      class_subset=[0, 2, 3],
      show_progress=False,
    ),
  )
  (rec,) = ev.run(PlantedPredictor(tokenizer))
  assert rec['metrics']['acc1'] == 1.0
  (rec,) = ev.run(PlantedPredictor(tokenizer, image_confusion={2: 1}))
  assert rec['metrics']['acc1'] == pytest.approx(2 / 3)


def test_missing_dataset_names_expected_file(tokenizer, tmp_path):
  ev = evaluators.build(
    'm',
    dict(
      type='zeroshot', data=dict(type='jsonl', path=str(tmp_path / 'absent')), class_names=NAMES, show_progress=False
    ),
  )
  with pytest.raises(FileNotFoundError, match=r'absent/data\.jsonl'):
    ev.run(PlantedPredictor(tokenizer))


def test_unknown_label_is_a_precise_error(tokenizer, tmp_path):
  folder = write_dataset(tmp_path / 'bad', [{'image': 'a.png', 'label': 'zebra'}], {'a.png': 0})
  ev = evaluators.build(
    'b',
    dict(
      type='zeroshot',
      data=dict(type='jsonl', path=folder),
      class_names=NAMES,
      templates='bare',
      show_progress=False,
    ),
  )
  with pytest.raises(ValueError, match="label 'zebra'"):
    ev.run(PlantedPredictor(tokenizer))


def test_unprepared_tfds_dataset_is_a_file_not_found_error(tokenizer, tmp_path):
  ev = evaluators.build(
    'c100',
    dict(
      type='zeroshot',
      data=dict(type='tfds', name='cifar100', split='test', data_dir=str(tmp_path / 'tfds')),
      class_names='cifar100',
      templates='cifar100',
      show_progress=False,
    ),
  )
  with pytest.raises(FileNotFoundError, match=r"TFDS dataset 'cifar100' split 'test' is not prepared"):
    ev.run(PlantedPredictor(tokenizer))
