"""The RINS recursion engine: signatures, degrees, block plans and `RecursiveStack`, used by every tower.

Vocabulary (paper Sec. 2 and App. A):
* A *signature* names equal-sized blocks in the order they run; a letter repeated applies the same block (shared
  parameters) to its own output.  Both spellings are accepted: ``AAB`` and ``A^2B`` (also ``A^{2}B``).
* A *degree* d nests the pattern: each block of the signature is itself the signature at degree d-1 with its own
  blocks, so ``(ABB)_2`` runs ``ABB CDD CDD``.  Unique blocks = len(set(signature)) ** degree.
* A baseline of depth L is split into unique blocks of ``L // unique`` layers each (App. E.1); a model is refused
  when that is 0 or does not divide L.
* RINS is degree 1 with signature ``A^rB``.  *Stochastic RINS* skips each position of the innermost signature with
  probability given by the skip tuple ``(0, p_s, ..., p_s, 0)`` (first and last never skipped), so for ``A^rB``
  the number of A rounds is ``1 + Binomial(r-1, 1-p_s)``.  Skips are drawn from the ``'rins'`` RNG stream, only
  when ``train=True``; evaluation and ``p_s = 0`` are deterministic.
* Inference-time rounds: ``rounds=k`` at apply time runs ``A^kB`` (for ``RAO`` signatures such as ``ABAB`` it
  repeats the whole unit k times) with the same parameters, also for k above the trained r.
* Linear adapters (paper Sec. 6): ``r_max`` D-by-D maps initialised to the identity; the k-th is applied to the
  stack output when k rounds ran (k above r_max uses the last).

Execution: runs of one repeated block are executed by ``nn.scan`` over rounds with broadcast (shared) parameters,
so compile time does not grow with r, or unrolled in Python (``loop='unroll'``).  The default ``loop='auto'``
unrolls runs of up to AUTO_UNROLL_MAX rounds and scans longer ones: measured on the 2-core CPU (benchmarks/
RESULTS.md), unrolled rounds cost exactly their FLOPs while XLA:CPU's scan adds 15-20% per round (it stacks each
round's backward residuals with dynamic-update-slices), and unrolled compile time grows ~0.6 s per round.  ``remat=True``
rematerialises each round (only the carry is saved for the backward pass).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from siglip_rins.layers import KV, EncoderLayer, LayerConfig

Array = jax.Array
MAX_EXPONENT = 1024
LOOPS = ("auto", "scan", "unroll")
AUTO_UNROLL_MAX = 4  # loop='auto': runs of up to this many rounds are unrolled, longer ones scanned

_TOKEN = re.compile(r"([A-Z])(?:\^(?:\{(\d+)\}|(\d+)))?")
_DEGREE_FORM = re.compile(r"^\((.+)\)_\{?(\d+)\}?$")


# ----------------------------------------------------------------------------------------------- signatures
def parse_signature(spec: str) -> tuple[str, int]:
  """Parses 'AAB', 'A^2B', 'A^{2}B' or '(ABB)_2' into (expanded letters, degree_or_0).

  The second value is the degree written in the spec ('(ABB)_2' -> 2) or 0 when the spec has none.
  Raises ValueError naming the problem for anything else.
  """
  if not isinstance(spec, str):
    raise ValueError(f"signature must be a string, got {type(spec).__name__}")
  s = spec.strip().replace(" ", "")
  if not s:
    raise ValueError("signature is empty; write blocks as capital letters, e.g. 'AB' or 'A^3B'")
  degree = 0
  m = _DEGREE_FORM.match(s)
  if m:
    s, degree = m.group(1), int(m.group(2))
    if degree < 1:
      raise ValueError(f"signature {spec!r}: degree must be >= 1, got {degree}")
  out, pos = [], 0
  while pos < len(s):
    t = _TOKEN.match(s, pos)
    if not t:
      raise ValueError(
        f"signature {spec!r}: invalid character {s[pos]!r} at position {pos}; use capital letters "
        "A-Z with optional ^N exponents, e.g. 'AAB', 'A^3B' or '(ABB)_2'"
      )
    exp = t.group(2) or t.group(3)
    n = 1 if exp is None else int(exp)
    if n < 1:
      raise ValueError(f"signature {spec!r}: exponent of {t.group(1)!r} must be >= 1, got {n}")
    if n > MAX_EXPONENT:
      raise ValueError(f"signature {spec!r}: exponent {n} exceeds the maximum {MAX_EXPONENT}")
    out.append(t.group(1) * n)
    pos = t.end()
  return "".join(out), degree


def compact_signature(letters: str) -> str:
  """'AAAB' -> 'A^3B' (the paper's notation)."""
  return "".join(
    f"{c}^{len(g)}" if len(g) > 1 else c
    for c, g in ((m.group(0)[0], m.group(0)) for m in re.finditer(r"(.)\1*", letters))
  )


def skip_tuple(letters: str, p_skip: float) -> tuple[float, ...]:
  """App. A: (0, p, ..., p, 0) over the signature's positions; first and last are never skipped."""
  n = len(letters)
  return tuple(0.0 if i in (0, n - 1) else float(p_skip) for i in range(n))


def _block_name(i: int) -> str:
  return chr(ord("A") + i) if i < 26 else f"Z{i}"


@dataclasses.dataclass(frozen=True)
class Run:
  """`count` consecutive applications of block `name`; position i is skipped with probability skip[i]."""

  name: str
  count: int
  skip: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class BlockPlan:
  """The flat execution plan of (signature, degree) over a depth split into equal unique blocks."""

  letters: str  # expanded top-level signature, e.g. 'AAAB'
  degree: int
  layers_per_block: int
  sequence: tuple[str, ...]  # unique block names in execution order, e.g. ('A','B','B','C','D','D',...)
  skip: tuple[float, ...]  # skip probability of each executed position
  block_names: tuple[str, ...]  # unique blocks in order of first use

  @property
  def num_unique_blocks(self) -> int:
    return len(self.block_names)

  @property
  def num_layers_param(self) -> int:
    """Distinct layers with parameters."""
    return self.num_unique_blocks * self.layers_per_block

  @property
  def num_layers_run(self) -> int:
    """Layer applications per forward pass (no skipping)."""
    return len(self.sequence) * self.layers_per_block

  def runs(self) -> list[Run]:
    runs: list[Run] = []
    for name, p in zip(self.sequence, self.skip):
      if runs and runs[-1].name == name:
        runs[-1] = Run(name, runs[-1].count + 1, runs[-1].skip + (p,))
      else:
        runs.append(Run(name, 1, (p,)))
    return runs


def make_plan(
  signature: str,
  degree: int = 1,
  num_layers: Optional[int] = None,
  layers_per_block: Optional[int] = None,
  p_skip: float = 0.0,
) -> BlockPlan:
  """Builds the plan; give either the baseline depth `num_layers` or `layers_per_block` directly."""
  letters, spec_degree = parse_signature(signature)
  if spec_degree:
    if degree not in (1, spec_degree):
      raise ValueError(f"signature {signature!r} says degree {spec_degree} but degree={degree} was given")
    degree = spec_degree
  if not isinstance(degree, int) or degree < 1:
    raise ValueError(f"degree must be an integer >= 1, got {degree!r}")
  if not 0.0 <= float(p_skip) < 1.0:
    raise ValueError(f"p_skip must be in [0, 1), got {p_skip}")
  unique_letters = list(dict.fromkeys(letters))
  n_unique = len(unique_letters) ** degree
  if layers_per_block is None:
    if num_layers is None:
      raise ValueError("give num_layers (baseline depth) or layers_per_block")
    layers_per_block = num_layers // n_unique
    if layers_per_block == 0:
      raise ValueError(
        f"depth {num_layers} cannot be split into {n_unique} unique blocks for signature "
        f"{signature!r} at degree {degree} (0 layers per block)"
      )
    if num_layers % n_unique:
      raise ValueError(
        f"depth {num_layers} does not divide into {n_unique} unique blocks for signature "
        f"{signature!r} at degree {degree} ({num_layers} % {n_unique} = {num_layers % n_unique}); "
        f"choose a depth that is a multiple of {n_unique}"
      )
  elif layers_per_block < 1:
    raise ValueError(f"layers_per_block must be >= 1, got {layers_per_block}")

  positions = skip_tuple(letters, p_skip)
  # Nested expansion: a path (c_1, ..., c_d) of top-level letters names one unique block.
  paths: list[tuple[str, ...]] = [()]
  for _ in range(degree):
    paths = [p + (c,) for p in paths for c in letters]
  inner_pos = [positions[i % len(letters)] for i in range(len(paths))]
  names: dict[tuple[str, ...], str] = {}
  for p in paths:
    names.setdefault(p, _block_name(len(names)) if degree > 1 else p[0])
  sequence = tuple(names[p] for p in paths)
  return BlockPlan(letters, degree, layers_per_block, sequence, tuple(inner_pos), tuple(dict.fromkeys(sequence)))


def with_rounds(plan: BlockPlan, rounds: int) -> BlockPlan:
  """The plan with the recursive part run `rounds` times (inference-time scaling, same parameters).

  * RAO signatures (a unit of distinct letters repeated, e.g. 'ABAB'): the unit is repeated `rounds` times.
  * Otherwise the first run of a repeated block (the A of A^rB; the first block if none repeats) runs `rounds` times.
  """
  if not isinstance(rounds, int) or rounds < 1:
    raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
  if plan.degree != 1:
    raise ValueError(f"inference-time rounds are defined for degree 1 (RINS); this plan has degree {plan.degree}")
  letters = plan.letters
  unit = "".join(dict.fromkeys(letters))
  if len(unit) > 1 and len(letters) % len(unit) == 0 and unit * (len(letters) // len(unit)) == letters:
    new_letters = unit * rounds
  else:
    runs = plan.runs()
    k = next((i for i, r in enumerate(runs) if r.count > 1), 0)
    new_letters = "".join(r.name * (rounds if i == k else r.count) for i, r in enumerate(runs))
  p = max(plan.skip) if plan.skip else 0.0
  return dataclasses.replace(plan, letters=new_letters, sequence=tuple(new_letters), skip=skip_tuple(new_letters, p))


def recursive_run_index(plan: BlockPlan) -> int:
  """Index (in plan.runs()) of the run whose executed count is reported as 'rounds'."""
  runs = plan.runs()
  return next((i for i, r in enumerate(runs) if r.count > 1), 0)


def trained_rounds(plan: BlockPlan) -> int:
  """r of A^rB (for RAO: the number of unit repeats)."""
  unit = "".join(dict.fromkeys(plan.letters))
  if len(unit) > 1 and plan.letters == unit * (len(plan.letters) // len(unit)):
    return len(plan.letters) // len(unit)
  return plan.runs()[recursive_run_index(plan)].count


def sweep(num_layers: int) -> list[dict]:
  """App. E.1's architecture sweep for a baseline of `num_layers` layers (the paper's rule: keep when
  num_layers // unique_blocks > 0).  Each entry: signature, degree, unique_blocks, layers_per_block, exact
  (True when the split uses all layers, i.e. the parameter count equals the baseline's)."""
  entries = [("A", 1), ("AA", 1), ("AAA", 1), ("AAAA", 1)]
  for sig in ["ABB", "ABA", "AAB", "ABBC", "AABC", "ABCC", "ABBB", "AAAB", "AABB"]:
    for degree in (1, 2, 3):
      entries.append((sig, degree))
  out = []
  for sig, degree in entries:
    n_unique = len(set(sig)) ** degree
    lpb = num_layers // n_unique
    if lpb > 0:
      out.append(
        dict(
          signature=sig, degree=degree, unique_blocks=n_unique, layers_per_block=lpb, exact=lpb * n_unique == num_layers
        )
      )
  return out


def sample_rounds(rng: Array, r: int, p_skip: float, shape: Sequence[int] = ()) -> Array:
  """Number of A rounds of stochastic A^rB: 1 + Binomial(r-1, 1-p_skip) (as the engine draws them)."""
  keep = jax.random.bernoulli(rng, 1.0 - p_skip, tuple(shape) + (r - 1,))
  return 1 + keep.sum(-1)


# --------------------------------------------------------------------------------------------- the module
@dataclasses.dataclass(frozen=True)
class RecursionConfig:
  """How a tower's depth is split and recursed.  Hashable; built from config dicts by `from_dict`."""

  signature: str = "AB"
  degree: int = 1
  p_skip: float = 0.0
  adapters: bool = False
  loop: str = "auto"  # 'auto' (unroll runs <= AUTO_UNROLL_MAX rounds, else scan), 'scan', 'unroll'
  remat: bool = False  # rematerialise each round in the backward pass
  kv_sharing: bool = False  # later rounds of the recursive block attend to the first round's keys/values
  layers_per_block: Optional[int] = None  # overrides the split of the baseline depth (App. E.1 sweep entries)
  scan_unroll: int = 1  # loop='scan': rounds unrolled per scan iteration (trades compile time for speed)

  def __post_init__(self):
    if self.loop not in LOOPS:
      raise ValueError(f"recursion.loop must be one of {LOOPS}, got {self.loop!r}")
    parse_signature(self.signature)
    if not 0.0 <= float(self.p_skip) < 1.0:
      raise ValueError(f"p_skip must be in [0, 1), got {self.p_skip}")
    if not isinstance(self.scan_unroll, int) or self.scan_unroll < 1:
      raise ValueError(f"recursion.scan_unroll must be an integer >= 1, got {self.scan_unroll!r}")

  @classmethod
  def from_dict(cls, d: Any) -> "RecursionConfig":
    d = dict(d or {})
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - allowed)
    if unknown:
      raise ValueError(f"unknown recursion key(s) {unknown}; allowed: {sorted(allowed)}")
    return cls(**d)

  def plan(self, num_layers: int) -> BlockPlan:
    return make_plan(self.signature, self.degree, num_layers, self.layers_per_block, self.p_skip)


class Block(nn.Module):
  """One unique block: `num_layers` encoder layers.  x: [B, T, D] -> ([B, T, D], per-layer (k, v))."""

  layer: LayerConfig
  num_layers: int

  @nn.compact
  def __call__(
    self,
    x: Array,
    mask: Optional[Array],
    positions: Optional[Array],
    shared_kv: Optional[tuple[KV, ...]],
    decode: bool = False,
  ) -> tuple[Array, tuple[KV, ...]]:
    kvs = []
    for j in range(self.num_layers):
      x, kv = EncoderLayer(self.layer, name=f"encoderblock_{j}")(
        x, mask, positions, None if shared_kv is None else shared_kv[j], decode
      )
      kvs.append(kv)
    return x, tuple(kvs)


def _apply_block(block: Block, x, keep, mask, positions, shared_kv, decode):
  """One position of a run: the block, or identity where a stochastic skip drew keep=False."""
  if keep is None:
    return block(x, mask, positions, shared_kv, decode)[0]
  return nn.cond(keep, lambda m, y: m(y, mask, positions, shared_kv, decode)[0], lambda m, y: y, block, x)


class RecursiveStack(nn.Module):
  """A stack of recursive blocks (+ optional adapters and final LayerNorm `encoder_norm`).

  __call__(x [B, T, D], mask=None (broadcastable to [B, H, T, S]), positions=None ([B, T] int, for rotary),
  train=False, rounds=None, decode=False) -> (y [B, T, D], info) with info['rounds'] the executed rounds of the
  recursive block (int32 scalar; dynamic under stochastic RINS).
  """

  layer: LayerConfig
  num_layers: int  # baseline depth L
  recursion: RecursionConfig = RecursionConfig()
  final_norm: bool = True

  def trained_plan(self) -> BlockPlan:
    return self.recursion.plan(self.num_layers)

  @nn.compact
  def __call__(
    self,
    x: Array,
    mask: Optional[Array] = None,
    positions: Optional[Array] = None,
    train: bool = False,
    rounds: Optional[int] = None,
    decode: bool = False,
  ):
    rc = self.recursion
    trained = self.trained_plan()
    plan = trained if rounds is None or self.is_initializing() else with_rounds(trained, int(rounds))
    blocks = {n: Block(self.layer, plan.layers_per_block, name=n) for n in trained.block_names}
    stochastic = train and max(plan.skip) > 0 and not self.is_initializing() and not decode
    rec_index = recursive_run_index(plan)
    rounds_ran = jnp.asarray(0, jnp.int32)
    for i, run in enumerate(plan.runs()):
      keep = None
      if stochastic and max(run.skip) > 0:
        keep = jax.random.bernoulli(self.make_rng("rins"), 1.0 - jnp.asarray(run.skip), (run.count,))
      x, executed = self._run(
        blocks[run.name],
        x,
        run.count,
        keep,
        mask,
        positions,
        decode,
        share_kv=rc.kv_sharing and i == rec_index and run.count > 1,
      )
      if i == rec_index:
        rounds_ran = executed
    if rc.adapters:
      x = self._adapters(x, rounds_ran, trained_rounds(trained))
    if self.final_norm:
      x = nn.LayerNorm(epsilon=self.layer.layernorm_eps, dtype=self.layer.dtype, name="encoder_norm")(x)
    return x, {"rounds": rounds_ran}

  def _run(
    self, block: Block, x, count: int, keep: Optional[Array], mask, positions, decode: bool, share_kv: bool
  ) -> tuple[Array, Array]:
    """Applies `block` `count` times.  Returns (x, number of applications that ran)."""
    executed = jnp.asarray(count, jnp.int32) if keep is None else keep.sum().astype(jnp.int32)
    shared = None
    if share_kv:  # the first round runs (and caches) keys/values; later rounds reuse them
      if keep is not None:
        keep = keep.at[0].set(True)
        executed = keep.sum().astype(jnp.int32)
      x, shared = block(x, mask, positions, None, decode)
      count, keep = count - 1, (None if keep is None else keep[1:])
      decode_rounds = False  # later rounds keep no cache of their own
    else:
      decode_rounds = decode
    if count == 0:
      return x, executed
    if count == 1:
      return _apply_block(block, x, None if keep is None else keep[0], mask, positions, shared, decode_rounds), executed
    loop = self.recursion.loop
    if loop == "auto":
      loop = "unroll" if count <= AUTO_UNROLL_MAX else "scan"
    if loop == "unroll" and not decode_rounds:
      fn = nn.remat(_apply_block, static_argnums=(6,)) if self.recursion.remat else _apply_block
      for j in range(count):
        x = fn(block, x, None if keep is None else keep[j], mask, positions, shared, decode_rounds)
      return x, executed

    def body(mdl, carry, keep_j, mask_, positions_, shared_):
      return _apply_block(mdl, carry, None if keep is None else keep_j, mask_, positions_, shared_, decode_rounds), None

    if self.recursion.remat:
      body = nn.remat(body, prevent_cse=False)
    scan = nn.scan(
      body,
      variable_broadcast="params",
      variable_axes={"cache": 0} if decode_rounds else {},
      split_rngs={"params": False, "cache": False},
      in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
      length=count,
      unroll=min(self.recursion.scan_unroll, count),
    )
    keep_xs = keep if keep is not None else jnp.ones((count,), bool)
    x, _ = scan(block, x, keep_xs, mask, positions, shared)
    return x, executed

  def _adapters(self, x: Array, rounds_ran: Array, r_max: int) -> Array:
    """Applies adapter k = min(rounds_ran, r_max) (1-based): x @ W_k + b_k.  Identity at init."""
    d = x.shape[-1]
    eye = lambda key, shape, dtype=jnp.float32: jnp.broadcast_to(jnp.eye(d, dtype=dtype), shape)
    kernel = self.param("adapter_kernel", eye, (r_max, d, d))
    bias = self.param("adapter_bias", nn.initializers.zeros, (r_max, d))
    k = jnp.clip(rounds_ran, 1, r_max) - 1
    return jnp.einsum("btd,de->bte", x, kernel[k].astype(x.dtype)) + bias[k].astype(x.dtype)
