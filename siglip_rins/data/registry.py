"""The registry of pp op factories: `register` and `lookup`, and the optional batched forms
(`register_batched` / `lookup_batched`), nothing else.

Op modules (`ops_common`, `ops_image`, `ops_text`) import only this module to register their ops, so they
never import `pp.py`; `pp.py` imports this module and loads the op modules (which fills the registry).
"""

from typing import Callable

OpFactory = Callable[..., Callable[[dict], dict]]

_REGISTRY: dict[str, OpFactory] = {}
# Batched forms: same arguments as the op's factory; the built function maps (features with a leading batch
# dimension -- tf.RaggedTensor where a per-example dimension varies --, ok: bool [B]) -> (features, ok), ok
# cleared for the rows on which the per-example op would raise, and every other row equal to the per-example op's
# output for that row's '_rng'.  The factory returns None for arguments it has no batched form for.
_BATCHED: dict[str, OpFactory] = {}


def _registrar(table: dict, name: str, taken: str):
  if not isinstance(name, str) or not name.isidentifier():
    raise ValueError(f"pp op name {name!r} is not an identifier")

  def wrap(factory: OpFactory) -> OpFactory:
    if name in table and table[name] is not factory:
      raise ValueError(f"pp op {name!r} {taken}")
    table[name] = factory
    return factory

  return wrap


def register(name: str):
  """Decorator registering an op factory under `name` (re-registering a name is an error)."""
  return _registrar(_REGISTRY, name, "is already registered")


def register_batched(name: str):
  """Decorator registering the batched form of op `name` (see _BATCHED)."""
  return _registrar(_BATCHED, name, "already has a batched form")


def lookup_batched(name: str) -> OpFactory | None:
  """The batched-form factory of `name`, or None when it has none."""
  return _BATCHED.get(name)


def lookup(name: str) -> OpFactory:
  """The factory registered under `name`; ValueError listing the known ops otherwise."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown pp op {name!r}; known ops: {', '.join(sorted(_REGISTRY))}")
  return _REGISTRY[name]


def names() -> list[str]:
  """Sorted names of the ops registered so far (pp.registered_ops() loads every op module first)."""
  return sorted(_REGISTRY)
