"""The preprocessing language: `op|op(1, 2)|op(k='v')`, parsed without eval.

Grammar: a pp string is ops separated by top-level '|' (a '|' inside brackets or quotes belongs to the
argument). Each op is `name` or `name(arg, ..., key=arg, ...)` where every arg is a Python literal
(numbers, strings, tuples, lists, dicts, True/False/None), checked with `ast.literal_eval`.

Strings mean what they mean in big_vision: empty segments (`decode||resize(8)`, a trailing '|') are
skipped, and an empty (or None) pp string is the identity. Ops with big_vision's names take big_vision's
arguments and defaults (see the op modules).

Op factories register with `@registry.register('name')` (`siglip_rins.data.registry`, re-exported here as
`register`); a factory takes the op's arguments and returns `fn(features: dict[str, tf.Tensor]) -> dict`.
`get_preprocess_fn(pp)` parses, builds every op (so bad arguments fail at build time), and returns one
function applying them in order. Any problem -> ValueError naming the op and what is wrong.
"""

import ast
import dataclasses
import inspect
from typing import Any, Callable

from siglip_rins.data import registry

register = registry.register
_MAX_PP_LENGTH = 100_000
_OPENERS, _CLOSERS = "([{", ")]}"


@dataclasses.dataclass(frozen=True)
class OpSpec:
  """One parsed op: `name(*args, **kwargs)` with literal arguments."""

  name: str
  args: tuple = ()
  kwargs: tuple = ()  # sorted (key, value) pairs, so specs compare/hash cleanly

  def to_string(self) -> str:
    parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs]
    return f"{self.name}({', '.join(parts)})" if parts else self.name


def registered_ops() -> list[str]:
  _ensure_ops_loaded()
  return registry.names()


def split_top_level(pp: str) -> list[str]:
  """Splits on '|' outside brackets and string quotes. Raises ValueError on unbalanced text."""
  parts, depth_stack, current = [], [], []
  quote = None
  i = 0
  while i < len(pp):
    char = pp[i]
    if quote:
      current.append(char)
      if char == "\\" and i + 1 < len(pp):
        current.append(pp[i + 1])
        i += 1
      elif pp.startswith(quote, i):
        current.extend(quote[1:])
        i += len(quote) - 1
        quote = None
    elif char in "'\"":
      quote = char * 3 if pp.startswith(char * 3, i) else char
      current.append(quote)
      i += len(quote) - 1
    elif char in _OPENERS:
      depth_stack.append(_CLOSERS[_OPENERS.index(char)])
      current.append(char)
    elif char in _CLOSERS:
      if not depth_stack or depth_stack.pop() != char:
        raise ValueError(f"unbalanced {char!r} at position {i} in pp string")
      current.append(char)
    elif char == "|" and not depth_stack:
      parts.append("".join(current))
      current = []
    else:
      current.append(char)
    i += 1
  if quote:
    raise ValueError("unterminated string in pp string")
  if depth_stack:
    raise ValueError(f"unclosed bracket in pp string (expected {depth_stack[-1]!r})")
  parts.append("".join(current))
  return parts


def _literal(node: ast.AST, op_name: str, what: str) -> Any:
  try:
    return ast.literal_eval(node)
  except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
    raise ValueError(f"pp op {op_name!r}: {what} is not a literal ({type(e).__name__}: {e})") from None


def parse_op(text: str) -> OpSpec:
  """Parses one op `name` or `name(args, k=v)` into an OpSpec."""
  text = text.strip()
  if not text:
    raise ValueError("empty op in pp string (stray '|'?)")
  head = text.split("(", 1)[0].strip()
  try:
    tree = ast.parse(text, mode="eval")
  except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
    raise ValueError(f"pp op {head!r}: cannot parse {text!r} ({type(e).__name__}: {e})") from None
  node = tree.body
  if isinstance(node, ast.Name):
    return OpSpec(node.id)
  if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
    raise ValueError(f"pp op {head!r}: expected `name` or `name(args)`, got {text!r}")
  name = node.func.id
  args = []
  for i, arg in enumerate(node.args):
    if isinstance(arg, ast.Starred):
      raise ValueError(f"pp op {name!r}: *args are not allowed")
    args.append(_literal(arg, name, f"argument {i + 1}"))
  kwargs = {}
  for kw in node.keywords:
    if kw.arg is None:
      raise ValueError(f"pp op {name!r}: **kwargs are not allowed")
    if kw.arg in kwargs:  # ast.parse already rejects this; kept for safety.
      raise ValueError(f"pp op {name!r}: keyword {kw.arg!r} given twice")
    kwargs[kw.arg] = _literal(kw.value, name, f"keyword {kw.arg!r}")
  return OpSpec(name, tuple(args), tuple(sorted(kwargs.items())))


def parse(pp: str | None) -> list[OpSpec]:
  """Parses a whole pp string into OpSpecs (syntax only; ops are not looked up).

  As in big_vision, empty segments are skipped and an empty or None string gives no ops."""
  if pp is None:
    return []
  if not isinstance(pp, str):
    raise ValueError(f"pp must be a string, got {type(pp).__name__}")
  if len(pp) > _MAX_PP_LENGTH:
    raise ValueError(f"pp string longer than {_MAX_PP_LENGTH} characters")
  return [parse_op(part) for part in split_top_level(pp) if part.strip()]


def to_string(specs: list[OpSpec]) -> str:
  """Canonical pp string of parsed specs; `parse(to_string(parse(s))) == parse(s)`."""
  return "|".join(spec.to_string() for spec in specs)


def _ensure_ops_loaded():
  # Importing the op modules runs their @register decorators.
  from siglip_rins.data import ops_common, ops_image, ops_text  # noqa: F401


