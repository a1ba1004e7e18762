"""Built-in multilingual image-caption dataset: coloured shapes with captions in 9 languages.

Every example is a small RGB image (default 32x32) of 1 or 2 shapes on a grey background, drawn with PIL, and one
caption per language of `languages.LANGUAGES` (en de fr es ru el hi ja zh: Latin, Cyrillic, Greek, Devanagari and
CJK scripts). Everything is a pure function of `(split, index, seed, image_size)`: the same arguments give
byte-identical images and identical captions, and `generate(split, n, seed)` is a prefix of
`generate(split, m, seed)` for n <= m.

Content:
  * 8 colours x 6 shapes = 48 (colour, shape) classes; `label = colour_index * 6 + shape_index`, where the orders are
    `languages.COLOURS` and `languages.SHAPES`. `class_names(language)` lists them in label order.
  * sizes small / large; positions left, right, top, bottom, center (with a little jitter in place, size, colour).
  * one-shape images: any size and position. Two-shape images: the *main* object (the one `label` refers to,
    mentioned first in every caption) is large and on the left/top, right/bottom; the second is small and on the
    opposite side, and belongs to a different class.

Held out for zero-shot evaluation (`HELDOUT_PAIRS`): the 6 (colour, shape) pairs
    red star, green circle, blue triangle, yellow square, purple cross, orange diamond
never appear in the `train` split, neither as main nor as second object, although every colour and every shape
does appear there in other combinations. The `eval` split cycles its main object through all 48 classes
(shuffled per block of 48), so with >= 48 examples every class, held-out ones included, is present. By default
`train` images have 1 or 2 objects (half each) and `eval` images have exactly one object, so that zero-shot
classification of `eval` over `class_names()` has a single right answer.

Records (`generate`): dicts with
    image       uint8 [image_size, image_size, 3] numpy array (RGB)
    texts       list[str], one caption per language, parallel to `languages`
    languages   list[str], language codes
    label       int, class id of the main object's (colour, shape); label_name its English class name
    colour, shape, size, position   the main object's attributes (canonical English keys)
    num_objects 1 or 2;  objects: list of (colour, shape, size, position) tuples, main first
    heldout     bool, whether the main object's class is held out;  split, index
`write_jsonl_dataset` writes the same (minus `objects`/`heldout`/`index`) in the local JSONL layout of
docs/DESIGN.md: `out_dir/data.jsonl` with `"image": "images/000000.png"` relative to the JSONL file.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from siglip_rins.demo import languages as lang_lib
from siglip_rins.demo.languages import COLOURS, LANGUAGES, POSITIONS, SHAPES, SIZES

SPLITS = ("train", "eval")
HELDOUT_PAIRS: tuple[tuple[str, str], ...] = (
  ("red", "star"),
  ("green", "circle"),
  ("blue", "triangle"),
  ("yellow", "square"),
  ("purple", "cross"),
  ("orange", "diamond"),
)
NUM_CLASSES = len(COLOURS) * len(SHAPES)
DEFAULT_IMAGE_SIZE = 32

# Nominal RGB of each colour (a per-image jitter of +-12 is added).
_RGB = {
  "red": (215, 35, 35),
  "green": (40, 175, 60),
  "blue": (45, 85, 225),
  "yellow": (240, 220, 40),
  "purple": (145, 55, 195),
  "orange": (245, 140, 25),
  "pink": (250, 140, 200),
  "white": (245, 245, 245),
}
# Object centres as fractions of the image side, and radii per size.
_CENTRES = {"left": (0.27, 0.5), "right": (0.73, 0.5), "top": (0.5, 0.27), "bottom": (0.5, 0.73), "center": (0.5, 0.5)}
_RADIUS = {"small": 0.13, "large": 0.20}
_OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}
_SUPERSAMPLE = 4  # draw at 4x and box-downsample, for anti-aliased edges


def class_id(colour: str, shape: str) -> int:
  """Label of the (colour, shape) class: colour_index * len(SHAPES) + shape_index."""
  if colour not in COLOURS:
    raise ValueError(f"unknown colour {colour!r}; known: {', '.join(COLOURS)}")
  if shape not in SHAPES:
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
  return COLOURS.index(colour) * len(SHAPES) + SHAPES.index(shape)


def class_pair(label: int) -> tuple[str, str]:
  """(colour, shape) of class `label` (0 <= label < NUM_CLASSES)."""
  if not 0 <= int(label) < NUM_CLASSES:
    raise ValueError(f"label {label} out of range 0..{NUM_CLASSES - 1}")
  return COLOURS[label // len(SHAPES)], SHAPES[label % len(SHAPES)]


HELDOUT_LABELS: frozenset[int] = frozenset(class_id(c, s) for c, s in HELDOUT_PAIRS)
TRAIN_LABELS: tuple[int, ...] = tuple(k for k in range(NUM_CLASSES) if k not in HELDOUT_LABELS)


def class_names(language: str = "en") -> list[str]:
  """The NUM_CLASSES class names in label order, in `language` (e.g. 'red circle', 'roter Kreis')."""
  return [lang_lib.class_name(language, *class_pair(k)) for k in range(NUM_CLASSES)]


def class_prompts(language: str = "en") -> list[list[str]]:
  """Per class (label order), one-object captions over all sizes and positions (first template).

  For zero-shot classification in the style of the training captions: average the text embeddings of a class's
  prompts. Shape: NUM_CLASSES lists of len(SIZES) * len(POSITIONS) strings.
  """
  return [
    [lang_lib.caption(language, [(*class_pair(k), size, pos)], 0) for size in SIZES for pos in POSITIONS]
    for k in range(NUM_CLASSES)
  ]


def _check_args(split: str, count: int, seed: int, image_size: int, count_name: str = "num_examples") -> None:
  if split not in SPLITS:
    raise ValueError(f"unknown demo split {split!r}; known: {', '.join(SPLITS)}")
  for name, value, low in ((count_name, count, 0), ("seed", seed, 0), ("image_size", image_size, 8)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
      raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _sample_objects(
  split: str, index: int, seed: int, two_shape_prob: float, rng: np.random.Generator
) -> list[tuple[str, str, str, str]]:
  """1 or 2 (colour, shape, size, position) tuples, main first."""
  if split == "train":
    main_label = TRAIN_LABELS[rng.integers(len(TRAIN_LABELS))]
    second_pool = TRAIN_LABELS
  else:  # eval: cycle through all classes, shuffled per block of NUM_CLASSES.
    block, offset = divmod(index, NUM_CLASSES)
    order = np.random.default_rng([seed, SPLITS.index(split), 1 << 20, block]).permutation(NUM_CLASSES)
    main_label = int(order[offset])
    second_pool = tuple(range(NUM_CLASSES))
  main_colour, main_shape = class_pair(main_label)
  if rng.random() < two_shape_prob:
    position = ("left", "right", "top", "bottom")[rng.integers(4)]
    others = [k for k in second_pool if k != main_label]
    second = class_pair(others[rng.integers(len(others))])
    return [(main_colour, main_shape, "large", position), (*second, "small", _OPPOSITE[position])]
  size = SIZES[rng.integers(len(SIZES))]
  position = POSITIONS[rng.integers(len(POSITIONS))]
  return [(main_colour, main_shape, size, position)]


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
  if shape == "square":
    h = 0.82 * r
    return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
  if shape == "triangle":  # equilateral, pointing up, centroid at (cx, cy)
    rr = 1.1 * r
    return [(cx + rr * math.cos(a), cy + rr * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
  if shape == "star":  # five points, inner radius 0.45 r
    points = []
    for k in range(10):
      a = -math.pi / 2 + k * math.pi / 5
      rk = r * 1.05 if k % 2 == 0 else 0.45 * r
      points.append((cx + rk * math.cos(a), cy + rk * math.sin(a)))
    return points
  if shape == "diamond":
    return [(cx, cy - r), (cx + 0.72 * r, cy), (cx, cy + r), (cx - 0.72 * r, cy)]
  if shape == "cross":  # plus sign, arms 0.32 r half-thick
    a, t = 0.95 * r, 0.32 * r
    return [
      (cx - t, cy - a),
      (cx + t, cy - a),
      (cx + t, cy - t),
      (cx + a, cy - t),
      (cx + a, cy + t),
      (cx + t, cy + t),
      (cx + t, cy + a),
      (cx - t, cy + a),
      (cx - t, cy + t),
      (cx - a, cy + t),
      (cx - a, cy - t),
      (cx - t, cy - t),
    ]
  raise ValueError(f"unknown shape {shape!r}")


def _draw(objects: Sequence[tuple[str, str, str, str]], image_size: int, rng: np.random.Generator) -> np.ndarray:
  """uint8 [image_size, image_size, 3] RGB image of `objects` on a grey background."""
  canvas = image_size * _SUPERSAMPLE
  grey = int(rng.integers(25, 96))
  background = tuple(int(v) for v in np.clip(grey + rng.integers(-8, 9, size=3), 0, 255))
  image = Image.new("RGB", (canvas, canvas), background)
  draw = ImageDraw.Draw(image)
  for colour, shape, size, position in objects:
    fx, fy = _CENTRES[position]
    cx = (fx + rng.uniform(-0.03, 0.03)) * canvas
    cy = (fy + rng.uniform(-0.03, 0.03)) * canvas
    r = _RADIUS[size] * rng.uniform(0.9, 1.1) * canvas
    fill = tuple(int(v) for v in np.clip(np.array(_RGB[colour]) + rng.integers(-12, 13, size=3), 0, 255))
    if shape == "circle":
      draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
      draw.polygon(_polygon(shape, cx, cy, r), fill=fill)
  return np.asarray(image.reduce(_SUPERSAMPLE), dtype=np.uint8)


def make_example(
  split: str,
  index: int,
  seed: int = 0,
  image_size: int = DEFAULT_IMAGE_SIZE,
  *,
  two_shape_prob: float | None = None,
  languages: Sequence[str] = LANGUAGES,
) -> dict[str, Any]:
  """Example number `index` of `split` (a record as described in the module docstring)."""
  _check_args(split, index, seed, image_size, "index")
  if two_shape_prob is None:
    two_shape_prob = 0.5 if split == "train" else 0.0
  if not 0.0 <= two_shape_prob <= 1.0:
    raise ValueError(f"two_shape_prob must be in [0, 1], got {two_shape_prob!r}")
  rng = np.random.default_rng([seed, SPLITS.index(split), index])
  objects = _sample_objects(split, index, seed, two_shape_prob, rng)
  image = _draw(objects, image_size, rng)
  texts = [
    lang_lib.caption(code, objects, int(rng.integers(lang_lib.num_templates(code, len(objects))))) for code in languages
  ]
  colour, shape, size, position = objects[0]
  label = class_id(colour, shape)
  return {
    "image": image,
    "texts": texts,
    "languages": list(languages),
    "label": label,
    "label_name": lang_lib.class_name("en", colour, shape),
    "shape": shape,
    "colour": colour,
    "size": size,
    "position": position,
    "num_objects": len(objects),
    "objects": objects,
    "heldout": label in HELDOUT_LABELS,
    "split": split,
    "index": index,
  }


def generate(
  split: str,
  num_examples: int,
  seed: int = 0,
  image_size: int = DEFAULT_IMAGE_SIZE,
  *,
  two_shape_prob: float | None = None,
  languages: Sequence[str] = LANGUAGES,
) -> list[dict[str, Any]]:
  """`num_examples` records of `split` ('train' or 'eval'); see the module docstring for the fields.

  two_shape_prob: probability of a two-object image (default 0.5 for train, 0.0 for eval).
  languages: caption languages, a subset of `languages.LANGUAGES` (default all, in that order).
  """
  _check_args(split, num_examples, seed, image_size)
  for code in languages:
    if code not in LANGUAGES:
      raise ValueError(f"unknown demo language {code!r}; known: {', '.join(LANGUAGES)}")
  return [
    make_example(split, i, seed, image_size, two_shape_prob=two_shape_prob, languages=languages)
    for i in range(num_examples)
  ]


_JSONL_FIELDS = (
  "texts",
  "languages",
  "label",
  "label_name",
  "shape",
  "colour",
  "size",
  "position",
  "num_objects",
  "split",
)


def write_jsonl_dataset(
  out_dir: str | os.PathLike,
  split: str,
  num_examples: int,
  seed: int = 0,
  image_size: int = DEFAULT_IMAGE_SIZE,
  *,
  two_shape_prob: float | None = None,
  languages: Sequence[str] = LANGUAGES,
) -> pathlib.Path:
  """Writes `out_dir/images/NNNNNN.png` and `out_dir/data.jsonl` (local layout of docs/DESIGN.md).

  Each JSONL line: {"image": "images/000000.png", "texts": [...], "languages": [...], "label": int,
  "label_name": str, "shape", "colour", "size", "position": str, "num_objects": int, "split": str}.
  Use one folder per split (data.jsonl is overwritten). Returns the path of data.jsonl.
  """
  records = generate(split, num_examples, seed, image_size, two_shape_prob=two_shape_prob, languages=languages)
  out = pathlib.Path(out_dir)
  (out / "images").mkdir(parents=True, exist_ok=True)
  lines = []
  for record in records:
    relative = f"images/{record['index']:06d}.png"
    Image.fromarray(record["image"]).save(out / relative, format="PNG")
    row = {"image": relative, **{key: record[key] for key in _JSONL_FIELDS}}
    lines.append(json.dumps(row, ensure_ascii=False))
  jsonl = out / "data.jsonl"
  tmp = out / "data.jsonl.tmp"
  tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
  os.replace(tmp, jsonl)
  return jsonl


def all_captions(languages: Sequence[str] = LANGUAGES, word_sep: str = "") -> list[str]:
  """Every caption the generator can produce (all objects, templates and languages), in a fixed order.

  Used to train the demo tokenizer; about 2.6e5 strings for all languages. `word_sep` goes between words of
  languages written without spaces (see `languages.WORD_MARK`).
  """
  singles = [[(c, s, z, p)] for c in COLOURS for s in SHAPES for z in SIZES for p in POSITIONS]
  pairs = []
  for main in range(NUM_CLASSES):
    for other in range(NUM_CLASSES):
      if other != main:
        for p in _OPPOSITE:
          pairs.append([(*class_pair(main), "large", p), (*class_pair(other), "small", _OPPOSITE[p])])
  out = []
  for code in languages:
    for objects in singles + pairs:
      for t in range(lang_lib.num_templates(code, len(objects))):
        out.append(lang_lib.caption(code, objects, t, word_sep))
  return out
