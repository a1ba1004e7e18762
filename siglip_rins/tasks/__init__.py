"""Task plugins for the one training loop.

A task knows its batch layout, the model inputs for initialisation, the FLOPs input shapes and the training
loss.  The trainer (siglip_rins/train.py) is the same for all of them.

    task = get_task(config)        # by config.task.name ('contrastive', 'lm', 'classification')
    loss, metrics = task.loss(model, params, batch, rng)   # inside the jitted step
"""

from __future__ import annotations

from typing import Any

from siglip_rins.tasks.base import Task
from siglip_rins.tasks.classification import ClassificationTask
from siglip_rins.tasks.contrastive import ContrastiveTask
from siglip_rins.tasks.lm import LMTask

TASKS = {"contrastive": ContrastiveTask, "lm": LMTask, "classification": ClassificationTask}


def get_task(config: Any, mesh=None) -> Task:
  name = config.task.name if "task" in config and "name" in config.task else None
  if name not in TASKS:
    raise ValueError(f"config.task.name: unknown task {name!r}; allowed: {sorted(TASKS)}")
  from siglip_rins import example_spec

  example_spec.finalize(config, require_tokenizer=False)  # derived input sizes and vocab, after all overrides
  return TASKS[name](config, mesh)


__all__ = ["get_task", "Task", "TASKS"]
