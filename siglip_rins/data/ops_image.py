"""Image pp ops. Images are [H, W, 3] tensors; uint8 after `decode`, and geometric ops keep the dtype
(resizing a uint8 image rounds and clips back to uint8). `value_range` gives float32.
"""

import tensorflow as tf

from siglip_rins.data.ops_common import check_key, next_seed, require
from siglip_rins.data.pp import register

_METHODS = ("bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5", "gaussian", "mitchellcubic")


def _check_size(op: str, size, name="size"):
  """int s -> (s, s); (h, w) -> (h, w); anything else -> ValueError naming the op."""
  if isinstance(size, int) and not isinstance(size, bool):
    size = (size, size)
  if (
    not isinstance(size, (tuple, list))
    or len(size) != 2
    or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
  ):
    raise ValueError(f"pp op {op!r}: {name} must be a positive int or (height, width), got {size!r}")
  return tuple(size)


def _cast_like(image: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
  if dtype.is_integer:
    image = tf.clip_by_value(tf.round(image), dtype.min, dtype.max)
  return tf.cast(image, dtype)


@register("decode")
def get_decode(channels=3, inkey="image", outkey=None, precise=False):
  """Encoded bytes (JPEG/PNG/GIF first frame/BMP/WebP) -> uint8 [H, W, channels].

  Grayscale becomes RGB, RGBA drops alpha (channels=3). `precise` uses the exact IDCT for JPEG.
  """
  if channels not in (1, 3):
    raise ValueError(f"pp op 'decode': channels must be 1 or 3, got {channels!r}")
  check_key("decode", inkey, "inkey")
  out_key = outkey or inkey

  def decode(features):
    features = dict(features)
    data = require(features, inkey, "decode")
    method = "INTEGER_ACCURATE" if precise else ""
    if precise:
      image = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=channels, dct_method=method),
        lambda: tf.io.decode_image(data, channels=channels, expand_animations=False),
      )
    else:
      image = tf.io.decode_image(data, channels=channels, expand_animations=False)
    image.set_shape([None, None, channels])
    features[out_key] = image
    return features

  return decode


@register("resize")
def get_resize(size, method="bilinear", antialias=False, key="image"):
  """Resizes to `size` (int s -> s x s, or (h, w)); keeps the dtype."""
  height, width = _check_size("resize", size)
  if method not in _METHODS:
    raise ValueError(f"pp op 'resize': method must be one of {_METHODS}, got {method!r}")
  check_key("resize", key)

  def resize(features):
    features = dict(features)
    image = require(features, key, "resize")
    out = tf.image.resize(image, (height, width), method=method, antialias=bool(antialias))
    features[key] = _cast_like(out, image.dtype)
    return features

  return resize


@register("resize_small")
def get_resize_small(smaller_size, method="area", antialias=False, key="image"):
  """Resizes so the shorter side is `smaller_size`, keeping the aspect ratio (longer side rounded)."""
  if isinstance(smaller_size, bool) or not isinstance(smaller_size, int) or smaller_size < 1:
    raise ValueError(f"pp op 'resize_small': smaller_size must be a positive int, got {smaller_size!r}")
  if method not in _METHODS:
    raise ValueError(f"pp op 'resize_small': method must be one of {_METHODS}, got {method!r}")

  def resize_small(features):
    features = dict(features)
    image = require(features, key, "resize_small")
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = float(smaller_size) / tf.reduce_min(shape)
    new_hw = tf.cast(tf.round(shape * scale), tf.int32)
    new_hw = tf.maximum(new_hw, smaller_size)  # the shorter side is exactly smaller_size
    out = tf.image.resize(image, new_hw, method=method, antialias=bool(antialias))
    features[key] = _cast_like(out, image.dtype)
    return features

  return resize_small


@register("central_crop")
def get_central_crop(size, key="image"):
  """Crops the central `size` (int or (h, w)) window; the image must be at least that large."""
  height, width = _check_size("central_crop", size)

  def central_crop(features):
    features = dict(features)
    image = require(features, key, "central_crop")
    shape = tf.shape(image)
    tf.debugging.assert_greater_equal(shape[0], height, message="central_crop: image smaller than crop")
    tf.debugging.assert_greater_equal(shape[1], width, message="central_crop: image smaller than crop")
    top, left = (shape[0] - height) // 2, (shape[1] - width) // 2
    features[key] = image[top : top + height, left : left + width]
    features[key].set_shape([height, width, image.shape[-1]])
    return features

  return central_crop


@register("inception_crop")
def get_inception_crop(size=None, area_min=5, area_max=100, method="bilinear", key="image"):
  """Random crop covering area_min..area_max percent of the image (aspect 3/4..4/3), then resize to size
  (if given). Stateless: the crop depends only on the example's seed."""
  if size is not None:
    size = _check_size("inception_crop", size)
  for name, value in (("area_min", area_min), ("area_max", area_max)):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 100:
      raise ValueError(f"pp op 'inception_crop': {name} must be a percentage in (0, 100], got {value!r}")
  if area_min > area_max:
    raise ValueError(f"pp op 'inception_crop': area_min {area_min} > area_max {area_max}")

  def inception_crop(features):
    features = dict(features)
    image = require(features, key, "inception_crop")
    seed = next_seed(features)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image),
      tf.zeros([0, 0, 4], tf.float32),
      seed=seed,
      area_range=(area_min / 100, area_max / 100),
      aspect_ratio_range=(3 / 4, 4 / 3),
      min_object_covered=0,
      use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    crop.set_shape([None, None, image.shape[-1]])
    if size is not None:
      crop = _cast_like(tf.image.resize(crop, size, method=method), image.dtype)
    features[key] = crop
    return features

  return inception_crop


@register("flip_lr")
def get_flip_lr(key="image"):
  """Flips left-right with probability 1/2 (stateless, seeded per example)."""
  check_key("flip_lr", key)

  def flip_lr(features):
    features = dict(features)
    image = require(features, key, "flip_lr")
    features[key] = tf.image.stateless_random_flip_left_right(image, seed=next_seed(features))
    return features

  return flip_lr


@register("value_range")
def get_value_range(vmin=-1, vmax=1, in_min=0, in_max=255.0, clip_values=False, key="image"):
  """Linearly maps [in_min, in_max] to [vmin, vmax]; float32 output."""
  for name, value in (("vmin", vmin), ("vmax", vmax), ("in_min", in_min), ("in_max", in_max)):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ValueError(f"pp op 'value_range': {name} must be a number, got {value!r}")
  if in_max == in_min:
    raise ValueError("pp op 'value_range': in_min and in_max must differ")

  def value_range(features):
    features = dict(features)
    image = tf.cast(require(features, key, "value_range"), tf.float32)
    image = (image - in_min) / (in_max - in_min) * (vmax - vmin) + vmin
    if clip_values:
      image = tf.clip_by_value(image, min(vmin, vmax), max(vmin, vmax))
    features[key] = image
    return features

  return value_range
