"""Self-contained exported SigLIP(-RINS) models: write one from a training run, load it, use it.

Exported folder (`export_model(workdir, out_dir)` or `export_params(...)`):
  config.json          {"format": "siglip_rins.exported", "format_version": 2, "model": <build_model config>,
                        "params_file": "params.safetensors", "example_spec": <ExampleSpec.to_dict()>,
                        "text": {"tokenizer_file", "max_len", "eos", "lower", "canonicalize", "pad_value"},
                        "image": {"size": [H, W], "resize_method": "bilinear", "antialias": false,
                                  "value_range": [-1, 1]}, "source": {...}}
                       ("text" and "image" summarise example_spec; format-1 folders have only them)
  params.safetensors   float32 parameters under '/'-joined names ('img/embedding/kernel', 't', ...); no pickle.
  tokenizer.model      the SentencePiece model (copied bytes).

`load_exported(model_dir) -> ExportedModel` runs the JAX model on the run's example spec (config.json
"example_spec", see siglip_rins/example_spec.py): images go through the spec's eval pp with the training
pipeline's own pp ops (siglip_rins.data.preprocess: same JPEG decoder, resize and rounding as training), texts
through the spec's tokenizer settings (pure-Python SentencePiece, the same ids as the pipeline's tokenize op).

CLI entry points (the lead wires them): `classify_main`, `retrieve_main`, `export_main`; `add_cli(subparsers)`
registers `export`, `classify`, `retrieve` and `export-hf` subcommands.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys
from typing import Any, Mapping, Optional, Sequence, TextIO

import jax
import jax.numpy as jnp
import numpy as np

from siglip_rins.image_io import list_image_files
from siglip_rins.example_spec import size_pair as _size_pair
from siglip_rins.exported_format import (  # noqa: F401  (re-exported: the folder format lives there)
  CONFIG_FILE,
  FORMAT_NAME,
  FORMAT_VERSION,
  PARAMS_FILE,
  TOKENIZER_FILE,
  example_spec_of,
  read_exported_config,
  read_params,
  write_params,
)
from siglip_rins.interop import diff_names, flatten_params, unflatten_params
from siglip_rins import limits, paths
from siglip_rins.models.shapes import Rounds, check_rounds, image_size_from_params, param_shapes  # noqa: F401

DEFAULT_TEXT_LEN = 64


# --------------------------------------------------------------------------------------------- helpers
def _as_plain(obj: Any) -> Any:
  """ConfigDict / tuples / numpy scalars -> JSON-able python objects."""
  if hasattr(obj, "to_dict"):
    obj = obj.to_dict()
  if isinstance(obj, Mapping):
    return {str(k): _as_plain(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_as_plain(v) for v in obj]
  if isinstance(obj, np.generic):
    return obj.item()
  return obj


# ------------------------------------------------------------------------------------------- export
def export_params(
  params: Mapping[str, Any],
  model_config: Mapping[str, Any],
  out_dir: str | os.PathLike,
  *,
  spec: Any = None,
  tokenizer: Any = None,
  text_len: Optional[int] = None,
  image_size: Any = None,
  source: Optional[Mapping[str, Any]] = None,
) -> paths.Path:
  """Writes an exported model folder from a parameter tree.

  params: two_towers parameter tree (`img/...`, `txt/...`, `t`, `b`).  model_config: the `build_model` config.
  spec: the run's `ExampleSpec` (how images and texts become inputs); without one, big_vision SigLIP conventions
  (`example_spec.make_spec`) with `tokenizer` (a Tokenizer, name or .model path), `text_len` (default: the length
  of `txt/pos_embedding`) and `image_size` (default: from `img/pos_embedding` and the patch size).  A given
  `tokenizer` replaces the spec's tokenizer file.  Returns the folder path.
  """
  from siglip_rins import example_spec as es
  from siglip_rins.models import build_model
  from siglip_rins.text.tokenizer import Tokenizer, check_encode_args, get_tokenizer

  model_config = _as_plain(model_config)
  if model_config.get("name") != "two_towers":
    raise ValueError(f"export supports two_towers (SigLIP) models; this model is {model_config.get('name')!r}")
  model = build_model(model_config)
  flat = {k: np.asarray(v, dtype=np.float32) for k, v in flatten_params(params).items()}
  configured = None
  if spec is not None and spec.image is not None:
    configured = spec.image.size
  if image_size is not None:
    configured = _size_pair(image_size, "image_size")
  size = image_size_from_params(model, flat, configured)
  tok = None
  if model.text is not None:
    if text_len is None:
      if spec is not None and spec.text is not None:
        text_len = spec.text.max_len
      elif "txt/pos_embedding" in flat:
        text_len = int(flat["txt/pos_embedding"].shape[1])
      else:
        raise ValueError("give text_len: the parameters have no txt/pos_embedding")
    if tokenizer is None and spec is not None and spec.text is not None:
      tokenizer = spec.text.tokenizer
    if tokenizer is None:
      raise ValueError(
        "this model has a text tower: give tokenizer (a name such as 'demo', a .model path or a "
        "Tokenizer) so the exported folder can tokenise texts"
      )
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else get_tokenizer(tokenizer)
    vocab = model.text.get("vocab_size", 32_000)
    if tok.vocab_size > vocab:
      raise ValueError(f"tokenizer has {tok.vocab_size} pieces but the text tower's vocab_size is {vocab}")
  if spec is None:
    spec = es.make_spec(image_size=size, tokenizer=tok, text_len=text_len)
  if spec.text is not None and tok is not None:
    text = spec.text
    if text.max_len != text_len or text.vocab_size != tok.vocab_size:
      import dataclasses

      text = dataclasses.replace(text, max_len=int(text_len), vocab_size=int(tok.vocab_size), eos_id=int(tok.eos_id))
    spec = es.ExampleSpec(image=spec.image, text=text, train_pp=spec.train_pp)
    check_encode_args(spec.text.max_len, spec.text.eos, tok.eos_id)
  if model.text is None:
    spec = es.ExampleSpec(image=spec.image, text=None, train_pp=spec.train_pp)
  if spec.image is not None and size is not None and tuple(spec.image.size) != tuple(size):
    import dataclasses

    spec = es.ExampleSpec(
      image=es.ImageSpec(
        size=size,
        resize_method=spec.image.resize_method,
        antialias=spec.image.antialias,
        value_range=spec.image.value_range,
      ),
      text=spec.text,
      train_pp=spec.train_pp,
    )
  # Check the parameter tree against the model before writing anything.
  expected = flatten_params(param_shapes(model, size, spec.text and spec.text.max_len))
  diff_names(set(expected), set(flat), "parameters do not match the model config")
  bad = [
    f"{k}: {flat[k].shape} != {tuple(expected[k].shape)}"
    for k in sorted(flat)
    if tuple(flat[k].shape) != tuple(expected[k].shape)
  ]
  if bad:
    raise ValueError(f"parameter shapes do not match the model config: {bad[:20]}")

  out = paths.makedirs(paths.workdir_path(out_dir))  # every file through the path layer: gs:// works too
  write_params(out / PARAMS_FILE, flat, {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)})
  text_cfg = None
  if tok is not None:
    paths.write_bytes(out / TOKENIZER_FILE, tok.model_proto)
    spec = es.with_tokenizer_file(spec, TOKENIZER_FILE)
    t = spec.text
    text_cfg = dict(
      tokenizer_file=TOKENIZER_FILE,
      max_len=t.max_len,
      eos=t.eos,
      canonicalize=t.canonicalize,
      lower=t.lower,
      pad_value=t.pad_value,
    )
  image_cfg = None
  if spec.image is not None:
    i = spec.image
    image_cfg = dict(
      size=list(i.size), resize_method=i.resize_method, antialias=i.antialias, value_range=list(i.value_range)
    )
  config = {
    "format": FORMAT_NAME,
    "format_version": FORMAT_VERSION,
    "model": model_config,
    "params_file": PARAMS_FILE,
    "example_spec": spec.to_dict(),
    "text": text_cfg,  # summaries of example_spec, for readers of format 1
    "image": image_cfg,
    "source": _as_plain(dict(source or {})),
  }
  # config.json last (atomic locally): a folder with it is complete
  paths.write_text(out / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False))
  return out


def export_model(
  workdir: str | os.PathLike,
  out_dir: str | os.PathLike,
  step: Optional[int] = None,
  *,
  tokenizer: Any = None,
  text_len: Optional[int] = None,
  image_size: Any = None,
) -> paths.Path:
  """Exports the checkpoint `step` (default: latest) of the run in `workdir` to `out_dir` (see module doc).

  Reads `<workdir>/config.json` (the run's full config; `model` is the build_model config, `input` holds the pp
  strings / text_len / tokenizer) and the checkpoint through `checkpoint.CheckpointManager`.  The keyword
  arguments override what the run config says.
  """
  from siglip_rins.checkpoint import CheckpointManager

  workdir = paths.workdir_path(workdir)
  cfg_path = workdir / "config.json"
  if not cfg_path.is_file():
    raise FileNotFoundError(f"{cfg_path} not found: is {workdir} a training run's workdir?")
  try:
    run_config = json.loads(paths.read_text(cfg_path))
  except ValueError as e:
    raise ValueError(f"{cfg_path} is not valid JSON: {e}") from None
  if not isinstance(run_config, dict) or not isinstance(run_config.get("model"), dict):
    raise ValueError(f"{cfg_path} has no 'model' config dict")
  from siglip_rins import config_lib, example_spec as es

  spec = es.load(workdir)
  if spec is None:  # a run from before example_spec.json: derive it from the run's config
    spec = es.finalize(config_lib.ConfigDict(run_config))
  mgr = CheckpointManager(workdir, async_save=False)
  try:
    state, meta = mgr.restore(step)
    step = step if step is not None else mgr.latest_step()
  finally:
    mgr.close()
  if not isinstance(state, Mapping) or "params" not in state:
    raise ValueError(f"checkpoint {step} in {workdir} has no 'params' entry (keys: {sorted(state)})")
  params = jax.tree.map(np.asarray, state["params"])
  return export_params(
    params,
    run_config["model"],
    out_dir,
    spec=spec,
    tokenizer=tokenizer,
    text_len=text_len,
    image_size=image_size,
    source=dict(workdir=str(workdir), step=None if step is None else int(step)),
  )


# --------------------------------------------------------------------------------------------- load
def check_weights(flat: Mapping[str, np.ndarray], where, dtype: str = "float32") -> None:
  """Every tensor must have the declared dtype (exports write float32) and be finite; else one ValueError naming
  the tensor."""
  for name in sorted(flat):
    arr = np.asarray(flat[name])
    if arr.dtype.name != dtype:
      raise ValueError(f"{where}: tensor {name!r} is {arr.dtype}, expected {dtype} (re-export the model)")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
      bad = int(arr.size - np.isfinite(arr).sum())
      raise ValueError(f"{where}: tensor {name!r} has {bad} non-finite value(s) (NaN or inf)")


class ExportedModel:
  """A loaded exported model.  Embeddings are L2-normalised float32 numpy arrays [N, D].

  Attributes: `model` (flax module), `params`, `config`, `tokenizer` (or None), `text_len`, `image_size` (H, W),
  `temperature` (= exp(t), a float), `bias` (b, a float).
  """

  def __init__(self, model_dir: str | os.PathLike):
    from siglip_rins.models import build_model

    self.model_dir = paths.workdir_path(model_dir)
    self.config = read_exported_config(self.model_dir)
    self.model = build_model(self.config["model"])
    params_path = self.model_dir / self.config.get("params_file", PARAMS_FILE)
    flat = read_params(params_path)  # size-checked from its header first (siglip_rins.limits)

    tok_file = self.model_dir / ((self.config.get("text") or {}).get("tokenizer_file") or TOKENIZER_FILE)
    self.spec = example_spec_of(self.config, tok_file)
    self.text_len = None if self.spec.text is None else self.spec.text.max_len
    self.image_size = None if self.spec.image is None else tuple(self.spec.image.size)
    limits.check_dims({"image_size": self.image_size, "text_len": self.text_len}, "example_spec")
    expected = flatten_params(param_shapes(self.model, self.image_size, self.text_len))
    diff_names(set(expected), set(flat), f"{params_path} does not match the model config")
    bad = [k for k in expected if tuple(expected[k].shape) != tuple(flat[k].shape)]
    if bad:
      raise ValueError(f"{params_path}: shapes differ from the model config for {bad[:20]}")
    check_weights(flat, params_path, self.config.get("params_dtype", "float32"))
    self.params = jax.tree.map(jnp.asarray, unflatten_params(flat))
    self.tokenizer = None
    if self.spec.text is not None:
      from siglip_rins.text.tokenizer import Tokenizer

      if not tok_file.is_file():
        raise FileNotFoundError(f"{tok_file} not found (the exported folder is incomplete)")
      self.tokenizer = Tokenizer(paths.read_bytes(tok_file), path=str(tok_file))
    self._image_preprocessor = None
    self.temperature = float(np.exp(np.asarray(flat["t"]).reshape(-1)[0]))
    self.bias = float(np.asarray(flat["b"]).reshape(-1)[0])
    model = self.model
    unfreeze = lambda r: dict(r) if isinstance(r, tuple) else r  # rounds travel as a hashable static arg
    self._embed_images = jax.jit(
      lambda p, x, r: model.apply({"params": p}, x, None, rounds=unfreeze(r))[0], static_argnums=2
    )
    self._embed_texts = jax.jit(
      lambda p, x, r: model.apply({"params": p}, None, x, rounds=unfreeze(r))[1], static_argnums=2
    )

  # ------------------------------------------------------------------------------------ preprocessing
  def preprocess_image(self, image) -> np.ndarray:
    """A path, encoded bytes, PIL image or uint8 [H, W(, C)] array -> float32 [H', W', 3]: the pixels the training
    pipeline gives (the example spec's eval pp run through the pipeline's own ops)."""
    if self.image_size is None:
      raise ValueError("this model has no image tower")
    if self._image_preprocessor is None:
      from siglip_rins.data.preprocess import ImagePreprocessor

      self._image_preprocessor = ImagePreprocessor(self.spec)
    return self._image_preprocessor(image)

  def preprocess_images(self, images) -> np.ndarray:
    """List of paths / PIL images / arrays, or a float array [N, H, W, 3] already in [-1, 1] at `image_size`
    (passed through) -> float32 [N, H, W, 3]."""
    if isinstance(images, np.ndarray) and images.ndim == 4 and np.issubdtype(images.dtype, np.floating):
      if tuple(images.shape[1:]) != (*self.image_size, 3):
        raise ValueError(
          f"a float image batch must be [N, {self.image_size[0]}, {self.image_size[1]}, 3] in "
          f"[-1, 1]; got {images.shape}"
        )
      return images.astype(np.float32)
    if isinstance(images, (str, os.PathLike)) or not isinstance(images, (Sequence, np.ndarray)):
      raise ValueError("images must be a list (of paths, PIL images or arrays) or a float array [N, H, W, 3]")
    if len(images) == 0:
      return np.zeros((0, *self.image_size, 3), np.float32)
    return np.stack([self.preprocess_image(im) for im in images])

  def tokenize(self, texts: Sequence[str]) -> np.ndarray:
    """Strings -> int32 [N, text_len] as the training pipeline tokenizes them (the example spec)."""
    if self.tokenizer is None:
      raise ValueError("this model has no text tower")
    if isinstance(texts, (str, bytes)):
      raise ValueError("texts must be a list of strings, got a single string")
    return self.spec.text.encode(list(texts), tokenizer=self.tokenizer)

  # ---------------------------------------------------------------------------------------- embeddings
  @staticmethod
  def _batched(fn, params, x: np.ndarray, rounds, batch_size: int) -> np.ndarray:
    """Runs fn over x in batches of min(batch_size, next power of two >= N) rows, the last one padded."""
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(rounds, Mapping):
      rounds = tuple(sorted(rounds.items()))
    n = x.shape[0]
    bs = min(batch_size, 1 << max(n - 1, 0).bit_length())  # power-of-two buckets: few compilations
    outs = []
    for i in range(0, n, bs):
      chunk = x[i : i + bs]
      pad = bs - chunk.shape[0]
      if pad:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
      outs.append(np.asarray(fn(params, chunk, rounds))[: bs - pad])
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)

  def encode_images(self, images, rounds: Optional[int] = None, batch_size: int = 32) -> np.ndarray:
    """images (see preprocess_images) -> L2-normalised float32 [N, D].  rounds: A^kB at inference (None: as
    trained)."""
    if self.model.image is None:
      raise ValueError("this model has no image tower")
    r = check_rounds(rounds)
    x = self.preprocess_images(images)
    return self._batched(self._embed_images, self.params, x, r, batch_size).astype(np.float32)

  def encode_texts(self, texts: Sequence[str], rounds: Optional[int] = None, batch_size: int = 64) -> np.ndarray:
    """Strings -> L2-normalised float32 [N, D]."""
    r = check_rounds(rounds)
    tokens = self.tokenize(texts)
    return self._batched(self._embed_texts, self.params, tokens, r, batch_size).astype(np.float32)

  def class_embeddings(
    self, labels: Sequence[str], templates: Optional[Sequence[str]] = None, rounds: Optional[int] = None
  ) -> np.ndarray:
    """Zero-shot class embeddings [C, D]: L2-normalised mean over templates of the normalised text embeddings
    of `template.format(label)`.  templates=None means the bare label ('{}')."""
    if isinstance(labels, str) or not labels:
      raise ValueError("labels must be a non-empty list of strings")
    templates = ["{}"] if templates is None else list(templates)
    if not templates or any(not isinstance(t, str) or "{}" not in t for t in templates):
      raise ValueError(f"templates must be a non-empty list of strings each containing '{{}}', got {templates!r}")
    texts = [t.format(label) for label in labels for t in templates]
    z = self.encode_texts(texts, rounds).reshape(len(labels), len(templates), -1).mean(axis=1)
    return z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)

  def probabilities(self, zimg: np.ndarray, ztxt: np.ndarray) -> np.ndarray:
    """sigmoid(exp(t) * zimg @ ztxt.T + b): [N, C] probabilities that image n matches text c."""
    logits = self.temperature * (zimg @ ztxt.T) + self.bias
    return 1.0 / (1.0 + np.exp(-logits))

  def classify(
    self,
    images,
    labels: Sequence[str],
    templates: Optional[Sequence[str]] = None,
    rounds: Optional[int] = None,
    top_k: Optional[int] = None,
  ) -> list[list[tuple[str, float]]]:
    """For each image, [(label, probability), ...] sorted by probability (descending), `top_k` kept (None: all).

    probability = sigmoid(exp(t) * <image, class embedding> + b) with the learned t and b; each is the model's
    belief that the label matches (they do not sum to 1).
    """
    zc = self.class_embeddings(labels, templates, rounds)
    zi = self.encode_images(images, rounds)
    probs = self.probabilities(zi, zc)
    out = []
    for row in probs:
      order = np.argsort(-row, kind="stable")
      if top_k is not None:
        order = order[:top_k]
      out.append([(labels[i], float(row[i])) for i in order])
    return out


def load_exported(model_dir: str | os.PathLike) -> ExportedModel:
  """Loads an exported model folder (see module doc).  Raises FileNotFoundError / ValueError naming the problem."""
  return ExportedModel(model_dir)


# ---------------------------------------------------------------------------------------------- CLI
def _read_batches(model, paths: Sequence[pathlib.Path], batch: int, err: TextIO):
  """Yields lists of (path, float32 [H, W, 3] model input) of readable files, read as the training pipeline
  reads them; prints one line to `err` per unreadable file."""
  buf = []
  for path in paths:
    try:
      buf.append((path, model.preprocess_image(path)))
    except (OSError, ValueError) as e:
      print(f"skipping {e}", file=err)
      continue
    if len(buf) == batch:
      yield buf
      buf = []
  if buf:
    yield buf


def classify_main(
  model_dir,
  labels: Sequence[str],
  image_paths: Sequence[str],
  top_k: int = 5,
  rounds: Optional[int] = None,
  templates: Optional[Sequence[str]] = None,
  out: Optional[TextIO] = None,
  err: Optional[TextIO] = None,
  batch_size: int = 32,
) -> int:
  """Prints, per readable image, its path and the top_k labels with probabilities ('  0.9731  label').

  Unreadable files get one line on `err` and the others are still processed.  Returns the exit status: 0 when
  every image was classified, 1 when some could not be read.
  """
  out, err = out or sys.stdout, err or sys.stderr
  labels = [l for l in labels if l.strip()]
  if not labels:
    raise ValueError("give at least one non-empty label")
  if not image_paths:
    raise ValueError("give at least one image path")
  if top_k < 1:
    raise ValueError(f"top_k must be >= 1, got {top_k}")
  model = load_exported(model_dir)
  zc = model.class_embeddings(labels, templates, rounds)
  done = 0
  for batch in _read_batches(model, [pathlib.Path(p) for p in image_paths], batch_size, err):
    zi = model.encode_images(np.stack([im for _, im in batch]), rounds)
    for (path, _), row in zip(batch, model.probabilities(zi, zc)):
      print(str(path), file=out)
      for i in np.argsort(-row, kind="stable")[:top_k]:
        print(f"  {row[i]:.4f}  {labels[i]}", file=out)
      done += 1
  return 0 if done == len(image_paths) else 1


def retrieve_main(
  model_dir,
  query: str,
  folder,
  top_k: int = 10,
  rounds: Optional[int] = None,
  out: Optional[TextIO] = None,
  err: Optional[TextIO] = None,
  batch_size: int = 32,
) -> int:
  """Ranks the images in `folder` (extensions in image_io.IMAGE_EXTENSIONS) by their match with `query`; prints
  'rank  probability  cosine  path' for the top_k.  Unreadable files get one line on `err`.  Returns 0 when
  every file was read, 1 otherwise (also when the folder holds no image)."""
  out, err = out or sys.stdout, err or sys.stderr
  if not isinstance(query, str) or not query.strip():
    raise ValueError("query must be a non-empty string")
  if top_k < 1:
    raise ValueError(f"top_k must be >= 1, got {top_k}")
  paths = list_image_files(folder)
  if not paths:
    print(f"no image files ({', '.join(e.lstrip('.') for e in ('.jpg', '.png', '.webp'))}, ...) in {folder}", file=err)
    return 1
  model = load_exported(model_dir)
  zq = model.encode_texts([query], rounds)[0]
  scored: list[tuple[float, pathlib.Path]] = []
  for batch in _read_batches(model, paths, batch_size, err):
    zi = model.encode_images(np.stack([im for _, im in batch]), rounds)
    scored.extend(zip((zi @ zq).tolist(), (p for p, _ in batch)))
  scored.sort(key=lambda s: -s[0])
  for rank, (cos, path) in enumerate(scored[:top_k], 1):
    prob = 1.0 / (1.0 + math.exp(-(model.temperature * cos + model.bias)))
    print(f"{rank:3d}  {prob:.4f}  {cos:+.4f}  {path}", file=out)
  return 0 if len(scored) == len(paths) else 1


def export_main(workdir, out_dir, step: Optional[int] = None, out: Optional[TextIO] = None) -> int:
  """`siglip-rins export`: export_model, then one line naming the folder.  Returns 0."""
  path = export_model(workdir, out_dir, step)
  print(f"exported {workdir} -> {path}", file=out or sys.stdout)
  return 0


def add_cli(subparsers) -> None:
  """Registers `export`, `classify`, `retrieve`, `export-hf` on an argparse subparsers object; each sets
  `func(args) -> int` (the exit status)."""
  p = subparsers.add_parser("export", help="export a training run's checkpoint to a self-contained model folder")
  p.add_argument("--workdir", required=True)
  p.add_argument("--out", required=True, help="output model folder")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  p.set_defaults(func=lambda a: export_main(a.workdir, a.out, a.step))

  p = subparsers.add_parser("classify", help="zero-shot classify image files with an exported model")
  p.add_argument("--model", required=True, help="exported model folder")
  p.add_argument("--labels", required=True, help="comma-separated class names")
  p.add_argument("--template", action="append", default=None, help="prompt template with '{}' (repeatable)")
  p.add_argument("--top_k", type=int, default=5)
  p.add_argument("--rounds", type=int, default=None, help="recursion rounds at inference (default: as trained)")
  p.add_argument("images", nargs="+")
  p.set_defaults(
    func=lambda a: classify_main(
      a.model, [s.strip() for s in a.labels.split(",")], a.images, a.top_k, a.rounds, a.template
    )
  )

  p = subparsers.add_parser("retrieve", help="rank the images of a folder by a text query")
  p.add_argument("--model", required=True, help="exported model folder")
  p.add_argument("--query", required=True)
  p.add_argument("--folder", required=True)
  p.add_argument("--top_k", type=int, default=10)
  p.add_argument("--rounds", type=int, default=None)
  p.set_defaults(func=lambda a: retrieve_main(a.model, a.query, a.folder, a.top_k, a.rounds))

  def _export_hf(a) -> int:
    from siglip_rins.interop.hf import export_hf_from_exported

    path = export_hf_from_exported(a.model, a.out, rounds=a.rounds)
    print(f"wrote transformers SiglipModel folder {path}")
    return 0

  p = subparsers.add_parser("export-hf", help="write a transformers SiglipModel folder (recursion unrolled)")
  p.add_argument("--model", required=True, help="exported model folder")
  p.add_argument("--out", required=True)
  p.add_argument("--rounds", type=int, default=None, help="rounds to unroll (default: as trained)")
  p.set_defaults(func=_export_hf)


__all__ = [
  "export_model",
  "export_params",
  "load_exported",
  "ExportedModel",
  "read_exported_config",
  "classify_main",
  "retrieve_main",
  "export_main",
  "add_cli",
  "FORMAT_VERSION",
]
