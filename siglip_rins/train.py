"""The one training loop.  Tasks (contrastive, lm, classification) plug in through `siglip_rins.tasks`.

    python -m siglip_rins.train --config configs/siglip_rins.py:runlocal --workdir /tmp/run [--config.lr=3e-4]

What a run does, in order: validate the config (before any work); set up JAX's multi-host runtime, the device
mesh and parameter shardings; resume from the newest complete checkpoint in the workdir (params, optimiser
state, step; the RNG is derived from (seed, step) and the input position from the step, so a resumed run
continues exactly); then loop: global batch -> jitted step -> metrics / evals / checkpoints.

Reliability: a step whose loss or gradient norm is not finite is not applied (logged as `bad_step`); after
`max_bad_steps` consecutive bad steps the run stops with its last good checkpoint intact.  SIGTERM (preemption)
saves a checkpoint and exits cleanly.  Checkpoint saves are atomic (siglip_rins.checkpoint).

Outputs in the workdir: config.json, metrics.jsonl (one JSON object per log step / eval), TensorBoard events
(tb/), checkpoints/, eval_results.json + eval_report.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from siglip_rins import checkpoint as ckpt_lib
from siglip_rins import budget, config_lib, example_spec, flops, model_init, optim, sharding
from siglip_rins.evaluation import EvalHook
from siglip_rins.models import build_model
from siglip_rins.tasks import get_task

TOP_LEVEL_KEYS = {
  "model",
  "input",
  "task",
  "total_steps",
  "total_examples",
  "total_epochs",
  "lr",
  "wd",
  "grad_clip_norm",
  "optax_name",
  "optax",
  "schedule",
  "wd_mults",
  "lr_mults",
  "evals",
  "log_every",
  "ckpt_every",
  "keep_ckpts",
  "mesh",
  "sharding_rules",
  "seed",
  "mixup",
  "max_bad_steps",
  "peak_flops_per_device",
  "tensorboard",
  "compute_match",
  "eval_only",
  "name",
  "async_checkpoint",
  "model_init",
  "frozen",
}


class TrainingStopped(RuntimeError):
  """The run stopped on purpose (too many bad steps)."""


# --------------------------------------------------------------------------------------------- config
def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first bad key (one line) before any work starts."""
  unknown = sorted(set(config.keys()) - TOP_LEVEL_KEYS)
  if unknown:
    raise ValueError(f"config: unknown top-level key(s) {unknown}; allowed: {sorted(TOP_LEVEL_KEYS)}")
  for key in ("model", "input", "task"):
    if key not in config:
      raise ValueError(f"config: missing required key {key!r}")
  given = [k for k in ("total_steps", "total_examples", "total_epochs") if config.get(k) is not None]
  if len(given) > 1 or (not given and not config.get("compute_match")):
    raise ValueError(
      f"config: give exactly one of total_steps / total_examples / total_epochs, or compute_match to derive "
      f"total_steps (got {given})"
    )
  bs = config.input.get("batch_size")
  if not isinstance(bs, int) or bs < 1:
    raise ValueError(f"config.input.batch_size must be a positive integer, got {bs!r}")
  if "total_epochs" in given and not config.input.get("num_examples"):
    raise ValueError("config.total_epochs needs config.input.num_examples (examples per epoch)")


