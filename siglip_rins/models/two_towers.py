"""SigLIP two-tower model: image tower `img`, text tower `txt`, learnable log-temperature `t` and bias `b`.

apply(images [B,H,W,3] | None, texts [B,L] int32 | None, train=False, rounds=None, repeat=None)
  -> (zimg [B, D] | None, ztxt [B, D] | None, out) with L2-normalised embeddings, out['t'] = exp(t) (the
     temperature), out['b'] (the bias), out['rounds/img'], out['rounds/txt'] (rounds that ran).
`rounds` (A^kB: the first block's leading run) and `repeat` (repeat-all-over of the signature's unit) may each be
an int (both towers) or a dict {'img': r1, 'txt': r2}; see siglip_rins.recursion.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Union

import flax.linen as nn
import jax.numpy as jnp

from siglip_rins.models.text import TextTransformer
from siglip_rins.models.vit import ViT


def _l2_normalize(x, eps=1e-8):
  return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


class TwoTowers(nn.Module):
  image: Optional[dict] = None  # kwargs of ViT (recursion given as RecursionConfig)
  text: Optional[dict] = None  # kwargs of TextTransformer
  temperature_init: float = 10.0
  bias_init: float = -10.0

  def setup(self):
    self.img = ViT(**self.image) if self.image is not None else None
    self.txt = TextTransformer(**self.text) if self.text is not None else None
    self.t = self.param("t", nn.initializers.constant(math.log(self.temperature_init)), (1,), jnp.float32)
    self.b = self.param("b", nn.initializers.constant(self.bias_init), (1,), jnp.float32)

  def __call__(
    self,
    images=None,
    texts=None,
    train: bool = False,
    rounds: Union[None, int, dict] = None,
    repeat: Union[None, int, dict] = None,
  ):
    r = rounds if isinstance(rounds, dict) else {"img": rounds, "txt": rounds}
    rep = repeat if isinstance(repeat, dict) else {"img": repeat, "txt": repeat}
    out: dict[str, Any] = {}
    zimg = ztxt = None
    if images is not None:
      if self.img is None:
        raise ValueError("this model has no image tower")
      zimg, aux = self.img(images, train=train, rounds=r.get("img"), repeat=rep.get("img"))
      out["rounds/img"] = aux["rounds"]
      zimg = _l2_normalize(zimg)
    if texts is not None:
      if self.txt is None:
        raise ValueError("this model has no text tower")
      ztxt, aux = self.txt(texts, train=train, rounds=r.get("txt"), repeat=rep.get("txt"))
      out["rounds/txt"] = aux["rounds"]
      ztxt = _l2_normalize(ztxt)
    out["t"] = jnp.exp(self.t[0])
    out["b"] = self.b[0]
    return zimg, ztxt, out
