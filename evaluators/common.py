"""Helpers every evaluator shares: data access, image preprocessing, batched embedding, records.

Data access lives in ONE function, `iterate_batches`.  Images are read through the run's example spec
(`image_preprocessor`: the training pipeline's own pp ops on the spec's eval pp), texts are tokenized with the
spec's text part (`tokenize`), so evaluation sees the pixels and ids training saw.  Records come from either
  * TFDS: `dict(type='tfds', name=..., split=..., data_dir=None)` (TensorFlow is imported lazily, only here), or
  * the documented local layout: `dict(type='jsonl', path=FOLDER_OR_FILE)` where FOLDER holds `data.jsonl`; each
    line is a JSON object; `"image"` is a path relative to the JSONL file; other fields are free
    (`texts`/`caption` str or list, `label` int or str, `language`, `country`, `region`, `income`, ...).
Model code never imports this module; it is evaluation-side only.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from siglip_rins import limits

try:  # tqdm is a dependency of several pinned packages; the bar is optional.
  from tqdm.auto import tqdm as _tqdm
except ImportError:  # pragma: no cover
  _tqdm = None

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')
DEFAULT_BATCH_SIZE = 64


# ----------------------------------------------------------------------------------------------- files
def load_data_file(filename: str) -> Any:
  """Loads one JSON file shipped in `evaluators/data/` (see data/SOURCES.md)."""
  path = os.path.join(DATA_DIR, filename)
  if not os.path.exists(path):
    raise FileNotFoundError(f'evaluator data file {path!r} is missing (see evaluators/data/SOURCES.md)')
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def resolve_jsonl(path: str) -> str:
  """A folder → `folder/data.jsonl`; a file → itself. Missing → FileNotFoundError naming what was expected."""
  path = os.path.expanduser(str(path))
  is_file = os.path.isfile(path) or (path.endswith('.jsonl') and not os.path.isdir(path))
  candidate = path if is_file else os.path.join(path, 'data.jsonl')
  if not os.path.isfile(candidate):
    raise FileNotFoundError(
      f'local evaluation dataset not found: expected {candidate!r} (a folder containing data.jsonl, or a '
      f'.jsonl file; one JSON object per line with "image" relative to the file)'
    )
  return candidate


def read_jsonl(path: str) -> list[dict]:
  """Reads the local layout; returns records with `"image"` made absolute. Bad lines → ValueError."""
  file = resolve_jsonl(path)
  base = os.path.dirname(os.path.abspath(file))
  records = []
  with open(file, encoding='utf-8') as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f'{file}:{lineno}: not a JSON object ({e})') from None
      if not isinstance(rec, dict):
        raise ValueError(f'{file}:{lineno}: expected a JSON object, got {type(rec).__name__}')
      if 'image' in rec:
        image = rec['image']
        if isinstance(image, str) and not os.path.isabs(image) and not limits.inside_folder(image, base):
          raise ValueError(
            f'{file}:{lineno}: image path {image!r} leaves the dataset folder {base} (relative paths must stay '
            'inside it; absolute paths are allowed)'
          )
        rec['image'] = os.path.join(base, image)
      records.append(rec)
  return records


# ----------------------------------------------------------------------------------------------- images
def image_preprocessor(predictor, pp_img: str | None = None):
  """The predictor's image reader: its ExampleSpec's eval pp (or `pp_img`, a big_vision-style override) run
  through the training pipeline's own pp ops (siglip_rins.data.preprocess); one per pp string, cached."""
  from siglip_rins.data.preprocess import ImagePreprocessor

  cache = predictor.__dict__.setdefault('_image_preprocessors', {})
  spec = getattr(predictor, 'spec', None)
  if pp_img is None:
    if spec is None or spec.image is None:
      raise ValueError('the predictor has no example spec with an image part; give pp_img')
    key = spec.image.eval_pp
  else:
    key = pp_img
  if key not in cache:
    cache[key] = ImagePreprocessor(spec if pp_img is None else pp_img)
  return cache[key]


# ----------------------------------------------------------------------------------------------- data access
def _get_path(example: Mapping, key: str) -> Any:
  """`'captions/text'` → example['captions']['text']; `'*'` → the whole example; missing → KeyError."""
  if key == '*':
    return example
  value: Any = example
  for part in key.split('/'):
    if not isinstance(value, Mapping) or part not in value:
      raise KeyError(f'field {key!r} not found in example with keys {sorted(example)}')
    value = value[part]
  return value


