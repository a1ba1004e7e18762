"""SigLIP image-text contrastive task.

Batch: 'image' float32 [B, H, W, 3] in [-1, 1]; 'labels' int32 [B, L] token ids of the caption.
Loss (config.task.loss): 'sigmoid' (default; chunked across devices when the batch axis spans >1 device, equal to
the global loss), 'sigmoid_global' (always forms the B x B logits), 'softmax' (CLIP).
"""

from __future__ import annotations

import numpy as np

from siglip_rins import losses
from siglip_rins.tasks.base import Task

LOSSES = ("sigmoid", "sigmoid_global", "softmax")


class ContrastiveTask(Task):
  name = "contrastive"
  batch_keys = ("image", "labels")
  allowed_task_keys = ("name", "loss")

  def __init__(self, config, mesh=None):
    super().__init__(config, mesh)
    self.loss_name = self.task_cfg.get("loss", "sigmoid")
    if self.loss_name not in LOSSES:
      raise ValueError(f"config.task.loss: unknown loss {self.loss_name!r}; allowed: {LOSSES}")
    self.image_size = int(config.input.image_size)
    self.text_len = int(config.input.text_len)

  def example_batch(self, batch_size):
    return {
      "image": np.zeros((batch_size, self.image_size, self.image_size, 3), np.float32),
      "labels": np.zeros((batch_size, self.text_len), np.int32),
    }

  def init_args(self, batch):
    return (batch["image"], batch["labels"])

  def input_shapes(self):
    return {"image": (self.image_size, self.image_size), "text": self.text_len}

  def _n_batch_devices(self) -> int:
    if self.mesh is None:
      return 1
    return int(np.prod([self.mesh.shape[a] for a in ("data", "fsdp") if a in self.mesh.shape]))

  def loss(self, model, params, batch, rng):
    zimg, ztxt, out = model.apply({"params": params}, batch["image"], batch["labels"], train=True, rngs={"rins": rng})
    t, b = out["t"], out["b"]
    if self.loss_name == "softmax":
      loss = losses.softmax_loss(zimg, ztxt, t)
    elif self.loss_name == "sigmoid" and self._n_batch_devices() > 1:
      axes = tuple(a for a in ("data", "fsdp") if a in self.mesh.shape and self.mesh.shape[a] > 1)
      loss = losses.sharded_sigmoid_loss(zimg, ztxt, t, b, self.mesh, axes if len(axes) > 1 else axes[0])
    else:
      loss = losses.sigmoid_loss(zimg, ztxt, t, b)
    metrics = {"t": t, "b": b, "rounds/img": out.get("rounds/img", 0), "rounds/txt": out.get("rounds/txt", 0)}
    return loss, metrics
