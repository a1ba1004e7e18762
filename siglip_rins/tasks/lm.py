"""Decoder-only language modelling task.

Batch: 'tokens' int32 [B, T+1]; optional 'segment_ids' and 'positions' int32 [B, T+1] from sequence packing.
Inputs are tokens[:, :-1], targets tokens[:, 1:]; pad (id 0) targets and targets that start a new segment are
not scored.  Loss = mean next-token cross-entropy over scored tokens (nats).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from siglip_rins.tasks.base import Task


def next_token_terms(model, params, batch, rng=None, train=False, rounds=None):
  """Returns (per-token NLL [B, T], weights [B, T]) of the batch's next-token predictions."""
  tokens = batch["tokens"]
  inputs, targets = tokens[:, :-1], tokens[:, 1:]
  seg = batch.get("segment_ids")
  pos = batch.get("positions")
  kw = {}
  if seg is not None:
    kw["segment_ids"] = seg[:, :-1]
  if pos is not None:
    kw["positions"] = pos[:, :-1]
  rngs = {"rins": rng} if rng is not None else {}
  logits = model.apply({"params": params}, inputs, train=train, rounds=rounds, rngs=rngs, **kw)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  weights = (targets != 0).astype(jnp.float32)
  if seg is not None:
    weights = weights * (seg[:, 1:] == seg[:, :-1]).astype(jnp.float32)
  return nll, weights


class LMTask(Task):
  name = "lm"
  batch_keys = ("tokens",)

  def __init__(self, config, mesh=None):
    super().__init__(config, mesh)
    self.seq_len = int(config.input.seq_len)

  def example_batch(self, batch_size):
    z = np.zeros((batch_size, self.seq_len + 1), np.int32)
    return {"tokens": z, "segment_ids": z, "positions": z}

  def init_args(self, batch):
    return (batch["tokens"][:, :-1],)

  def input_shapes(self):
    return {"tokens": self.seq_len}

  def loss(self, model, params, batch, rng):
    nll, w = next_token_terms(model, params, batch, rng, train=True)
    loss = (nll * w).sum() / jnp.maximum(w.sum(), 1.0)
    return loss, {"tokens_scored": w.sum()}
