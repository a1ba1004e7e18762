"""Images outside tf.data read exactly as the training pipeline reads them.

`ImagePreprocessor(spec_or_pp)` runs a pp string (by default an `ExampleSpec`'s `image.eval_pp`) through the
pipeline's own ops (`siglip_rins.data.pp`) on one image at a time: encoded bytes, a file path, a PIL image or a
uint8 [H, W(, C)] array in, float32 [H', W', 3] out.  Evaluators, exported models (`load_exported`, `classify`,
`retrieve`) and the demo use it, so every stage sees the pixels training saw (same JPEG decoder, same resize,
same rounding).  Decoded arrays skip the pp's `decode` op.
"""

from __future__ import annotations

import collections
import io
import os
from typing import Any

import numpy as np
import tensorflow as tf

from siglip_rins import limits
from siglip_rins.data import pp as pp_lib


class ImageReadError(ValueError):
  """An image that cannot be read (missing, empty, corrupt or not an image); the message names it."""


# Image files this process has already read through a pp: (pp, caps, path, size, mtime) -> float32 array, most
# recent last, at most _FILE_MEMO_MAX_BYTES of arrays.  Repeated evaluations of one eval set in one process (the
# demo's variants and seeds, a study's points, `serve`) read and decode each file once.
_FILE_MEMO: "collections.OrderedDict[tuple, np.ndarray]" = collections.OrderedDict()
_FILE_MEMO_MAX_BYTES = 256 << 20
_file_memo_bytes = [0]


def clear_file_memo() -> None:
  """Drops the decoded image files kept for later reads in this process."""
  _FILE_MEMO.clear()
  _file_memo_bytes[0] = 0


def _memo_put(key: tuple, array: np.ndarray) -> None:
  if array.nbytes > _FILE_MEMO_MAX_BYTES // 16:
    return
  array = array.copy()
  array.flags.writeable = False
  _FILE_MEMO[key] = array
  _file_memo_bytes[0] += array.nbytes
  while _file_memo_bytes[0] > _FILE_MEMO_MAX_BYTES:
    _, old = _FILE_MEMO.popitem(last=False)
    _file_memo_bytes[0] -= old.nbytes


class ImagePreprocessor:
  """Callable: one image -> float32 [H, W, 3] (see module docstring)."""

  def __init__(self, spec_or_pp: Any, key: str = "image", max_pixels: int | None = None, max_bytes: int | None = None):
    # Caps (siglip_rins.limits): None -> $SIGLIP_RINS_MAX_IMAGE_PIXELS / _BYTES, else the documented defaults.
    self.max_pixels, self.max_bytes = limits.max_image_pixels(max_pixels), limits.max_image_bytes(max_bytes)
    image_spec = getattr(spec_or_pp, "image", spec_or_pp)
    if isinstance(image_spec, str):
      pp_bytes = image_spec
      pp_array = "|".join(
        p for p in pp_lib.split_top_level(image_spec) if p.strip() and not p.strip().startswith("decode")
      )
    elif image_spec is not None and hasattr(image_spec, "pp"):
      pp_bytes, pp_array = image_spec.pp(decode=True), image_spec.pp(decode=False)
      key = getattr(image_spec, "key", key)
    else:
      raise ValueError("ImagePreprocessor needs an ExampleSpec with an image part, an ImageSpec or a pp string")
    self.pp = pp_bytes
    self.key = key
    fn_bytes = pp_lib.get_preprocess_fn(pp_bytes)
    fn_array = pp_lib.get_preprocess_fn(pp_array) if pp_array else (lambda f: f)

    def from_bytes(data):
      return tf.cast(fn_bytes({key: data})[key], tf.float32)

    def from_array(image):
      return tf.cast(fn_array({key: image})[key], tf.float32)

    # Traced as written, like the training pipeline's maps (pipeline._plain): the pp ops use tf.cond for
    # data-dependent control flow, and AutoGraph's source conversion of the op tree only delayed the first image
    # of every preprocessor (classify, serve, each evaluator): 1.25-1.79 s against 0.42-0.58 s without it.
    self._from_bytes = tf.function(from_bytes, input_signature=[tf.TensorSpec([], tf.string)], autograph=False)
    self._from_array = tf.function(
      from_array, input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)], autograph=False
    )

  def __call__(self, image: Any) -> np.ndarray:
    where = "image bytes"
    if isinstance(image, (str, os.PathLike)):
      where = str(image)
      if not os.path.isfile(image):
        raise FileNotFoundError(f"{where}: no such file")
      st = os.stat(image)
      key = (self.pp, self.max_pixels, self.max_bytes, os.path.abspath(image), st.st_size, st.st_mtime_ns)
      if key in _FILE_MEMO:
        _FILE_MEMO.move_to_end(key)
        return _FILE_MEMO[key].copy()
      out = self._read_file(image, where)
      _memo_put(key, out)
      return out
    return self._read(image, where)

  def _read_file(self, path, where: str) -> np.ndarray:
    try:
      size = limits.check_image_file(path, self.max_bytes)  # a stat, before reading
    except ValueError as e:
      raise ImageReadError(str(e)) from None
    with open(path, "rb") as f:
      data = f.read(size + 1)  # bounded even if the file grows meanwhile (checked again below)
    if not data:
      raise ImageReadError(f"{where}: empty file (0 bytes)")
    return self._read(data, where)

  def _read(self, image: Any, where: str) -> np.ndarray:
    if isinstance(image, (bytes, bytearray, memoryview)):
      try:
        limits.check_image_bytes(image, where, self.max_pixels, self.max_bytes)  # the header, before decoding
      except ValueError as e:
        raise ImageReadError(str(e)) from None
      try:
        with limits.image_caps(self.max_pixels, self.max_bytes):  # the decode op traces with these caps
          return self._from_bytes(tf.constant(bytes(image))).numpy()
      except tf.errors.OpError as e:
        msg = str(e.message).strip().splitlines()[0] if getattr(e, "message", None) else type(e).__name__
        raise ImageReadError(f"{where}: not a decodable image ({msg})") from None
    if hasattr(image, "save") and hasattr(image, "mode"):  # a PIL image: encode losslessly, read like a file
      if image.size[0] * image.size[1] > self.max_pixels:
        raise ImageReadError(f"{where}: {image.size[0]}x{image.size[1]} pixels exceeds the cap of {self.max_pixels}")
      buf = io.BytesIO()
      image.save(buf, format="PNG")
      return self._from_bytes(tf.constant(buf.getvalue())).numpy()
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
      raise ValueError(f"image arrays must be uint8 [H, W(, C)], got {arr.dtype} {arr.shape}")
    if arr.ndim == 2:
      arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
      raise ValueError(f"image arrays must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got {arr.shape}")
    if arr.shape[-1] == 1:
      arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] == 4:
      arr = arr[..., :3]
    return self._from_array(tf.constant(arr)).numpy()

  def batch(self, images) -> np.ndarray:
    out = [self(im) for im in images]
    if not out:
      raise ValueError("no images given")
    return np.stack(out)
