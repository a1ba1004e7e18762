"""Data sources: raw records as a finite tf.data.Dataset for this host, plus how to parse and check them.

`build_source(data_cfg, process_index=0, process_count=1) -> Source`, `data_cfg.type` in:
  * 'jsonl'    path (a .jsonl file, or a folder holding data.jsonl); `"image"` is a path relative to the
               file; other fields become features of the same name (str, list of str, int, float).
               Caption fields (`text_keys`) are read by `fields.text_values`: a string or a list of strings;
               a dict, number, bool or null refuses the record (skipped/text_is_dict, text_not_string,
               text_is_null) unless `text_key='texts.fr'` selects a key inside a dict field (the feature
               keeps the top-level name, 'texts'; records without it: skipped/missing_language) or
               `flatten_texts=True` turns a dict language -> str|list into the list of all its strings
               (`languages=[...]` restricts it). See docs/data_layout.md.
  * 'tfrecord' files (a glob or list of globs) and optional `features` {name: kind}, kind in 'bytes'
               (scalar string), 'strings' (list of strings), 'int', 'ints', 'float', 'floats'.
               Default: {'image': 'bytes', 'texts': 'strings', 'label': 'int'}.
  * 'tfds'     name, split, data_dir (prepared beforehand; nothing is downloaded here). Images stay encoded.
  * 'mixture'  sources=[dict(weight=w, data=dict(type=...), pp=optional), ...]; the pipeline builds each
               component and mixes them with `mix_datasets` (see pipeline.py).
Sharding: a host reads disjoint records: whole files when there are at least as many files as hosts,
else every process_count-th record (`Dataset.shard`); jsonl slices its records; tfds uses even_splits.

Validity: `Source.parse` turns a raw element into features; `record_reason(features, source)` gives 0 for
a good record or a code from REASONS (1-based). Image key: `image_key` (default 'image' when present);
text keys: `text_keys` (default: the field of `text_key` if given, else those of 'texts', 'caption', 'text'
that the source has). A record whose image is empty, or whose texts are all empty or not valid UTF-8, is bad.
"""

import dataclasses
import glob as pyglob
import json
import math
import os
import pathlib
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from siglip_rins import limits
from siglip_rins.data import fields as fields_lib

REASONS = (
  "missing_field",
  "missing_image_file",
  "empty_image",
  "empty_text",
  "bad_utf8_text",
  "bad_json",
  "undecodable",
  "text_is_dict",
  "text_not_string",
  "text_is_null",
  "missing_language",
  "too_large",  # image above input.max_image_pixels (from its header) or input.max_image_bytes (siglip_rins.limits)
  "bad_image_path",  # a relative image path that resolves outside the dataset folder
)
REASON_CODE = {name: i + 1 for i, name in enumerate(REASONS)}
REASON_KEY = "_reason"  # int32 scalar a loader may attach (0 = fine)
DEFAULT_TEXT_KEYS = ("texts", "caption", "text")
TFRECORD_KINDS = ("bytes", "strings", "int", "ints", "float", "floats")
DEFAULT_TFRECORD_FEATURES = {"image": "bytes", "texts": "strings", "label": "int"}


@dataclasses.dataclass
class Source:
  """A finite dataset of raw records for this host.

  name: for messages; dataset: raw elements; parse: raw element -> dict of tensors (may raise on corrupt
  data); num_records: records in this host's shard if known; image_key / text_keys: checked fields.
  files_in_order: optional (seed int64 tensor) -> the same elements as `dataset`, its files read in an order
  drawn from the seed (training draws a seed per epoch, see pipeline.py; TFDS sources set it).
  """

  name: str
  dataset: tf.data.Dataset
  parse: Callable[[Any], dict]
  num_records: int | None
  image_key: str | None
  text_keys: tuple
  files_in_order: Callable[[Any], tf.data.Dataset] | None = None


def _get(cfg, key, default=None):
  return cfg.get(key, default) if hasattr(cfg, "get") else default


