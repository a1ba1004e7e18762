"""The one training loop.  Tasks (contrastive, lm, classification) plug in through `siglip_rins.tasks`.

    python -m siglip_rins.train --config configs/siglip_rins.py:runlocal --workdir /tmp/run [--config.lr=3e-4]

What a run does, in order: validate the config (before any work); set up JAX's multi-host runtime, the device
mesh and parameter shardings; take the workdir lock; resume from the newest complete checkpoint in the workdir
(params, optimiser state, step; the RNG is derived from (seed, step) and the input position from the step, so a
resumed run continues exactly); then loop: global batch -> jitted step -> metrics / evals / checkpoints.

Workdir: a local path (made absolute, so a relative one works) or a URI (gs://...); every file goes through
`siglip_rins.paths`.  A workdir held by a live trainer is refused (one line naming host and pid); the lock of
a killed trainer is taken over.  Running a finished run again exits 0 after running any final evals it had not
finished (final_evals.json records them).  A step is saved at most once (SIGTERM right after a periodic save
just exits).

Throughput: the loop never waits for the device between steps.  A background thread fetches, checks and
transfers the next batches (`_Prefetcher`), and the per-step flags (finite, loss) stay on device until a check
point -- a log step, a checkpoint save, an eval or the end -- where they are read back in one transfer.

Reliability: a step whose loss or gradient norm is not finite is not applied (logged as `bad_step`); after
`max_bad_steps` consecutive bad steps the device freezes the state (no later step changes it), the next check
point raises TrainingStopped naming that exact step, and no checkpoint after it is written.  SIGTERM
(preemption) saves a checkpoint and exits cleanly, also while the loop waits for input.  Checkpoint saves are
atomic (siglip_rins.checkpoint).  From the command line every failure is one `error: ...` line and exit code 1
(`--debug` shows the traceback).

Outputs in the workdir: config.json, run_info.json, metrics.jsonl (one JSON object per log step / eval / bad
step), TensorBoard events (tb/), checkpoints/ (or config.checkpoint_dir), eval_results.json + eval_report.md,
final_evals.json, trainer.lock while running.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import gc
import json
import queue
import signal
import sys
import threading
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from siglip_rins import checkpoint as ckpt_lib
from siglip_rins import budget, compile_cache, config_lib, example_spec, flops, host_memory, model_init, optim, paths
from siglip_rins import sharding
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
  "adapter_lr_mult",
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
  "checkpoint_dir",
  "loss_spike_factor",
  "loss_spike_window",
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
  _check_int(config, "seed", 0, 2**32 - 1, default=0)
  _check_int(config, "log_every", 1, None, default=10)
  _check_int(config, "ckpt_every", 0, None, default=0)
  _check_int(config, "keep_ckpts", 1, None, default=3)
  _check_int(config, "max_bad_steps", 1, None, default=5)
  _check_int(config, "loss_spike_window", 1, None, default=200)
  factor = config.get("loss_spike_factor")
  if factor is not None and (isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor >= 0):
    raise ValueError(f"config.loss_spike_factor must be a number >= 0 (0 or None: off, e.g. 3.0), got {factor!r}")
  for key in ("total_steps", "total_examples"):
    if config.get(key) is not None:
      _check_int(config, key, 1, None)
  if config.get("total_epochs") is not None:
    epochs = config.total_epochs
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not 0 < epochs < float("inf"):
      raise ValueError(f"config.total_epochs must be a positive finite number, got {epochs!r}")


def _check_int(config, key: str, lo: int, hi: Optional[int], default=None) -> None:
  """config[key] must be an integer (an integral float is accepted) in [lo, hi]; the error names key and value."""
  value = config.get(key, default)
  if value is None:
    value = default
  ok = not isinstance(value, bool) and isinstance(value, (int, float))
  ok = ok and (isinstance(value, int) or (np.isfinite(value) and float(value).is_integer()))
  ok = ok and value >= lo and (hi is None or value <= hi)
  if not ok:
    allowed = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
    raise ValueError(f"config.{key} must be {allowed}, got {value!r}")


def total_steps_of(config) -> int:
  bs = config.input.batch_size
  if config.get("total_steps") is not None:
    return int(config.total_steps)
  if config.get("total_examples") is not None:
    return max(1, int(config.total_examples) // bs)
  return max(1, int(config.total_epochs * config.input.num_examples) // bs)


# --------------------------------------------------------------------------------------------- writer
class MetricWriter:
  """metrics.jsonl and TensorBoard scalars in `<workdir>/tb` (config.tensorboard; siglip_rins.tb_events), both
  written through siglip_rins.paths."""

  def __init__(self, workdir, enabled: bool, tensorboard: bool):
    self.enabled = enabled
    self.path = paths.workdir_path(workdir) / "metrics.jsonl"
    self._tb = None
    if enabled and tensorboard:
      from siglip_rins import tb_events

      self._tb = tb_events.EventWriter(paths.workdir_path(workdir) / "tb")

  def write(self, step: int, metrics: dict) -> None:
    self.write_rows([(step, metrics)])

  def write_rows(self, rows) -> None:
    """Writes several (step, metrics) rows with one file operation."""
    if not self.enabled or not rows:
      return
    lines = []
    for step, metrics in rows:
      lines.append({"step": int(step), **{k: _to_py(v) for k, v in metrics.items()}})
    paths.append_text(self.path, "".join(json.dumps(r) + "\n" for r in lines))
    if self._tb is not None:
      self._tb.write([(row["step"], {k: v for k, v in row.items() if k != "step"}) for row in lines])


def _to_py(v):
  v = np.asarray(v) if not isinstance(v, (str, int, float, list, dict)) else v
  if isinstance(v, np.ndarray):
    return v.item() if v.size == 1 else v.tolist()
  return v


def _fmt_secs(s: float) -> str:
  s = int(max(s, 0))
  return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# --------------------------------------------------------------------------------------------- step
def make_train_step(model, task, tx, schedule_fn, seed: int, max_bad_steps: Optional[int] = None):
  """Returns step(state, batch, base_rng=None) -> (state, metrics).  state = {'params', 'opt_state', 'step'}.

  The step's randomness is fold_in(base_rng, step); base_rng defaults to PRNGKey(seed).  The trainer passes
  PRNGKey(seed) as an argument instead, so the compiled step does not depend on the seed: runs that differ only
  in their seed reuse one executable (JAX's persistent compilation cache), with identical numbers.

  The update is applied only when the loss and gradient norm are finite (lax.cond: no extra passes over the
  parameters); `metrics['finite']` says which happened.  A skipped step still advances the schedule (see
  `_advance_schedules`), so `metrics['lr']` = schedule_fn(step) is always the lr of that step's schedule slot.

  With `max_bad_steps`, the state also carries 'bad_run' (consecutive non-finite steps, int32, not
  checkpointed): once it reaches max_bad_steps the step is frozen (no update, 'step' no longer advances,
  `metrics['frozen']`), so the host can notice the stop at its next check without any step after it having
  changed the state -- and without reading a flag back every step.
  """

  def step_fn(state, batch, base_rng=None):
    if base_rng is None:
      base_rng = jax.random.PRNGKey(seed)
    step = state["step"]
    rng = jax.random.fold_in(base_rng, step)
    (loss, metrics), grads = jax.value_and_grad(lambda p: task.loss(model, p, batch, rng), has_aux=True)(
      state["params"]
    )
    gnorm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(gnorm)
    frozen = jnp.zeros((), bool)
    if max_bad_steps is not None:
      frozen = state["bad_run"] >= max_bad_steps
    apply_it = finite & ~frozen

    def apply(operands):
      params, opt_state, grads = operands
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state

    def skip(operands):  # no update, but the schedule moves on with the step (unless the run is frozen)
      params, opt_state, _ = operands
      advanced = _advance_schedules(opt_state)
      return params, jax.tree.map(lambda old, new: jnp.where(frozen, old, new), opt_state, advanced)

    params, opt_state = jax.lax.cond(apply_it, apply, skip, (state["params"], state["opt_state"], grads))
    metrics = dict(metrics, loss=loss, grad_norm=gnorm, lr=schedule_fn(step), finite=finite)
    new = {"params": params, "opt_state": opt_state, "step": step + 1}
    if max_bad_steps is not None:
      metrics["frozen"] = frozen
      new["step"] = jnp.where(frozen, step, step + 1)
      bad_run = jnp.where(finite, 0, state["bad_run"] + 1)
      new["bad_run"] = jnp.where(frozen, state["bad_run"], bad_run).astype(jnp.int32)
    return new, metrics

  return step_fn


def _advance_schedules(opt_state):
  """Adds one to every schedule counter (optax.ScaleByScheduleState) of an optimiser state.

  A skipped (non-finite) step applies no update, but its step still passes: advancing the schedule counters
  keeps warm-up / decay / cool-down aligned with `state['step']`, so the logged lr (schedule_fn(step)) is the
  lr the next applied update uses.  Counters that count *updates* (Adam's bias correction) are left alone.
  """
  is_sched = lambda x: isinstance(x, optax.ScaleByScheduleState)
  return jax.tree.map(
    lambda x: optax.ScaleByScheduleState(count=optax.safe_increment(x.count)) if is_sched(x) else x,
    opt_state,
    is_leaf=is_sched,
  )


def init_state(model, task, tx, mesh, config, rng, on_host: bool = False):
  """Initialises {'params', 'opt_state', 'step'} in one jit, every leaf placed with an explicit sharding on the
  global mesh (parameter rules for params and optimiser moments, replicated scalars), so multi-host runs and
  resumed runs hand the step identically placed arrays.

  `on_host=True` runs the initialiser on the host CPU backend and then places the values with the same
  shardings (single-process only): the same values, without an accelerator compile of the initialiser (on a
  GPU that compile can take longer than the train step's; benchmarks/bench_mfu.py --init host)."""
  init_all, shardings = _initialiser(model, task, tx, mesh, config, rng)
  if not on_host:
    return jax.jit(init_all, out_shardings=shardings)(rng)
  if jax.process_count() > 1:
    raise ValueError("init_state(on_host=True) is single-process only")
  cpu = jax.devices("cpu")[0]
  with jax.default_device(cpu):
    values = jax.jit(init_all)(jax.device_put(rng, cpu))
  return jax.device_put(values, shardings)


def _initialiser(model, task, tx, mesh, config, rng):
  """(init_all(rng) -> state, the state's shardings) of init_state."""
  example = task.example_batch(1)
  init_params = lambda r: model.init(r, *task.init_args(example))["params"]
  init_all = lambda r: (lambda p: {"params": p, "opt_state": tx.init(p), "step": jnp.zeros((), jnp.int32)})(
    init_params(r)
  )
  abstract = jax.eval_shape(init_all, rng)
  rules = config.get("sharding_rules")
  shardings = {
    "params": sharding.param_shardings(abstract["params"], mesh, rules),
    "opt_state": sharding.opt_state_shardings(abstract["opt_state"], abstract["params"], mesh, rules),
    "step": jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()),
  }
  return init_all, shardings


def state_shardings(state):
  """The sharding of every leaf of the train state (used as the step's in/out shardings, so every step reuses
  one executable)."""
  return jax.tree.map(lambda x: x.sharding, state)


CHECKPOINTED = ("params", "opt_state", "step")


def _saved_part(state) -> dict:
  """The checkpointed part of the loop state (the loop-only 'bad_run' counter is left out)."""
  return {k: state[k] for k in CHECKPOINTED}


# --------------------------------------------------------------------------------------------- input
class _Prefetcher:
  """Fetches local batches, checks them and assembles the global device arrays in a background thread, `depth`
  batches ahead, so input work and host->device transfers overlap the device's compute.

  `get(should_stop)` waits in short slices and returns None as soon as `should_stop()` is true, so a SIGTERM
  that arrives while the loop waits for input is honoured within about `poll_s`.  Errors of the producer
  (e.g. an all-bad dataset) are re-raised in the consumer.
  """

  def __init__(self, produce, depth: int = 2, poll_s: float = 0.2):
    self._produce = produce
    self._queue = queue.Queue(maxsize=max(1, depth))
    self._closed = threading.Event()
    self._poll_s = poll_s
    self._thread = threading.Thread(target=self._run, name="input-prefetch", daemon=True)
    self._thread.start()

  def _run(self):
    while not self._closed.is_set():
      try:
        item = ("ok", self._produce())
      except BaseException as e:  # handed to the consumer, which raises it
        item = ("error", e)
      while not self._closed.is_set():
        try:
          self._queue.put(item, timeout=self._poll_s)
          break
        except queue.Full:
          continue
      if item[0] == "error":
        return

  def get(self, should_stop=lambda: False):
    while True:
      if should_stop():
        return None
      try:
        kind, value = self._queue.get(timeout=self._poll_s)
      except queue.Empty:
        continue
      if kind == "error":
        raise value
      return value

  def close(self):
    self._closed.set()
    self._thread.join(timeout=5)


# --------------------------------------------------------------------------------------------- run setup
@dataclasses.dataclass
class _Run:
  """What the loop needs, built once by `_setup` (kept apart from the loop so each piece stays small)."""

  config: ml_collections.ConfigDict
  workdir: Any  # epath.Path
  verbose: bool
  pidx: int
  pcount: int
  mesh: Any
  task: Any
  model: Any
  tx: Any
  schedule_fn: Any
  total_steps: int
  global_bs: int
  flops_per_example: float
  seed: int
  ckpt: Any = None
  writer: Any = None
  lock: Any = None
  evals: Any = None  # EvalHook
  spec: Any = None  # example_spec.ExampleSpec
  matched: Any = None  # budget.finalize's compute-matching record (or None)

  def say(self, text: str) -> None:
    if self.verbose and self.pidx == 0:
      print(text, flush=True)

  def meta(self, step: int) -> dict:
    return {
      "step": int(step),
      "examples_seen": int(step * self.global_bs),
      "flops_seen": float(step * self.global_bs * self.flops_per_example),
    }


def _acquire_lock(workdir, pidx: int, pcount: int):
  """Process 0 takes the workdir lock; every process learns the outcome (so a refused multi-host run stops on
  all hosts, not only on process 0)."""
  lock, error = None, None
  if pidx == 0:
    try:
      lock = paths.WorkdirLock(workdir).acquire()
    except paths.WorkdirLocked as e:
      error = str(e)
  if pcount > 1:
    from jax.experimental import multihost_utils

    refused = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
    if int(refused) and error is None:
      error = f"workdir {workdir} is in use by another trainer (see process 0's error)"
  if error:
    raise paths.WorkdirLocked(error)
  if lock is not None and lock.recovered_from is not None:
    print(f"took over the workdir lock left by {paths.WorkdirLock.describe(lock.recovered_from)}", flush=True)
  return lock


def _setup_model(config, verbose: bool = False) -> _Run:
  """Validates the config, starts the multi-host runtime and builds mesh, task, model and optimiser."""
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
  run = _Run(
    config=config,
    workdir=None,
    verbose=verbose,
    pidx=pidx,
    pcount=pcount,
    mesh=mesh,
    task=task,
    model=model,
    tx=tx,
    schedule_fn=schedule_fn,
    total_steps=total_steps,
    global_bs=global_bs,
    flops_per_example=flops.train_flops_per_example(model, task.input_shapes()),
    seed=int(config.get("seed", 0)),
    spec=spec,
    matched=matched,
  )
  return run


def _setup(config, workdir, verbose) -> _Run:
  """_setup_model, then the workdir: folder, checkpoint manager, lock, config.json / run_info.json, writer."""
  run = _setup_model(config, verbose)
  run.workdir = workdir = paths.workdir_path(workdir)
  pidx, pcount = run.pidx, run.pcount
  try:
    paths.makedirs(workdir)
  except OSError as e:
    raise OSError(f"cannot create the workdir {workdir}: {e}") from None
  # the lock first: a refused trainer must not touch the workdir (orbax's manager cleans temporary folders)
  run.lock = _acquire_lock(workdir, pidx, pcount)
  try:
    run.ckpt = ckpt_lib.CheckpointManager(
      workdir,
      keep=int(config.get("keep_ckpts", 3)),
      async_save=bool(config.get("async_checkpoint", True)),
      directory=config.get("checkpoint_dir") or None,
    )
    if pidx == 0:
      _write_run_files(run)
    run.writer = MetricWriter(workdir, enabled=pidx == 0, tensorboard=bool(config.get("tensorboard", True)))
    run.evals = EvalHook(config, run.spec, run.model, run.total_steps, workdir, verbose=verbose)
  except BaseException:
    if run.lock is not None:
      run.lock.release()
    raise
  return run


def _write_run_files(run: _Run) -> None:
  """config.json, run_info.json (read by siglip_rins.scaling) and the example spec (read by evaluators and
  export), plus the notes a user should see once."""
  config, workdir, matched = run.config, run.workdir, run.matched
  paths.write_text(workdir / "config.json", config_lib.to_json(config))
  info = dict(
    run_info(config), compute_match=matched, host_memory=host_memory.status(), compile_cache=compile_cache.status()
  )
  paths.write_text(workdir / "run_info.json", json.dumps(info))
  example_spec.save(run.spec, workdir)  # the one reading of an example: evaluators and export read it
  warning = example_spec.check_text_pooling(config, run.spec)
  if warning:
    run.say(warning)
  if matched:
    how = "derived" if matched["derived"] else "checked"
    total, bs = run.total_steps, run.global_bs
    run.say(
      f"compute-matched ({how}): {total} steps x {bs} = {total * bs} examples, "
      f"{matched['flops_budget']:.4g} training FLOPs = the {matched['baseline_signature']} baseline's "
      f"{matched['baseline_examples']:.4g} examples"
    )


def _restore(run: _Run, state):
  """Returns (state, start step, meta) from the newest complete checkpoint, or (state, 0, {})."""
  latest = run.ckpt.latest_step()
  if latest is None:  # a fresh run may start from another model (config.model_init); a resumed one never re-reads it
    log = print if run.verbose and run.pidx == 0 else None
    state["params"] = model_init.apply(run.config, state["params"], log=log)
    return state, 0, {}
  restored, meta = run.ckpt.restore(latest, target=_saved_part(state))
  state = dict(state, **restored)
  start = int(meta.get("step", latest))
  run.say(f"resumed from step {start} in {run.workdir}")
  return state, start, meta


def _data_position_of_host(run: _Run, meta: dict):
  """This host's input position saved with the checkpoint (None: resume by skipping examples instead, e.g. a
  checkpoint from before positions were saved, or a different number of hosts)."""
  hosts = meta.get("data_position")
  if not isinstance(hosts, list) or len(hosts) != run.pcount or hosts[run.pidx] is None:
    return None
  return hosts[run.pidx]


def _gather_positions(run: _Run, position):
  """Every host's input position (a collective in multi-host runs: called at the same steps on all hosts)."""
  if run.pcount == 1:
    return [position]
  from jax.experimental import multihost_utils

  flat = np.asarray([-1] if position is None else [position["mix"]] + sum(position["components"], []), np.int64)
  every = np.asarray(multihost_utils.process_allgather(flat))
  out = []
  for row in every.reshape(run.pcount, -1).tolist():
    if row[0] < 0:
      out.append(None)
    else:
      out.append({"mix": row[0], "components": [row[i : i + 2] for i in range(1, len(row), 2)]})
  return out


# --------------------------------------------------------------------------------------------- loop
class _Guard:
  """Host side of the non-finite guard: the per-step metrics are kept on device and read back only at check
  points (log steps, before saves and evals, at the end), where bad steps are logged and the max_bad_steps
  stop is decided from the exact step sequence."""

  def __init__(self, run: _Run, max_bad: int):
    self.run, self.max_bad = run, max_bad
    self.pending = []  # (step, small device metrics) since the last check
    self.bad_run = 0
    # optional loss-spike stop (levanter / big_vision style): loss > factor x median of the last `window`
    # finite losses (once at least min(window, 20) are known) stops the run like max_bad_steps does
    self.spike_factor = float(run.config.get("loss_spike_factor") or 0)
    self.history = collections.deque(maxlen=int(run.config.get("loss_spike_window") or 200))

  spike = None

  def _spike(self, step: int, loss: float) -> bool:
    if self.spike_factor <= 0:
      return False
    if len(self.history) >= min(self.history.maxlen, 20):
      median = float(np.median(self.history))
      if loss > self.spike_factor * median:
        self.spike = (step, loss, median)
        return True
    self.history.append(loss)
    return False

  def add(self, step: int, metrics: dict) -> None:
    self.pending.append((step, {k: metrics[k] for k in ("finite", "frozen", "loss")}))

  def check(self) -> None:
    """Reads the pending flags (one transfer); raises TrainingStopped at the exact step the run stopped."""
    if not self.pending:
      return
    host = jax.device_get([m for _, m in self.pending])
    steps = [s for s, _ in self.pending]
    self.pending = []
    rows, stopped_at = [], None
    for step, m in zip(steps, host):
      if bool(m["frozen"]):
        break  # steps after the stop changed nothing
      if bool(m["finite"]):
        self.bad_run = 0
        if self._spike(step, float(m["loss"])):
          break
        continue
      self.bad_run += 1
      rows.append((step, {"bad_step": 1, "train/loss": float(m["loss"])}))
      self.run.say(f"step {step}: non-finite loss/gradient, update skipped ({self.bad_run} in a row)")
      if self.bad_run >= self.max_bad:
        stopped_at = step
        break
    self.run.writer.write_rows(rows)
    if self.spike is not None:
      step, loss, median = self.spike
      self.run.ckpt.wait()
      raise TrainingStopped(
        f"loss spike at step {step}: {loss:.4g} > loss_spike_factor={self.spike_factor:g} x the median "
        f"{median:.4g} of the last {len(self.history)} losses; the newest checkpoint is step "
        f"{self.run.ckpt.latest_step()}"
      )
    if stopped_at is not None:
      self.run.ckpt.wait()
      raise TrainingStopped(
        f"{self.bad_run} consecutive non-finite steps (max_bad_steps={self.max_bad}); stopped at step "
        f"{stopped_at}, the updates of steps {stopped_at - self.bad_run + 1}..{stopped_at} were not applied; "
        f"the newest checkpoint is step {self.run.ckpt.latest_step()}"
      )


PREEMPT_SYNC_EVERY = 10  # multi-host: steps between agreements on "some host got SIGTERM" (also every log step)


class _Preemption:
  """SIGTERM (preemption) as one decision for all hosts.

  The handler only sets a per-process flag.  A single process acts on it at the next step boundary, also while
  it waits for input.  With several processes, the flags are combined with one small all-gather
  (jax.experimental.multihost_utils) every min(log_every, PREEMPT_SYNC_EVERY) steps -- the same steps on every
  host -- so a signal received by any host makes every host save the same step and exit 0.  (While a host is
  blocked in input the others wait for it at that all-gather; a single process is not held up that way.)
  """

  def __init__(self, run: _Run, log_every: int):
    self.pcount = run.pcount
    self.every = max(1, min(log_every, PREEMPT_SYNC_EVERY))
    self.received = False
    self._old = None
    if threading_main():
      self._old = signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):
    self.received = True

  def waiting_should_stop(self) -> bool:
    """Whether a wait for input may be abandoned (single process only: hosts must stop at the same step)."""
    return self.pcount == 1 and self.received

  def agreed(self, step: int) -> bool:
    """Whether every host stops before `step`'s batch (call at every step, on every host)."""
    if self.pcount == 1:
      return self.received
    if step % self.every:
      return False
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray([int(self.received)], np.int32))
    return bool(np.asarray(flags).any())

  def close(self) -> None:
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)


