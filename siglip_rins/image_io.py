"""Robust image-file reading for the command line (PIL + numpy, no TensorFlow).

`read_image(path) -> np.uint8 [H, W, 3]` (RGB) for JPEG/PNG/WebP/GIF/BMP/TIFF files in any PIL mode:
* RGBA / LA / PA: the alpha channel is dropped (as the training pipeline's `decode` does with channels=3).
* L / 1 (grayscale, bilevel): copied to the three channels.
* P (palette): expanded through the palette.
* CMYK / YCbCr / LAB / HSV: converted by PIL to RGB.
* 16-bit and 32-bit integer (I;16*, I) and float (F) grayscale: scaled to 0..255 (16-bit: v / 257; float: clipped
  to [0, 1] when its maximum is <= 1, else to [0, 255]) and copied to three channels.
The EXIF orientation tag is applied (phone photos come out upright).  Animated files give their first frame.

An unreadable file raises `ImageReadError` (a ValueError) whose message names the file and the reason; a missing
file raises FileNotFoundError.
"""

from __future__ import annotations

import os
import pathlib
from typing import Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
# Refuse absurd sizes before decoding (PIL's decompression-bomb guard raises above 2x this).
Image.MAX_IMAGE_PIXELS = 178_956_970


class ImageReadError(ValueError):
  """A file exists but is not a readable image (message: '<path>: <reason>')."""


def _to_rgb_uint8(img: Image.Image) -> np.ndarray:
  """Any PIL image -> uint8 [H, W, 3]."""
  mode = img.mode
  if mode in ("RGB",):
    return np.asarray(img, dtype=np.uint8)
  if mode.startswith("I;16") or mode in ("I", "F"):
    arr = np.asarray(img).astype(np.float64)
    if mode.startswith("I;16"):
      arr = arr / 257.0
    elif mode == "I":
      arr = arr / 257.0 if arr.size and arr.max() > 255 else arr
    else:  # 'F'
      arr = np.clip(arr, 0.0, 1.0) * 255.0 if arr.size and arr.max() <= 1.0 else arr
    gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)
  if mode == "P":
    img = img.convert("RGBA")  # palettes may carry transparency; expand first, then drop alpha
  return np.asarray(img.convert("RGB"), dtype=np.uint8)


def read_image(path: str | os.PathLike) -> np.ndarray:
  """Reads one image file -> RGB uint8 [H, W, 3].  Raises FileNotFoundError or ImageReadError naming `path`."""
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"{path}: no such file")
  if not path.is_file():
    raise ImageReadError(f"{path}: not a regular file")
  if path.stat().st_size == 0:
    raise ImageReadError(f"{path}: empty file (0 bytes)")
  try:
    with Image.open(path) as img:
      img.load()
      img = ImageOps.exif_transpose(img) or img
      out = _to_rgb_uint8(img)
  except UnidentifiedImageError:
    raise ImageReadError(f"{path}: not a recognised image format (JPEG, PNG, WebP, GIF, BMP, TIFF)") from None
  except Image.DecompressionBombError as e:
    raise ImageReadError(f"{path}: image too large ({e})") from None
  except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated / corrupt data
    raise ImageReadError(f"{path}: corrupt or truncated image data ({type(e).__name__}: {e})") from None
  if out.ndim != 3 or out.shape[-1] != 3 or out.shape[0] == 0 or out.shape[1] == 0:
    raise ImageReadError(f"{path}: decoded to an unusable shape {out.shape}")
  return out


def to_rgb_uint8(image) -> np.ndarray:
  """A PIL image, or a numpy array [H, W] / [H, W, 1|3|4] (uint8, or float in [0, 1]) -> uint8 [H, W, 3]."""
  if isinstance(image, Image.Image):
    return _to_rgb_uint8(image)
  arr = np.asarray(image)
  if arr.ndim == 2:
    arr = arr[..., None]
  if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4) or 0 in arr.shape[:2]:
    raise ValueError(f"an image array must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]; got shape {arr.shape}")
  if arr.dtype != np.uint8:
    if not np.issubdtype(arr.dtype, np.floating):
      raise ValueError(f"an image array must be uint8 (0..255) or float (0..1); got dtype {arr.dtype}")
    arr = np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
  if arr.shape[-1] == 1:
    arr = np.repeat(arr, 3, axis=-1)
  return np.ascontiguousarray(arr[..., :3])


def list_image_files(folder: str | os.PathLike) -> list[pathlib.Path]:
  """Files directly in `folder` whose extension is an image extension (case-insensitive), sorted by name.

  Raises FileNotFoundError when `folder` does not exist and ValueError when it is not a directory.
  """
  folder = pathlib.Path(folder)
  if not folder.exists():
    raise FileNotFoundError(f"image folder {folder} does not exist")
  if not folder.is_dir():
    raise ValueError(f"{folder} is not a folder")
  return sorted(
    p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
  )


def read_images(paths: Iterable[str | os.PathLike]) -> Iterator[tuple[pathlib.Path, np.ndarray | None, str | None]]:
  """Yields (path, image uint8 [H, W, 3] or None, error message or None) for each path, never raising for
  unreadable or missing files (the message says why)."""
  for p in paths:
    p = pathlib.Path(p)
    try:
      yield p, read_image(p), None
    except (FileNotFoundError, ImageReadError) as e:
      yield p, None, str(e)
