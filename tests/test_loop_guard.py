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