def build_source(data_cfg, *, process_index: int = 0, process_count: int = 1) -> Source:
  """Builds the Source for `data_cfg` (a dict or ConfigDict with `type`). See module docstring."""
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"bad host sharding: process_index={process_index}, process_count={process_count}")
  kind = _get(data_cfg, "type")
  builders = {"jsonl": _jsonl_source, "tfrecord": _tfrecord_source, "tfds": _tfds_source}
  if kind == "mixture":
    raise ValueError("a 'mixture' is not a single source; use mixture_components() (pipeline does)")
  if kind not in builders:
    raise ValueError(f"unknown data type {kind!r}; expected one of {sorted(builders) + ['mixture']}")
  return builders[kind](data_cfg, process_index, process_count)


def mixture_components(data_cfg) -> list[tuple[float, Any, str | None]]:
  """[(weight, component data cfg, component pp or None)] of a mixture cfg; weights normalised to 1."""
  sources = _get(data_cfg, "sources")
  if not sources:
    raise ValueError("mixture needs a non-empty 'sources' list of dict(weight=..., data=...)")
  out = []
  for i, comp in enumerate(sources):
    weight, data = _get(comp, "weight"), _get(comp, "data")
    if data is None or isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
      raise ValueError(f"mixture source {i}: needs data=dict(type=...) and a positive weight, got {comp!r}")
    if _get(data, "type") == "mixture":
      raise ValueError(f"mixture source {i}: nested mixtures are not supported")
    out.append((float(weight), data, _get(comp, "pp")))
  total = sum(w for w, _, _ in out)
  return [(w / total, d, p) for w, d, p in out]


def mix_datasets(datasets: list, weights: list[float], seed: int) -> tf.data.Dataset:
  """Weighted sampling over datasets (deterministic given seed); runs until all are exhausted."""
  if len(datasets) == 1:
    return datasets[0]
  return tf.data.Dataset.sample_from_datasets(datasets, weights=weights, seed=seed, stop_on_empty_dataset=False)


# ---------------------------------------------------------------- checks shared by all sources


def _bad_utf8(strings: tf.Tensor) -> tf.Tensor:
  fixed = tf.strings.unicode_transcode(strings, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD)
  return tf.reduce_any(tf.not_equal(fixed, strings))


def record_reason(
  features: dict, image_key: str | None, text_keys: tuple, max_pixels: int | None = None, max_bytes: int | None = None
) -> tf.Tensor:
  """int32 scalar: 0 for a good record, else REASON_CODE of the first problem found.  An encoded image above
  the caps (siglip_rins.limits; read from its header, not decoded) is 'too_large'."""
  reason = tf.cast(features.get(REASON_KEY, 0), tf.int32)
  checks = []
  if image_key is not None:
    image = features[image_key]
    if image.dtype == tf.string:
      empty = tf.reduce_all(tf.strings.length(image) == 0)
      checks.append((empty, "empty_image"))
      if image.shape.rank == 0:
        cap_px, cap_b = limits.max_image_pixels(max_pixels), limits.max_image_bytes(max_bytes)
        too_large = tf.cond(empty, lambda: tf.constant(False), lambda: limits.tf_image_too_large(image, cap_px, cap_b))
        checks.append((too_large, "too_large"))
  for key in text_keys:
    text = features[key]
    if text.dtype != tf.string:
      continue
    checks.append((tf.logical_not(tf.reduce_any(tf.strings.length(text) > 0)), "empty_text"))
    checks.append((_bad_utf8(text), "bad_utf8_text"))
  for bad, name in checks:
    reason = tf.where(tf.logical_and(tf.equal(reason, 0), bad), REASON_CODE[name], reason)
  return reason


# ---------------------------------------------------------------- jsonl


def _jsonl_file(path) -> pathlib.Path:
  if not path:
    raise ValueError("jsonl source needs path= (a .jsonl file or a folder with data.jsonl)")
  path = pathlib.Path(path).expanduser()
  if path.is_dir():
    path = path / "data.jsonl"
  if not path.is_file():
    raise FileNotFoundError(f"jsonl source: {str(path)!r} does not exist")
  return path


