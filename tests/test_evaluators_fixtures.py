"""Shared fixtures for the evaluator tests: a real SentencePiece tokenizer trained on the fly, a planted
predictor whose outputs follow from pixel colours and token ids, and writers for the real local data layout
(PNG files + data.jsonl). Imported by the other tests/test_evaluators_*.py files."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import sentencepiece as spm
from PIL import Image

from siglip_rins.text.tokenizer import Tokenizer

# Concept words (lowercase: SigLIP canonicalisation lowercases) → concept index. Several scripts on purpose.
CONCEPT_WORDS = {
  'cat': 0,
  'ねこ': 0,
  'кошка': 0,
  'γάτα': 0,
  'बिल्ली': 0,
  'dog': 1,
  'いぬ': 1,
  'собака': 1,
  'σκύλος': 1,
  'कुत्ता': 1,
  'bird': 2,
  'とり': 2,
  'птица': 2,
  'πουλί': 2,
  'पक्षी': 2,
  'fish': 3,
  'さかな': 3,
  'рыба': 3,
  'ψάρι': 3,
  'मछली': 3,
  'horse': 4,
  'うま': 4,
  'лошадь': 4,
  'άλογο': 4,
  'घोड़ा': 4,
}
NUM_CONCEPTS = 5
PALETTE = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)]

_CORPUS = [
  'a photo of a thing',
  'the quick brown fox jumps over the lazy thing',
  'art of the small thing',
  'itap of a big thing',
  'a bad photo of the thing',
  'this is a picture in a video game',
] * 10


def make_tokenizer(extra_words=()) -> Tokenizer:
  """A real SentencePiece model (project Tokenizer) where every concept word is one piece."""
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(_CORPUS),
    model_writer=model,
    vocab_size=80,
    hard_vocab_limit=False,
    user_defined_symbols=list(CONCEPT_WORDS) + list(extra_words),
    pad_id=0,
    unk_id=1,
    bos_id=-1,
    eos_id=2,
    minloglevel=2,
  )
  return Tokenizer(model.getvalue())


class PlantedPredictor:
  """Image concept = the palette colour nearest to the mean pixel; text concept = the concept word whose piece
  occurs in the token ids. Embeddings are one-hot over NUM_CONCEPTS + 1 dims (last = "nothing recognised").
  `image_confusion` {true concept: reported concept} plants mistakes on the image side."""

  name = 'planted'

  def __init__(self, tokenizer: Tokenizer, text_len: int = 16, image_confusion=None, logprob_of_token=None):
    from siglip_rins.example_spec import ExampleSpec, ImageSpec, TextSpec

    self.tokenizer, self.text_len = tokenizer, text_len
    # 8x8 pixels; SigLIP-canonicalised text (the planted words are matched after canonicalisation).
    text = TextSpec('<in-memory>', text_len, eos='sticky', pad_value=tokenizer.pad_id, canonicalize=True)
    self.spec = ExampleSpec(image=ImageSpec(size=(8, 8)), text=text)
    self.temperature, self.bias = 10.0, -10.0
    self.image_confusion = dict(image_confusion or {})
    self.piece_to_concept = {}
    for word, concept in CONCEPT_WORDS.items():
      ids = tokenizer.encode_ids(word, canonicalize=False)
      self.piece_to_concept[ids[-1]] = concept
    self.logprob_of_token = logprob_of_token
    self.calls = {'embed_texts': 0, 'embed_images': 0}

  def image_concepts(self, images: np.ndarray) -> np.ndarray:
    mean = (np.asarray(images).mean(axis=(1, 2)) + 1.0) * 127.5  # [N, 3] in 0..255
    dist = ((mean[:, None, :] - np.asarray(PALETTE, np.float32)[None]) ** 2).sum(-1)
    concepts = dist.argmin(axis=1)
    return np.array([self.image_confusion.get(int(c), int(c)) for c in concepts])

  def _one_hot(self, idx: np.ndarray) -> np.ndarray:
    out = np.zeros((len(idx), NUM_CONCEPTS + 1), np.float32)
    out[np.arange(len(idx)), np.minimum(idx, NUM_CONCEPTS)] = 1.0
    return out

  def embed_images(self, images, rounds):
    assert images.dtype == np.float32 and images.ndim == 4 and images.min() >= -1 and images.max() <= 1
    self.calls['embed_images'] += 1
    return self._one_hot(self.image_concepts(images))

  def embed_texts(self, tokens, rounds):
    assert tokens.dtype == np.int32 and tokens.shape[1] == self.text_len
    self.calls['embed_texts'] += 1
    concepts = []
    for row in tokens:
      found = [self.piece_to_concept[t] for t in row.tolist() if t in self.piece_to_concept]
      concepts.append(found[0] if found else NUM_CONCEPTS)
    return self._one_hot(np.array(concepts))

  def classify_logits(self, images, rounds):
    return self._one_hot(self.image_concepts(images))[:, :NUM_CONCEPTS] * 5.0

  def lm_logprobs(self, tokens, rounds):
    """log p(token[t+1] | prefix) = logprob_of_token(token[t+1]) (a planted table; prefix ignored)."""
    tokens = np.asarray(tokens)
    return np.vectorize(self.logprob_of_token, otypes=[np.float32])(tokens[:, 1:])


def write_image(path, concept: int, size=(20, 14)) -> None:
  Image.new('RGB', size, PALETTE[concept]).save(path)


def write_dataset(folder, records, images=None) -> str:
  """Writes data.jsonl (+ PNG images: `images` maps file name → concept) into folder; returns folder."""
  os.makedirs(folder, exist_ok=True)
  for file_name, concept in (images or {}).items():
    write_image(os.path.join(folder, file_name), concept)
  with open(os.path.join(folder, 'data.jsonl'), 'w', encoding='utf-8') as f:
    for rec in records:
      f.write(json.dumps(rec, ensure_ascii=False) + '\n')
  return str(folder)


def test_planted_predictor_reads_colours_and_words(tmp_path):
  tok = make_tokenizer()
  pred = PlantedPredictor(tok, text_len=16)
  write_image(tmp_path / 'x.png', 3)
  from siglip_rins.data.preprocess import ImagePreprocessor

  img = ImagePreprocessor(pred.spec)(str(tmp_path / 'x.png'))[None]
  assert pred.image_concepts(img).tolist() == [3]
  emb = pred.embed_texts(tok.encode(['A photo of a DOG.', 'ψάρι!', 'nothing'], 16, canonicalize=True), None)
  assert emb.argmax(1).tolist() == [1, 3, NUM_CONCEPTS]
