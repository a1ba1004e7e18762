"""Documented caps on hostile inputs, and the cheap checks that enforce them before any work starts.

Bad input gets one clear line (a ValueError naming the thing, its size and the cap) and memory stays bounded.

Recursion plans (checked analytically from the signature, degree, depth and inference rounds/repeat, before any
plan is expanded or any module built; see `check_plan`):
* MAX_PLAN_POSITIONS = 4096: block positions of an executed plan (``len(signature) ** degree``, or the
  signature after ``rounds``/``repeat``).  ``(A^8)_6`` has 8**6 = 262144 positions and is refused.
* MAX_LAYERS_RUN = 4096: encoder-layer applications per forward pass (positions x layers per block).
* MAX_DEGREE = 12: the nesting degree.

Exported weights (`exported_format.read_params`): params.safetensors at most DEFAULT_MAX_PARAMS_BYTES = 16 GiB
($SIGLIP_RINS_MAX_PARAMS_BYTES), checked from the file size and from every header-declared tensor (dtype x shape
must be its byte range) before any tensor data is read; a refusal names the tensor.

Model sizes (exported configs and `build_model`; checked before `eval_shape`; see `check_dims`):
depth <= 4096, width <= 65536, mlp_dim <= 262144, num_heads <= 4096, vocab_size <= 4_194_304,
patch side <= 4096, image side <= 16384, num_classes <= 4_194_304.

Images (decoded in training by the `decode` pp op, by `ImagePreprocessor` in evaluators / the CLI, by `serve`):
* max_image_pixels, default DEFAULT_MAX_PARAMS_BYTES = 16 << 30
ENV_MAX_PARAMS_BYTES = "SIGLIP_RINS_MAX_PARAMS_BYTES"
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000 (100 MP): width x height read from the
  header (PNG IHDR, JPEG SOF, GIF, BMP, WebP; TIFF's first IFD in the CLI / evaluators, where PIL decodes it --
  training's `decode` cannot decode TIFF at all) before decoding.
* max_image_bytes, default DEFAULT_MAX_IMAGE_BYTES = 64 MiB: the encoded file size, checked with a stat before
  reading.
Config keys ``input.max_image_pixels`` / ``input.max_image_bytes`` (training); environment variables
``SIGLIP_RINS_MAX_IMAGE_PIXELS`` / ``SIGLIP_RINS_MAX_IMAGE_BYTES`` (CLI, evaluators and the defaults of the above).
"""

from __future__ import annotations

import contextlib
import os
import struct
from typing import Optional

MAX_PLAN_POSITIONS = 4096
MAX_LAYERS_RUN = 4096
MAX_DEGREE = 12  # 2 ** 12 = 4096 positions already; (A)_d nests one block d times, so d is capped on its own
MAX_DIMS = {
  "depth": 4096,
  "width": 65536,
  "mlp_dim": 262144,
  "num_heads": 4096,
  "vocab_size": 4_194_304,
  "patch_size": 4096,
  "image_size": 16384,
  "num_classes": 4_194_304,
  "out_dim": 65536,
  "text_len": 65536,
}
DEFAULT_MAX_PARAMS_BYTES = 16 << 30
ENV_MAX_PARAMS_BYTES = "SIGLIP_RINS_MAX_PARAMS_BYTES"
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
DEFAULT_MAX_IMAGE_BYTES = 64 << 20
ENV_MAX_PIXELS = "SIGLIP_RINS_MAX_IMAGE_PIXELS"
ENV_MAX_BYTES = "SIGLIP_RINS_MAX_IMAGE_BYTES"


# ------------------------------------------------------------------------------------------------ plans
def check_positions(signature, positions: int, what: str = "") -> None:
  if positions > MAX_PLAN_POSITIONS:
    raise ValueError(
      f"signature {signature!r}{what} expands to {positions} block positions; the cap is {MAX_PLAN_POSITIONS} "
      f"(siglip_rins.limits.MAX_PLAN_POSITIONS)"
    )