def _column_kind(values: list) -> str:
  """'string' | 'strings' | 'int' | 'float' for the present (non-None) values of one field."""
  present = [v for v in values if v is not None]
  if any(isinstance(v, list) for v in present):
    return "strings"
  if present and all(isinstance(v, (int, bool)) for v in present):
    return "int"
  if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
    return "float"
  return "string"


def _to_text(value) -> str:
  if isinstance(value, str):
    return value
  return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _utf8(text: str) -> bytes:
  return text.encode("utf-8", errors="surrogatepass")  # lone surrogates -> invalid UTF-8 -> counted


def _text_options(cfg):
  """(field of text_key or None, key path selected inside it or None, flatten_texts, languages or None)."""
  text_key, flatten, languages = _get(cfg, "text_key"), bool(_get(cfg, "flatten_texts", False)), _get(cfg, "languages")
  field, select = fields_lib.split_text_key(text_key) if text_key else (None, None)
  if isinstance(languages, str):
    languages = [languages]
  if languages is not None:
    languages = [str(x) for x in languages]
    if not flatten:
      raise ValueError("jsonl source: languages= restricts flatten_texts=True; set it (or use text_key='texts.fr')")
  if select and flatten:
    raise ValueError(f"jsonl source: give text_key={text_key!r} (select one key) or flatten_texts=True, not both")
  return field, select, flatten, languages


def _text_column(records, key, reasons, *, select, flatten, languages) -> tf.Tensor:
  """The caption column `key` (fields.text_values per record; refusals recorded in `reasons`): a string
  [N] when every kept value is a single string, else a ragged list of strings [N, None]."""
  values, scalar = [], True
  for i, record in enumerate(records):
    out = fields_lib.text_values(record, key, select=select, flatten=flatten, languages=languages)
    if fields_lib.is_refused(out):
      reasons[i] = reasons[i] or REASON_CODE[out]
      values.append([])
      continue
    raw = record[key]
    for part in select.split(".") if select else ():
      raw = raw[part]
    scalar = scalar and isinstance(raw, str)
    values.append(out)
  if scalar:
    return tf.constant([_utf8(v[0]) if v else b"" for v in values], tf.string)
  lists = [[_utf8(x) for x in v] for v in values]
  return tf.ragged.constant(lists, dtype=tf.string, ragged_rank=1, inner_shape=())