def train(
  config: ml_collections.ConfigDict, workdir: str, *, stop_after: Optional[int] = None, verbose: bool = True
) -> dict:
  """Trains `config` in `workdir` (resuming if checkpoints exist).  Returns a summary dict.

  stop_after: stop (as if killed, without a final save) after this many steps of this invocation — for tests
  and quick looks.
  """
  run = _setup(config, workdir, verbose)
  try:
    return _train(run, stop_after)
  finally:
    _finish_saves(run)
    if run.lock is not None:
      run.lock.release()


# Jitted train steps of this process, most recent last: key -> jax.jit wrapper.  The compiled step does not depend
# on the seed (it is an argument), so runs of one process that differ only in their seed (the demo's seeds, a
# study's repeats) reuse the first run's traced and compiled step instead of tracing it again.
_STEP_MEMO: "collections.OrderedDict[str, Any]" = collections.OrderedDict()
_STEP_MEMO_ENTRIES = 8  # a step and an initialiser per config


def clear_step_memo() -> None:
  """Forgets the jitted train steps and initialisers this process keeps for later runs."""
  _STEP_MEMO.clear()


def _step_memo_key(run: _Run, max_bad) -> Optional[str]:
  """The final config without its seed, the mesh and max_bad: everything the traced step depends on."""
  cfg = run.config.to_dict()
  cfg.pop("seed", None)
  devices = [[d.id for d in np.asarray(run.mesh.devices).ravel()], dict(run.mesh.shape)]
  try:
    return json.dumps([cfg, devices, max_bad, run.total_steps, run.global_bs], sort_keys=True)
  except (TypeError, ValueError):  # a config value that is not plain data: no reuse
    return None


