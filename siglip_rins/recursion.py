"""The RINS recursion engine: signatures, degrees, block plans and `RecursiveStack`, used by every tower.

Vocabulary (paper Sec. 2 and App. A):
* A *signature* names equal-sized blocks in the order they run; a letter repeated applies the same block (shared
  parameters) to its own output.  Both spellings are accepted: ``AAB`` and ``A^2B`` (also ``A^{2}B``).
* A *degree* d nests the pattern: each block of the signature is itself the signature at degree d-1 with its own
  blocks, so ``(ABB)_2`` runs ``ABB CDD CDD``.  Unique blocks = len(set(signature)) ** degree.
* A baseline of depth L is split into its unique blocks by `recursion.split` (see `split_depth`): 'floor' (the
  paper's App. E.1 rule and the default: every block gets ``L // unique`` layers, the remainder is dropped),
  'spread' (all L layers kept, the first ``L % unique`` blocks one layer deeper) or 'exact' (refuse a depth
  that does not divide).  A split with 0 layers per block is refused.  `layers_per_block` (an int or one int
  per unique block) overrides the split.  `sweep(L)` lists App. E.1's signatures for a depth.
* RINS is degree 1 with signature ``A^rB``.  *Stochastic RINS* skips each position of the innermost signature with
  probability given by the skip tuple ``(0, p_s, ..., p_s, 0)`` (first and last never skipped), so for ``A^rB``
  the number of A rounds is ``1 + Binomial(r-1, 1-p_s)``.  Skips are drawn from the ``'rins'`` RNG stream, only
  when ``train=True``; evaluation and ``p_s = 0`` are deterministic.
* Two inference-time axes, both with the same parameters and also beyond the trained values (degree 1 only):
  ``rounds=k`` runs the first block's leading run k times and the rest of the signature as trained: ``A^kB``
  for ``AB`` and ``A^rB``, ``A^kBAB`` for ``ABAB``, ``A^kBB`` for ``ABB`` (`with_rounds`); ``repeat=k`` runs
  the signature's repeated unit k times, repeat-all-over (RAO): ``(AB)^k`` for ``ABAB`` and ``AB``,
  ``(AAB)^k`` for ``A^2B`` (`with_repeat`).  ``info['rounds']`` counts the executions of the leading run,
  ``info['repeats']`` the units run.  Degree > 1 signatures refuse both.
* Linear adapters (paper Sec. 6): ``num_adapters`` D-by-D maps initialised to the identity; the k-th is applied
  to the stack output when the count along the signature's `adapter_axis` is k (k above the trained count
  uses the last).  The axis is 'rounds' (A^rB: r adapters, the r-th after r rounds) except for RAO signatures
  (a unit of two or more blocks repeated, e.g. ``ABAB``), whose adapters follow ``repeat``.  The stored
  ``adapter_kernel`` is the full matrix; the optimiser gives it lr / D (siglip_rins.optim, ``adapter_lr_mult``).
* KV sharing applies to the leading run of the first block (A of A^rB).

Execution: runs of one repeated block are executed by ``nn.scan`` over rounds with broadcast (shared) parameters,
so compile time does not grow with r, or unrolled in Python (``loop='unroll'``).  The default ``loop='auto'``
scans with ``remat=AUTO_REMAT`` ('dots') unless `remat` is set: on a 2-core CPU (benchmarks/RESULTS.md section 9,
2026-11-30, bench image tower) it stepped faster than unroll at r = 4 and 8 (0.67 vs 0.78 s, 1.20 vs 1.36 s) and
compiled r = 8 in 1.87x the time of the loop-free r = 1 (unroll 2.28x, plain scan 2.01x); plain scan stacks every
residual of a round with dynamic-update-slices and is slower than unroll.  The forward pass is the same computation in every form;
gradients agree within float rounding (tests/test_recursion.py).  ``remat=True``
(or 'full') rematerialises each round (only the carry is saved for the backward pass); ``remat='dots'`` keeps only
the matmul outputs of a round (fewer, smaller stacked residuals; LayerNorm/GELU/softmax recomputed) and
``'dots_no_batch'`` only the unbatched ones (attention recomputed).  benchmarks/bench_recursion.py times them
(loop forms scan_dots, scan_dots_nb, scan_remat).

Stochastic rounds (training with ``p_skip > 0``): each position that may be skipped is an ``nn.cond`` (the round
or the identity), and a differentiated ``cond`` returns the union of its branches' residuals, the skipped branch
filling the taken one's with zeros.  So the remat goes inside the taken branch, and ``loop='auto'`` saves only
each such round's carry (``AUTO_REMAT_STOCHASTIC='full'``): a skipped round then costs about nothing.  Measured
(benchmarks/bench_stochastic.py, bench image tower A^4B, 2-core CPU, 2026-11-30): step time / drawn FLOPs 1.03 at
p_s = 0.5 and 1.05 at 0.75 (checkpoint around the whole cond, as before: 1.09 / 1.24; 'dots' inside the branch:
1.16 / 1.23; no remat: 1.29 / 1.39).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from siglip_rins import limits
from siglip_rins.layers import KV, EncoderLayer, LayerConfig

Array = jax.Array
MAX_EXPONENT = 1024
LOOPS = ("auto", "scan", "unroll")
AUTO_REMAT = "dots"  # loop='auto': scan, saving only the matmul outputs of each round (unless remat is set)
AUTO_REMAT_STOCHASTIC = "full"  # loop='auto' on positions that may be skipped: save only each round's carry
REMATS = (False, True, "full", "dots", "dots_no_batch")


def remat_policy(remat) -> Any:
  """The jax.checkpoint policy of a `recursion.remat` value (None: save nothing but the inputs).  'dots' and
  'dots_no_batch' also save the mixed-precision products (siglip_rins.precision names their outputs)."""
  from siglip_rins import precision

  cp = jax.checkpoint_policies
  if remat == "dots":
    names = cp.save_only_these_names(precision.DOT_NAME, precision.BATCHED_DOT_NAME)
    return cp.save_from_both_policies(cp.dots_saveable, names)
  if remat == "dots_no_batch":
    names = cp.save_only_these_names(precision.DOT_NAME)
    return cp.save_from_both_policies(cp.dots_with_no_batch_dims_saveable, names)
  return None


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
  out, pos, total = [], 0, 0
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
    total += n
    limits.check_positions(spec, total)
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


def _period(letters: str) -> int:
  """Length of the shortest unit u with letters == u * n ('ABAB' -> 2, 'AAAA' -> 1, 'AAB' -> 3)."""
  n = len(letters)
  return next(p for p in range(1, n + 1) if n % p == 0 and letters[:p] * (n // p) == letters)


@dataclasses.dataclass(frozen=True)
class Run:
  """`count` consecutive applications of block `name`; position i is skipped with probability skip[i]."""

  name: str
  count: int
  skip: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class BlockPlan:
  """The flat execution plan of (signature, degree) over a depth split into unique blocks.

  `block_layers[i]` is the depth of unique block `block_names[i]` (all equal for the paper's split; see
  `split_depth`).  `units` are the lengths (in positions of `sequence`) of the repeated unit of the signature:
  'ABAB' has units (2, 2) (repeat-all-over of AB), 'A^3B' has (4,), 'AAAA' has (1, 1, 1, 1); degree > 1 plans
  are one unit.
  """

  letters: str  # expanded top-level signature, e.g. 'AAAB'
  degree: int
  block_layers: tuple[int, ...]  # layers of each unique block, aligned with block_names
  sequence: tuple[str, ...]  # unique block names in execution order, e.g. ('A','B','B','C','D','D',...)
  skip: tuple[float, ...]  # skip probability of each executed position
  block_names: tuple[str, ...]  # unique blocks in order of first use
  units: tuple[int, ...]  # positions per repeated unit (the repeat / RAO axis); sum == len(sequence)

  @property
  def num_unique_blocks(self) -> int:
    return len(self.block_names)

  @property
  def layers_per_block(self):
    """An int when every unique block has the same depth, else the per-block tuple (aligned with block_names)."""
    return self.block_layers[0] if self.uniform else self.block_layers

  @property
  def uniform(self) -> bool:
    return len(set(self.block_layers)) == 1

  def layers(self, name: str) -> int:
    """Depth of unique block `name`."""
    return self.block_layers[self.block_names.index(name)]

  @property
  def num_layers_param(self) -> int:
    """Distinct layers with parameters."""
    return sum(self.block_layers)

  @property
  def num_layers_run(self) -> int:
    """Layer applications per forward pass (no skipping)."""
    return sum(self.layers(n) for n in self.sequence)

  @property
  def repeats(self) -> int:
    """How many times the signature's unit runs (the RAO axis): 'ABAB' -> 2, 'A^3B' -> 1."""
    return len(self.units)

  def runs(self) -> list[Run]:
    runs: list[Run] = []
    for name, p in zip(self.sequence, self.skip):
      if runs and runs[-1].name == name:
        runs[-1] = Run(name, runs[-1].count + 1, runs[-1].skip + (p,))
      else:
        runs.append(Run(name, 1, (p,)))
    return runs