def _jsonl_source(cfg, process_index, process_count) -> Source:
  path = _jsonl_file(_get(cfg, "path"))
  image_key = _get(cfg, "image_key", "image")
  text_field, select, flatten, languages = _text_options(cfg)
  records, reasons = [], []
  with open(path, encoding="utf-8", errors="surrogateescape") as f:
    for line_no, line in enumerate(f):
      if not line.strip():
        continue
      if (line_no % process_count) != process_index:  # host shard by line
        continue
      try:
        record = json.loads(line)
        if not isinstance(record, dict):
          raise ValueError("not an object")
        reasons.append(0)
      except ValueError:
        record = {}
        reasons.append(REASON_CODE["bad_json"])
      records.append(record)
  keys = sorted({k for r in records for k in r})
  text_keys = _get(cfg, "text_keys", None)
  if text_keys:
    text_keys = tuple(text_keys) + ((text_field,) if text_field and text_field not in text_keys else ())
  else:
    text_keys = (text_field,) if text_field else tuple(k for k in DEFAULT_TEXT_KEYS if k in keys)
  if records:
    keys = sorted(set(keys) | set(text_keys))
  has_image = image_key in keys
  columns = {}
  max_bytes = limits.max_image_bytes()
  for key in keys:
    values = [r.get(key) for r in records]
    if key == image_key:
      paths = []
      for i, v in enumerate(values):
        if not isinstance(v, str) or not v:
          reasons[i] = reasons[i] or REASON_CODE["missing_field"]
          paths.append("")
          continue
        full = (path.parent / v) if not os.path.isabs(v) else pathlib.Path(v)
        if not os.path.isabs(v) and not limits.inside_folder(v, path.parent):
          reasons[i] = reasons[i] or REASON_CODE["bad_image_path"]
          paths.append("")
        elif not full.is_file():
          reasons[i] = reasons[i] or REASON_CODE["missing_image_file"]
          paths.append("")
        elif full.stat().st_size > max_bytes:  # a stat: never read a file above the byte cap
          reasons[i] = reasons[i] or REASON_CODE["too_large"]
          paths.append("")
        else:
          paths.append(str(full))
      columns["_image_path"] = tf.constant([_utf8(p) for p in paths], tf.string)
      continue
    if key in text_keys:
      columns[key] = _text_column(
        records, key, reasons, select=select if key == text_field else None, flatten=flatten, languages=languages
      )
      continue
    kind = _column_kind(values)
    if kind == "strings":
      lists = [[_utf8(_to_text(x)) for x in (v if isinstance(v, list) else ([] if v is None else [v]))] for v in values]
      columns[key] = tf.ragged.constant(lists, dtype=tf.string, ragged_rank=1, inner_shape=())
    elif kind == "int":
      columns[key] = tf.constant([-1 if v is None else int(v) for v in values], tf.int64)
    elif kind == "float":
      columns[key] = tf.constant([math.nan if v is None else float(v) for v in values], tf.float32)
    else:
      columns[key] = tf.constant([b"" if v is None else _utf8(_to_text(v)) for v in values], tf.string)
  columns[REASON_KEY] = tf.constant(reasons, tf.int32)
  dataset = tf.data.Dataset.from_tensor_slices(columns) if records else _empty_like(columns)

  def parse(element):
    features = dict(element)
    if "_image_path" in features:
      image_path = features.pop("_image_path")
      features[image_key] = tf.cond(
        tf.strings.length(image_path) > 0, lambda: tf.io.read_file(image_path), lambda: tf.constant(b"")
      )
    return features

  return Source(
    name=f"jsonl:{path}",
    dataset=dataset,
    parse=parse,
    num_records=len(records),
    image_key=image_key if has_image else None,
    text_keys=text_keys,
  )


def _empty_like(columns):
  return tf.data.Dataset.from_tensor_slices({REASON_KEY: tf.zeros([0], tf.int32)})


# ---------------------------------------------------------------- tfrecord


def _tfrecord_source(cfg, process_index, process_count) -> Source:
  patterns = _get(cfg, "files") or _get(cfg, "path")
  if not patterns:
    raise ValueError("tfrecord source needs files= (a glob or a list of globs)")
  patterns = [patterns] if isinstance(patterns, str) else list(patterns)
  files = sorted({f for p in patterns for f in pyglob.glob(os.path.expanduser(p))})
  if not files:
    raise FileNotFoundError(f"tfrecord source: no files match {patterns}")
  spec = dict(_get(cfg, "features", None) or DEFAULT_TFRECORD_FEATURES)
  feature_map = {}
  for name, kind in spec.items():
    if kind not in TFRECORD_KINDS:
      raise ValueError(f"tfrecord feature {name!r}: kind must be one of {TFRECORD_KINDS}, got {kind!r}")
    feature_map[name] = {
      "bytes": lambda: tf.io.FixedLenFeature([], tf.string, default_value=""),
      "int": lambda: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
      "float": lambda: tf.io.FixedLenFeature([], tf.float32, default_value=math.nan),
      "strings": lambda: tf.io.VarLenFeature(tf.string),
      "ints": lambda: tf.io.VarLenFeature(tf.int64),
      "floats": lambda: tf.io.VarLenFeature(tf.float32),
    }[kind]()
  image_key = _get(cfg, "image_key", "image")
  image_key = image_key if spec.get(image_key) == "bytes" else None
  text_keys = tuple(
    _get(cfg, "text_keys", None) or [k for k in DEFAULT_TEXT_KEYS if spec.get(k) in ("bytes", "strings")]
  )
  if len(files) >= process_count:
    files = files[process_index::process_count]
    dataset = tf.data.Dataset.from_tensor_slices(files).interleave(
      tf.data.TFRecordDataset,
      cycle_length=min(len(files), 8),
      block_length=1,
      num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True,
    )
  else:
    dataset = tf.data.TFRecordDataset(files).shard(process_count, process_index)

  def parse(serialized):
    parsed = tf.io.parse_single_example(serialized, feature_map)
    return {k: (v.values if isinstance(v, tf.sparse.SparseTensor) else v) for k, v in parsed.items()}

  return Source(
    name=f"tfrecord:{patterns}",
    dataset=dataset,
    parse=parse,
    num_records=None,
    image_key=image_key,
    text_keys=text_keys,
  )


