"""Shapes of a two-tower model's parameters and inputs, and the inference `rounds` argument.

Used by export, the big_vision and Hugging Face interop and the predictor; pure JAX (no TensorFlow).
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

Rounds = Union[None, int, Mapping[str, int]]


def check_rounds(rounds: Rounds) -> Rounds:
  """None, an int >= 1, or {'img': int|None, 'txt': int|None}; anything else -> ValueError."""
  if rounds is None:
    return None
  if isinstance(rounds, Mapping):
    unknown = sorted(set(rounds) - {"img", "txt"})
    if unknown:
      raise ValueError(f"rounds: unknown tower key(s) {unknown}; allowed: ['img', 'txt']")
    return {k: check_rounds(v) for k, v in rounds.items()}
  if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
    raise ValueError(f"rounds must be None or an integer >= 1, got {rounds!r}")
  return int(rounds)


def param_shapes(model, image_size: Optional[tuple[int, int]], text_len: Optional[int]) -> dict:
  """Nested dict of jax.ShapeDtypeStruct of `model`'s params (two_towers) for inputs of these sizes."""
  images = None if image_size is None else jax.ShapeDtypeStruct((1, *image_size, 3), jnp.float32)
  texts = None if text_len is None else jax.ShapeDtypeStruct((1, text_len), jnp.int32)
  variables = jax.eval_shape(lambda i, t: model.init(jax.random.PRNGKey(0), i, t), images, texts)
  return jax.tree.map(lambda x: x, dict(variables["params"]))


def image_size_from_params(
  model, flat_params: Mapping[str, np.ndarray], configured: Optional[tuple[int, int]]
) -> Optional[tuple[int, int]]:
  """Input size the image tower needs: the configured size when its patch grid fits the learned position
  embedding, else the square grid of `img/pos_embedding` times the patch size; None without an image tower."""
  image_kw = getattr(model, "image", None)
  if image_kw is None:
    return None
  ph, pw = image_kw.get("patch_size", (16, 16))
  pos = flat_params.get("img/pos_embedding")
  if pos is None:  # fixed (sincos2d) position embedding: any size works; the configured one is required
    if configured is None:
      raise ValueError("cannot tell the image size: give image_size (the model has no learned position embedding)")
    return configured
  n = int(pos.shape[1])
  if configured is not None and (configured[0] // ph) * (configured[1] // pw) == n:
    return configured
  g = math.isqrt(n)
  if g * g != n:
    raise ValueError(f"img/pos_embedding has {n} positions, not a square grid; give image_size explicitly")
  return g * ph, g * pw
