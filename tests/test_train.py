"""The training loop end to end on CPU: each task learns, resume is exact, bad configs fail early, the NaN guard
stops a diverging run with its last good checkpoint intact, SIGTERM saves and exits 0, and two processes on
loopback give the result of one.

Compile time dominates on CPU, so the module points JAX's persistent compilation cache at a temporary folder:
runs of the same config (the LM runs below, the SIGTERM subprocess) compile once.
"""

import gc
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from siglip_rins import checkpoint as ckpt_lib
from siglip_rins import config_lib
from siglip_rins.train import TrainingStopped, train, validate_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The LM config every LM test shares (identical HLO -> one compile): a long cosine schedule, cut by stop_after.
LM_SPEC = os.path.join(ROOT, "configs", "lm_rins.py:runlocal,steps=10000")
LM_OVERRIDES = ["tensorboard=False", "log_every=5"]
LM_STEPS = 20


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
  from jax.experimental.compilation_cache import compilation_cache as cc

  path = str(tmp_path_factory.mktemp("jax_compile_cache"))
  names = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
  )
  old = {n: getattr(jax.config, n) for n in names}
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  cc.reset_cache()
  yield path
  for n, v in old.items():
    jax.config.update(n, v)
  cc.reset_cache()


def _load(spec, overrides=()):
  return config_lib.apply_overrides(config_lib.load_config(spec), list(overrides))


def _losses(workdir):
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r and "bad_step" not in r]


def _assert_learns(workdir, k=2):
  losses = [l for _, l in _losses(workdir)]
  assert len(losses) >= 2 * k, losses
  first, last = float(np.mean(losses[:k])), float(np.mean(losses[-k:]))
  assert np.isfinite(losses).all(), losses
  assert last < first, f"loss did not decrease: first {losses[:k]} last {losses[-k:]}"
  return first, last


def _flat(params):
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(params)}


@pytest.fixture(scope="module")
def lm_run(compile_cache, tmp_path_factory):
  """LM runlocal, LM_STEPS steps uninterrupted.  Returns (workdir, summary)."""
  workdir = str(tmp_path_factory.mktemp("lm_straight"))
  summary = train(_load(LM_SPEC, LM_OVERRIDES), workdir, stop_after=LM_STEPS, verbose=False)
  return workdir, summary


# ------------------------------------------------------------------------------------------------ learning
@pytest.mark.slow
def test_lm_runlocal_loss_decreases(lm_run):
  workdir, summary = lm_run
  assert summary["step"] == LM_STEPS and summary["stopped"] == "stop_after"
  first, last = _assert_learns(workdir)
  assert last < first - 0.5  # from ~ln(2000) = 7.6 nats the tiny LM drops fast on the demo captions


@pytest.mark.slow
def test_contrastive_runlocal_loss_decreases(compile_cache, tmp_path):
  config = _load(
    os.path.join(ROOT, "configs", "siglip_rins.py:runlocal,steps=30"), ["tensorboard=False", "log_every=5"]
  )
  config.model.image.depth = config.model.text.depth = 2  # 2-layer towers: half the compile time
  config.evals = {}
  gc.unfreeze()
  frozen_before = gc.get_freeze_count()
  summary = train(config, str(tmp_path), verbose=False)
  assert summary["stopped"] == "finished" and summary["step"] == 30
  assert gc.get_freeze_count() == frozen_before  # the heap frozen for the step loop is handed back to the GC
  _assert_learns(str(tmp_path))
  assert ckpt_lib.CheckpointManager(str(tmp_path)).latest_step() == 30  # the final save