def _to_python(value: Any) -> Any:
  """TFDS numpy values → plain Python (bytes → str, arrays → lists, dicts recursively)."""
  if isinstance(value, Mapping):
    return {k: _to_python(v) for k, v in value.items()}
  if isinstance(value, bytes):
    return value.decode('utf-8')
  if isinstance(value, np.ndarray):
    return [_to_python(v) for v in value.tolist()] if value.dtype == object or value.ndim else value.item()
  if isinstance(value, (list, tuple)):
    return [_to_python(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  return value


def _raw_examples(data: Mapping) -> Iterator[dict]:
  kind = data.get('type', 'jsonl')
  if kind == 'jsonl':
    if 'path' not in data:
      raise ValueError(f"data config of type 'jsonl' needs a 'path', got {dict(data)}")
    yield from read_jsonl(data['path'])
  elif kind == 'tfds':
    if 'name' not in data or 'split' not in data:
      raise ValueError(f"data config of type 'tfds' needs 'name' and 'split', got {dict(data)}")
    import tensorflow_datasets as tfds  # lazily: only evaluation of TFDS sets needs TensorFlow

    builder = tfds.builder(data['name'], data_dir=data.get('data_dir'))
    try:
      ds = builder.as_dataset(split=data['split'], shuffle_files=False)
    except AssertionError as e:  # TFDS signals "not prepared" with an AssertionError
      raise FileNotFoundError(
        f"TFDS dataset {data['name']!r} split {data['split']!r} is not prepared in data_dir="
        f"{data.get('data_dir')!r} (expected {builder.data_dir!r}); prepare it with "
        f"`tfds build` or download_and_prepare() first ({e})"
      ) from None
    yield from tfds.as_numpy(ds)
  else:
    raise ValueError(f"data type must be 'jsonl' or 'tfds', got {kind!r}")


def iterate_batches(
  data: Mapping,
  *,
  fields: Mapping[str, str],
  image_key: str | None = 'image',
  preprocess=None,
  batch_size: int = DEFAULT_BATCH_SIZE,
  limit: int | None = None,
) -> Iterator[dict]:
  """THE data access function of the evaluators (one place to switch to the project pipeline).

  Yields dicts: `image` float32 [batch_size, H, W, 3] in [-1, 1] (when image_key is not None; kept under
  `_image_ref` too: the path for local files, the example index for TFDS), each requested output field
  as a Python list (str/int/list values; missing optional fields → None when the source key ends with '?'),
  and `_mask` bool [batch_size] (False on the padding rows of the last batch; padded rows repeat row 0).
  `fields` maps output name → source key ('captions/text' reads nested TFDS features).
  """
  buf: list[dict] = []

  def flush():
    n = len(buf)
    out: dict[str, Any] = {'_mask': np.array([True] * n + [False] * (batch_size - n))}
    for name in fields:
      out[name] = [b[name] for b in buf]
    if image_key is not None:
      imgs = np.stack([b['_img'] for b in buf] + [buf[0]['_img']] * (batch_size - n))
      out['image'] = imgs
      out['_image_ref'] = [b['_ref'] for b in buf]
    return out

  for index, ex in enumerate(_raw_examples(data)):
    if limit is not None and index >= limit:
      break
    item = {}
    for name, key in fields.items():
      optional = key.endswith('?')
      key = key.rstrip('?')
      try:
        item[name] = _to_python(_get_path(ex, key))
      except KeyError:
        if not optional:
          raise KeyError(
            f"dataset {dict(data)} example {index}: required field {key!r} missing; present: {sorted(ex)}"
          ) from None
        item[name] = None
    if image_key is not None:
      raw = _get_path(ex, image_key)
      if preprocess is None:
        raise ValueError('iterate_batches: give preprocess (common.image_preprocessor(predictor)) to read images')
      if isinstance(raw, str) and not os.path.isfile(raw):
        raise FileNotFoundError(f'image file {raw!r} listed in the dataset does not exist')
      item['_img'] = preprocess(raw)
      item['_ref'] = raw if isinstance(raw, str) else index
    buf.append(item)
    if len(buf) == batch_size:
      yield flush()
      buf = []
  if buf:
    yield flush()


# ----------------------------------------------------------------------------------------------- embedding
def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
  x = np.asarray(x, dtype=np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), eps)


def progress(iterable: Iterable, desc: str, total: int | None = None, enabled: bool = True) -> Iterable:
  """A tqdm bar on stderr when tqdm is present (disabled when `enabled` is False)."""
  if _tqdm is None or not enabled:
    return iterable
  return _tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True)


