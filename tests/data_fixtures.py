"""Small on-disk fixture datasets and a tiny SentencePiece model, for tests (no conftest; import this).

Stable API (other areas' tests import these; keep names and meanings):
  MULTILINGUAL_TEXTS                       list[str] captions in Latin, Cyrillic, Greek, CJK, Arabic, Devanagari
  make_image(height, width, seed=0, channels=3) -> np.uint8 [H, W, C]  smooth random image
  encode_image(array, fmt='jpeg') -> bytes   fmt in 'jpeg', 'png', 'gif', 'webp', 'bmp'
  write_jsonl_dataset(root, num_records=8, image_size=(24, 32), fmt='jpeg', captions=None, labels=None,
                      bad=(), extra_fields=None, filename='data.jsonl') -> pathlib.Path of the .jsonl
  write_tfrecord_dataset(root, num_records=8, num_shards=2, image_size=(24, 32), fmt='jpeg', captions=None,
                         labels=None, bad_image_indices=()) -> str glob of the shards
  write_sentencepiece_model(out_dir, vocab_size=300, name='tiny', bos_id=-1) -> pathlib.Path of the .model
  tokenizer_path_for_tests(tmp_dir) -> str: the shipped 'demo' model if present, else a tiny trained one
Bad-record kinds for `bad` (each appends one bad record after the good ones): 'bad_bytes' (not an image),
'truncated' (first bytes of a JPEG), 'zero_byte' (empty file), 'missing_file' (path that does not exist),
'no_caption' (record without the caption field), 'empty_caption' (caption ''), 'bad_json' (broken line).
"""

import io
import json
import pathlib

import numpy as np
from PIL import Image

MULTILINGUAL_TEXTS = [
  "A photo of a cat sitting on the_mat!",
  "Two dogs, running on the beach... (at sunset)",
  "Фотография красного автомобиля на улице.",
  "Η γάτα κάθεται στο ΠΑΡΆΘΥΡΟ.",
  "一只猫坐在窗台上。「可爱」！",
  "東京の夜景、とても綺麗です。",
  "قطة تجلس على النافذة، في الصباح؟",
  "एक बिल्ली खिड़की पर बैठी है। बहुत सुंदर!",
  "Ein Hund läuft über die Straße — schnell & fröhlich.",
  "  Multiple   spaces\tand\nnewlines  ",
  "Emoji 🐱 and symbols $100 + 5% <b>tag</b> ~ok~",
  "Mixed: Привет world 世界 नमस्ते",
]

_SP_CORPUS_EXTRA = [
  "a dog on the grass",
  "a red car parked in the street",
  "people walking in a park",
  "the sky is blue",
  "кошка спит на диване",
  "собака бежит по траве",
  "красивый закат над морем",
  "город ночью",
  "猫が好きです",
  "天空很蓝",
  "一只狗在草地上跑",
  "美丽的日落",
  "यह एक सुंदर दिन है",
  "कुत्ता घास पर दौड़ रहा है",
  "ο ουρανός είναι μπλε",
  "ένας σκύλος τρέχει",
  "السماء زرقاء",
  "كلب يجري على العشب",
]


def make_image(height: int, width: int, seed: int = 0, channels: int = 3) -> np.ndarray:
  """Smooth random uint8 image [height, width, channels] (compresses well, decodes deterministically)."""
  rng = np.random.default_rng(seed)
  y = np.linspace(0, 1, height)[:, None, None]
  x = np.linspace(0, 1, width)[None, :, None]
  phase = rng.uniform(0, 2 * np.pi, size=(1, 1, channels))
  image = 127.5 + 100 * np.sin(3 * x + 2 * y + phase) + rng.normal(0, 5, (height, width, channels))
  return np.clip(image, 0, 255).astype(np.uint8)


def encode_image(array: np.ndarray, fmt: str = "jpeg") -> bytes:
  """Encodes uint8 [H, W, C] (C in 1, 3, 4) with Pillow; fmt in 'jpeg', 'png', 'gif', 'webp', 'bmp'."""
  if array.ndim == 3 and array.shape[-1] == 1:
    array = array[..., 0]
  buf = io.BytesIO()
  pil_format = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP", "bmp": "BMP"}[fmt]
  kwargs = {"quality": 95} if pil_format == "JPEG" else {}
  if pil_format == "WEBP":
    kwargs = {"lossless": True}
  Image.fromarray(array).save(buf, format=pil_format, **kwargs)
  return buf.getvalue()


def _caption(i: int, captions) -> str | list:
  if captions is not None:
    return captions[i % len(captions)]
  return MULTILINGUAL_TEXTS[i % len(MULTILINGUAL_TEXTS)]


