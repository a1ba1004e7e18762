"""One reading of an example: the image and text preprocessing of a run, defined once.

A run's `config.input.pp` (big_vision's pp language, `siglip_rins/data/pp.py`) is the one place where a config
says how an example becomes model inputs.  `from_config(config)` reads it, after every `--config.*` override,
into an `ExampleSpec`:

  image: size (H, W), resize method and antialias, value range, and `eval_pp`: the deterministic version of the
         training image ops (random crops become the usual resize_small(size / 0.875) + central_crop, flips are
         dropped), or `config.input.eval_image_pp` when a config gives one.
  text:  tokenizer (name or path, and the sha256 of its model bytes), vocab size, max_len, eos mode, pad id
         (resolved to an integer), lower / canonicalize, taken from the pp's `tokenize` op.

The spec is recorded in the workdir (`example_spec.json`), copied into exported models, and is what training,
in-training and standalone evaluation, `load_exported` / `classify` / `retrieve`, `export-hf` and the big_vision
import read.  Evaluators and exported models preprocess images by running `spec.image.eval_pp` through the
training pipeline's own pp ops (`siglip_rins.data.preprocess`), and tokenize with `spec.text.encode`, which gives
the same ids as the pipeline's `tokenize` op (tested).

Text convention (big_vision SigLIP): captions are tokenized with a sticky EOS and padded with the EOS id
(`tokenize(..., eos="sticky", pad_value=1)` with the T5/c4_en layout pad=0, eos=1, unk=2), so the text tower's
last position -- the pooled one -- reads EOS for every caption, short or truncated.  `check_text_pooling` warns
when a two-tower config does otherwise.

Derived values (`finalize`): `config.input.image_size`, `config.input.text_len`, `config.input.tokenizer` and
the text tower's `vocab_size` are filled from the spec; a value a config sets that disagrees with its pp, and a
tokenizer whose vocabulary differs from the embedding table, are refused with one line naming both numbers.

This module is pure Python (no TensorFlow); the tokenizer is read with sentencepiece.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Mapping, Optional

SPEC_FILE = "example_spec.json"
SPEC_VERSION = 1
# Image ops whose first argument (or `size`) sets the model's input size, in the order they may appear.
_SIZE_OPS = ("resize", "inception_crop", "random_crop", "central_crop", "decode_jpeg_and_inception_crop")
_RANDOM_OPS = ("flip_lr", "inception_crop", "random_crop", "randaug", "mixup")
_IMAGE_KEYS = ("image",)


def _size_pair(size, what: str) -> tuple[int, int]:
  if isinstance(size, int) and not isinstance(size, bool):
    size = (size, size)
  if not (
    isinstance(size, (list, tuple))
    and len(size) == 2
    and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
  ):
    raise ValueError(f"{what} must be a positive int or (height, width), got {size!r}")
  return int(size[0]), int(size[1])


def size_pair(size, what: str = "size") -> tuple[int, int]:
  """int s -> (s, s); (h, w) -> (h, w); anything else -> ValueError naming `what`."""
  return _size_pair(size, what)


# --------------------------------------------------------------------------------------------- image
@dataclasses.dataclass(frozen=True)
class ImageSpec:
  """How an image becomes the model's input.  `eval_pp` is a pp string from encoded bytes to float32 [H, W, 3]."""

  size: tuple[int, int]
  resize_method: str = "bilinear"
  antialias: bool = False
  value_range: tuple[float, float] = (-1.0, 1.0)
  eval_pp: str = ""
  key: str = "image"

  def __post_init__(self):
    object.__setattr__(
      self, "size", _size_pair(tuple(self.size) if isinstance(self.size, list) else self.size, "image size")
    )
    object.__setattr__(self, "value_range", tuple(float(v) for v in self.value_range))
    if not self.eval_pp:
      object.__setattr__(self, "eval_pp", default_image_pp(self))

  def pp(self, decode: bool = True) -> str:
    """The evaluation pp; without `decode` for already-decoded uint8 [H, W, 3] input."""
    if decode:
      return self.eval_pp
    ops = [op for op in _split(self.eval_pp) if not op.strip().startswith("decode")]
    return "|".join(ops)

  def to_dict(self) -> dict:
    return dict(
      size=list(self.size),
      resize_method=self.resize_method,
      antialias=bool(self.antialias),
      value_range=list(self.value_range),
      eval_pp=self.eval_pp,
      key=self.key,
    )

  @classmethod
  def from_dict(cls, d: Mapping) -> "ImageSpec":
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known})


