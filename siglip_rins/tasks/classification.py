"""Supervised image classification task (paper App. E.2.2 / G).

Batch: 'image' float32 [B, H, W, 3]; 'labels' float32 [B, C] (one-hot or multi-hot).
Loss (config.task.loss): 'sigmoid_xent' (default, with the head bias at -6.9) or 'softmax_xent'.
Mixup (config.mixup = dict(p=0.2)): images and labels are mixed with the batch rolled by one, with a ratio
drawn from Beta(p, p) per step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from siglip_rins.tasks.base import Task

LOSSES = ("sigmoid_xent", "softmax_xent")


def mixup(rng, image, labels, p: float):
  """Returns mixed (image, labels): a * x + (1 - a) * roll(x, 1), a ~ Beta(p, p)."""
  a = jax.random.beta(rng, p, p)
  a = jnp.maximum(a, 1.0 - a)
  mix = lambda x: a * x + (1.0 - a) * jnp.roll(x, 1, axis=0)
  return mix(image), mix(labels)


class ClassificationTask(Task):
  name = "classification"
  batch_keys = ("image", "labels")
  allowed_task_keys = ("name", "loss")

  def __init__(self, config, mesh=None):
    super().__init__(config, mesh)
    self.loss_name = self.task_cfg.get("loss", "sigmoid_xent")
    if self.loss_name not in LOSSES:
      raise ValueError(f"config.task.loss: unknown loss {self.loss_name!r}; allowed: {LOSSES}")
    self.image_size = int(config.input.image_size)
    self.num_classes = int(config.model.num_classes)
    self.mixup_p = float(config.get("mixup", {}).get("p", 0.0)) if "mixup" in config else 0.0

  def example_batch(self, batch_size):
    return {
      "image": np.zeros((batch_size, self.image_size, self.image_size, 3), np.float32),
      "labels": np.zeros((batch_size, self.num_classes), np.float32),
    }

  def init_args(self, batch):
    return (batch["image"],)

  def input_shapes(self):
    return {"image": (self.image_size, self.image_size)}

  def loss(self, model, params, batch, rng):
    rng_mix, rng_rins = jax.random.split(rng)
    image, labels = batch["image"], batch["labels"].astype(jnp.float32)
    if self.mixup_p > 0:
      image, labels = mixup(rng_mix, image, labels, self.mixup_p)
    logits = model.apply({"params": params}, image, train=True, rngs={"rins": rng_rins})
    if self.loss_name == "sigmoid_xent":
      loss = optax.sigmoid_binary_cross_entropy(logits, labels).sum(-1).mean()
    else:
      loss = optax.softmax_cross_entropy(logits, labels).mean()
    acc = (jnp.argmax(logits, -1) == jnp.argmax(labels, -1)).mean()
    return loss, {"train_accuracy": acc}