def build_op(spec: OpSpec) -> Callable[[dict], dict]:
  """Instantiates one op; ValueError naming the op for unknown names or bad arguments."""
  _ensure_ops_loaded()
  factory = registry.lookup(spec.name)
  kwargs = dict(spec.kwargs)
  try:
    inspect.signature(factory).bind(*spec.args, **kwargs)
  except TypeError as e:
    raise ValueError(f"pp op {spec.name!r}: bad arguments {spec.to_string()!r}: {e}") from None
  try:
    return factory(*spec.args, **kwargs)
  except (ValueError, TypeError) as e:
    msg = str(e)
    if f"{spec.name!r}" not in msg:
      msg = f"pp op {spec.name!r}: {msg}"
    raise ValueError(msg) from None


def get_preprocess_fn(pp: str | None) -> Callable[[dict], dict]:
  """Parses `pp` and returns `fn(features: dict) -> dict` applying its ops in order (identity if none)."""
  ops = [build_op(spec) for spec in parse(pp)]

  def preprocess(features: dict) -> dict:
    features = dict(features)
    for op in ops:
      features = op(features)
    return features

  preprocess.pp = pp
  return preprocess


def get_batched_preprocess_fn(pp: str | None):
  """`fn(features, ok) -> (features, ok)` applying the batched forms of `pp`'s ops (registry.register_batched) to
  a block of examples at once, or None when one of its ops has no batched form for its arguments.  Rows with
  ok equal the per-example `get_preprocess_fn(pp)` outputs for their '_rng'; rows on which it would raise
  come out with ok False."""
  ops = []
  for spec in parse(pp):
    build_op(spec)  # bad names / arguments: the per-example form's error
    factory = registry.lookup_batched(spec.name)
    op = None if factory is None else factory(*spec.args, **dict(spec.kwargs))
    if op is None:
      return None
    ops.append(op)

  def preprocess(features: dict, ok):
    features = dict(features)
    for op in ops:
      features, ok = op(features, ok)
    return features, ok

  preprocess.pp = pp
  return preprocess


def split_deterministic_prefix(pp: str | None, features: dict) -> tuple[str, str]:
  """(prefix, rest): pp strings whose composition is `pp`, the prefix being the leading ops that draw no random
  seed, i.e. that leave `features['_rng']` alone (every random op takes its seed with `ops_common.next_seed`,
  which advances it).  Decided by tracing the ops on `features` (tensors, e.g. inside a tf.data map trace); the
  prefix of a record's pp is then a function of the record alone and can be computed once and cached.
  Example: 'decode|resize(32)|value_range(-1, 1)|choice(inkey="texts")|tokenize(...)' splits before `choice`,
  after `tokenize` has been moved ahead of it (`hoist_over_choice`: every caption tokenized, then the same pick
  of caption and tokens), so the prefix holds the tokenization too."""
  import tensorflow as tf  # only the input pipeline imports TensorFlow

  specs = parse(pp)
  sentinel = tf.constant([0, 0], tf.int32)
  while True:
    traced = dict(features, _rng=sentinel)
    split = len(specs)
    for i, spec in enumerate(specs):
      traced = build_op(spec)(traced)
      if traced.get("_rng") is not sentinel:
        split = i
        break
    hoisted = hoist_over_choice(specs, split)
    if hoisted is None:
      return to_string(specs[:split]), to_string(specs[split:])
    specs = hoisted


def _bound_arguments(spec: OpSpec) -> dict:
  """Every argument of `spec`'s factory by name, defaults filled in."""
  _ensure_ops_loaded()
  bound = inspect.signature(registry.lookup(spec.name)).bind(*spec.args, **dict(spec.kwargs))
  bound.apply_defaults()
  return dict(bound.arguments)


def hoist_over_choice(specs: list[OpSpec], i: int) -> list[OpSpec] | None:
  """Moves deterministic per-caption work ahead of the random pick of a caption, or None when it does not apply.

  `choice(inkey=K)` (one random entry, in place) followed by `tokenize(inkey=k, outkey=o)` with k in K and o not
  in K computes the same features as `tokenize(inkey=k, outkey=o, sample_if_multi=False)` -- every caption
  tokenized, a row each -- followed by `choice(inkey=K + [o])`, which draws the same seed and picks the same
  entry of every key.  The rewritten tokenize draws no seed, so it joins the deterministic prefix and a cached
  stream (input.cache) keeps each record's tokenized captions instead of tokenizing one per example and epoch.
  """
  if i + 1 >= len(specs) or specs[i].name != "choice" or specs[i + 1].name != "tokenize":
    return None
  try:
    c, t = _bound_arguments(specs[i]), _bound_arguments(specs[i + 1])
  except TypeError:  # bad arguments: build_op reports them
    return None
  if c["n"] != "single" or c["mode"] != "random":
    return None
  as_list = lambda v: [v] if isinstance(v, str) else list(v) if isinstance(v, (list, tuple)) else None
  keys = as_list(c["inkey"] or c["key"] or "texts")
  if not keys or as_list(c["outkey"] or c["key"] or keys) != keys:
    return None
  src, dst = t["key"] or t["inkey"], t["key"] or t["outkey"]
  if src not in keys or dst in keys:
    return None
  tok = {k: v for k, v in t.items() if k not in ("key", "inkey", "outkey")}
  tok.update(inkey=src, outkey=dst, sample_if_multi=False)
  pick = dict(inkey=keys + [dst], skip_empty=c["skip_empty"])
  as_spec = lambda name, kw: OpSpec(name, (), tuple(sorted(kw.items())))
  return specs[:i] + [as_spec("tokenize", tok), as_spec("choice", pick)] + specs[i + 2 :]