def check_degree(signature, degree: int) -> None:
  if degree > MAX_DEGREE:
    raise ValueError(
      f"signature {signature!r}: degree {degree} exceeds the cap of {MAX_DEGREE} (siglip_rins.limits.MAX_DEGREE)"
    )


def check_layers_run(signature, layers: int, what: str = "") -> None:
  if layers > MAX_LAYERS_RUN:
    raise ValueError(
      f"signature {signature!r}{what} runs {layers} layer applications per forward pass; the cap is "
      f"{MAX_LAYERS_RUN} (siglip_rins.limits.MAX_LAYERS_RUN)"
    )


# ----------------------------------------------------------------------------------------------- models
def check_dims(d: dict, where: str = "model") -> None:
  """Refuses model dims above MAX_DIMS (ints or (h, w) pairs), before any shape is evaluated."""
  for key, cap in MAX_DIMS.items():
    v = d.get(key)
    vals = v if isinstance(v, (list, tuple)) else (v,)
    for x in vals:
      if isinstance(x, (int, float)) and not isinstance(x, bool) and x > cap:
        raise ValueError(f"{where}.{key} = {x} exceeds the cap {cap} (siglip_rins.limits.MAX_DIMS)")


def max_params_bytes() -> int:
  """The cap on an exported params.safetensors (file size and header-declared tensor sizes):
  $SIGLIP_RINS_MAX_PARAMS_BYTES, else DEFAULT_MAX_PARAMS_BYTES (16 GiB)."""
  return _env_int(ENV_MAX_PARAMS_BYTES, DEFAULT_MAX_PARAMS_BYTES)


# ------------------------------------------------------------------------------------------------ paths
def inside_folder(relative: str, root) -> bool:
  """Whether the relative path `relative` stays inside the folder `root` once its '..' are applied (lexically:
  symlinks the dataset itself holds are followed as usual)."""
  root = os.path.abspath(root)
  full = os.path.normpath(os.path.join(root, relative))
  return full == root or full.startswith(root.rstrip(os.sep) + os.sep)


# ----------------------------------------------------------------------------------------------- images
def _env_int(name: str, default: int) -> int:
  raw = os.environ.get(name)
  if not raw:
    return default
  try:
    v = int(raw)
  except ValueError:
    raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None
  if v < 1:
    raise ValueError(f"environment variable {name} must be >= 1, got {v}")
  return v


_SCOPED: list = [None, None]  # (pixels, bytes) set by `image_caps` while a pipeline traces its pp


def _positive(name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) < 1:
    raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
  return int(value)


def max_image_pixels(value: Optional[int] = None) -> int:
  """The pixel cap: `value` when given, else the `image_caps` scope, else $SIGLIP_RINS_MAX_IMAGE_PIXELS, else
  DEFAULT_MAX_IMAGE_PIXELS."""
  if value is not None:
    return _positive("max_image_pixels", value)
  return _SCOPED[0] or _env_int(ENV_MAX_PIXELS, DEFAULT_MAX_IMAGE_PIXELS)


def max_image_bytes(value: Optional[int] = None) -> int:
  """The encoded-size cap: `value`, else the `image_caps` scope, else $SIGLIP_RINS_MAX_IMAGE_BYTES, else
  DEFAULT_MAX_IMAGE_BYTES."""
  if value is not None:
    return _positive("max_image_bytes", value)
  return _SCOPED[1] or _env_int(ENV_MAX_BYTES, DEFAULT_MAX_IMAGE_BYTES)


@contextlib.contextmanager
def image_caps(max_pixels: Optional[int] = None, max_bytes: Optional[int] = None):
  """Within the block, max_image_pixels() / max_image_bytes() without a value return these caps (the pipeline
  traces its pp in this scope, so the `decode` op uses `input.max_image_pixels` / `input.max_image_bytes`)."""
  saved = list(_SCOPED)
  _SCOPED[:] = [max_image_pixels(max_pixels), max_image_bytes(max_bytes)]
  try:
    yield
  finally:
    _SCOPED[:] = saved