def _memoised(key: Optional[str], make: Callable[[], Any]) -> Any:
  """_STEP_MEMO[key], made by make() on a miss (key None: not memoised)."""
  if key is not None and key in _STEP_MEMO:
    _STEP_MEMO.move_to_end(key)
    return _STEP_MEMO[key]
  fn = make()
  if key is not None:
    _STEP_MEMO[key] = fn
    while len(_STEP_MEMO) > _STEP_MEMO_ENTRIES:
      _STEP_MEMO.popitem(last=False)
  return fn


def _memo_init_state(run: _Run, max_bad):
  """init_state of the run's seed, through a jitted initialiser reused by runs of this process whose
  `_step_memo_key` is equal (the seed is its argument): a later seed neither traces nor compiles it again."""
  key = _step_memo_key(run, max_bad)
  rng = jax.random.PRNGKey(run.seed)

  def make():
    init_all, shardings = _initialiser(run.model, run.task, run.tx, run.mesh, run.config, rng)
    return jax.jit(init_all, out_shardings=shardings)

  return _memoised(None if key is None else "init:" + key, make)(rng)


def _jitted_step(run: _Run, state_sh, max_bad):
  """jax.jit of the train step with the state donated and the trainer's shardings, reused across runs of this
  process whose `_step_memo_key` is equal (see _STEP_MEMO)."""
  return _memoised(
    _step_memo_key(run, max_bad),
    lambda: jax.jit(
      make_train_step(run.model, run.task, run.tx, run.schedule_fn, run.seed, max_bad_steps=max_bad),
      donate_argnums=(0,),
      in_shardings=(state_sh, sharding.batch_sharding(run.mesh), state_sh["step"]),
      out_shardings=(state_sh, None),
    ),
  )