def test_runs_differing_only_in_seed_reuse_the_jitted_step(compile_cache, tmp_path):
  """The second seed of a config in one process reuses the first run's jitted step and initialiser
  (train._STEP_MEMO: one of each) and computes what freshly traced ones compute (same initial parameters as
  init_state of that seed, same losses); another lr is another step and initialiser."""
  import siglip_rins.train as train_lib

  def config(seed, lr=1e-3):
    c = _load(os.path.join(ROOT, "configs", "siglip_rins.py:runlocal,steps=6"), ["tensorboard=False", "log_every=2"])
    c.model.image.depth = c.model.text.depth = 2
    c.evals, c.seed, c.lr = {}, seed, lr
    return c

  train_lib.clear_step_memo()
  train(config(0), str(tmp_path / "s0"), verbose=False)
  assert len(train_lib._STEP_MEMO) == 2
  first = list(train_lib._STEP_MEMO.values())
  train(config(1), str(tmp_path / "s1"), verbose=False)
  assert len(train_lib._STEP_MEMO) == 2 and all(a is b for a, b in zip(train_lib._STEP_MEMO.values(), first))
  run = train_lib._setup_model(config(1))
  reused = train_lib._memo_init_state(run, 5)["params"]
  assert len(train_lib._STEP_MEMO) == 2  # a hit: the memoised initialiser ran with seed 1
  fresh = train_lib.init_state(run.model, run.task, run.tx, run.mesh, run.config, jax.random.PRNGKey(1))["params"]
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(reused), jax.tree.leaves(fresh)))
  train_lib.clear_step_memo()
  train(config(1), str(tmp_path / "s1_fresh"), verbose=False)
  assert _losses(str(tmp_path / "s1")) == _losses(str(tmp_path / "s1_fresh"))
  assert _losses(str(tmp_path / "s1")) != _losses(str(tmp_path / "s0"))  # the seed still matters
  train(config(1, lr=2e-3), str(tmp_path / "lr"), verbose=False)
  assert len(train_lib._STEP_MEMO) == 4
  train_lib.clear_step_memo()


def test_a_finished_runs_input_iterator_is_released(compile_cache, tmp_path, monkeypatch):
  """train() hands its finished tf.data iterator to a background thread to drop (its destructor can block for
  seconds); the iterator must still be freed, run after run, not kept by the hand-over."""
  import gc
  import weakref

  from siglip_rins.data import pipeline

  made = []
  real = pipeline.make_train_iterator

  def recording(*args, **kwargs):
    it = real(*args, **kwargs)
    made.append(weakref.ref(it))
    return it

  monkeypatch.setattr(pipeline, "make_train_iterator", recording)
  config = _load(os.path.join(ROOT, "configs", "siglip_rins.py:runlocal,steps=6"), ["tensorboard=False"])
  config.model.image.depth = config.model.text.depth = 2
  config.evals = {}
  for k in range(2):
    train(config, str(tmp_path / f"run{k}"), verbose=False)
  assert len(made) == 2
  deadline = time.time() + 60
  while any(ref() is not None for ref in made) and time.time() < deadline:
    gc.collect()
    time.sleep(0.2)
  assert all(ref() is None for ref in made)


@pytest.mark.slow
def test_classification_runlocal_loss_decreases(compile_cache, tmp_path):
  config = _load(os.path.join(ROOT, "configs", "vit_rins.py:runlocal,steps=30"), ["tensorboard=False", "log_every=5"])
  config.model.depth = 2  # half the compile time
  config.evals = {}
  gc.unfreeze()
  frozen_before = gc.get_freeze_count()
  summary = train(config, str(tmp_path), verbose=False)
  assert summary["stopped"] == "finished" and summary["step"] == 30
  assert gc.get_freeze_count() == frozen_before  # the heap frozen for the step loop is handed back to the GC
  _assert_learns(str(tmp_path))


# ------------------------------------------------------------------------------------------------ resume
@pytest.mark.slow
def test_kill_and_resume_gives_the_uninterrupted_parameters(lm_run, tmp_path):
  """stop_after=k (as if killed right after the checkpoint at k) then a fresh train() call continues to the same
  parameters as the uninterrupted run.  Tolerance: exact up to 1e-6 absolute (same executables, same data)."""
  _, straight = lm_run
  k = 10
  config = _load(LM_SPEC, LM_OVERRIDES + [f"ckpt_every={k}"])
  first = train(config, str(tmp_path), stop_after=k, verbose=False)
  assert first["step"] == k and ckpt_lib.CheckpointManager(str(tmp_path)).latest_step() == k
  resumed = train(config, str(tmp_path), stop_after=LM_STEPS - k, verbose=False)
  assert resumed["step"] == LM_STEPS
  a, b = _flat(straight["state"]["params"]), _flat(resumed["state"]["params"])
  assert a.keys() == b.keys()
  worst = max(float(np.max(np.abs(a[n] - b[n]))) for n in a)
  print(f"resume: max |param difference| = {worst:.3g}")
  assert worst <= 1e-6, f"resumed parameters differ by up to {worst}"
  mu_a = _flat(straight["state"]["opt_state"])
  mu_b = _flat(resumed["state"]["opt_state"])
  assert all(np.allclose(mu_a[n], mu_b[n], rtol=0, atol=1e-6) for n in mu_a)


