"""Preemption across hosts: two loopback processes (gloo) train one run; only process 1 gets SIGTERM; both save
the same step once and exit 0.  And a single process blocked in input honours SIGTERM promptly."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from siglip_rins import checkpoint as ckpt_lib
from siglip_rins import config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _builtin_jsonl(tmp_path, n=64):
  """The built-in dataset's first n records with absolute image paths (the workers read it unshuffled)."""
  src = os.path.join(
    config_lib.load_config(os.path.join(ROOT, "configs", "siglip_rins.py:runlocal")).input.data.path, "data.jsonl"
  )
  lines = []
  with open(src) as f:
    for _, line in zip(range(n), f):
      r = json.loads(line)
      r["image"] = os.path.join(os.path.dirname(src), r["image"])
      lines.append(json.dumps(r) + "\n")
  path = tmp_path / "data.jsonl"
  path.write_text("".join(lines))
  return str(path)


@pytest.mark.slow
def test_sigterm_to_one_host_stops_every_host_at_the_same_step(tmp_path):
  import multiprocess_worker as worker

  data = _builtin_jsonl(tmp_path)
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, WORKER_STEPS="5000")
  env["PYTHONUNBUFFERED"] = "1"
  env.pop("XLA_FLAGS", None)
  logs = [tmp_path / f"worker{i}.log" for i in range(2)]
  workdir = str(tmp_path / "run")
  procs = [
    subprocess.Popen(
      [sys.executable, worker.__file__, str(port), "2", str(i), data, workdir, str(tmp_path / "unused.npz")],
      cwd=ROOT,
      env=env,
      stdout=open(logs[i], "w"),
      stderr=subprocess.STDOUT,
    )
    for i in range(2)
  ]
  try:
    deadline = time.time() + 240
    while "step 3/" not in logs[0].read_text():
      assert time.time() < deadline and all(p.poll() is None for p in procs), logs[0].read_text()[-3000:]
      time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)  # only process 1 is preempted
    for p in procs:
      p.wait(timeout=120)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  texts = [log.read_text() for log in logs]
  assert all(p.returncode == 0 for p in procs), "\n".join(t[-3000:] for t in texts)
  results = [json.loads([l for l in t.splitlines() if l.startswith("RESULT ")][-1][7:]) for t in texts]
  assert [r["stopped"] for r in results] == ["sigterm", "sigterm"], results
  assert results[0]["step"] == results[1]["step"] >= 3, results
  step = results[0]["step"]
  assert f"SIGTERM: saved step {step}" in texts[0]
  assert ckpt_lib.CheckpointManager(workdir).all_steps() == [step]


@pytest.mark.slow
def test_sigterm_while_blocked_in_input_is_honoured(tmp_path):
  """The input stalls for good after two batches (DataIterator.__next__ patched to block, as a hung bucket
  read would); SIGTERM still saves the last step taken and exits 0 promptly."""
  data = _builtin_jsonl(tmp_path, 32)
  code = (
    "import sys, threading; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + '/tests');"
    "import multiprocess_worker as w; from siglip_rins.train import train; from siglip_rins.data import pipeline\n"
    "orig = pipeline.DataIterator.__next__; n = [0]\n"
    "def stalled(self):\n"
    "  n[0] += 1\n"
    "  if n[0] > 2: threading.Event().wait()\n"
    "  return orig(self)\n"
    "pipeline.DataIterator.__next__ = stalled\n"
    "c = w.make_config(sys.argv[2], steps=1000); c.log_every = 1\n"
    "s = train(c, sys.argv[3], verbose=True); print('STOPPED', s['stopped'], s['step'], flush=True)"
  )
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.Popen(
    [sys.executable, "-c", code, ROOT, data, str(tmp_path / "run")],
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  try:
    lines, deadline = [], time.time() + 240
    for line in proc.stdout:
      lines.append(line)
      if line.startswith("step 2/"):
        break
      assert time.time() < deadline, "".join(lines[-20:])
    time.sleep(2)  # now blocked waiting for the third batch
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    waited = time.time() - t0
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  output = "".join(lines) + rest
  assert proc.returncode == 0, output[-3000:]
  assert "STOPPED sigterm 2" in output and "SIGTERM: saved step 2" in output, output[-3000:]
  assert waited < 30, waited
  assert ckpt_lib.CheckpointManager(str(tmp_path / "run")).latest_step() == 2