def image_header_size(data: bytes) -> Optional[tuple[int, int]]:
  """(width, height) read from the first bytes of a PNG, JPEG, GIF, BMP, WebP or TIFF; None when unknown."""
  b = bytes(data[:32])
  if b.startswith(b"\x89PNG\r\n\x1a\n") and len(b) >= 24:
    return struct.unpack(">II", b[16:24])
  if b[:6] in (b"GIF87a", b"GIF89a") and len(b) >= 10:
    return struct.unpack("<HH", b[6:10])
  if b.startswith(b"BM") and len(b) >= 26:
    w, h = struct.unpack("<ii", b[18:26])
    return abs(w), abs(h)
  if b.startswith(b"RIFF") and b[8:12] == b"WEBP" and len(b) >= 30:
    kind = b[12:16]
    if kind == b"VP8X":
      return 1 + int.from_bytes(b[24:27], "little"), 1 + int.from_bytes(b[27:30], "little")
    if kind == b"VP8 ":
      w, h = struct.unpack("<HH", b[26:30])
      return w & 0x3FFF, h & 0x3FFF
    if kind == b"VP8L":
      v = int.from_bytes(b[21:25], "little")
      return 1 + (v & 0x3FFF), 1 + ((v >> 14) & 0x3FFF)
  if b.startswith(b"\xff\xd8"):
    return _jpeg_size(data)
  if b[:4] in (b"II*\0", b"MM\0*"):
    return _tiff_size(bytes(data[:_TIFF_HEADER_BYTES]))
  return None


_TIFF_HEADER_BYTES = 1 << 20  # the first IFD must lie within the first MiB (else: size unknown, byte cap only)


def _tiff_size(data: bytes) -> Optional[tuple[int, int]]:
  """(width, height) from the first IFD of a TIFF (tags 256 ImageWidth, 257 ImageLength, SHORT or LONG)."""
  order = "<" if data[:2] == b"II" else ">"
  if len(data) < 8:
    return None
  (ifd,) = struct.unpack(order + "I", data[4:8])
  if ifd + 2 > len(data):
    return None
  (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
  found = {}
  for k in range(count):
    entry = data[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
    if len(entry) < 12:
      break
    tag, kind = struct.unpack(order + "HH", entry[:4])
    if tag in (256, 257) and kind in (3, 4):
      found[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), entry[8:10] if kind == 3 else entry[8:12])[0]
  if 256 in found and 257 in found:
    return found[256], found[257]
  return None


def _jpeg_size(data: bytes) -> Optional[tuple[int, int]]:
  i, n = 2, len(data)
  while i + 4 <= n:
    if data[i] != 0xFF:
      return None
    marker = data[i + 1]
    if marker == 0xFF:
      i += 1
      continue
    if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
      i += 2
      continue
    length = int.from_bytes(data[i + 2 : i + 4], "big")
    if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF) and i + 9 <= n:
      h, w = struct.unpack(">HH", data[i + 5 : i + 9])
      return w, h
    i += 2 + length
  return None


def check_image_file(path, max_bytes: Optional[int] = None) -> int:
  """Stat before reading: a file above the byte cap -> ValueError naming it, its size and the cap."""
  cap = max_image_bytes(max_bytes)
  size = os.stat(path).st_size
  if size > cap:
    raise ValueError(f"{path}: {size} bytes exceeds the image file-size cap of {cap} bytes ({ENV_MAX_BYTES})")
  return size