def total_steps_of(config) -> int:
  bs = config.input.batch_size
  if config.get("total_steps") is not None:
    return int(config.total_steps)
  if config.get("total_examples") is not None:
    return max(1, int(config.total_examples) // bs)
  return max(1, int(config.total_epochs * config.input.num_examples) // bs)


# --------------------------------------------------------------------------------------------- writer
class MetricWriter:
  """metrics.jsonl (always) and TensorBoard scalars (config.tensorboard, TensorFlow imported lazily)."""

  def __init__(self, workdir: str, enabled: bool, tensorboard: bool):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if enabled and tensorboard:
      try:
        import tensorflow as tf  # only for summaries; the train step never touches TF

        self._tf = tf
        self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tb"))
      except ImportError:
        self._tb = None

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), **{k: _to_py(v) for k, v in metrics.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    if self._tb is not None:
      with self._tb.as_default():
        for k, v in row.items():
          if isinstance(v, (int, float)) and k != "step":
            self._tf.summary.scalar(k, v, step=step)
      self._tb.flush()


def _to_py(v):
  v = np.asarray(v) if not isinstance(v, (str, int, float, list, dict)) else v
  if isinstance(v, np.ndarray):
    return v.item() if v.size == 1 else v.tolist()
  return v


def _fmt_secs(s: float) -> str:
  s = int(max(s, 0))
  return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# --------------------------------------------------------------------------------------------- step
def make_train_step(model, task, tx, schedule_fn, seed: int):
  """Returns step(state, batch) -> (state, metrics).  state = {'params', 'opt_state', 'step'}.

  The update is applied only when the loss and gradient norm are finite (lax.cond: no extra passes over the
  parameters); `metrics['finite']` says which happened.
  """
  base_rng = jax.random.PRNGKey(seed)

  def step_fn(state, batch):
    step = state["step"]
    rng = jax.random.fold_in(base_rng, step)
    (loss, metrics), grads = jax.value_and_grad(lambda p: task.loss(model, p, batch, rng), has_aux=True)(
      state["params"]
    )
    gnorm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(gnorm)

    def apply(operands):
      params, opt_state, grads = operands
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state

    params, opt_state = jax.lax.cond(
      finite, apply, lambda o: (o[0], o[1]), (state["params"], state["opt_state"], grads)
    )
    metrics = dict(metrics, loss=loss, grad_norm=gnorm, lr=schedule_fn(step), finite=finite)
    return {"params": params, "opt_state": opt_state, "step": step + 1}, metrics

  return step_fn


def init_state(model, task, tx, mesh, config, rng):
  """Initialises {'params', 'opt_state', 'step'} in one jit, every leaf placed with an explicit sharding on the
  global mesh (parameter rules for params and optimiser moments, replicated scalars), so multi-host runs and
  resumed runs hand the step identically placed arrays."""
  example = task.example_batch(1)
  init_params = lambda r: model.init(r, *task.init_args(example))["params"]
  init_all = lambda r: (lambda p: {"params": p, "opt_state": tx.init(p), "step": jnp.zeros((), jnp.int32)})(
    init_params(r)
  )
  abstract = jax.eval_shape(init_all, rng)
  rules = config.get("sharding_rules")
  shardings = {
    "params": sharding.param_shardings(abstract["params"], mesh, rules),
    "opt_state": sharding.param_shardings(abstract["opt_state"], mesh, rules),
    "step": jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()),
  }
  return jax.jit(init_all, out_shardings=shardings)(rng)


def state_shardings(state):
  """The sharding of every leaf of the train state (used as the step's in/out shardings, so every step reuses
  one executable)."""
  return jax.tree.map(lambda x: x.sharding, state)


# --------------------------------------------------------------------------------------------- loop
def train(
  config: ml_collections.ConfigDict, workdir: str, *, stop_after: Optional[int] = None, verbose: bool = True
) -> dict:
  """Trains `config` in `workdir` (resuming if checkpoints exist).  Returns a summary dict.

  stop_after: stop (as if killed, without a final save) after this many steps of this invocation — for tests
  and quick looks.
  """
  validate_config(config)
  spec = example_spec.finalize(config)  # derived input/model keys, from the final (overridden) config
  matched = budget.finalize(config)  # compute matching from the final config: derive or check total steps
  sharding.initialize_distributed()
  pidx, pcount = jax.process_index(), jax.process_count()
  mesh = sharding.make_mesh(config.get("mesh"))
  global_bs = int(config.input.batch_size)
  if global_bs % jax.device_count():
    raise ValueError(f"config.input.batch_size={global_bs} is not divisible by the {jax.device_count()} devices")
  task = get_task(config, mesh)
  model = build_model(config.model)
  total_steps = total_steps_of(config)
  steps_per_epoch = (int(config.input.num_examples) // global_bs) if config.input.get("num_examples") else None
  tx, schedule_fn = optim.make_optimizer(config, total_steps, batch_size=global_bs, steps_per_epoch=steps_per_epoch)
  flops_per_example = flops.train_flops_per_example(model, task.input_shapes())
  os.makedirs(workdir, exist_ok=True)
  ckpt = ckpt_lib.CheckpointManager(
    workdir, keep=int(config.get("keep_ckpts", 3)), async_save=bool(config.get("async_checkpoint", True))
  )
  if pidx == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config_lib.to_json(config))
    with open(os.path.join(workdir, "run_info.json"), "w") as f:  # read by siglip_rins.scaling
      json.dump(dict(run_info(config), compute_match=matched), f)
    example_spec.save(spec, workdir)  # the one reading of an example: evaluators and export read it
    warning = example_spec.check_text_pooling(config, spec)
    if warning and verbose:
      print(warning, flush=True)
    if matched and verbose:
      how = "derived" if matched["derived"] else "checked"
      print(
        f"compute-matched ({how}): {total_steps} steps x {global_bs} = {total_steps * global_bs} examples, "
        f"{matched['flops_budget']:.4g} training FLOPs = the {matched['baseline_signature']} baseline's "
        f"{matched['baseline_examples']:.4g} examples",
        flush=True,
      )
  writer = MetricWriter(workdir, enabled=pidx == 0, tensorboard=bool(config.get("tensorboard", True)))

  seed = int(config.get("seed", 0))
  state = init_state(model, task, tx, mesh, config, jax.random.PRNGKey(seed))
  start = 0
  latest = ckpt.latest_step()
  if latest is not None:
    state, meta = ckpt.restore(latest, target=state)
    start = int(meta.get("step", latest))
    if verbose and pidx == 0:
      print(f"resumed from step {start} in {workdir}", flush=True)
  else:  # a fresh run may start from another model (config.model_init); a resumed run never re-reads it
    state["params"] = model_init.apply(config, state["params"], log=print if verbose and pidx == 0 else None)

  from siglip_rins.data import pipeline  # the input pipeline is the only TensorFlow user

  local_bs = global_bs // pcount
  it = pipeline.make_train_iterator(
    config.input,
    global_batch_size=global_bs,
    process_index=pidx,
    process_count=pcount,
    seed=seed,
    start_example=start * local_bs,
  )
  state_sh = state_shardings(state)
  step_fn = jax.jit(
    make_train_step(model, task, tx, schedule_fn, seed),
    donate_argnums=(0,),
    in_shardings=(state_sh, sharding.batch_sharding(mesh)),
    out_shardings=(state_sh, None),
  )
  evals = EvalHook(config, spec, model, total_steps, workdir, verbose=verbose)

  stop = {"signal": None}
  old_handler = None
  if threading_main():
    old_handler = signal.signal(signal.SIGTERM, lambda signum, frame: stop.update(signal=signum))
  log_every = int(config.get("log_every", 10))
  ckpt_every = int(config.get("ckpt_every", 0) or 0)
  max_bad = int(config.get("max_bad_steps", 5))
  peak = config.get("peak_flops_per_device")
  bad_run, last_metrics, t0, t_log, steps_timed = 0, {}, time.time(), time.time(), 0
  step = start
  summary = {"stopped": "finished"}
  try:
    while step < total_steps:
      if stop["signal"] is not None:
        ckpt.save(step, state, _meta(step, global_bs, flops_per_example), force=True)
        ckpt.wait()
        summary["stopped"] = "sigterm"
        if verbose and pidx == 0:
          print(f"SIGTERM: saved step {step}, exiting", flush=True)
        break
      if stop_after is not None and step - start >= stop_after:
        summary["stopped"] = "stop_after"
        break
      local = next(it)
      task.check_batch(local)
      batch = sharding.make_global_batch(
        {k: v for k, v in local.items() if k in task.batch_keys or k in ("segment_ids", "positions")}, mesh
      )
      state, metrics = step_fn(state, batch)
      step += 1
      steps_timed += 1
      finite = bool(metrics["finite"])
      bad_run = 0 if finite else bad_run + 1
      if not finite:
        writer.write(step, {"bad_step": 1, "train/loss": float(metrics["loss"])})
        if verbose and pidx == 0:
          print(f"step {step}: non-finite loss/gradient, update skipped ({bad_run} in a row)", flush=True)
        if bad_run >= max_bad:
          raise TrainingStopped(
            f"{bad_run} consecutive non-finite steps (max_bad_steps={max_bad}); stopped at "
            f"step {step}; the last good checkpoint is step {ckpt.latest_step()}"
          )
      if step % log_every == 0 or step == total_steps:
        now = time.time()
        dt = (now - t_log) / max(steps_timed, 1)
        t_log, steps_timed = now, 0
        ex_s = global_bs / dt
        flop_s = ex_s * flops_per_example
        last_metrics = {f"train/{k}": float(np.asarray(v)) for k, v in metrics.items() if k != "finite"}
        last_metrics.update(
          {
            "examples_seen": step * global_bs,
            "flops_seen": step * global_bs * flops_per_example,
            "examples_per_sec": ex_s,
            "flops_per_sec": flop_s,
            "step_time": dt,
            **{f"data/{k}": v for k, v in it.stats().items()},
          }
        )
        if peak:
          last_metrics["mfu"] = flop_s / (float(peak) * jax.device_count())
        writer.write(step, last_metrics)
        if verbose and pidx == 0:
          eta = dt * (total_steps - step)
          mfu = f" | MFU {100 * last_metrics['mfu']:.1f}%" if peak else ""
          print(
            f"step {step}/{total_steps} | loss {last_metrics['train/loss']:.4f} | {ex_s:.1f} ex/s | "
            f"{last_metrics['flops_seen']:.3g} FLOPs seen | {flop_s / 1e9:.1f} GFLOP/s{mfu} | "
            f"ETA {_fmt_secs(eta)}",
            flush=True,
          )
      if ckpt_every and step % ckpt_every == 0 and step < total_steps:
        ckpt.save(step, state, _meta(step, global_bs, flops_per_example))
      due = evals.due(step, total_steps) if evals else []
      if due:
        evals.run(step, state["params"], names=due, writer=writer)
    if summary["stopped"] == "finished":
      ckpt.save(step, state, _meta(step, global_bs, flops_per_example), force=True)
      if evals:
        evals.run(step, state["params"], writer=writer)
  finally:
    ckpt.wait()
    if old_handler is not None:
      signal.signal(signal.SIGTERM, old_handler)
  summary.update(
    step=step,
    total_steps=total_steps,
    seconds=time.time() - t0,
    metrics=last_metrics,
    flops_per_example=flops_per_example,
    data=it.stats(),
  )
  summary["state"] = state
  return summary


def run_info(config) -> dict:
  """Signature, trained r and p_skip of the run, for scaling-law tooling.  `rounds` is r along the signature's
  own axis (A^rB: rounds of A; RAO such as ABAB: repeats of the unit), `axis` says which."""
  from siglip_rins.recursion import RecursionConfig, adapter_axis, make_plan, num_adapters

  rc = RecursionConfig.from_dict(dict(config.model.get("recursion", {}) or {}))
  plan = make_plan(rc.signature, rc.degree, layers_per_block=1)
  return {
    "signature": rc.signature,
    "degree": rc.degree,
    "p_skip": rc.p_skip,
    "rounds": num_adapters(plan) if rc.degree == 1 else None,
    "axis": adapter_axis(plan) if rc.degree == 1 else None,
  }


def threading_main() -> bool:
  import threading

  return threading.current_thread() is threading.main_thread()


def _meta(step, global_bs, flops_per_example) -> dict:
  return {
    "step": int(step),
    "examples_seen": int(step * global_bs),
    "flops_seen": float(step * global_bs * flops_per_example),
  }


# --------------------------------------------------------------------------------------------- CLI
def add_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("--config", required=True, help="path/to/config.py[:arg,...]")
  p.add_argument("--workdir", required=True, help="run folder (checkpoints, metrics); resumes if it has some")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="siglip-rins train", description=__doc__.split("\n")[0])
  add_args(p)
  args, rest = p.parse_known_args(argv)
  return run_from_args(args, rest)


def run_from_args(args, rest) -> int:
  overrides = []
  for item in rest:
    if not item.startswith("--config."):
      print(f"error: unknown argument {item!r} (overrides look like --config.key=value)", file=sys.stderr)
      return 2
    overrides.append(item[len("--config.") :])
  try:
    config = config_lib.load_config(args.config)
    config_lib.apply_overrides(config, overrides)
    train(config, args.workdir)
  except (ValueError, FileNotFoundError, TrainingStopped) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