SPLITS = ("floor", "spread", "exact")


def split_depth(num_layers: int, n_unique: int, split: str = "floor", what: str = "") -> tuple[int, ...]:
  """Layers of each of `n_unique` unique blocks when a baseline of `num_layers` layers is split.

  * 'floor' (paper App. E.1, the default): every block gets ``num_layers // n_unique`` layers (blocks of equal
    size, as Sec. 2 defines them); the ``num_layers % n_unique`` remaining layers are dropped, so the model has
    that many fewer parameter layers than the baseline (the sweep's "similar size").
  * 'spread': all layers are kept; the first ``num_layers % n_unique`` blocks (in order of first use) get one
    layer more than the others (parameter count equal to the baseline's; blocks differ by at most one layer).
  * 'exact': refuse a depth that n_unique does not divide.
  Every split needs at least one layer per block.
  """
  if split not in SPLITS:
    raise ValueError(f"recursion.split must be one of {SPLITS}, got {split!r}")
  if not isinstance(num_layers, (int, np.integer)) or isinstance(num_layers, bool) or num_layers < 1:
    raise ValueError(f"depth must be an integer >= 1, got {num_layers!r}")
  base, rem = divmod(int(num_layers), n_unique)
  if base == 0:
    raise ValueError(f"depth {num_layers} cannot be split into {n_unique} unique blocks{what} (0 layers per block)")
  if split == "exact" and rem:
    raise ValueError(
      f"depth {num_layers} does not divide into {n_unique} unique blocks{what} ({num_layers} % {n_unique} = "
      f"{rem}); choose a depth that is a multiple of {n_unique}, or recursion.split='floor' (paper App. E.1: "
      f"{base} layers per block, {rem} dropped) or 'spread' (the first {rem} blocks get {base + 1} layers)"
    )
  if split == "spread":
    return tuple(base + 1 if i < rem else base for i in range(n_unique))
  return (base,) * n_unique


