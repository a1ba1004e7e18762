"""Optimiser: an optax chain with learning-rate schedules and decoupled, masked weight decay.

``make_optimizer(cfg, total_steps, batch_size=None, steps_per_epoch=None) -> (tx, schedule_fn)``.

Update rule (exactly what ``tx`` computes for a parameter ``theta`` with path ``p`` at step ``s``)::

    g'     = clip_by_global_norm(g, grad_clip_norm)          # all grads together; skipped if unset/0
    u      = scale_by_adam(g'; b1, b2, eps, mu_dtype)        # or cfg.optax_name, see below
    update = -m(s) * (lr * lr_mult(p) * adapter_mult(p) * u  +  wd * wd_mult(p) * theta)
    theta <- theta + update                                  # optax.apply_updates

where ``m(s)`` is the schedule *multiplier* in ``[0, 1]`` (warm-up x decay x cool-down).  Weight decay is
**decoupled and not multiplied by lr**: ``wd`` is an absolute per-step shrink factor scaled only by the schedule
multiplier, so ``wd=1e-4`` shrinks a kernel by a factor ``(1 - 1e-4 * m(s))`` per step regardless of ``lr``
(big_vision's convention).  ``schedule_fn(s)`` returns the learning rate ``lr * m(s)`` (for logging);
the multiplier alone is ``schedule_fn(s) / lr``.

Config keys (``ml_collections.ConfigDict`` or ``dict``; unknown keys inside ``optax`` / ``schedule`` raise):

* ``lr`` (float, required), ``wd`` (float, default 0), ``grad_clip_norm`` (float, default none).
* ``optax_name``: ``'scale_by_adam'`` (default), another ``optax.scale_by_*`` transformation, or ``'identity'``
  (plain SGD);
  ``optax``: its keyword arguments, e.g. ``dict(b1=0.9, b2=0.999, eps=1e-8, mu_dtype='bfloat16')`` (dtype
  names are strings).
* ``schedule``: ``dict(decay_type=..., <warmup>, <cooldown>, timescale=..., min_lr=..., linear_end=...)``

  - ``decay_type``: ``'rsqrt'`` ``m = sqrt(timescale / (timescale + s - warmup))`` after warm-up
    (``timescale`` default 10_000); ``'cosine'`` from 1 to ``min_lr/lr`` over ``[warmup, total_steps]``;
    ``'linear'`` from 1 to ``linear_end/lr`` (alias ``min_lr``; default 0) over ``[warmup, total_steps]``;
    ``'constant'`` 1.
  - warm-up (linear from 0 at ``s=0`` to 1 at ``s=warmup``): at most one of ``warmup_steps``,
    ``warmup_examples`` (divided by ``batch_size``), ``warmup_epochs`` (times ``steps_per_epoch``),
    ``warmup_percent`` (a fraction of ``total_steps`` in ``[0, 1]``).
  - cool-down (linear to 0 at ``s=total_steps`` over the last ``cooldown`` steps, multiplied on top):
    ``cooldown_steps | cooldown_examples | cooldown_epochs | cooldown_percent``, same units.
  ``min_lr`` and ``linear_end`` are absolute learning rates (in the units of ``lr``).

* ``wd_mults``: list of ``(regex, mult)`` over ``'/'``-joined parameter paths (``re.fullmatch``; the first
  matching rule wins; no match -> 0).  Default ``[(r'.*/kernel$', 1.0)]``: decay kernels only (not biases,
  LayerNorm scales, embeddings, positional embeddings, ``t`` or ``b``).
* ``lr_mults``: same form; no match -> 1.  Multiplies the ``lr * u`` term only (``lr_mult=0`` with
  ``wd_mult=0`` freezes a parameter).
* ``adapter_lr_mult``: ``'fan_in'`` (default) or a number >= 0: ``adapter_mult(p)`` of the linear adapters'
  kernels (leaves named ``adapter_kernel``, ``[r, D, D]``, siglip_rins.recursion); 1 for every other leaf.
  ``'fan_in'`` is ``1 / D``.  Why: Adam moves every entry of a matrix by up to ``lr`` per step whatever its
  gradient's scale, so a step of a D x D map can change it by up to ``lr * D`` in spectral norm -- D times the
  relative step Adam gives a gain or a bias.  In the built-in demo (D = 64, lr 3e-3) the adapters' singular values
  spread to 0.6 .. 1.8 within 100 steps, and stochastic A^3B with adapters (also deterministic A^3B with adapters)
  then never left the trivial loss plateau; with the kernels frozen, or at ``1 / D``, the same runs left it
  (benchmarks/probe_stochastic.py; docs/DESIGN.md, "Linear adapters").  ``1 / fan_in`` is the maximal-update
  (muP) scaling of Adam's learning rate for a hidden matrix: the adapter's spectral norm moves by at most about
  ``lr`` per step.  Adapters are not weight-decayed by the default ``wd_mults`` (``adapter_kernel`` does not match
  ``.*/kernel$``), so nothing pulls them towards 0.
* ``frozen``: a regex or list of regexes (``re.fullmatch`` on the path): those parameters' gradients (before
  clipping and the optimiser) and updates (after weight decay) are exactly zero, so they never change.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

__all__ = ["make_optimizer", "make_schedule", "path_mults", "adapter_mult", "DEFAULT_WD_MULTS"]

DEFAULT_WD_MULTS = ((r".*/kernel$", 1.0),)
ADAPTER_KERNEL = re.compile(r"(.*/)?adapter_kernel")  # the linear adapters' [r, D, D] kernels (recursion.py)
ADAPTER_LR_MULTS = ("fan_in",)  # the named adapter_lr_mult values (else a number >= 0)
DECAY_TYPES = ("rsqrt", "cosine", "linear", "constant")
_DURATION_UNITS = ("steps", "examples", "epochs", "percent")
_SCHEDULE_KEYS = frozenset(
  {"decay_type", "timescale", "min_lr", "linear_end"}
  | {f"{p}_{u}" for p in ("warmup", "cooldown") for u in _DURATION_UNITS}
)
_DTYPE_NAMES = ("float32", "bfloat16", "float16")


def _get(cfg: Any, key: str, default: Any = None) -> Any:
  if cfg is None:
    return default
  if isinstance(cfg, Mapping):
    return cfg.get(key, default)
  return cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)


def _as_dict(obj: Any, name: str) -> dict:
  if obj is None:
    return {}
  if hasattr(obj, "to_dict"):
    return dict(obj.to_dict())
  if isinstance(obj, Mapping):
    return dict(obj)
  raise ValueError(f"config key {name!r} must be a dict, got {type(obj).__name__}")


def _path_str(path) -> str:
  parts = []
  for k in path:
    if isinstance(k, jax.tree_util.DictKey):
      parts.append(str(k.key))
    elif isinstance(k, jax.tree_util.GetAttrKey):
      parts.append(str(k.name))
    elif isinstance(k, jax.tree_util.SequenceKey):
      parts.append(str(k.idx))
    else:
      parts.append(str(k))
  return "/".join(parts)


def _compile_rules(rules: Any, name: str) -> list[tuple[re.Pattern, float]]:
  compiled = []
  for i, rule in enumerate(list(rules)):
    if not isinstance(rule, (tuple, list)) or len(rule) != 2:
      raise ValueError(f"{name}[{i}] must be a (regex, mult) pair, got {rule!r}")
    pattern, mult = rule
    try:
      regex = re.compile(pattern)
    except (re.error, TypeError) as e:
      raise ValueError(f"{name}[{i}]: invalid regex {pattern!r}: {e}") from None
    try:
      compiled.append((regex, float(mult)))
    except (TypeError, ValueError):
      raise ValueError(f"{name}[{i}]: mult must be a number, got {mult!r}") from None
  return compiled


def path_mults(tree: Any, rules: Sequence[tuple[str, float]], default: float, name: str = "rules") -> Any:
  """Tree of float multipliers: for each leaf, the mult of the first rule whose regex fullmatches its
  '/'-joined path, else ``default``."""
  compiled = _compile_rules(rules, name)

  def mult(path, _):
    p = _path_str(path)
    for regex, m in compiled:
      if regex.fullmatch(p):
        return m
    return default

  return jax.tree_util.tree_map_with_path(mult, tree)


# --------------------------------------------------------------------------------------------- schedules
def _duration(sched: dict, prefix: str, total_steps: int, batch_size, steps_per_epoch) -> int:
  given = [u for u in _DURATION_UNITS if f"{prefix}_{u}" in sched and sched[f"{prefix}_{u}"] is not None]
  if len(given) > 1:
    raise ValueError(f"schedule: give at most one of {[f'{prefix}_{u}' for u in given]}")
  if not given:
    return 0
  unit = given[0]
  key = f"{prefix}_{unit}"
  value = sched[key]
  if not isinstance(value, (int, float)) or value < 0:
    raise ValueError(f"schedule.{key} must be a non-negative number, got {value!r}")
  if unit == "steps":
    steps = int(value)
  elif unit == "examples":
    if not batch_size:
      raise ValueError(f"schedule.{key} needs batch_size to convert examples to steps")
    steps = int(round(value / batch_size))
  elif unit == "epochs":
    if not steps_per_epoch:
      raise ValueError(f"schedule.{key} needs steps_per_epoch to convert epochs to steps")
    steps = int(round(value * steps_per_epoch))
  else:
    if value > 1:
      raise ValueError(f"schedule.{key} is a fraction of total_steps in [0, 1], got {value}")
    steps = int(round(value * total_steps))
  if steps > total_steps:
    raise ValueError(f"schedule.{key}={value} gives {steps} steps, more than total_steps={total_steps}")
  return steps


def make_schedule(
  schedule_cfg: Any, lr: float, total_steps: int, batch_size: int | None = None, steps_per_epoch: int | None = None
) -> Callable[[jax.Array], jax.Array]:
  """Returns the schedule *multiplier* ``m(step)`` (float32, in [0, 1]) described in the module docstring."""
  sched = _as_dict(schedule_cfg, "schedule")
  unknown = sorted(set(sched) - _SCHEDULE_KEYS)
  if unknown:
    raise ValueError(f"schedule: unknown key(s) {unknown}; allowed: {sorted(_SCHEDULE_KEYS)}")
  if not isinstance(total_steps, int) or total_steps <= 0:
    raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
  decay_type = sched.get("decay_type", "cosine")
  if decay_type not in DECAY_TYPES:
    raise ValueError(f"schedule.decay_type={decay_type!r}; allowed: {DECAY_TYPES}")
  warmup = _duration(sched, "warmup", total_steps, batch_size, steps_per_epoch)
  cooldown = _duration(sched, "cooldown", total_steps, batch_size, steps_per_epoch)
  timescale = float(sched.get("timescale", 10_000))
  if timescale <= 0:
    raise ValueError(f"schedule.timescale must be > 0, got {timescale}")
  if decay_type == "linear" and sched.get("linear_end") is not None:
    end_lr = float(sched["linear_end"])
  else:
    end_lr = float(sched.get("min_lr") or 0.0)
  end = end_lr / lr if lr else 0.0
  decay_steps = max(total_steps - warmup, 1)

  def multiplier(step):
    s = jnp.asarray(step, jnp.float32)
    progress = jnp.clip((s - warmup) / decay_steps, 0.0, 1.0)
    if decay_type == "cosine":
      m = end + (1.0 - end) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
    elif decay_type == "linear":
      m = 1.0 + (end - 1.0) * progress
    elif decay_type == "rsqrt":
      m = jnp.sqrt(timescale / (timescale + jnp.maximum(s - warmup, 0.0)))
    else:
      m = jnp.ones_like(s)
    if warmup > 0:
      m = m * jnp.minimum(s / warmup, 1.0)
    if cooldown > 0:
      m = m * jnp.clip((total_steps - s) / cooldown, 0.0, 1.0)
    return m.astype(jnp.float32)

  return multiplier


# --------------------------------------------------------------------------------------- transformations
class _EmptyState(NamedTuple):
  pass


def check_adapter_lr_mult(value: Any) -> Any:
  """'fan_in' or a number >= 0 (config key `adapter_lr_mult`; a number may come as a string, as a command-line
  override of the configs' 'fan_in' does); raises ValueError naming the value otherwise."""
  if isinstance(value, str):
    if value in ADAPTER_LR_MULTS:
      return value
    try:
      value = float(value)
    except ValueError:
      raise ValueError(f"config key 'adapter_lr_mult' must be 'fan_in' or a number >= 0, got {value!r}") from None
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
    raise ValueError(f"config key 'adapter_lr_mult' must be 'fan_in' or a number >= 0, got {value!r}")
  return float(value)


def adapter_mult(path: str, shape: Sequence[int], value: Any = "fan_in") -> float:
  """The learning-rate factor of the leaf at `path` (a '/'-joined path) with `shape`: for a linear adapters'
  kernel ([r, D_in, D_out]) 1 / D_in under 'fan_in' or the number `value`; 1.0 for every other leaf."""
  if not ADAPTER_KERNEL.fullmatch(path):
    return 1.0
  value = check_adapter_lr_mult(value)
  return 1.0 / float(shape[-2]) if value == "fan_in" else value


def _scale_lr(rules, lr: float, adapter_lr: Any) -> optax.GradientTransformation:
  """Multiplies each leaf's update by ``lr * lr_mult(path) * adapter_mult(path)`` (one stateless transformation,
  so the optimiser state has the same structure as before adapter_lr_mult existed: old checkpoints resume)."""
  _compile_rules(rules, "lr_mults")  # validate now
  check_adapter_lr_mult(adapter_lr)

  def init_fn(params):
    del params
    return _EmptyState()

  def update_fn(updates, state, params=None):
    del params
    mults = path_mults(updates, rules, 1.0, "lr_mults")

    def scale(path, u, m):
      return u * jnp.asarray(lr * m * adapter_mult(_path_str(path), u.shape, adapter_lr), u.dtype)

    return jax.tree_util.tree_map_with_path(scale, updates, mults), state

  return optax.GradientTransformation(init_fn, update_fn)


def _add_decoupled_weight_decay(wd: float, rules) -> optax.GradientTransformation:
  """``update += wd * wd_mult(path) * param`` (leaves with mult 0 untouched)."""
  _compile_rules(rules, "wd_mults")

  def init_fn(params):
    del params
    return _EmptyState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("weight decay needs params: call tx.update(grads, state, params)")
    mults = path_mults(updates, rules, 0.0, "wd_mults")
    out = jax.tree.map(lambda u, p, m: u if m == 0 else u + (wd * m) * p.astype(u.dtype), updates, params, mults)
    return out, state

  return optax.GradientTransformation(init_fn, update_fn)


def _scale_by_multiplier(multiplier) -> optax.GradientTransformation:
  """``update *= -multiplier(count)``, with its own step counter."""

  def init_fn(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    del params
    m = -multiplier(state.count)
    updates = jax.tree.map(lambda u: u * m.astype(u.dtype), updates)
    return updates, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


def _zero_frozen(frozen) -> optax.GradientTransformation:
  """Sets the leaves whose path fullmatches one of the `frozen` regexes to exactly zero."""
  rules = [(r, 0.0) for r in ([frozen] if isinstance(frozen, str) else list(frozen))]
  _compile_rules(rules, "frozen")

  def update_fn(updates, state, params=None):
    del params
    keep = path_mults(updates, rules, 1.0, "frozen")
    return jax.tree.map(lambda u, k: u if k else jnp.zeros_like(u), updates, keep), state

  return optax.GradientTransformation(lambda params: _EmptyState(), update_fn)


def _optax_kwargs(optax_cfg: dict) -> dict:
  kwargs = dict(optax_cfg)
  for key in ("mu_dtype", "nu_dtype", "dtype"):
    if key in kwargs and isinstance(kwargs[key], str):
      if kwargs[key] not in _DTYPE_NAMES:
        raise ValueError(f"optax.{key}={kwargs[key]!r}; allowed: {_DTYPE_NAMES}")
      kwargs[key] = jnp.dtype(kwargs[key])
  return kwargs


def make_optimizer(
  cfg: Any, total_steps: int, batch_size: int | None = None, steps_per_epoch: int | None = None
) -> tuple[optax.GradientTransformation, Callable]:
  """Builds ``(tx, schedule_fn)``; see the module docstring for the exact update rule and keys.

  Args:
    cfg: config (``ConfigDict`` or dict) with ``lr``, ``wd``, ``grad_clip_norm``, ``optax_name``, ``optax``,
      ``schedule``, ``wd_mults``, ``lr_mults``, ``adapter_lr_mult``, ``frozen``.
    total_steps: number of optimiser steps of the run (schedules end there).
    batch_size: global batch size (examples per step), needed for ``*_examples`` durations.
    steps_per_epoch: needed for ``*_epochs`` durations.

  Returns:
    ``tx``: an ``optax.GradientTransformation`` (``tx.update`` needs ``params``); ``schedule_fn(step)``: the
    learning rate ``lr * m(step)`` as a float32 scalar.
  """
  lr = _get(cfg, "lr")
  if not isinstance(lr, (int, float)) or lr < 0:
    raise ValueError(f"config key 'lr' must be a non-negative number, got {lr!r}")
  lr = float(lr)
  wd = _get(cfg, "wd", 0.0) or 0.0
  if not isinstance(wd, (int, float)) or wd < 0:
    raise ValueError(f"config key 'wd' must be a non-negative number, got {wd!r}")
  clip = _get(cfg, "grad_clip_norm")
  if clip is not None and (not isinstance(clip, (int, float)) or clip < 0):
    raise ValueError(f"config key 'grad_clip_norm' must be a non-negative number or None, got {clip!r}")

  optax_name = _get(cfg, "optax_name", "scale_by_adam") or "scale_by_adam"
  allowed = ["identity"] + sorted(n for n in dir(optax) if n.startswith("scale_by_") and callable(getattr(optax, n)))
  if optax_name not in allowed:
    raise ValueError(f"config key 'optax_name'={optax_name!r}; allowed: {allowed}")
  optax_kwargs = _optax_kwargs(_as_dict(_get(cfg, "optax"), "optax"))
  try:
    base_tx = getattr(optax, optax_name)(**optax_kwargs)
  except TypeError as e:
    raise ValueError(
      f"config key 'optax' has arguments {sorted(optax_kwargs)} that {optax_name} does not accept: {e}"
    ) from None

  multiplier = make_schedule(_get(cfg, "schedule"), lr, total_steps, batch_size, steps_per_epoch)
  wd_rules = _get(cfg, "wd_mults", DEFAULT_WD_MULTS)
  wd_rules = DEFAULT_WD_MULTS if wd_rules is None else wd_rules
  lr_rules = _get(cfg, "lr_mults", ()) or ()
  _compile_rules(wd_rules, "wd_mults")
  _compile_rules(lr_rules, "lr_mults")
  adapter_lr = _get(cfg, "adapter_lr_mult")
  adapter_lr = check_adapter_lr_mult("fan_in" if adapter_lr is None else adapter_lr)

  frozen = _get(cfg, "frozen", None) or ()
  chain = [_zero_frozen(frozen)] if frozen else []
  if clip:
    chain.append(optax.clip_by_global_norm(float(clip)))
  chain.append(base_tx)
  chain.append(_scale_lr(lr_rules, lr, adapter_lr))
  if wd:
    chain.append(_add_decoupled_weight_decay(float(wd), wd_rules))
  chain.append(_scale_by_multiplier(multiplier))
  if frozen:
    chain.append(_zero_frozen(frozen))
  tx = optax.chain(*chain)

  def schedule_fn(step):
    return lr * multiplier(step)

  return tx, schedule_fn