def tokenize(predictor, texts: Sequence[str]) -> np.ndarray:
  """Texts → int32 [N, max_len] as the run's pipeline tokenizes them (the predictor's ExampleSpec text part)."""
  spec = getattr(predictor, 'spec', None)
  if spec is None or spec.text is None:
    raise ValueError('the predictor has no example spec with a text part')
  ids = np.asarray(spec.text.encode(list(texts), tokenizer=predictor.tokenizer), dtype=np.int32)
  if ids.shape != (len(texts), spec.text.max_len):
    raise ValueError(f'tokenizer returned shape {ids.shape}, expected {(len(texts), spec.text.max_len)}')
  return ids


def embed_texts(
  predictor, texts: Sequence[str], rounds, *, batch_size: int = DEFAULT_BATCH_SIZE, show_progress: bool = False
) -> np.ndarray:
  """Texts → float32 [N, D] L2-normalised text embeddings; batches have a constant size (last one padded)."""
  texts = list(texts)
  if not texts:
    raise ValueError('embed_texts got no texts')
  chunks = []
  starts = range(0, len(texts), batch_size)
  for start in progress(starts, 'embed texts', total=len(starts), enabled=show_progress):
    chunk = texts[start : start + batch_size]
    n = len(chunk)
    chunk = chunk + [chunk[0]] * (batch_size - n)
    tokens = tokenize(predictor, chunk)
    chunks.append(np.asarray(predictor.embed_texts(tokens, rounds), np.float32)[:n])
  return l2_normalize(np.concatenate(chunks))


def embed_image_batch(predictor, batch: Mapping, rounds) -> np.ndarray:
  """One batch from `iterate_batches` → float32 [n_valid, D] L2-normalised image embeddings."""
  emb = np.asarray(predictor.embed_images(batch['image'], rounds), np.float32)
  return l2_normalize(emb[np.asarray(batch['_mask'])])


# ----------------------------------------------------------------------------------------------- records
def as_rounds_list(rounds) -> list:
  """`None` / int / sequence of ints → list of rounds values to evaluate (None = trained signature)."""
  if rounds is None or isinstance(rounds, (int, np.integer)):
    values = [rounds]
  else:
    values = list(rounds)
  for r in values:
    if r is not None and (not isinstance(r, (int, np.integer)) or r < 1):
      raise ValueError(f'rounds must be None or integers >= 1, got {rounds!r}')
  return [None if r is None else int(r) for r in values]


def make_record(
  *, dataset: str, model: str, task: str, metrics: Mapping[str, float], language: str = 'en', rounds=None
) -> dict:
  """One result in the CLIP_benchmark record layout, plus `rounds` (None = trained signature)."""
  return dict(
    dataset=dataset,
    model=model,
    task=task,
    metrics={k: float(v) for k, v in metrics.items()},
    language=language,
    rounds=rounds,
  )


def model_name(predictor, default: str = 'model') -> str:
  return str(getattr(predictor, 'name', default))


def check_keys(cfg: Mapping, allowed: Iterable[str], where: str) -> None:
  """Unknown config keys → ValueError naming them and the allowed ones."""
  unknown = sorted(set(cfg) - set(allowed))
  if unknown:
    raise ValueError(f'{where}: unknown option(s) {unknown}; allowed: {sorted(allowed)}')


def apply_template(template: str, name: str) -> str:
  """'a photo of a {}.' + 'cat' → 'a photo of a cat.' (literal braces are not supported in templates)."""
  if template.count('{}') != 1:
    raise ValueError(f"template {template!r} must contain exactly one '{{}}'")
  return template.replace('{}', name)


def token_lists(tokenizer, texts: Sequence[str], max_len: int, *, eos: str = 'none') -> list[list[int]]:
  """Texts → token id lists without padding (no canonicalisation: language-model text is kept as written).

  Uses the tokenizer's `encode` with max_len, then strips trailing `pad_id` (so a text ending in a token equal
  to pad_id loses it; SentencePiece models do not emit the pad piece).
  """
  ids = np.asarray(tokenizer.encode(list(texts), max_len, eos=eos, canonicalize=False))
  pad = int(getattr(tokenizer, 'pad_id', 0))
  out = []
  for row in ids.tolist():
    n = len(row)
    while n and row[n - 1] == pad:
      n -= 1
    out.append(row[:n])
  return out