def _block_layers(layers_per_block, n_unique: int) -> tuple[int, ...]:
  """An int (every block) or a sequence with one depth per unique block (in order of first use)."""
  if isinstance(layers_per_block, (int, np.integer)) and not isinstance(layers_per_block, bool):
    out = (int(layers_per_block),) * n_unique
  elif isinstance(layers_per_block, (list, tuple)):
    out = tuple(layers_per_block)
    if len(out) != n_unique or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in out):
      raise ValueError(
        f"layers_per_block {list(out)} must list one integer per unique block ({n_unique} blocks, in order of "
        f"first use)"
      )
    out = tuple(int(n) for n in out)
  else:
    raise ValueError(f"layers_per_block must be an integer or a list of integers, got {layers_per_block!r}")
  if min(out) < 1:
    raise ValueError(f"layers_per_block must be >= 1, got {layers_per_block}")
  return out


def make_plan(
  signature: str,
  degree: int = 1,
  num_layers: Optional[int] = None,
  layers_per_block=None,
  p_skip: float = 0.0,
  split: str = "floor",
) -> BlockPlan:
  """Builds the plan; give either the baseline depth `num_layers` (split by `split`, see `split_depth`) or
  `layers_per_block` directly (an int for every block, or one int per unique block in order of first use)."""
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
  shown = signature if spec_degree or degree == 1 else f"({signature})_{degree}"
  limits.check_degree(shown, degree)
  positions = len(letters) ** degree
  limits.check_positions(shown, positions)  # before the nested expansion (len ** degree)
  n_unique = len(unique_letters) ** degree
  if layers_per_block is None:
    if num_layers is None:
      raise ValueError("give num_layers (baseline depth) or layers_per_block")
    block_layers = split_depth(num_layers, n_unique, split, f" for signature {signature!r} at degree {degree}")
  else:
    block_layers = _block_layers(layers_per_block, n_unique)
  limits.check_layers_run(shown, positions * max(block_layers), f" ({max(block_layers)} layers per block)")

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
  if degree == 1:
    period = _period(letters)
    units = (period,) * (len(letters) // period)
  else:
    units = (len(sequence),)
  return BlockPlan(letters, degree, block_layers, sequence, tuple(inner_pos), tuple(dict.fromkeys(sequence)), units)


def _check_count(name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
  return int(value)


def _degree_one(plan: BlockPlan, what: str):
  if plan.degree != 1:
    raise ValueError(
      f"{what} is defined for degree-1 signatures (RINS A^rB, RAO); signature "
      f"'({compact_signature(plan.letters)})_{plan.degree}' has degree {plan.degree}, whose nesting has no single "
      f"first block or unit to repeat at inference time"
    )


def _check_inference(plan: BlockPlan, positions: int, what: str) -> None:
  """Caps the plan `with_rounds` / `with_repeat` would build (positions and layer applications), first."""
  shown = compact_signature(plan.letters)
  limits.check_positions(shown, positions, what)
  limits.check_layers_run(shown, positions * max(plan.block_layers), what)


def _replan(plan: BlockPlan, letters: str, units: tuple[int, ...]) -> BlockPlan:
  p = max(plan.skip) if plan.skip else 0.0
  return dataclasses.replace(plan, letters=letters, sequence=tuple(letters), skip=skip_tuple(letters, p), units=units)


def with_rounds(plan: BlockPlan, rounds: int) -> BlockPlan:
  """The plan with the first block's leading run executed `rounds` times, the rest as trained: rounds=k is
  A^k followed by what the signature runs after its leading A's ('AB' -> A^kB, 'A^3B' -> A^kB,
  'ABAB' -> A^kBAB, 'ABB' -> A^kBB).  Same parameters, also for k above the trained r.  Degree 1 only."""
  rounds = _check_count("rounds", rounds)
  _degree_one(plan, "rounds (inference-time recursion of the first block)")
  lead = plan.runs()[0].count
  _check_inference(plan, len(plan.letters) - lead + rounds, f" with rounds={rounds}")
  letters = plan.letters[0] * rounds + plan.letters[lead:]
  if plan.units[0] == 1:  # a single repeated block ('AAAA'): every position is a unit
    units = (1,) * len(letters)
  else:  # the leading run lies inside the first unit
    units = (plan.units[0] + rounds - lead,) + plan.units[1:]
  return _replan(plan, letters, units)


def with_repeat(plan: BlockPlan, repeat: int) -> BlockPlan:
  """The plan with the signature's repeated unit run `repeat` times (repeat-all-over, RAO): 'ABAB' (unit AB)
  -> (AB)^k, 'AB' -> (AB)^k, 'A^2B' -> (AAB)^k, 'AAAA' -> A^k.  Degree 1 only."""
  repeat = _check_count("repeat", repeat)
  _degree_one(plan, "repeat (repeat-all-over of the signature's unit)")
  unit = plan.letters[: plan.units[0]]
  _check_inference(plan, len(unit) * repeat, f" with repeat={repeat}")
  return _replan(plan, unit * repeat, (len(unit),) * repeat)


def inference_plan(plan: BlockPlan, rounds: Optional[int] = None, repeat: Optional[int] = None) -> BlockPlan:
  """The trained plan with inference-time scaling: first `repeat` (the unit), then `rounds` (the first block's
  leading run).  None keeps the trained value."""
  if repeat is not None:
    plan = with_repeat(plan, repeat)
  if rounds is not None:
    plan = with_rounds(plan, rounds)
  return plan


@dataclasses.dataclass(frozen=True)
class DynamicRounds:
  """`rounds` given at run time: `value` (an int32 scalar, traced or not) rounds of the first block's leading run,
  compiled once for every value in 1..`max_rounds` (positions past `value` are skipped by a `cond`, as stochastic
  RINS skips drawn-out rounds).  Inference only (`train=False`, `decode=False`).  Values outside 1..max_rounds
  are clipped to it; `rounds_bucket` picks max_rounds so that one program serves r = 1..4, another 5..8, ..."""

  value: Any
  max_rounds: int


@dataclasses.dataclass(frozen=True)
class DynamicRepeat:
  """`repeat` given at run time (RAO): the signature's unit runs `value` times (an int32 scalar, traced or not),
  compiled once for every value in 1..`max_repeat`: the plan is the unit repeated max_repeat times and each
  position past unit `value` is skipped by a `cond`.  info['repeats'] (and so the adapter) follows `value`.
  Inference only, like DynamicRounds; values outside 1..max_repeat are clipped to it."""

  value: Any
  max_repeat: int


ROUNDS_BUCKET = 4


def rounds_bucket(rounds: int) -> int:
  """The max_rounds (max_repeat) of the DynamicRounds (DynamicRepeat) program that serves `rounds` (a repeat
  value): the next multiple of ROUNDS_BUCKET."""
  rounds = _check_count("rounds", rounds)
  return -(-rounds // ROUNDS_BUCKET) * ROUNDS_BUCKET


def recursive_run_index(plan: BlockPlan) -> int:
  """Index (in plan.runs()) of the run whose executed count is reported as 'rounds': the leading run."""
  del plan
  return 0


def trained_rounds(plan: BlockPlan) -> int:
  """r of A^rB: executions of the first block's leading run ('A^3B' -> 3, 'AB' -> 1, 'ABAB' -> 1, 'AAAA' -> 4)."""
  return plan.runs()[0].count


def trained_repeats(plan: BlockPlan) -> int:
  """Repeats of the signature's unit ('ABAB' -> 2, 'AAAA' -> 4, 'A^3B' -> 1)."""
  return plan.repeats


def adapter_axis(plan: BlockPlan) -> str:
  """Which count selects the linear adapter: 'repeat' for RAO signatures (a unit of two or more positions run
  more than once, e.g. 'ABAB'), else 'rounds' (A^rB, and 'AAAA', where both counts agree)."""
  return "repeat" if plan.repeats > 1 and plan.units[0] > 1 else "rounds"


def num_adapters(plan: BlockPlan) -> int:
  """Adapters of the trained plan: its count along `adapter_axis` (paper Sec. 6: r adapters for A^rB)."""
  return trained_repeats(plan) if adapter_axis(plan) == "repeat" else trained_rounds(plan)


def adapter_index(trained: BlockPlan, ran: BlockPlan) -> int:
  """1-based adapter applied when the deterministic plan `ran` (the trained plan at some rounds/repeat) runs:
  its count along the trained plan's axis, capped at num_adapters(trained)."""
  count = ran.repeats if adapter_axis(trained) == "repeat" else trained_rounds(ran)
  return min(max(count, 1), num_adapters(trained))


def sweep(num_layers: int, degrees: Sequence[int] = (1, 2, 3), split: str = "floor") -> list[dict]:
  """App. E.1's architecture sweep for a baseline of `num_layers` layers.

  The paper keeps a (signature, degree) when ``num_layers // unique_blocks > 0`` and gives every unique block
  that many layers ('floor': the remainder is dropped); `split='spread'` keeps all layers instead (earlier
  blocks one layer deeper).  Each entry: signature, compact, degree, unique_blocks, layers_per_block (int, or a
  list when uneven), unique_layers (layers with parameters), layers_run (per forward pass), dropped_layers,
  exact (all baseline layers kept), param_layers_rel (unique_layers / num_layers: the layer-parameter count
  relative to the baseline) and compute_rel (layers_run / num_layers: forward layer FLOPs relative to it).
  """
  entries = [("A", 1), ("AA", 1), ("AAA", 1), ("AAAA", 1)]
  for sig in ["ABB", "ABA", "AAB", "ABBC", "AABC", "ABCC", "ABBB", "AAAB", "AABB"]:
    for degree in (1, 2, 3):
      entries.append((sig, degree))
  out = []
  for sig, degree in entries:
    if degree not in degrees:
      continue
    n_unique = len(set(sig)) ** degree
    if num_layers // n_unique == 0:
      continue
    plan = make_plan(sig, degree, num_layers, split=split)
    lpb = plan.layers_per_block
    out.append(
      dict(
        signature=sig,
        compact=compact_signature(sig) if degree == 1 else f"({compact_signature(sig)})_{degree}",
        degree=degree,
        unique_blocks=n_unique,
        layers_per_block=lpb if isinstance(lpb, int) else list(lpb),
        unique_layers=plan.num_layers_param,
        layers_run=plan.num_layers_run,
        dropped_layers=num_layers - plan.num_layers_param,
        exact=plan.num_layers_param == num_layers,
        param_layers_rel=plan.num_layers_param / num_layers,
        compute_rel=plan.num_layers_run / num_layers,
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
  loop: str = "auto"  # 'auto' (scan with remat AUTO_REMAT unless remat is set), 'scan', 'unroll'
  # Rematerialise each round in the backward pass: False; True or 'full' (only the carry is saved, the round's
  # forward runs again); 'dots' (matmul outputs saved, elementwise work (LayerNorm, GELU, softmax) recomputed);
  # 'dots_no_batch' (only unbatched matmul outputs saved: projections and MLP, attention recomputed).
  remat: Any = False
  kv_sharing: bool = False  # later rounds of the recursive block attend to the first round's keys/values
  # Overrides the split of the baseline depth: an int (every unique block) or one int per unique block (in order
  # of first use), e.g. (2, 1, 1) for the 4-layer blocks of an uneven App. E.1 entry.
  layers_per_block: Optional[Any] = None
  split: str = "floor"  # how the baseline depth is split when layers_per_block is None: 'floor' | 'spread' | 'exact'
  scan_unroll: int = 1  # loop='scan': rounds unrolled per scan iteration (trades compile time for speed)

  def __post_init__(self):
    if self.loop not in LOOPS:
      raise ValueError(f"recursion.loop must be one of {LOOPS}, got {self.loop!r}")
    parse_signature(self.signature)
    if not 0.0 <= float(self.p_skip) < 1.0:
      raise ValueError(f"p_skip must be in [0, 1), got {self.p_skip}")
    if not isinstance(self.scan_unroll, int) or self.scan_unroll < 1:
      raise ValueError(f"recursion.scan_unroll must be an integer >= 1, got {self.scan_unroll!r}")
    if self.split not in SPLITS:
      raise ValueError(f"recursion.split must be one of {SPLITS}, got {self.split!r}")
    if self.remat not in REMATS:
      raise ValueError(f"recursion.remat must be one of {REMATS}, got {self.remat!r}")
    if isinstance(self.layers_per_block, (list, tuple)):  # hashable
      object.__setattr__(self, "layers_per_block", tuple(self.layers_per_block))

  @classmethod
  def from_dict(cls, d: Any) -> "RecursionConfig":
    d = dict(d or {})
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - allowed)
    if unknown:
      raise ValueError(f"unknown recursion key(s) {unknown}; allowed: {sorted(allowed)}")
    return cls(**d)

  def plan(self, num_layers: int) -> BlockPlan:
    return make_plan(self.signature, self.degree, num_layers, self.layers_per_block, self.p_skip, self.split)


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


def _apply_block(block: Block, x, keep, mask, positions, shared_kv, decode, remat=False):
  """One position of a run: the block, or identity where a stochastic skip drew keep=False.

  Under a stochastic skip with `remat` set, the rematerialisation is placed inside the taken branch: the
  branches of a differentiated `cond` return the union of their residuals (zeros from the branch not taken), so
  a checkpoint around the whole `cond` would make every skipped round write (and a scan stack) a full round's
  worth of zero residuals; inside the branch the residuals are only what the policy saves (the carry for
  remat=True/'full')."""
  if keep is None:
    return block(x, mask, positions, shared_kv, decode)[0]
  apply = lambda m, y: m(y, mask, positions, shared_kv, decode)[0]
  if remat:
    apply = nn.remat(apply, prevent_cse=False, policy=remat_policy(remat))
  return nn.cond(keep, apply, lambda m, y: y, block, x)


def _dynamic_counts(plan: BlockPlan, dynamic) -> np.ndarray:
  """Per position of `plan` (built for the bucket's maximum), its 0-based count along the axis `dynamic` sets:
  the round within the leading run for DynamicRounds (0 for every later position, which always runs), the unit
  for DynamicRepeat.  Position p runs when its count is below the value given at run time."""
  if isinstance(dynamic, DynamicRounds):
    counts = np.zeros(len(plan.sequence), np.int32)
    lead = plan.runs()[0].count
    counts[:lead] = np.arange(lead)
    return counts
  return np.repeat(np.arange(len(plan.units), dtype=np.int32), plan.units)


def _init_plan(plan: BlockPlan) -> BlockPlan:
  """Every unique block once, in order of first use: what `init` needs to create the parameters.

  A block's parameters are made at its first application and depend only on its name and the init rng, so they
  equal those of the full plan; the init program then no longer depends on how often blocks repeat, and the
  baseline, RAO and RINS of one size trace and compile one identical initialiser (one persistent compilation cache
  entry), without the forward passes of the repeats."""
  names = plan.block_names
  return dataclasses.replace(plan, sequence=names, skip=(0.0,) * len(names), units=(len(names),))


class RecursiveStack(nn.Module):
  """A stack of recursive blocks (+ optional adapters and final LayerNorm `encoder_norm`).

  __call__(x [B, T, D], mask=None (broadcastable to [B, H, T, S]), positions=None ([B, T] int, for rotary),
  train=False, rounds=None, decode=False, repeat=None) -> (y [B, T, D], info).
  `rounds=k` runs the first block's leading run k times (A^kB; see `with_rounds`); `repeat=k` runs the
  signature's unit k times (RAO; see `with_repeat`); None keeps the trained signature.  `rounds` may also be a
  `DynamicRounds` and `repeat` a `DynamicRepeat` (inference, one of them): k given at run time, one compiled
  program for k = 1..max.
  info['rounds']: executions of the first block's leading run; info['repeats']: units that ran (a unit counts
  when any of its positions ran); both int32 scalars, dynamic under stochastic RINS.
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
    repeat: Optional[int] = None,
  ):
    rc = self.recursion
    trained = self.trained_plan()
    initializing = self.is_initializing()
    dynamic = None  # a DynamicRounds or DynamicRepeat: which positions run is decided at run time
    if isinstance(rounds, DynamicRounds) or isinstance(repeat, DynamicRepeat):
      if train or decode or initializing:
        raise ValueError("DynamicRounds / DynamicRepeat are for inference (train=False, decode=False), not for "
                         "training or init")  # fmt: skip
      if isinstance(rounds, DynamicRounds) and isinstance(repeat, DynamicRepeat):
        raise ValueError("only one of rounds / repeat can be given at run time")
      if isinstance(rounds, DynamicRounds):
        dynamic, rounds = rounds, _check_count("DynamicRounds.max_rounds", rounds.max_rounds)
      else:
        dynamic, repeat = repeat, _check_count("DynamicRepeat.max_repeat", repeat.max_repeat)
    plan = trained if initializing else inference_plan(trained, rounds, repeat)
    if dynamic is not None:  # per position: its 0-based count along the dynamic axis; it runs if count < value
      count_of = _dynamic_counts(plan, dynamic)
      value = jnp.clip(jnp.asarray(dynamic.value, jnp.int32), 1, int(count_of.max()) + 1)
      dynamic_keep = jnp.asarray(count_of) < value
    if initializing and not decode:  # see _init_plan
      plan = _init_plan(trained)
    blocks = {n: Block(self.layer, trained.layers(n), name=n) for n in trained.block_names}
    stochastic = train and max(plan.skip) > 0 and not initializing and not decode
    rounds_ran = jnp.asarray(0, jnp.int32)
    ran: list[Array] = []  # per position: 1 if it ran (only tracked under stochastic skipping)
    start = 0  # position of the run in the plan
    for i, run in enumerate(plan.runs()):
      share_kv = rc.kv_sharing and i == 0 and run.count > 1
      keep = None
      if dynamic is not None and count_of[start : start + run.count].max() > 0:  # a run with positions to skip
        keep = dynamic_keep[start : start + run.count]
      elif stochastic and max(run.skip) > 0:
        keep = jax.random.bernoulli(self.make_rng("rins"), 1.0 - jnp.asarray(run.skip), (run.count,))
        if share_kv:  # the first round always runs: later rounds attend to its keys/values
          keep = keep.at[0].set(True)
      x = self._run(blocks[run.name], x, run.count, keep, mask, positions, decode, share_kv)
      start += run.count
      executed = jnp.asarray(run.count, jnp.int32) if keep is None else keep.sum().astype(jnp.int32)
      if i == 0:
        rounds_ran = executed
      if stochastic or dynamic is not None:
        ran.append(jnp.ones((run.count,), bool) if keep is None else keep)
    if stochastic or dynamic is not None:
      flags, bounds = jnp.concatenate(ran), np.cumsum((0,) + plan.units)
      repeats_ran = sum(flags[s:e].any().astype(jnp.int32) for s, e in zip(bounds[:-1], bounds[1:]))
    else:
      repeats_ran = jnp.asarray(plan.repeats, jnp.int32)
    if rc.adapters:
      count = repeats_ran if adapter_axis(trained) == "repeat" else rounds_ran
      x = self._adapters(x, count, num_adapters(trained))
    if self.final_norm:
      x = nn.LayerNorm(epsilon=self.layer.layernorm_eps, dtype=self.layer.policy.activation_dtype, name="encoder_norm")(
        x
      )
    return x, {"rounds": rounds_ran, "repeats": repeats_ran}

  def _run(
    self, block: Block, x, count: int, keep: Optional[Array], mask, positions, decode: bool, share_kv: bool
  ) -> Array:
    """Applies `block` `count` times (position j only where keep[j], when keep is given)."""
    shared = None
    if share_kv:  # the first round runs (and caches) keys/values; later rounds reuse them
      x, shared = block(x, mask, positions, None, decode)
      count, keep = count - 1, (None if keep is None else keep[1:])
      decode_rounds = False  # later rounds keep no cache of their own
    else:
      decode_rounds = decode
    if count == 0:
      return x
    if count == 1:
      return _apply_block(block, x, None if keep is None else keep[0], mask, positions, shared, decode_rounds)
    loop, remat = self.recursion.loop, self.recursion.remat
    if loop == "auto":  # a scan whose backward keeps only each round's matmul outputs, unless remat is set
      loop = "scan"
      if not remat and not decode_rounds:
        # Under stochastic skipping only the carry: a skipped round then costs ~nothing (see _apply_block).
        remat = AUTO_REMAT if keep is None else AUTO_REMAT_STOCHASTIC
    # Under stochastic skipping (keep given) the remat goes inside the taken branch (see _apply_block).
    inner_remat = remat if keep is not None else False
    outer_remat = remat if keep is None else False
    if loop == "unroll" and not decode_rounds:
      policy = remat_policy(outer_remat)
      fn = nn.remat(_apply_block, static_argnums=(6, 7), policy=policy) if outer_remat else _apply_block
      for j in range(count):
        x = fn(block, x, None if keep is None else keep[j], mask, positions, shared, decode_rounds, inner_remat)
      return x

    def body(mdl, carry, keep_j, mask_, positions_, shared_):
      keep_j = None if keep is None else keep_j
      return _apply_block(mdl, carry, keep_j, mask_, positions_, shared_, decode_rounds, inner_remat), None

    if outer_remat:
      body = nn.remat(body, prevent_cse=False, policy=remat_policy(outer_remat))
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
    return x

  def _adapters(self, x: Array, count: Array, r_max: int) -> Array:
    """Applies adapter k = min(count, r_max) (1-based; count along `adapter_axis`): x @ W_k + b_k.  Identity
    at init."""
    d = x.shape[-1]
    eye = lambda key, shape, dtype=jnp.float32: jnp.broadcast_to(jnp.eye(d, dtype=dtype), shape)
    kernel = self.param("adapter_kernel", eye, (r_max, d, d))
    bias = self.param("adapter_bias", nn.initializers.zeros, (r_max, d))
    k = jnp.clip(count, 1, r_max) - 1
    return self.layer.policy.einsum("btd,de->bte", x, kernel[k].astype(x.dtype)) + bias[k].astype(x.dtype)