def write_jsonl_dataset(
  root,
  num_records: int = 8,
  image_size=(24, 32),
  fmt: str = "jpeg",
  captions=None,
  labels=None,
  bad=(),
  extra_fields=None,
  filename: str = "data.jsonl",
) -> pathlib.Path:
  """Writes `num_records` good records (images under root/images, captions under "texts", "label" = index
  or labels[i]) followed by one bad record per entry of `bad` (kinds in the module docstring).
  `extra_fields` (dict name -> list of values) adds fields to the good records. Returns the .jsonl path."""
  root = pathlib.Path(root)
  (root / "images").mkdir(parents=True, exist_ok=True)
  lines = []
  for i in range(num_records):
    name = f"images/{i:05d}.{fmt}"
    (root / name).write_bytes(encode_image(make_image(*image_size, seed=i), fmt))
    record = {
      "image": name,
      "texts": _caption(i, captions),
      "label": int(i if labels is None else labels[i % len(labels)]),
    }
    for key, values in (extra_fields or {}).items():
      record[key] = values[i % len(values)]
    lines.append(json.dumps(record, ensure_ascii=False))
  for j, kind in enumerate(bad):
    name = f"images/bad_{j:03d}.jpeg"
    record = {"image": name, "texts": f"bad record {kind}", "label": -2}
    if kind == "bad_bytes":
      (root / name).write_bytes(b"this is not an image at all" * 4)
    elif kind == "truncated":
      (root / name).write_bytes(encode_image(make_image(*image_size, seed=99), "jpeg")[:60])
    elif kind == "zero_byte":
      (root / name).write_bytes(b"")
    elif kind == "missing_file":
      record["image"] = f"images/does_not_exist_{j}.jpeg"
    elif kind in ("no_caption", "empty_caption"):
      (root / name).write_bytes(encode_image(make_image(*image_size, seed=98), "jpeg"))
      if kind == "no_caption":
        del record["texts"]
      else:
        record["texts"] = ""
    elif kind == "bad_json":
      lines.append('{"image": "x.jpeg", "texts": ')
      continue
    else:
      raise ValueError(f"unknown bad-record kind {kind!r}")
    lines.append(json.dumps(record, ensure_ascii=False))
  path = root / filename
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return path


def write_tfrecord_dataset(
  root,
  num_records: int = 8,
  num_shards: int = 2,
  image_size=(24, 32),
  fmt: str = "jpeg",
  captions=None,
  labels=None,
  bad_image_indices=(),
) -> str:
  """Writes tf.train.Examples with features image (bytes), texts (bytes list), label (int64) into
  `num_shards` files root/data-XXXXX-of-YYYYY.tfrecord (record i goes to shard i % num_shards).
  Records in `bad_image_indices` get non-image bytes. Returns the glob of the files."""
  import tensorflow as tf

  root = pathlib.Path(root)
  root.mkdir(parents=True, exist_ok=True)
  paths = [root / f"data-{s:05d}-of-{num_shards:05d}.tfrecord" for s in range(num_shards)]
  writers = [tf.io.TFRecordWriter(str(p)) for p in paths]
  for i in range(num_records):
    data = b"garbage" if i in bad_image_indices else encode_image(make_image(*image_size, seed=i), fmt)
    caption = _caption(i, captions)
    texts = caption if isinstance(caption, list) else [caption]
    label = int(i if labels is None else labels[i % len(labels)])
    example = tf.train.Example(
      features=tf.train.Features(
        feature={
          "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
          "texts": tf.train.Feature(bytes_list=tf.train.BytesList(value=[t.encode("utf-8") for t in texts])),
          "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        }
      )
    )
    writers[i % num_shards].write(example.SerializeToString())
  for w in writers:
    w.close()
  return str(root / "data-*.tfrecord")


def write_sentencepiece_model(out_dir, vocab_size: int = 300, name: str = "tiny", bos_id: int = -1) -> pathlib.Path:
  """Trains a tiny multilingual SentencePiece model (unigram, pad=0, eos=1, unk=2, bos `bos_id`, default
  disabled) on canonicalised MULTILINGUAL_TEXTS and a few more sentences; takes well under a second."""
  import sentencepiece as spm
  from siglip_rins.text.canonicalize import canonicalize

  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  corpus = out_dir / f"{name}_corpus.txt"
  sentences = [canonicalize(t) for t in MULTILINGUAL_TEXTS + _SP_CORPUS_EXTRA]
  corpus.write_text("\n".join(sentences * 3) + "\n", encoding="utf-8")
  spm.SentencePieceTrainer.train(
    input=str(corpus),
    model_prefix=str(out_dir / name),
    vocab_size=vocab_size,
    model_type="unigram",
    character_coverage=1.0,
    pad_id=0,
    eos_id=1,
    unk_id=2,
    bos_id=bos_id,
    hard_vocab_limit=False,
    minloglevel=2,
    num_threads=1,
  )
  return out_dir / f"{name}.model"


def tokenizer_path_for_tests(tmp_dir) -> str:
  """The shipped demo tokenizer if it exists, else a tiny model trained into tmp_dir."""
  from siglip_rins.text.tokenizer import REPO_TOKENIZER_DIR, SHIPPED_MODELS

  shipped = REPO_TOKENIZER_DIR / SHIPPED_MODELS["demo"]
  if shipped.is_file():
    return str(shipped)
  path = pathlib.Path(tmp_dir) / "tiny.model"
  return str(path if path.is_file() else write_sentencepiece_model(tmp_dir))
