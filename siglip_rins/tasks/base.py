"""The task interface the trainer calls."""

from __future__ import annotations

from typing import Any

import jax


class Task:
  """Subclasses define the batch layout (`batch_keys`), `example_batch`, `input_shapes` and `loss`."""

  name = "base"
  batch_keys: tuple[str, ...] = ()
  allowed_task_keys: tuple[str, ...] = ("name",)

  def __init__(self, config: Any, mesh=None):
    self.config = config
    self.mesh = mesh
    task_cfg = dict(config.task) if "task" in config else {}
    unknown = sorted(set(task_cfg) - set(self.allowed_task_keys))
    if unknown:
      raise ValueError(
        f"config.task: unknown key(s) {unknown} for task {self.name!r}; allowed: {sorted(self.allowed_task_keys)}"
      )
    self.task_cfg = task_cfg

  def example_batch(self, batch_size: int) -> dict:
    """Zeros shaped like a training batch (used for init and eval_shape)."""
    raise NotImplementedError

  def init_args(self, batch: dict) -> tuple:
    """Positional model inputs for model.init from a batch."""
    raise NotImplementedError

  def input_shapes(self) -> dict:
    """Per-example input shapes for siglip_rins.flops.model_flops."""
    raise NotImplementedError

  def loss(self, model, params, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
    """Training loss (scalar) and metrics (dict of scalars) on a global batch."""
    raise NotImplementedError

  def check_batch(self, batch: dict) -> None:
    missing = [k for k in self.batch_keys if k not in batch]
    if missing:
      raise ValueError(
        f"task {self.name!r}: batch lacks {missing} (has {sorted(batch)}); check config.input.pp produces them"
      )