def _train(run: _Run, stop_after: Optional[int]) -> dict:
  config, total_steps, global_bs = run.config, run.total_steps, run.global_bs
  max_bad = int(config.get("max_bad_steps", 5))
  state, start, meta = _restore(run, _memo_init_state(run, max_bad))
  last_saved = start if run.ckpt.has_step(start) else None
  state["bad_run"] = jax.jit(lambda: jnp.zeros((), jnp.int32), out_shardings=state["step"].sharding)()

  from siglip_rins.data import pipeline  # the input pipeline is the only TensorFlow user

  it = pipeline.make_train_iterator(
    config.input,
    global_batch_size=global_bs,
    process_index=run.pidx,
    process_count=run.pcount,
    seed=run.seed,
    start_example=start * (global_bs // run.pcount),
    start_position=_data_position_of_host(run, meta),
  )
  data_position = {"now": it.position()}  # after the batch of the last step taken
  keep = set(run.task.batch_keys) | {"segment_ids", "positions"}

  def produce():
    local = next(it)
    position = it.position()
    run.task.check_batch(local)
    return position, sharding.make_global_batch({k: v for k, v in local.items() if k in keep}, run.mesh)

  state_sh = state_shardings(state)
  step_fn = _jitted_step(run, state_sh, max_bad)
  # the seed as an argument (replicated like the step counter): one executable for every seed
  base_rng = jax.device_put(jax.random.PRNGKey(run.seed), state_sh["step"])
  guard = _Guard(run, max_bad)

  def save(step, force=False):
    nonlocal last_saved
    if last_saved == step:  # e.g. SIGTERM right after a periodic save, or re-running a finished run
      return
    guard.check()  # never commit a step after a max_bad_steps stop
    meta = dict(run.meta(step), data_position=_gather_positions(run, data_position["now"]))
    run.ckpt.save(step, _saved_part(state), meta, force=force)
    last_saved = step

  log_every = int(config.get("log_every", 10))
  ckpt_every = int(config.get("ckpt_every", 0) or 0)
  timer = {"t": time.time(), "steps": 0}
  t0 = time.time()
  last_metrics, step, summary = {}, start, {"stopped": "finished"}
  prefetch = _Prefetcher(produce, depth=2) if start < total_steps else None
  preempt = _Preemption(run, log_every)
  # The objects alive now (model, traced JAX and tf.data functions, configs: ~0.56 M on the built-in data) are
  # taken out of the garbage collector's view while the steps run: a full collection over them took ~0.4 s,
  # once or more per run, stalling whichever step it fell into (-10 % on a 300-step runlocal run).  Garbage
  # among them is collected after the loop (gc.unfreeze).  A caller that froze objects itself keeps control.
  froze = gc.get_freeze_count() == 0
  if froze:
    gc.freeze()
  try:
    while step < total_steps:
      item = None
      if not preempt.agreed(step):
        if stop_after is not None and step - start >= stop_after:
          guard.check()
          summary["stopped"] = "stop_after"
          break
        item = prefetch.get(preempt.waiting_should_stop)
      if item is None:  # SIGTERM (agreed by all hosts, or while this single process waited for input)
        save(step, force=True)
        run.ckpt.wait()
        summary["stopped"] = "sigterm"
        run.say(f"SIGTERM: saved step {step}, exiting")
        break
      position, batch = item
      state, metrics = step_fn(state, batch, base_rng)
      data_position["now"] = position
      step += 1
      timer["steps"] += 1
      guard.add(step, metrics)
      if step % log_every == 0 or step == total_steps:
        guard.check()
        last_metrics = _log_step(run, step, metrics, timer, it)
      if ckpt_every and step % ckpt_every == 0 and step < total_steps:
        save(step)
      due = run.evals.due(step, total_steps) if run.evals else []
      if due:
        guard.check()
        run.evals.run(step, state["params"], names=due, writer=run.writer)
    if summary["stopped"] == "finished":
      guard.check()
      save(step, force=True)
      _final_evals(run, state, step)
  finally:
    if froze:
      gc.unfreeze()
    if prefetch is not None:
      prefetch.close()
    _finish_saves(run)
    preempt.close()
  summary.update(
    step=step,
    total_steps=total_steps,
    seconds=time.time() - t0,
    metrics=last_metrics,
    flops_per_example=run.flops_per_example,
    data=it.stats(),
  )
  summary["state"] = _saved_part(state)
  _retire(it)
  it = prefetch = None  # the closures' references too: the retiring thread holds the last one
  return summary


_RETIRING: "queue.Queue[Any]" = queue.Queue()
_RETIRER: list = []


def _retire(obj) -> None:
  """Drops `obj` (a finished run's input iterator) in a background daemon thread.  Deleting a tf.data iterator
  can block for seconds with the CPU idle: measured 8-10 s, 0.0 s of process CPU time, at the end of the
  demo's runs whose input came from the process's cache memo (siglip_rins.data.pipeline._MEMO); still seen with
  the tensor store that replaced the tf.data cache (a demo run dropping it in place took +10 s in one variant's
  first seed); the next run or evaluation need not wait for it."""
  if not _RETIRER:

    def drop():
      while True:
        item = _RETIRING.get()
        del item

    _RETIRER.append(threading.Thread(target=drop, name="retire-input", daemon=True))
    _RETIRER[0].start()
  _RETIRING.put(obj)


def _finish_saves(run: _Run) -> None:
  """Waits for in-flight saves; while another error is propagating, a save error must not replace it."""
  if sys.exc_info()[0] is None:
    run.ckpt.wait()
    return
  try:
    run.ckpt.wait()
  except Exception:
    pass


def _log_step(run: _Run, step: int, metrics: dict, timer: dict, it) -> dict:
  """Reads the step's metrics (the one host sync of a log step), writes and prints them."""
  metrics = jax.device_get({k: v for k, v in metrics.items() if k not in ("finite", "frozen")})
  now = time.time()
  dt = (now - timer["t"]) / max(timer["steps"], 1)
  timer["t"], timer["steps"] = now, 0
  ex_s = run.global_bs / dt
  flop_s = ex_s * run.flops_per_example
  out = {f"train/{k}": float(np.asarray(v)) for k, v in metrics.items()}
  out.update(
    {
      "examples_seen": step * run.global_bs,
      "flops_seen": step * run.global_bs * run.flops_per_example,
      "examples_per_sec": ex_s,
      "flops_per_sec": flop_s,
      "step_time": dt,
      **{f"data/{k}": v for k, v in it.stats().items()},
    }
  )
  peak = run.config.get("peak_flops_per_device")
  if peak:
    out["mfu"] = flop_s / (float(peak) * jax.device_count())
  run.writer.write(step, out)
  eta = dt * (run.total_steps - step)
  mfu = f" | MFU {100 * out['mfu']:.1f}%" if peak else ""
  run.say(
    f"step {step}/{run.total_steps} | loss {out['train/loss']:.4f} | {ex_s:.1f} ex/s | "
    f"{out['flops_seen']:.3g} FLOPs seen | {flop_s / 1e9:.1f} GFLOP/s{mfu} | ETA {_fmt_secs(eta)}"
  )
  return out


FINAL_EVALS_FILE = "final_evals.json"


def _final_evals(run: _Run, state, step: int) -> None:
  """Runs the evals of the final step that have not run yet (a re-run of a finished run runs only what a
  crash or kill left out); `<workdir>/final_evals.json` records which have."""
  if not run.evals:
    return
  marker = run.workdir / FINAL_EVALS_FILE
  done = []
  if paths.exists(marker):
    try:
      record = json.loads(paths.read_text(marker))
      done = list(record.get("done", [])) if record.get("step") == step else []
    except ValueError:
      done = []
  for name, _, _, _ in run.evals.evals:
    if name in done:
      continue
    run.evals.run(step, state["params"], names=[name], writer=run.writer)
    done.append(name)
    if run.pidx == 0:
      paths.write_text(marker, json.dumps({"step": step, "done": done}))


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
  return threading.current_thread() is threading.main_thread()


# --------------------------------------------------------------------------------------------- CLI
def add_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("--config", required=True, help="path/to/config.py[:arg,...]")
  p.add_argument("--workdir", required=True, help="run folder (checkpoints, metrics); resumes if it has some")
  p.add_argument("--debug", action="store_true", help="show the traceback of an error")


def main(argv=None) -> int:
  if not host_memory.configure_for_command():  # before JAX starts (see host_memory)
    return 1
  compile_cache.configure()  # a relaunched run loads its compiled programs (see compile_cache)
  p = argparse.ArgumentParser(prog="siglip-rins train", description=__doc__.split("\n")[0])
  add_args(p)
  args, rest = p.parse_known_args(argv)
  return run_from_args(args, rest)


def error_line(e: BaseException) -> str:
  """One line for a failure: the message of errors raised on purpose (they name the key / file / value), a
  plain description of OS errors (disk full, permissions), else `Type: first line`."""
  text = str(e).strip()
  first = text.splitlines()[0] if text else ""
  if isinstance(e, OSError) and e.errno is not None:
    import errno as errno_lib
    import os

    if e.strerror and e.strerror != os.strerror(e.errno):
      return e.strerror  # our own message, e.g. which checkpoint did not fit
    where = f" ({e.filename})" if e.filename else ""
    if e.errno == errno_lib.ENOSPC:
      return f"no space left on the device{where}: free some space or choose another --workdir"
    return f"{e.strerror or first or type(e).__name__}{where}"
  if isinstance(e, (ValueError, OSError, RuntimeError, KeyError)) and first:
    return first
  return f"{type(e).__name__}: {first}" if first else type(e).__name__


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
  except (KeyboardInterrupt, SystemExit):
    raise
  except Exception as e:  # every failure is one line (exit 1); --debug shows the traceback
    if getattr(args, "debug", False):
      raise
    print(f"error: {error_line(e)}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