# ------------------------------------------------------------------------------------------------ validation
def _valid_config():
  return _load(os.path.join(ROOT, "configs", "lm_rins.py:runlocal"))


@pytest.mark.parametrize(
  "mutate, named",
  [
    (lambda c: c.__setitem__("learning_rate", 1e-3), "learning_rate"),
    (lambda c: c.__delitem__("model"), "model"),
    (lambda c: (c.__setitem__("total_examples", 1000), c.__setitem__("total_steps", 10)), "total_examples"),
    (lambda c: c.input.__setitem__("batch_size", 0), "batch_size"),
  ],
)
def test_validate_config_names_the_bad_key_in_one_line(mutate, named):
  config = _valid_config()
  validate_config(config)  # the shipped config is valid
  mutate(config)
  with pytest.raises(ValueError) as e:
    validate_config(config)
  assert named in str(e.value) and "\n" not in str(e.value)


def test_batch_not_divisible_by_devices_fails_before_training(tmp_path):
  code = (
    "import sys; sys.path.insert(0, sys.argv[1]);"
    "from siglip_rins import config_lib; from siglip_rins.train import train;"
    "c = config_lib.load_config(sys.argv[1] + '/configs/lm_rins.py:runlocal');"
    "c.input.batch_size = 3\n"
    "try: train(c, sys.argv[2], verbose=False)\n"
    "except ValueError as e: print('ERR', e); sys.exit(3)"
  )
  env = dict(
    os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3"
  )
  out = subprocess.run(
    [sys.executable, "-c", code, ROOT, str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=120
  )
  assert out.returncode == 3, out.stdout + out.stderr
  line = [l for l in out.stdout.splitlines() if l.startswith("ERR")][0]
  assert "batch_size=3" in line and "2 devices" in line
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


# ------------------------------------------------------------------------------------------------ NaN guard
@pytest.mark.slow
def test_nan_guard_skips_updates_then_stops_with_last_good_checkpoint(compile_cache, tmp_path):
  """lr = 1e30 blows the parameters up after the first real update; every later step is non-finite, is not
  applied, and after max_bad_steps of them the run raises TrainingStopped."""
  max_bad = 3
  config = _load(LM_SPEC, LM_OVERRIDES + ["lr=1e30", "ckpt_every=1", f"max_bad_steps={max_bad}", "log_every=1"])
  with pytest.raises(TrainingStopped, match="max_bad_steps=3"):
    train(config, str(tmp_path), stop_after=LM_STEPS, verbose=False)
  assert gc.get_freeze_count() == 0  # unfrozen on the way out of a stopped run too
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  bad = [r["step"] for r in rows if r.get("bad_step")]
  assert len(bad) == max_bad and bad == list(range(bad[0], bad[0] + max_bad))
  last_good = bad[0] - 1
  assert last_good >= 1  # the first steps were fine (warm-up starts at lr 0)
  manager = ckpt_lib.CheckpointManager(str(tmp_path))
  assert last_good in manager.all_steps()
  latest = manager.latest_step()
  assert latest >= last_good
  good = _flat(manager.restore(last_good)[0]["params"])
  newest = _flat(manager.restore(latest)[0]["params"])
  assert all(np.isfinite(v).all() for v in good.values())
  for name, value in good.items():  # skipped steps changed nothing: the newest checkpoint equals the last good one
    np.testing.assert_array_equal(newest[name], value, err_msg=name)


# ------------------------------------------------------------------------------------------------ SIGTERM
@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(compile_cache, lm_run, tmp_path):
  workdir = tmp_path / "run"
  cmd = [sys.executable, "-m", "siglip_rins.train", "--config", LM_SPEC, "--workdir", str(workdir)]
  cmd += [f"--config.{o}" for o in LM_OVERRIDES] + ["--config.log_every=1"]
  env = dict(
    os.environ,
    TF_CPP_MIN_LOG_LEVEL="3",
    PYTHONUNBUFFERED="1",
    JAX_PLATFORMS="cpu",
    JAX_COMPILATION_CACHE_DIR=compile_cache,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
  )
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  lines, deadline = [], time.time() + 240
  try:
    for line in proc.stdout:
      lines.append(line)
      if line.startswith("step "):
        proc.send_signal(signal.SIGTERM)
        break
      assert time.time() < deadline, "no logged step in time:\n" + "".join(lines[-20:])
    rest, _ = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  output = "".join(lines) + rest
  assert proc.returncode == 0, output[-3000:]
  saved = [l for l in output.splitlines() if l.startswith("SIGTERM: saved step")]
  assert saved, output[-3000:]
  step = int(saved[0].split()[3].rstrip(","))
  assert step >= 1
  assert ckpt_lib.CheckpointManager(str(workdir)).latest_step() == step


# ------------------------------------------------------------------------------------------------ multi-process
def _two_process_data(tmp_path, n):
  """The same n demo examples in two orders: `one.jsonl` (one process, batch k = examples 8k..8k+7) and
  `two.jsonl` whose even lines (process 0's shard) and odd lines (process 1's) give process 0 the first and
  process 1 the second half of every global batch."""
  from multiprocess_worker import GLOBAL_BATCH

  src = os.path.join(_load(os.path.join(ROOT, "configs", "siglip_rins.py:runlocal")).input.data.path, "data.jsonl")
  records = []
  with open(src) as f:
    for _, line in zip(range(n), f):
      r = json.loads(line)
      r["image"] = os.path.join(os.path.dirname(src), r["image"])
      records.append(json.dumps(r))
  half = GLOBAL_BATCH // 2
  p0 = [r for i, r in enumerate(records) if (i % GLOBAL_BATCH) < half]
  p1 = [r for i, r in enumerate(records) if (i % GLOBAL_BATCH) >= half]
  (tmp_path / "one.jsonl").write_text("".join(r + "\n" for r in records))
  (tmp_path / "two.jsonl").write_text("".join(a + "\n" + b + "\n" for a, b in zip(p0, p1)))
  return str(tmp_path / "one.jsonl"), str(tmp_path / "two.jsonl")


@pytest.mark.slow
def test_two_processes_match_one(compile_cache, tmp_path):
  import socket

  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import multiprocess_worker as worker

  one, two = _two_process_data(tmp_path, worker.STEPS * worker.GLOBAL_BATCH)
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  env.pop("XLA_FLAGS", None)
  out_npz = str(tmp_path / "two.npz")
  logs = [tmp_path / f"worker{i}.log" for i in range(2)]
  procs = [
    subprocess.Popen(
      [sys.executable, worker.__file__, str(port), "2", str(i), two, str(tmp_path / "w2"), out_npz],
      cwd=ROOT,
      env=env,
      stdout=open(logs[i], "w"),
      stderr=subprocess.STDOUT,
    )
    for i in range(2)
  ]
  try:
    # meanwhile, the same global batches in this (single-device) process
    reference = train(worker.make_config(one), str(tmp_path / "w1"), verbose=False)
    for p in procs:
      p.wait(timeout=300)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  assert all(p.returncode == 0 for p in procs), "\n".join(log.read_text()[-3000:] for log in logs)
  two_proc = dict(np.load(out_npz))
  loss_two = float(two_proc.pop("__loss__"))
  loss_one = reference["metrics"]["train/loss"]
  assert abs(loss_two - loss_one) <= 1e-5 * max(1.0, abs(loss_one)), (loss_one, loss_two)
  one_proc = worker.flat_params(reference["state"]["params"])
  assert one_proc.keys() == two_proc.keys()
  worst = max(float(np.max(np.abs(two_proc[n] - v))) for n, v in one_proc.items())
  print(f"two processes vs one: loss {loss_two:.6f} vs {loss_one:.6f}, max |param difference| = {worst:.3g}")
  for name, value in one_proc.items():
    np.testing.assert_allclose(two_proc[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