def check_image_bytes(data: bytes, where: str = "image", max_pixels: Optional[int] = None, max_bytes=None) -> None:
  """Header check before decoding: too many bytes or too many pixels -> ValueError naming `where`."""
  cap_b = max_image_bytes(max_bytes)
  if len(data) > cap_b:
    raise ValueError(f"{where}: {len(data)} bytes exceeds the image file-size cap of {cap_b} bytes ({ENV_MAX_BYTES})")
  size = image_header_size(data)
  cap = max_image_pixels(max_pixels)
  if size is not None and size[0] * size[1] > cap:
    w, h = size
    raise ValueError(f"{where}: {w}x{h} = {w * h} pixels exceeds the image pixel cap of {cap} ({ENV_MAX_PIXELS})")


def tf_image_too_large(data, max_pixels: int, max_bytes: int):
  """tf bool scalar: the encoded image `data` (tf.string scalar) is above either cap, from its header only
  (PNG IHDR, JPEG SOF via tf.image.extract_jpeg_shape, GIF, BMP, WebP: every format tf.io.decode_image decodes);
  other formats (TIFF...) get the byte cap only -- the `decode` op cannot decode them, so they are skipped as
  'undecodable' without any pixel buffer."""
  import tensorflow as tf

  length = tf.strings.length(data)
  head = tf.strings.substr(tf.strings.join([data, tf.constant(b"\0" * 32)]), 0, 32)

  def u(offset, n, little):
    dtype = tf.uint16 if n == 2 else tf.int32
    raw = tf.io.decode_raw(tf.strings.substr(head, offset, n), dtype, little_endian=little)
    return tf.abs(tf.cast(raw[0], tf.int64))

  def hw_jpeg():
    shape = tf.image.extract_jpeg_shape(data)
    return tf.cast(shape[0], tf.int64) * tf.cast(shape[1], tf.int64)

  def u32(offset):  # unsigned little-endian 32 bits as int64
    raw = tf.io.decode_raw(tf.strings.substr(head, offset, 4), tf.int32, little_endian=True)
    return tf.bitwise.bitwise_and(tf.cast(raw[0], tf.int64), 0xFFFFFFFF)

  def hw_webp():  # VP8X: 24-bit width-1 / height-1; VP8 (lossy): 14-bit fields; VP8L: 14-bit width-1, height-1
    kind = tf.strings.substr(head, 12, 4)
    band, shift = tf.bitwise.bitwise_and, tf.bitwise.right_shift
    vp8l = u32(21)
    one = tf.constant(1, tf.int64)
    return tf.case(
      [
        (tf.equal(kind, b"VP8X"), lambda: (one + band(u32(24), 0xFFFFFF)) * (one + band(u32(27), 0xFFFFFF))),
        (tf.equal(kind, b"VP8 "), lambda: band(u(26, 2, True), 0x3FFF) * band(u(28, 2, True), 0x3FFF)),
        (tf.equal(kind, b"VP8L"), lambda: (one + band(vp8l, 0x3FFF)) * (one + band(shift(vp8l, 14), 0x3FFF))),
      ],
      default=lambda: tf.constant(0, tf.int64),
    )

  is_png = tf.equal(tf.strings.substr(head, 0, 8), b"\x89PNG\r\n\x1a\n")
  is_gif = tf.equal(tf.strings.substr(head, 0, 4), b"GIF8")
  is_bmp = tf.equal(tf.strings.substr(head, 0, 2), b"BM")
  is_jpeg = tf.equal(tf.strings.substr(head, 0, 2), b"\xff\xd8")
  is_webp = tf.logical_and(
    tf.equal(tf.strings.substr(head, 0, 4), b"RIFF"), tf.equal(tf.strings.substr(head, 8, 4), b"WEBP")
  )
  pixels = tf.case(
    [
      (is_webp, hw_webp),
      (is_png, lambda: u(16, 4, False) * u(20, 4, False)),
      (is_gif, lambda: u(6, 2, True) * u(8, 2, True)),
      (is_bmp, lambda: u(18, 4, True) * u(22, 4, True)),
      (is_jpeg, hw_jpeg),
    ],
    default=lambda: tf.constant(0, tf.int64),
  )
  return tf.logical_or(pixels > max_pixels, tf.cast(length, tf.int64) > max_bytes)
