"""Contrastive losses for two-tower (image, text) models.

All losses take L2-normalised embeddings ``zimg [B, D]`` and ``ztxt [B, D]`` where row ``i`` of both is a
matching (image, text) pair.  Logits are always computed in float32, whatever the embeddings' dtype.

* :func:`sigmoid_loss` -- SigLIP loss on the full (global) batch:
  ``logits_ij = t * <zimg_i, ztxt_j> + b``, ``z_ij = +1`` if ``i == j`` else ``-1``,
  ``loss = -(1/B) * sum_ij log_sigmoid(z_ij * logits_ij)`` (divided by ``B``, not ``B**2``).
  ``t`` is the temperature itself (the model returns ``exp(t_param)``), ``b`` the bias; both scalars.
* :func:`chunked_sigmoid_loss` -- the same value (and the same gradients) computed *inside* ``jax.shard_map``
  from each device's local rows only: text embeddings travel around a ring of devices with ``lax.ppermute``
  and every device only ever forms ``[B/n, B/n]`` logit blocks.  The global ``[B, B]`` logit matrix is never
  built, so the memory for logits per device is ``O((B/n)**2)`` instead of ``O(B**2)``.
* :func:`sharded_sigmoid_loss` -- convenience wrapper of the chunked loss for callers holding global arrays.
* :func:`softmax_loss` -- CLIP loss: mean of image->text and text->image cross-entropies with logits
  ``t * zimg @ ztxt.T``.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

__all__ = ["sigmoid_loss", "chunked_sigmoid_loss", "sharded_sigmoid_loss", "softmax_loss"]


def _check_pair(zimg, ztxt, name: str) -> None:
  if zimg.ndim != 2 or ztxt.ndim != 2:
    raise ValueError(f"{name}: zimg and ztxt must be [B, D]; got shapes {zimg.shape} and {ztxt.shape}")
  if zimg.shape != ztxt.shape:
    raise ValueError(f"{name}: zimg {zimg.shape} and ztxt {ztxt.shape} must have the same shape [B, D]")


def _block_logits(zimg, ztxt, t, b):
  """float32 logits ``t * zimg @ ztxt.T + b`` for a block: ``[Bi, D] x [Bj, D] -> [Bi, Bj]``."""
  dots = jnp.dot(zimg.astype(jnp.float32), ztxt.astype(jnp.float32).T, preferred_element_type=jnp.float32)
  return jnp.asarray(t, jnp.float32) * dots + jnp.asarray(b, jnp.float32)


def _block_sum(zimg, ztxt, t, b, with_positives: bool):
  """Sum over a block of ``-log_sigmoid(z * logits)``; positives on the diagonal iff ``with_positives``."""
  logits = _block_logits(zimg, ztxt, t, b)
  if with_positives:
    n = logits.shape[0]
    z = 2.0 * jnp.eye(n, dtype=jnp.float32) - 1.0
  else:
    z = -1.0
  return -jnp.sum(jax.nn.log_sigmoid(z * logits))


def sigmoid_loss(zimg: jax.Array, ztxt: jax.Array, t: jax.Array, b: jax.Array) -> jax.Array:
  """SigLIP sigmoid loss on a whole batch.

  Args:
    zimg: ``[B, D]`` image embeddings (L2-normalised), any float dtype.
    ztxt: ``[B, D]`` text embeddings; row ``i`` pairs with ``zimg[i]``.
    t: scalar temperature (already exponentiated, e.g. 10 at init).
    b: scalar bias (e.g. -10 at init).

  Returns:
    float32 scalar ``-(1/B) * sum_{i,j} log_sigmoid(z_ij * (t * <zimg_i, ztxt_j> + b))``, ``z = 2*I - 1``.
  """
  _check_pair(zimg, ztxt, "sigmoid_loss")
  return _block_sum(zimg, ztxt, t, b, with_positives=True) / zimg.shape[0]


def _axis_size(axis_name) -> int:
  return jax.lax.axis_size(axis_name)


def chunked_sigmoid_loss(
  zimg_local: jax.Array, ztxt_local: jax.Array, t: jax.Array, b: jax.Array, axis_name: str | Sequence[str]
) -> jax.Array:
  """SigLIP sigmoid loss over a batch sharded along ``axis_name``; call inside ``jax.shard_map``.

  Each of the ``n`` devices along ``axis_name`` holds ``B/n`` consecutive rows of both embeddings (the usual
  ``PartitionSpec(axis_name)`` batch sharding; device ``k`` holds rows ``k*B/n ... (k+1)*B/n - 1``).
  Step 0 scores the local images against the local texts (the only block with positives, on its diagonal);
  then, ``n - 1`` times, the text shard is passed to the next device with ``lax.ppermute`` and the local
  images are scored against it as negatives.  Per-device partial sums are ``psum``-ed and divided by the
  global batch ``B``, so the result equals :func:`sigmoid_loss` on the gathered batch, and so do its
  gradients (``ppermute``'s transpose is the reverse rotation).  The ring runs in a ``lax.scan`` whose body
  is rematerialised, so the backward pass keeps only the ``n`` text shards (``B x D`` values per device) and
  one ``[B/n, B/n]`` block at a time -- never the ``[B, B]`` logits.

  Args:
    zimg_local: ``[B/n, D]`` this device's image embeddings.
    ztxt_local: ``[B/n, D]`` this device's text embeddings (same rows).
    t: scalar temperature (already exponentiated), replicated.
    b: scalar bias, replicated.
    axis_name: the mesh axis name (or tuple of names) the batch is sharded over.

  Returns:
    float32 scalar, the global loss, identical on every device.
  """
  _check_pair(zimg_local, ztxt_local, "chunked_sigmoid_loss")
  n = _axis_size(axis_name)
  local_b = zimg_local.shape[0]
  global_b = local_b * n
  # Send my text shard to the device with the next index: after k steps I hold shard (me - k) mod n.
  perm = [(i, (i + 1) % n) for i in range(n)]

  total = _block_sum(zimg_local, ztxt_local, t, b, with_positives=True)

  @jax.checkpoint
  def ring_step(carry, _):
    acc, ztxt_cur = carry
    ztxt_cur = jax.lax.ppermute(ztxt_cur, axis_name, perm)
    acc = acc + _block_sum(zimg_local, ztxt_cur, t, b, with_positives=False)
    return (acc, ztxt_cur), None

  if n > 1:
    (total, _), _ = jax.lax.scan(ring_step, (total, ztxt_local), None, length=n - 1)
  return jax.lax.psum(total, axis_name) / global_b


def sharded_sigmoid_loss(
  zimg: jax.Array, ztxt: jax.Array, t: jax.Array, b: jax.Array, mesh: Mesh, axis: str | Sequence[str] = "data"
) -> jax.Array:
  """:func:`chunked_sigmoid_loss` for callers that hold global arrays.

  Args:
    zimg, ztxt: global ``[B, D]`` arrays; ``B`` must be divisible by the size of ``axis`` in ``mesh``.
    t, b: scalars.
    mesh: the device mesh.
    axis: mesh axis name (or tuple of names, e.g. ``('data', 'fsdp')``) to shard the batch over.

  Returns:
    float32 scalar, equal to ``sigmoid_loss(zimg, ztxt, t, b)``.
  """
  _check_pair(zimg, ztxt, "sharded_sigmoid_loss")
  names = (axis,) if isinstance(axis, str) else tuple(axis)
  for name in names:
    if name not in mesh.shape:
      raise ValueError(f"sharded_sigmoid_loss: axis {name!r} is not in the mesh axes {tuple(mesh.shape)}")
  n = 1
  for name in names:
    n *= mesh.shape[name]
  if zimg.shape[0] % n:
    raise ValueError(
      f"sharded_sigmoid_loss: batch size {zimg.shape[0]} is not divisible by the {n} devices along mesh axis {axis!r}"
    )
  axis_name = names[0] if len(names) == 1 else names
  fn = jax.shard_map(
    lambda zi, zt, tt, bb: chunked_sigmoid_loss(zi, zt, tt, bb, axis_name),
    mesh=mesh,
    in_specs=(P(axis_name), P(axis_name), P(), P()),
    out_specs=P(),
  )
  return fn(zimg, ztxt, jnp.asarray(t, jnp.float32), jnp.asarray(b, jnp.float32))


def softmax_loss(zimg: jax.Array, ztxt: jax.Array, t: jax.Array) -> jax.Array:
  """CLIP softmax loss: mean of image->text and text->image cross-entropy.

  Args:
    zimg, ztxt: ``[B, D]`` matching embeddings.
    t: scalar temperature (already exponentiated).

  Returns:
    float32 scalar ``0.5 * (CE(rows) + CE(cols))`` of logits ``t * zimg @ ztxt.T``, each averaged over ``B``.
  """
  _check_pair(zimg, ztxt, "softmax_loss")
  logits = _block_logits(zimg, ztxt, t, 0.0)
  labels = jnp.arange(logits.shape[0])
  img2txt = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits, axis=1), labels[:, None], axis=1))
  txt2img = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits, axis=0), labels[None, :], axis=0))
  return 0.5 * (img2txt + txt2img)
