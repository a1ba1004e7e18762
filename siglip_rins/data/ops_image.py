"""Image pp ops (big_vision's ops_image plus its value_range). Images are [H, W, C] tensors, uint8 after
`decode`. Every op takes big_vision's `key` / `inkey` / `outkey` (default 'image'; see ops_common.keyed_op).

Resizing follows big_vision exactly: tf.image.resize computes float32, which is clipped to the input
dtype's range and cast back, so uint8 results are truncated (not rounded). Random ops are stateless,
seeded per example (ops_common.next_seed), so they differ from big_vision's draws but not in distribution.
"""

import numpy as np
import tensorflow as tf

from siglip_rins import limits
from siglip_rins.data.ops_common import is_int, is_number, keyed_op, next_seed

_METHODS = ("bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5", "gaussian", "mitchellcubic")
# tf.image.sample_distorted_bounding_box's default aspect_ratio_range, which big_vision's inception_crop uses.
_ASPECT_RANGE = (0.75, 1.33)
VGG_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
VGG_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
CLIP_MEAN = (0.48145466 * 255, 0.4578275 * 255, 0.40821073 * 255)
CLIP_STD = (0.26862954 * 255, 0.26130258 * 255, 0.27577711 * 255)


def _check_size(op: str, size, name="size"):
  """int s -> (s, s); (h, w) -> (h, w); anything else -> ValueError naming the op."""
  if is_int(size):
    size = (size, size)
  if not isinstance(size, (tuple, list)) or len(size) != 2 or not all(is_int(s) and s > 0 for s in size):
    raise ValueError(f"pp op {op!r}: {name} must be a positive int or (height, width), got {size!r}")
  return tuple(size)


def _check_method(op: str, method):
  if method not in _METHODS:
    raise ValueError(f"pp op {op!r}: method must be one of {_METHODS}, got {method!r}")


def resize_image(image: tf.Tensor, size, method: str = "bilinear", antialias: bool = False) -> tf.Tensor:
  """big_vision's resize: tf.image.resize, then clip to the input dtype's range and cast (truncating)."""
  dtype = image.dtype
  out = tf.image.resize(image, size, method=method, antialias=bool(antialias))
  return tf.cast(tf.clip_by_value(out, dtype.min, dtype.max), dtype)


def _resize_factor(image, factor, method, antialias):
  """Scales both sides by `factor` (rounded, in float32), keeping the aspect ratio."""
  hw = tf.cast(tf.round(tf.cast(tf.shape(image)[:2], tf.float32) * factor), tf.int32)
  return resize_image(image, hw, method, antialias)


@keyed_op("decode")
def get_decode(channels=3, precise=False, max_pixels=None, max_bytes=None):
  """Encoded bytes (JPEG/PNG/GIF first frame/BMP/WebP) -> uint8 [H, W, channels].

  Grayscale becomes RGB, RGBA drops alpha (channels=3). `precise` uses the exact IDCT for JPEG.
  Before decoding, the header's width x height and the encoded size are checked against `max_pixels` /
  `max_bytes` (default: siglip_rins.limits, i.e. input.max_image_pixels / input.max_image_bytes in a
  pipeline); an image above a cap fails the op (the pipeline counts it as 'too_large' before reaching here).
  """
  if channels not in (1, 3):
    raise ValueError(f"pp op 'decode': channels must be 1 or 3, got {channels!r}")

  def decode(data, features):
    cap_px, cap_b = limits.max_image_pixels(max_pixels), limits.max_image_bytes(max_bytes)
    too_large = limits.tf_image_too_large(data, cap_px, cap_b)
    check = tf.debugging.Assert(
      tf.logical_not(too_large), [f"image above the caps of {cap_px} pixels / {cap_b} bytes (too_large)"]
    )
    with tf.control_dependencies([check]):
      data = tf.identity(data)
    if precise:
      image = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=channels, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=channels, expand_animations=False),
      )
    else:
      image = tf.io.decode_image(data, channels=channels, expand_animations=False)
    image.set_shape([None, None, channels])
    return image

  return decode


