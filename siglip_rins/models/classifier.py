"""ViT image classifier (paper App. E.2.2 / G): a ViT with a linear head whose bias starts at -6.9
(sigmoid cross-entropy friendly).  apply(images, train, rounds) -> logits [B, num_classes]."""

from __future__ import annotations

import flax.linen as nn

from siglip_rins.models.vit import ViT


class Classifier(nn.Module):
  vit: dict

  @nn.compact
  def __call__(self, images, train: bool = False, rounds=None, repeat=None):
    logits, _ = ViT(**self.vit, name="img")(images, train=train, rounds=rounds, repeat=repeat)
    return logits