def default_image_pp(image: ImageSpec) -> str:
  h, w = image.size
  lo, hi = image.value_range
  aa = ", antialias=True" if image.antialias else ""
  return f'decode|resize(({h}, {w}), method="{image.resize_method}"{aa})|value_range({lo:g}, {hi:g})'


# --------------------------------------------------------------------------------------------- text
@dataclasses.dataclass(frozen=True)
class TextSpec:
  """How a caption becomes token ids int32 [max_len] (the pp's `tokenize` op, resolved)."""

  tokenizer: str
  max_len: int
  eos: str = "sticky"
  pad_value: int = 0
  lower: bool = False
  canonicalize: bool = False
  vocab_size: Optional[int] = None
  tokenizer_sha256: Optional[str] = None
  eos_id: Optional[int] = None
  add_bos: bool = False

  def pp(self, inkey: str = "texts", outkey: str = "labels", model: Optional[str] = None) -> str:
    """A `tokenize` op string equal to this spec (for pp strings of evaluators)."""
    return (
      f'tokenize(max_len={self.max_len}, model="{model or self.tokenizer}", eos="{self.eos}", '
      f"pad_value={self.pad_value}, lower={self.lower}, canonicalize={self.canonicalize}, add_bos={self.add_bos}, "
      f'inkey="{inkey}", outkey="{outkey}")'
    )

  def get_tokenizer(self):
    from siglip_rins.text.tokenizer import get_tokenizer

    return get_tokenizer(self.tokenizer)

  def encode(self, texts, tokenizer=None):
    """Strings -> int32 [N, max_len], the ids the pipeline's tokenize op gives (pure Python)."""
    tok = tokenizer or self.get_tokenizer()
    kw = dict(lower=True) if self.lower else {}
    return tok.encode(
      list(texts), self.max_len, eos=self.eos, canonicalize=self.canonicalize, pad_value=self.pad_value, **kw
    )

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping) -> "TextSpec":
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in known})