@keyed_op("resize")
def get_resize(size, method="bilinear", antialias=False):
  """Resizes to `size` (int s -> s x s, or (h, w)); keeps the dtype (truncating, see the module docstring)."""
  size = _check_size("resize", size)
  _check_method("resize", method)
  return lambda image, features: resize_image(image, size, method, antialias)


@keyed_op("resize_small")
def get_resize_small(smaller_size, method="area", antialias=False):
  """Resizes so the shorter side is `smaller_size`, keeping the aspect ratio (both sides scaled by
  smaller_size / min(h, w) and rounded)."""
  if not is_int(smaller_size) or smaller_size < 1:
    raise ValueError(f"pp op 'resize_small': smaller_size must be a positive int, got {smaller_size!r}")
  _check_method("resize_small", method)

  def resize_small(image, features):
    shape = tf.shape(image)
    factor = tf.cast(smaller_size, tf.float32) / tf.cast(tf.minimum(shape[0], shape[1]), tf.float32)
    return _resize_factor(image, factor, method, antialias)

  return resize_small


@keyed_op("resize_long")
def get_resize_long(longer_size, method="area", antialias=True):
  """Resizes so the longer side is `longer_size`, keeping the aspect ratio."""
  if not is_int(longer_size) or longer_size < 1:
    raise ValueError(f"pp op 'resize_long': longer_size must be a positive int, got {longer_size!r}")
  _check_method("resize_long", method)

  def resize_long(image, features):
    shape = tf.shape(image)
    factor = tf.cast(longer_size, tf.float32) / tf.cast(tf.maximum(shape[0], shape[1]), tf.float32)
    return _resize_factor(image, factor, method, antialias)

  return resize_long


def _check_crop_args(op, size, area_min, area_max, method):
  if size:
    size = _check_size(op, size)
  for name, value in (("area_min", area_min), ("area_max", area_max)):
    if not is_number(value) or not 0 < value <= 100:
      raise ValueError(f"pp op {op!r}: {name} must be a percentage in (0, 100], got {value!r}")
  if area_min > area_max:
    raise ValueError(f"pp op {op!r}: area_min {area_min} > area_max {area_max}")
  _check_method(op, method)
  return size or None


def _sample_box(shape, features, area_min, area_max, aspect_range):
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
    shape,
    tf.zeros([0, 0, 4], tf.float32),
    seed=next_seed(features),
    area_range=(area_min / 100, area_max / 100),
    aspect_ratio_range=aspect_range,
    min_object_covered=0,
    use_image_if_no_bounding_boxes=True,
  )
  return begin, crop_size


@keyed_op("inception_crop")
def get_inception_crop(size=None, area_min=5, area_max=100, method="bilinear", antialias=False):
  """Random crop covering area_min..area_max percent of the image (aspect ratio 0.75..1.33), then resize
  to `size` if given. Stateless: the crop depends only on the example's seed."""
  size = _check_crop_args("inception_crop", size, area_min, area_max, method)

  def inception_crop(image, features):
    begin, crop_size = _sample_box(tf.shape(image), features, area_min, area_max, _ASPECT_RANGE)
    crop = tf.slice(image, begin, crop_size)
    crop.set_shape([None, None, image.shape[-1]])
    return resize_image(crop, size, method, antialias) if size else crop

  return inception_crop


@keyed_op("decode_jpeg_and_inception_crop")
def get_decode_jpeg_and_inception_crop(
  size=None, area_min=5, area_max=100, ratio_min=0.75, ratio_max=1.33, method="bilinear", antialias=False
):
  """JPEG bytes -> an inception crop decoded straight from the JPEG (RGB uint8), resized to `size` if given."""
  size = _check_crop_args("decode_jpeg_and_inception_crop", size, area_min, area_max, method)
  if not (is_number(ratio_min) and is_number(ratio_max) and 0 < ratio_min <= ratio_max):
    raise ValueError(
      f"pp op 'decode_jpeg_and_inception_crop': need 0 < ratio_min <= ratio_max, got {ratio_min}, {ratio_max}"
    )

  def decode_and_crop(data, features):
    begin, crop_size = _sample_box(
      tf.image.extract_jpeg_shape(data), features, area_min, area_max, (ratio_min, ratio_max)
    )
    window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
    image = tf.image.decode_and_crop_jpeg(data, window, channels=3)
    image.set_shape([None, None, 3])
    return resize_image(image, size, method, antialias) if size else image

  return decode_and_crop


