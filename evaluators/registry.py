"""Evaluator registry: `@register('zeroshot')` on a class; `build(name, cfg)` makes one from a config dict.

A config is `dict(type='zeroshot', every=1000, ...)` (as in `config.evals.NAME`); `type` picks the class,
`every` (and `log_steps`) belong to the trainer and are ignored here, the rest are constructor options.
"""

from __future__ import annotations

from typing import Callable, Mapping

_REGISTRY: dict[str, type] = {}
_TRAINER_KEYS = ('rounds', 'type', 'every', 'log_steps', 'log_percent', 'log_epochs')


def register(type_name: str) -> Callable[[type], type]:
  """Class decorator: makes `type_name` buildable with `build`. Registering a name twice → ValueError."""

  def wrap(cls):
    if type_name in _REGISTRY and _REGISTRY[type_name] is not cls:
      raise ValueError(f'evaluator type {type_name!r} is already registered to {_REGISTRY[type_name]}')
    _REGISTRY[type_name] = cls
    cls.type_name = type_name
    return cls

  return wrap


def known_types() -> list[str]:
  return sorted(_REGISTRY)


def build(name: str, cfg: Mapping):
  """`cfg['type']` → an evaluator instance named `name`. Unknown type → ValueError listing the known types."""
  cfg = dict(cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg)
  if 'type' not in cfg:
    raise ValueError(f"evaluator {name!r}: config has no 'type'; known types: {known_types()}")
  kind = cfg['type']
  if kind not in _REGISTRY:
    raise ValueError(f'evaluator {name!r}: unknown type {kind!r}; known types: {known_types()}')
  options = {k: v for k, v in cfg.items() if k not in _TRAINER_KEYS}
  return _REGISTRY[kind](name=name, **options)


def build_all(evals: Mapping) -> dict:
  """`config.evals` (name → config) → {name: evaluator}."""
  evals = evals.to_dict() if hasattr(evals, 'to_dict') else dict(evals)
  return {name: build(name, cfg) for name, cfg in evals.items()}