# --------------------------------------------------------------------------------------------- spec
@dataclasses.dataclass(frozen=True)
class ExampleSpec:
  image: Optional[ImageSpec]
  text: Optional[TextSpec]
  train_pp: str = ""

  def to_dict(self) -> dict:
    return dict(
      version=SPEC_VERSION,
      image=None if self.image is None else self.image.to_dict(),
      text=None if self.text is None else self.text.to_dict(),
      train_pp=self.train_pp,
    )

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False)

  @classmethod
  def from_dict(cls, d: Mapping) -> "ExampleSpec":
    if not isinstance(d, Mapping):
      raise ValueError(f"example spec must be a JSON object, got {type(d).__name__}")
    version = d.get("version", SPEC_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version > SPEC_VERSION:
      raise ValueError(f"example spec version {version!r} is newer than this siglip_rins reads ({SPEC_VERSION})")
    image = d.get("image")
    text = d.get("text")
    return cls(
      image=None if not image else ImageSpec.from_dict(image),
      text=None if not text else TextSpec.from_dict(text),
      train_pp=str(d.get("train_pp", "")),
    )

  @classmethod
  def from_json(cls, text: str) -> "ExampleSpec":
    try:
      return cls.from_dict(json.loads(text))
    except json.JSONDecodeError as e:
      raise ValueError(f"example spec is not valid JSON: {e}") from None

  def differences(self, other: "ExampleSpec") -> list[str]:
    """Field-by-field differences (ignoring train_pp), as 'image.size: (32, 32) != (64, 64)'."""
    out = []
    for part in ("image", "text"):
      a, b = getattr(self, part), getattr(other, part)
      if (a is None) != (b is None):
        out.append(f"{part}: {a is not None} != {b is not None}")
        continue
      if a is None:
        continue
      for f in dataclasses.fields(a):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if va != vb and f.name not in ("tokenizer",):
          out.append(f"{part}.{f.name}: {va!r} != {vb!r}")
    return out


# --------------------------------------------------------------------------------------------- parsing
def _split(pp: str) -> list[str]:
  from siglip_rins.data.pp import split_top_level  # pure Python

  return [p for p in split_top_level(pp) if p.strip()]


def _parse(pp: str):
  from siglip_rins.data import pp as pp_lib  # pure Python (the op modules, which need TF, are not loaded)

  return pp_lib.parse(pp)


def _op_key(spec, default="image") -> str:
  kw = dict(spec.kwargs)
  return kw.get("key") or kw.get("inkey") or default


def _kwargs(spec, names: tuple) -> dict:
  kw = dict(spec.kwargs)
  for name, value in zip(names, spec.args):
    kw.setdefault(name, value)
  return kw


_TOKENIZE_ARGS = ("max_len", "eos", "model", "lower", "sample_if_multi", "pad_value", "add_bos")


def _text_from_op(spec, where: str, require_tokenizer: bool = True) -> TextSpec:
  kw = _kwargs(spec, _TOKENIZE_ARGS)
  if "max_len" not in kw:
    raise ValueError(f"{where}: tokenize needs max_len")
  model = kw.get("model", "c4_en")
  eos = kw.get("eos", "sticky")
  lower = bool(kw.get("lower", True))
  canonicalize = bool(kw.get("canonicalize", False))
  from siglip_rins.text.tokenizer import get_tokenizer

  try:
    tok = get_tokenizer(model)
  except FileNotFoundError as e:
    if require_tokenizer:
      raise FileNotFoundError(f"{where}: {e}") from None
    pad = kw.get("pad_value")  # shapes only (flops, eval_shape): the tokenizer file is not needed
    return TextSpec(
      tokenizer=str(model),
      max_len=int(kw["max_len"]),
      eos=str(eos),
      pad_value=pad if isinstance(pad, int) else 0,
      lower=lower,
      canonicalize=canonicalize,
    )
  pad_value = kw.get("pad_value", "<pad>")
  if isinstance(pad_value, str):
    pad_id = tok.piece_to_id(pad_value)  # as the tokenize op resolves it (unknown pieces give the unk id)
  elif pad_value is None:
    pad_id = tok.pad_id
  else:
    pad_id = int(pad_value)
  return TextSpec(
    tokenizer=str(model),
    max_len=int(kw["max_len"]),
    eos=str(eos),
    pad_value=int(pad_id),
    lower=lower,
    canonicalize=canonicalize,
    vocab_size=int(tok.vocab_size),
    tokenizer_sha256=hashlib.sha256(tok.model_proto).hexdigest(),
    eos_id=int(tok.eos_id),
    add_bos=bool(kw.get("add_bos", False)),
  )


def _eval_image_ops(specs) -> tuple[list[str], dict]:
  """Deterministic image ops of a training pp and what they say about size/method/range."""
  ops, info = [], {}
  for spec in specs:
    name = spec.name
    if name in ("tokenize", "tok", "choice", "keep", "drop", "copy", "onehot", "lower", "canonicalize", "flatten"):
      continue
    if _op_key(spec) not in _IMAGE_KEYS and name != "decode":
      continue
    kw = dict(spec.kwargs)
    if name in ("inception_crop", "random_crop", "decode_jpeg_and_inception_crop"):
      if name == "decode_jpeg_and_inception_crop":
        ops.append("decode")
      size = spec.args[0] if spec.args else kw.get("size", kw.get("crop_size"))
      if size is not None:
        h, w = _size_pair(size, f"pp op {name!r} size")
        # The evaluation counterpart of a random crop (big_vision / ImageNet convention).
        ops.append(f"resize_small({int(round(min(h, w) / 0.875))})")
        ops.append(f"central_crop(({h}, {w}))")
        info["size"] = (h, w)
        info.setdefault("resize_method", kw.get("method", "bilinear"))
      continue
    if name in _RANDOM_OPS:
      continue
    ops.append(spec.to_string())
    if name == "resize":
      size = spec.args[0] if spec.args else kw.get("size")
      info["size"] = _size_pair(size, "pp op 'resize' size")
      info["resize_method"] = spec.args[1] if len(spec.args) > 1 else kw.get("method", "bilinear")
      info["antialias"] = bool(spec.args[2] if len(spec.args) > 2 else kw.get("antialias", False))
    elif name == "central_crop":
      size = spec.args[0] if spec.args else kw.get("crop_size", kw.get("size"))
      if size is not None:
        info["size"] = _size_pair(size, "pp op 'central_crop' size")
    elif name == "value_range":
      lo = spec.args[0] if spec.args else kw.get("vmin", -1)
      hi = spec.args[1] if len(spec.args) > 1 else kw.get("vmax", 1)
      if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
        info["value_range"] = (float(lo), float(hi))
  return ops, info


def from_pp(
  pp: str, *, eval_image_pp: Optional[str] = None, where: str = "config.input.pp", require_tokenizer: bool = True
) -> ExampleSpec:
  """The ExampleSpec of a training pp string (see module docstring).  Without `require_tokenizer`, a tokenizer
  file that cannot be found leaves the text part's vocab_size unknown (enough for shapes and FLOPs)."""
  specs = _parse(pp)
  text = None
  for spec in specs:
    if spec.name == "tokenize":
      text = _text_from_op(spec, where, require_tokenizer)
      break
    if spec.name == "tok":  # big_vision's newer op: no lowercasing; `length` None gives unpadded ids (max_len 0)
      kw = _kwargs(spec, ("model", "length"))
      eos = {"no": "none", "yes": "yes", "sticky": "sticky"}.get(kw.get("eos", "no"), "none")
      tokenize = type(spec)(
        "tokenize",
        (),
        tuple(
          sorted(
            dict(
              max_len=int(kw.get("length") or 0),
              model=kw["model"],
              eos=eos,
              lower=False,
              add_bos=kw.get("bos", "no") == "yes",
            ).items()
          )
        ),
      )
      text = _text_from_op(tokenize, where, require_tokenizer)
      break
  image = None
  has_image = any(s.name == "decode" or (s.name in _SIZE_OPS and _op_key(s) in _IMAGE_KEYS) for s in specs)
  if has_image or eval_image_pp:
    ops, info = _eval_image_ops(specs)
    if eval_image_pp:
      e_ops, e_info = _eval_image_ops(_parse(eval_image_pp))
      info, ops = e_info, [eval_image_pp]
    if "size" not in info:
      raise ValueError(
        f"{where}: cannot tell the image size from the pp; give a resize(...) or crop op with a size, "
        f"or config.input.eval_image_pp"
      )
    image = ImageSpec(
      size=info["size"],
      resize_method=str(info.get("resize_method", "bilinear")),
      antialias=bool(info.get("antialias", False)),
      value_range=info.get("value_range", (-1.0, 1.0)),
      eval_pp="|".join(ops),
    )
  return ExampleSpec(image=image, text=text, train_pp=pp)


def _input_pp(inp: Mapping) -> Optional[str]:
  pp = inp.get("pp")
  if pp:
    return pp
  if inp.get("pp_img") or inp.get("pp_txt"):  # big_vision's split form (image ops, then text ops)
    return "|".join(p for p in (inp.get("pp_img"), inp.get("pp_txt")) if p)
  data = inp.get("data") or {}
  for comp in data.get("sources", []) or []:  # a mixture whose components carry their own pp
    if comp.get("pp"):
      return comp["pp"]
  return None


def from_config(config, require_tokenizer: bool = True) -> ExampleSpec:
  """The ExampleSpec of a run config (after overrides); see module docstring."""
  inp = config.get("input") or {}
  pp = _input_pp(inp)
  if not pp:
    raise ValueError("config.input.pp is missing: the example spec is read from the training pp string")
  return from_pp(pp, eval_image_pp=inp.get("eval_image_pp") or None, require_tokenizer=require_tokenizer)


def _text_vocab_key(config) -> tuple[Any, str]:
  """(the ConfigDict holding the embedding table's vocab_size, its key) of the config's model, or (None, '')."""
  model = config.get("model") or {}
  if model.get("name") == "two_towers" and model.get("text") is not None:
    return model.text, "vocab_size"
  if model.get("name") == "decoder":
    return model, "vocab_size"
  return None, ""


def finalize(config, require_tokenizer: bool = True) -> ExampleSpec:
  """Derives the spec and fills the derived input/model keys in place (module docstring).  Returns the spec.

  require_tokenizer=False (shape-only uses: FLOPs, eval_shape) accepts a tokenizer file that is not on this
  machine when the model's vocab_size is given."""
  spec = from_config(config, require_tokenizer)
  inp = config.input
  derived = {}
  if spec.image is not None:
    derived["image_size"] = spec.image.size
  if spec.text is not None:
    if spec.text.max_len:  # 0: unpadded ids (LM documents, packed)
      derived["text_len"] = spec.text.max_len
    derived["tokenizer"] = spec.text.tokenizer
  for key, value in derived.items():
    given = inp.get(key)
    if given is None:
      continue
    same = _size_pair(given, f"config.input.{key}") == value if key == "image_size" else given == value
    if not same:
      raise ValueError(
        f"config.input.{key}={given!r} disagrees with config.input.pp ({value!r}); the pp is what the model "
        f"sees: change the pp (or drop config.input.{key}, which is derived from it)"
      )
  with inp.ignore_type():
    for key, value in derived.items():
      inp[key] = value[0] if key == "image_size" and value[0] == value[1] else value
  node, key = _text_vocab_key(config)
  if spec.text is not None and node is not None:
    table = node.get(key)
    if spec.text.vocab_size is None:
      if table is None:
        raise ValueError(
          f"the model's vocab_size is unset and tokenizer {spec.text.tokenizer!r} is not on this machine to derive it"
        )
    elif table is None:
      with node.ignore_type():
        node[key] = spec.text.vocab_size
    elif int(table) != spec.text.vocab_size:
      raise ValueError(
        f"tokenizer {spec.text.tokenizer!r} has {spec.text.vocab_size} pieces but the model's embedding table "
        f"has vocab_size={table}; leave the model's vocab_size unset to derive it from the tokenizer"
      )
  return spec


def check_text_pooling(config, spec: ExampleSpec) -> Optional[str]:
  """A warning line when a two-tower model's pooled (last) text position would not read EOS, else None."""
  model = config.get("model") or {}
  if model.get("name") != "two_towers" or spec.text is None or model.get("text") is None:
    return None
  t = spec.text
  if t.eos == "sticky" and t.pad_value == t.eos_id:
    return None
  return (
    f"warning: text tokenize(eos={t.eos!r}, pad_value={t.pad_value}) with eos id {t.eos_id}: the text tower "
    f"pools the last position, which then reads PAD for short captions; big_vision SigLIP uses "
    f'eos="sticky", pad_value=<eos id> so it reads EOS'
  )


# --------------------------------------------------------------------------------------------- files
def save(spec: ExampleSpec, directory) -> None:
  from etils import epath

  (epath.Path(directory) / SPEC_FILE).write_text(spec.to_json())


def load(directory) -> Optional[ExampleSpec]:
  """The spec recorded in a workdir or exported model folder, or None when it has none."""
  from etils import epath

  path = epath.Path(directory) / SPEC_FILE
  if not path.exists():
    return None
  return ExampleSpec.from_json(path.read_text())


def make_spec(
  image_size=None,
  tokenizer=None,
  text_len: Optional[int] = None,
  *,
  eos: str = "sticky",
  pad_value: Optional[int] = None,
  lower: bool = True,
  canonicalize: bool = False,
  resize_method: str = "bilinear",
) -> ExampleSpec:
  """A spec with big_vision SigLIP conventions: `decode|resize(size)|value_range(-1, 1)` and
  `tokenize(max_len, eos="sticky", pad_value=<eos id>, lower=True)` (pad_value defaults to the EOS id).

  tokenizer: a Tokenizer, a name ('demo', 'c4_en', ...) or a .model path; None for a model without text."""
  image = (
    None if image_size is None else ImageSpec(size=_size_pair(image_size, "image_size"), resize_method=resize_method)
  )
  text = None
  if tokenizer is not None:
    from siglip_rins.text.tokenizer import Tokenizer, get_tokenizer

    tok = tokenizer if isinstance(tokenizer, Tokenizer) else get_tokenizer(tokenizer)
    if text_len is None:
      raise ValueError("make_spec: give text_len with a tokenizer")
    name = tokenizer if isinstance(tokenizer, str) else (tok.path or "<in-memory>")
    text = TextSpec(
      tokenizer=str(name),
      max_len=int(text_len),
      eos=eos,
      pad_value=int(
        tok.eos_id if pad_value is None and eos != "none" else (tok.pad_id if pad_value is None else pad_value)
      ),
      lower=lower,
      canonicalize=canonicalize,
      vocab_size=int(tok.vocab_size),
      tokenizer_sha256=hashlib.sha256(tok.model_proto).hexdigest(),
      eos_id=int(tok.eos_id),
    )
  return ExampleSpec(image=image, text=text)


def with_tokenizer_file(spec: ExampleSpec, path: str) -> ExampleSpec:
  """The spec with its tokenizer replaced by a file path (exported folders carry their own tokenizer.model)."""
  if spec.text is None:
    return spec
  return dataclasses.replace(spec, text=dataclasses.replace(spec.text, tokenizer=str(path)))


def from_legacy_sections(
  text: Optional[Mapping], image: Optional[Mapping], tokenizer_path: Optional[str]
) -> ExampleSpec:
  """The spec of a format-1 exported model (its 'text' and 'image' sections)."""
  image_spec = None
  if image:
    image_spec = ImageSpec(
      size=_size_pair(tuple(image["size"]) if isinstance(image["size"], list) else image["size"], "image.size"),
      resize_method=image.get("resize_method", "bilinear"),
      antialias=bool(image.get("antialias", False)),
      value_range=tuple(image.get("value_range", (-1.0, 1.0))),
    )
  text_spec = None
  if text:
    from siglip_rins.text.tokenizer import get_tokenizer

    tok = get_tokenizer(tokenizer_path)
    pad = text.get("pad_value")
    text_spec = TextSpec(
      tokenizer=str(tokenizer_path),
      max_len=int(text["max_len"]),
      eos=text.get("eos", "sticky"),
      pad_value=int(tok.pad_id if pad is None else pad),
      lower=False,
      canonicalize=bool(text.get("canonicalize", True)),
      vocab_size=int(tok.vocab_size),
      tokenizer_sha256=hashlib.sha256(tok.model_proto).hexdigest(),
      eos_id=int(tok.eos_id),
    )
  return ExampleSpec(image=image_spec, text=text_spec)