# ---------------------------------------------------------------- tfds


def _tfds_source(cfg, process_index, process_count) -> Source:
  import tensorflow_datasets as tfds

  name, split, data_dir = _get(cfg, "name"), _get(cfg, "split", "train"), _get(cfg, "data_dir")
  if not name:
    raise ValueError("tfds source needs name=")
  where = f"tfds:{name} (split={split!r}, data_dir={data_dir!r})"
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # DatasetNotFoundError and friends
    raise FileNotFoundError(f"{where}: cannot open the dataset builder: {e}") from None
  if not tf.io.gfile.exists(os.path.join(builder.data_dir, "dataset_info.json")):
    raise FileNotFoundError(
      f"{where}: not prepared under {builder.data_dir}; prepare it beforehand "
      f"(e.g. `tfds build {name} --data_dir=...`), nothing is downloaded at run time"
    )
  if process_count > 1:
    split = tfds.even_splits(split, n=process_count)[process_index]
  image_key = _get(cfg, "image_key", "image")
  features = builder.info.features
  decoders = None
  if image_key in features and isinstance(features[image_key], tfds.features.Image):
    decoders = {image_key: tfds.decode.SkipDecoding()}
  else:
    image_key = None
  dataset = builder.as_dataset(
    split=split, shuffle_files=False, decoders=decoders, read_config=tfds.ReadConfig(add_tfds_id=False)
  )
  text_keys = tuple(_get(cfg, "text_keys", None) or [k for k in DEFAULT_TEXT_KEYS if k in features])
  try:
    num_records = int(builder.info.splits[split].num_examples)
  except Exception:
    num_records = None
  return Source(
    name=where,
    dataset=dataset,
    parse=dict,
    num_records=num_records,
    image_key=image_key,
    text_keys=text_keys,
    files_in_order=_tfds_shuffled_files(builder, split, decoders),
  )


def _tfds_shuffled_files(builder, split, decoders):
  """(seed) -> the split's records with its files (file instructions: file, skip, take) in a seeded order, or
  None when the files are not plain TFRecords.  The order is a function of the seed alone, so an epoch's file
  order is the same in a resumed run (tfds' own shuffle_files reshuffles per iteration of one dataset)."""
  try:
    if str(getattr(builder.info, "file_format", "tfrecord")).split(".")[-1].lower() != "tfrecord":
      return None
    instructions = list(builder.info.splits[split].file_instructions)
  except Exception:
    return None
  if len(instructions) < 2:
    return None
  files = tf.constant([str(fi.filename) for fi in instructions])
  skips = tf.constant([int(fi.skip) for fi in instructions], tf.int64)
  takes = tf.constant([int(fi.take) if int(fi.take) >= 0 else -1 for fi in instructions], tf.int64)
  features = builder.info.features

  def read(filename, skip, take):
    return tf.data.TFRecordDataset(filename).skip(skip).take(take)

  def in_order(seed):
    order = tf.data.Dataset.from_tensor_slices((files, skips, takes)).shuffle(len(instructions), seed=seed)
    records = order.flat_map(read)
    return records.map(lambda raw: features.deserialize_example(raw, decoders=decoders))

  return in_order


def default_seed_pair(*ints: int) -> np.ndarray:
  """A reproducible int32 [2] stateless seed from integers (pipeline seed, host, component...)."""
  return np.random.SeedSequence([int(i) & 0xFFFFFFFF for i in ints]).generate_state(2).astype(np.int32)
