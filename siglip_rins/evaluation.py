"""Evaluators as a hook of the one loop, and for standalone evaluation (`siglip-rins eval`).

`EvalHook(config, spec, model, total_steps, workdir)` builds `config.evals` (see evaluators/), decides when
each runs and runs them against the current parameters:

  cadence (big_vision's keys, one per evaluator): `log_steps=N` (or its alias `every=N`) runs every N steps,
  `log_percent=f` every f of the run (0 < f <= 1); every evaluator also runs once at the end of training.
  An evaluator whose data is not on this machine is skipped with one line (the run goes on).
  `rounds=[1, 2, ...]` evaluates at those inference rounds (None: the trained signature).

One `Predictor` serves the whole run: it is built once, its parameters are swapped in for each evaluation, so
each (function, rounds) compiles once per run, not once per evaluation.  The predictor carries the run's
`ExampleSpec`, which evaluators read for pixels and token ids (one reading of an example).
"""

from __future__ import annotations

from typing import Any, Optional

import jax

TRAINER_KEYS = ("every", "log_steps", "log_percent", "rounds")


def eval_period(name: str, cfg, total_steps: int) -> int:
  """Steps between runs of one evaluator (0: only at the end)."""
  given = {k: cfg.get(k) for k in ("every", "log_steps", "log_percent") if cfg.get(k)}
  if len(given) > 1:
    raise ValueError(f"config.evals.{name}: give one of every / log_steps / log_percent, got {sorted(given)}")
  if "log_percent" in given:
    f = given["log_percent"]
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
      raise ValueError(f"config.evals.{name}.log_percent must be in (0, 1], got {f!r}")
    return max(1, int(round(f * total_steps)))
  for key in ("every", "log_steps"):
    if key in given:
      n = given[key]
      if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"config.evals.{name}.{key} must be an integer >= 0, got {n!r}")
      return n
  return 0


def make_predictor(model, params, spec, batch_size: int = 64, name: str = "model"):
  from siglip_rins.predictor import Predictor

  return Predictor(model, params, spec=spec, batch_size=batch_size, name=name)


def flatten_records(name: str, records: list[dict]) -> dict:
  """Records -> {'eval/NAME/DATASET[/LANG]/METRIC[@rK|@repeatK]': value} for metrics.jsonl / TensorBoard."""
  flat = {}
  for rec in records:
    axis = "r" if rec.get("axis", "rounds") == "rounds" else rec["axis"]
    suffix = "" if rec.get("rounds") is None else f"@{axis}{rec['rounds']}"
    lang = f"/{rec['language']}" if rec.get("language") not in (None, "", "en") else ""
    for k, v in rec["metrics"].items():
      if isinstance(v, (int, float)):
        flat[f"eval/{name}/{rec['dataset']}{lang}/{k}{suffix}"] = v
  return flat


class EvalHook:
  """See module docstring."""

  def __init__(self, config, spec, model, total_steps: int, workdir: Optional[str] = None, verbose: bool = True):
    self.config, self.spec, self.model, self.workdir, self.verbose = config, spec, model, workdir, verbose
    self.evals: list[tuple[str, Any, int, list]] = []
    self._predictor = None
    self.skipped: set[str] = set()
    if not config.get("evals"):
      return
    import evaluators

    for name, cfg in config.evals.items():
      ev = evaluators.build(name, cfg)
      rounds = list(cfg.get("rounds", [None]) or [None])
      self.evals.append((name, ev, eval_period(name, cfg, total_steps), rounds))
    self.skipped: set[str] = set()

  def __bool__(self):
    return bool(self.evals)

  def predictor(self, params):
    if self._predictor is None:
      bs = int(self.config.get("eval_batch_size", 64) or 64)
      self._predictor = make_predictor(self.model, params, self.spec, batch_size=bs)
    self._predictor.params = params
    return self._predictor

  def due(self, step: int, total_steps: int) -> list[str]:
    return [name for name, _, every, _ in self.evals if every and step % every == 0 and step < total_steps]

  def run(self, step: int, params, names=None, writer=None, rounds_override=None, axis="rounds") -> list[dict]:
    """Runs the named evaluators (all when None) at `step`; writes metrics and the workdir report.  `axis`: what
    the rounds count, 'rounds' (A^kB) or 'repeat' (RAO's (unit)^k; its records carry axis='repeat')."""
    from evaluators import report

    if axis not in ("rounds", "repeat"):
      raise ValueError(f"eval axis must be 'rounds' or 'repeat', got {axis!r}")
    out = []
    for name, ev, _, rounds in self.evals:
      if names is not None and name not in names:
        continue
      predictor = self.predictor(params)
      predictor.axis = axis
      records = []
      try:
        for r in rounds_override or rounds:
          for rec in ev.run(predictor, rounds=r):
            rec.setdefault("step", step)
            if axis != "rounds" and r is not None:
              rec["axis"] = axis
            records.append(rec)
      except FileNotFoundError as e:  # data not on this machine: one line, the run goes on
        if name not in self.skipped and jax.process_index() == 0:
          print(f"eval {name} skipped: {e}", flush=True)
        self.skipped.add(name)
        continue
      flat = flatten_records(name, records)
      if writer is not None:
        writer.write(step, flat)
      if self.workdir is not None and jax.process_index() == 0:
        report.write_report(records, self.workdir)
      if self.verbose and jax.process_index() == 0:
        shown = ", ".join(f"{k.split('/', 2)[-1]}={v:.3f}" for k, v in list(flat.items())[:6])
        print(f"eval {name} @ step {step}: {shown}", flush=True)
      out.extend(records)
    return out


def predictor_for_run(model, params, config, batch_size: int = 64, name: str = "model"):
  """A Predictor with the example spec of a (finalized) run config."""
  from siglip_rins import example_spec

  return make_predictor(model, params, example_spec.finalize(config), batch_size=batch_size, name=name)