@keyed_op("random_crop")
def get_random_crop(crop_size):
  """A crop of `crop_size` (int or (h, w)) at a uniformly random position (stateless, seeded per example)."""
  height, width = _check_size("random_crop", crop_size, "crop_size")

  def random_crop(image, features):
    channels = image.shape[-1] if image.shape[-1] is not None else tf.shape(image)[-1]
    return tf.image.stateless_random_crop(image, (height, width, channels), seed=next_seed(features))

  return random_crop


@keyed_op("central_crop")
def get_central_crop(crop_size=None, size=None):
  """Crops the central `crop_size` (int or (h, w)) window; without a size, the largest central square.

  `size` is an alias of crop_size kept for older siglip_rins strings. The image must be at least that large.
  """
  if crop_size and size:
    raise ValueError("pp op 'central_crop': give crop_size or size, not both")
  crop_size = crop_size or size
  crop_size = _check_size("central_crop", crop_size, "crop_size") if crop_size else None

  def central_crop(image, features):
    shape = tf.shape(image)
    if crop_size:
      height, width = crop_size
    else:
      height = width = tf.minimum(shape[0], shape[1])
    return tf.image.crop_to_bounding_box(image, (shape[0] - height) // 2, (shape[1] - width) // 2, height, width)

  return central_crop


@keyed_op("flip_lr")
def get_flip_lr():
  """Flips left-right with probability 1/2 (stateless, seeded per example)."""
  return lambda image, features: tf.image.stateless_random_flip_left_right(image, seed=next_seed(features))


def _number_or_list(op: str, name: str, value):
  values = value if isinstance(value, (list, tuple)) else [value]
  if not values or not all(is_number(v) for v in values):
    raise ValueError(f"pp op {op!r}: {name} must be a number or a list of numbers (per channel), got {value!r}")
  return list(values) if isinstance(value, (list, tuple)) else value


@keyed_op("value_range")
def get_value_range(vmin=-1, vmax=1, in_min=0, in_max=255.0, clip_values=False):
  """Linearly maps [in_min, in_max] to [vmin, vmax]; float32 output. Every bound may be a per-channel list.

  Computed as big_vision does: vmin + (x - in_min) / (in_max - in_min) * (vmax - vmin) in float32."""
  vmin, vmax, in_min, in_max = (
    _number_or_list("value_range", n, v)
    for n, v in (("vmin", vmin), ("vmax", vmax), ("in_min", in_min), ("in_max", in_max))
  )
  if np.any(np.equal(np.float32(in_min), np.float32(in_max))):
    raise ValueError("pp op 'value_range': in_min and in_max must differ")

  def value_range(image, features):
    in_lo, in_hi = tf.constant(in_min, tf.float32), tf.constant(in_max, tf.float32)
    out_lo, out_hi = tf.constant(vmin, tf.float32), tf.constant(vmax, tf.float32)
    image = (tf.cast(image, tf.float32) - in_lo) / (in_hi - in_lo)
    image = out_lo + image * (out_hi - out_lo)
    if clip_values:
      image = tf.clip_by_value(image, tf.minimum(out_lo, out_hi), tf.maximum(out_lo, out_hi))
    return image

  return value_range


def _standardize(op: str, mean, std):
  mean, std = _number_or_list(op, "mean", mean), _number_or_list(op, "std", std)

  def standardize(image, features):
    return (tf.cast(image, tf.float32) - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)

  return standardize


@keyed_op("vgg_value_range")
def get_vgg_value_range(mean=VGG_MEAN, std=VGG_STD):
  """(x - mean) / std per channel, float32 (defaults: the ImageNet/VGG statistics on the 0..255 scale)."""
  return _standardize("vgg_value_range", mean, std)


@keyed_op("clip_value_range")
def get_clip_value_range():
  """(x - mean) / std with OpenAI CLIP's per-channel statistics on the 0..255 scale, float32."""
  return _standardize("clip_value_range", CLIP_MEAN, CLIP_STD)
