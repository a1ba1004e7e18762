"""The loop without a per-step host sync: step flags are read back only at check points (log steps, saves,
evals, the end), the max_bad_steps stop still names the exact step and matches what was committed, and the
input prefetcher hands errors and SIGTERM through."""

import json
import os
import re
import threading
import time

import pytest

from siglip_rins import checkpoint as ckpt_lib
from siglip_rins import config_lib, train as train_lib
from siglip_rins.train import TrainingStopped, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LM_SPEC = os.path.join(ROOT, "configs", "lm_rins.py:runlocal,steps=10000")  # as tests/test_train.py: one compile


def _load(overrides):
  return config_lib.apply_overrides(config_lib.load_config(LM_SPEC), ["tensorboard=False"] + list(overrides))


@pytest.mark.slow
def test_flags_are_read_only_at_log_steps(tmp_path, monkeypatch):
  reads = []
  original = train_lib._Guard.check

  def counting(self):
    if self.pending:
      reads.append([s for s, _ in self.pending])
    return original(self)

  monkeypatch.setattr(train_lib._Guard, "check", counting)
  summary = train(_load(["log_every=5"]), str(tmp_path), stop_after=10, verbose=False)
  assert summary["step"] == 10
  assert reads == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]  # two reads for ten steps, none per step
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in rows if "train/loss" in r] == [5, 10]


@pytest.mark.slow
def test_max_bad_steps_stop_is_exact_without_per_step_reads(tmp_path):
  """lr=1e30, a checkpoint every step and no log step for 1000 steps: the stop is noticed at the next save,
  names the exact step, and the newest checkpoint it names is the newest one on disk, holding finite params."""
  max_bad = 3
  config = _load(["lr=1e30", "ckpt_every=1", f"max_bad_steps={max_bad}", "log_every=1000"])
  with pytest.raises(TrainingStopped) as e:
    train(config, str(tmp_path), stop_after=40, verbose=False)
  message = str(e.value)
  stopped = int(re.search(r"stopped at step (\d+)", message).group(1))
  newest = int(re.search(r"newest checkpoint is step (\d+)", message).group(1))
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  bad = [r["step"] for r in rows if r.get("bad_step")]
  assert bad == list(range(stopped - max_bad + 1, stopped + 1)), (bad, message)
  manager = ckpt_lib.CheckpointManager(str(tmp_path))
  assert manager.latest_step() == newest == stopped - 1, (manager.all_steps(), message)
  import numpy as np

  params = manager.restore(newest)[0]["params"]
  good = manager.restore(bad[0] - 1)[0]["params"]
  for a, b in zip(__import__("jax").tree.leaves(params), __import__("jax").tree.leaves(good)):
    assert np.isfinite(np.asarray(a)).all()
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_prefetcher_passes_errors_and_stops_waiting_on_a_signal():
  items = iter([1, 2])

  def produce():
    return next(items)  # StopIteration after two items, like an exhausted iterator

  p = train_lib._Prefetcher(produce, depth=2, poll_s=0.05)
  assert p.get() == 1 and p.get() == 2
  with pytest.raises(StopIteration):
    p.get()
  p.close()

  blocked = threading.Event()

  def slow():
    blocked.wait(30)  # input stuck (e.g. a slow bucket)
    return 0

  p = train_lib._Prefetcher(slow, depth=1, poll_s=0.05)
  flag = {"stop": False}
  threading.Timer(0.3, lambda: flag.update(stop=True)).start()
  t0 = time.time()
  assert p.get(lambda: flag["stop"]) is None
  assert time.time() - t0 < 2
  blocked.set()
  p.close()


def test_skipped_step_keeps_the_schedule_on_the_step_and_logs_the_applied_lr():
  """Warm-up over 4 steps, step 1 non-finite: the updates of steps 0, 2, 3 use lr(0), lr(2), lr(3) -- the
  schedule does not shift by the skipped step -- and each step's logged lr is the lr its update used."""
  import jax
  import jax.numpy as jnp
  import ml_collections
  import numpy as np

  from siglip_rins import optim

  class NanAtFlag:  # loss = sum(w * x): gradient 1 per weight; non-finite when the batch says so
    def loss(self, model, params, batch, rng):
      loss = jnp.sum(params["w"]) * jnp.where(batch["bad"], jnp.nan, 1.0)
      return loss, {}

  cfg = ml_collections.ConfigDict(
    dict(lr=1.0, wd=0.0, optax_name="identity", schedule=dict(decay_type="linear", warmup_steps=4), input={})
  )
  tx, schedule_fn = optim.make_optimizer(cfg, 8)
  step = jax.jit(train_lib.make_train_step(None, NanAtFlag(), tx, schedule_fn, seed=0, max_bad_steps=5))
  params = {"w": jnp.zeros((2,))}
  state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}
  state["bad_run"] = jnp.zeros((), jnp.int32)
  logged = []
  for bad in (False, True, False, False):
    state, metrics = step(state, {"bad": jnp.asarray(bad)})
    logged.append(float(metrics["lr"]))
  lrs = [float(schedule_fn(s)) for s in range(4)]
  assert logged == lrs
  applied = lrs[0] + lrs[2] + lrs[3]
  np.testing.assert_allclose(np.asarray(state["params"]["w"]), -applied * np.ones(2), rtol=1e-6)
  assert lrs[1] != lrs[3]  # the check would not notice a shift otherwise


def test_loss_spike_stop_relative_to_the_running_median():
  import ml_collections
  import numpy as np

  class Stub:
    def __init__(self):
      self.rows = []

    def write_rows(self, rows):
      self.rows += rows

    def wait(self):
      pass

    def latest_step(self):
      return 20

  stub = Stub()
  run = train_lib._Run(
    config=ml_collections.ConfigDict(dict(loss_spike_factor=2.0, loss_spike_window=50)),
    workdir=None,
    verbose=False,
    pidx=0,
    pcount=1,
    mesh=None,
    task=None,
    model=None,
    tx=None,
    schedule_fn=None,
    total_steps=100,
    global_bs=8,
    flops_per_example=1.0,
    seed=0,
    ckpt=stub,
    writer=stub,
  )
  guard = train_lib._Guard(run, max_bad=5)
  flags = lambda loss: {"finite": np.bool_(True), "frozen": np.bool_(False), "loss": np.float32(loss)}  # noqa: E731
  for step in range(1, 31):
    guard.add(step, flags(1.0 + 0.01 * (step % 3)))
  guard.check()  # 30 ordinary losses: no stop
  for step, loss in ((31, 1.5), (32, 2.5), (33, 1.0)):
    guard.add(step, flags(loss))
  with pytest.raises(TrainingStopped, match=r"loss spike at step 32: 2\.5 > loss_spike_factor=2 x the median"):
    guard.check()
