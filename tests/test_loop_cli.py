"""The training loop driven as a user drives it: the CLI in a subprocess with a relative --workdir, a second
run in a finished workdir, SIGTERM right after a periodic save, two trainers on one workdir, a lock left by a
killed trainer, and one-line errors."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from siglip_rins import checkpoint as ckpt_lib
from siglip_rins import paths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "siglip_rins.py")
SMALL = ["--config.tensorboard=False"]


def _env():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  env.pop("XLA_FLAGS", None)
  return env


def _cli(args, cwd, timeout=240, env=None):
  cmd = [sys.executable, "-m", "siglip_rins.cli"] + list(args)
  return subprocess.run(cmd, cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=timeout)


def _user_env(cache_home):
  """A user's environment: no compilation cache set up for JAX (the test session shares one), the user's cache
  folder at `cache_home`, and JAX's compiler logging its persistent-cache hits."""
  env = {k: v for k, v in _env().items() if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))}
  return dict(env, XDG_CACHE_HOME=str(cache_home), JAX_DEBUG_LOG_MODULES="jax._src.compiler")


def _train_cmd(spec, workdir, extra=()):
  return [sys.executable, "-m", "siglip_rins.cli", "train", "--config", f"{CONFIG}:{spec}", "--workdir", workdir]


def _popen(spec, workdir, cwd, extra=()):
  cmd = _train_cmd(spec, workdir) + SMALL + list(extra)
  return subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(proc, prefix, timeout=240):
  lines, deadline = [], time.time() + timeout
  for line in proc.stdout:
    lines.append(line)
    if line.startswith(prefix):
      return lines
    assert time.time() < deadline, "no line starting with %r in time:\n%s" % (prefix, "".join(lines[-20:]))
  raise AssertionError(f"process ended before a line starting with {prefix!r}:\n" + "".join(lines[-30:]))


def _finish(proc, timeout=120):
  try:
    rest, _ = proc.communicate(timeout=timeout)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  return rest


def _errors(stderr):
  return [line for line in stderr.splitlines() if line.startswith("error:")]


# ------------------------------------------------------------------------------------------------ relative workdir
@pytest.mark.slow
def test_relative_workdir_trains_exports_and_reruns_finished_run(tmp_path):
  """A relative --workdir trains, saves, exports and evaluates; running the finished run again exits 0 without training
  and runs only the final evals that are missing (here: one, as if killed during the final evals).  Run in a
  user's environment: the commands share the default compilation cache, so the rerun loads its programs."""
  env = _user_env(tmp_path / "user_cache")
  train_cmd = ["train", "--config", f"{CONFIG}:runlocal,steps=6"] + SMALL + ["--workdir", "run"]
  out = _cli(train_cmd, cwd=tmp_path, env=env)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
  cache = tmp_path / "user_cache" / "siglip_rins" / "xla"
  info = json.loads((tmp_path / "run" / "run_info.json").read_text())
  assert info["compile_cache"] == {"state": "on", "dir": str(cache), "why": "default"}
  assert len(list(cache.iterdir())) >= 3  # the initialiser, the train step and the evaluators' programs
  assert ckpt_lib.CheckpointManager(str(tmp_path / "run")).latest_step() == 6
  records = json.loads((tmp_path / "run" / "eval_results.json").read_text())
  assert records
  assert json.loads((tmp_path / "run" / "final_evals.json").read_text())["step"] == 6

  exp = _cli(["export", "--workdir", "run", "--out", "model"], cwd=tmp_path, env=env)
  assert exp.returncode == 0, exp.stderr[-3000:]
  assert (tmp_path / "model" / "config.json").exists()
  ev = _cli(["eval", "--workdir", "run", "--evals", "zeroshot", "--out", "report"], cwd=tmp_path, env=env)
  assert ev.returncode == 0 and "corrupt" not in ev.stderr, ev.stderr[-3000:]
  assert (tmp_path / "report" / "eval_results.json").exists()

  # a final eval lost (e.g. killed during the evals) is run by the next invocation
  (tmp_path / "run" / "final_evals.json").write_text(json.dumps({"step": 6, "done": ["retrieval"]}))
  third = _cli(train_cmd, cwd=tmp_path, env=env)
  assert third.returncode == 0, third.stderr[-3000:]
  hits = [line for line in third.stderr.splitlines() if "Persistent compilation cache hit" in line]
  assert len(hits) >= 2, third.stderr[-3000:]  # the initialiser and the zero-shot evaluator's programs, at least
  assert not _errors(third.stderr) and "resumed from step 6" in third.stdout
  assert not [line for line in third.stdout.splitlines() if line.startswith("step ")]  # nothing trained
  assert "eval zeroshot" in third.stdout and "eval retrieval" not in third.stdout
  assert ckpt_lib.CheckpointManager(str(tmp_path / "run")).all_steps() == [6]


# ------------------------------------------------------------------------------------------------ SIGTERM
@pytest.mark.slow
def test_sigterm_right_after_a_periodic_save_exits_0_with_that_step_saved_once(tmp_path):
  """ckpt_every=1: every SIGTERM lands right after a periodic save of the same step."""
  proc = _popen("runlocal,steps=2000", "run", tmp_path, ["--config.ckpt_every=1", "--config.log_every=1"])
  try:
    _wait_for(proc, "step 2/")
    proc.send_signal(signal.SIGTERM)
    rest = _finish(proc)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 0, rest[-3000:]
  saved = [line for line in rest.splitlines() if line.startswith("SIGTERM: saved step")]
  assert saved, rest[-3000:]
  step = int(saved[0].split()[3].rstrip(","))
  manager = ckpt_lib.CheckpointManager(str(tmp_path / "run"))
  assert manager.latest_step() == step
  assert "error" not in rest.lower()


# ------------------------------------------------------------------------------------------------ lock
@pytest.mark.slow
def test_second_trainer_is_refused_and_a_killed_trainers_lock_is_recovered(tmp_path):
  first = _popen("runlocal,steps=100000", "run", tmp_path, ["--config.log_every=1"])
  try:
    _wait_for(first, "step ")
    second = _cli(_train_cmd("runlocal,steps=100000", "run")[3:] + SMALL, cwd=tmp_path)
    assert second.returncode == 1, second.stdout[-2000:] + second.stderr[-2000:]
    errors = _errors(second.stderr)
    assert len(errors) == 1 and "Traceback" not in second.stderr, second.stderr[-3000:]
    assert f"pid {first.pid}" in errors[0] and socket.gethostname() in errors[0], errors[0]
    assert first.poll() is None  # the first trainer is unaffected
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
  finally:
    if first.poll() is None:
      first.kill()
      first.wait()
  assert (tmp_path / "run" / paths.LOCK_NAME).exists()  # left behind by the killed trainer
  third = _popen("runlocal,steps=100000", "run", tmp_path, ["--config.log_every=1"])
  try:
    lines = _wait_for(third, "step ")
    third.send_signal(signal.SIGTERM)
    rest = _finish(third)
  finally:
    if third.poll() is None:
      third.kill()
  output = "".join(lines) + rest
  assert third.returncode == 0, output[-3000:]
  assert f"took over the workdir lock left by host {socket.gethostname()!r} pid {first.pid}" in output
  assert not (tmp_path / "run" / paths.LOCK_NAME).exists()  # released on a clean exit


def test_lock_unit_stale_and_live_holders(tmp_path, monkeypatch):
  """Same host: a dead pid is stale, a live one refuses; other host: judged by the heartbeat's age."""
  lock_file = tmp_path / paths.LOCK_NAME
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  host = socket.gethostname()
  lock_file.write_text(json.dumps({"host": host, "pid": dead.pid, "heartbeat": time.time()}))
  lock = paths.WorkdirLock(str(tmp_path)).acquire()
  assert lock.recovered_from["pid"] == dead.pid
  assert json.loads(lock_file.read_text())["token"] == lock.token
  with pytest.raises(paths.WorkdirLocked, match=f"pid {os.getpid()}"):
    paths.WorkdirLock(str(tmp_path)).acquire()
  lock.release()
  assert not lock_file.exists()

  lock_file.write_text(json.dumps({"host": "elsewhere", "pid": 1, "heartbeat": time.time()}))
  with pytest.raises(paths.WorkdirLocked, match="host 'elsewhere' pid 1"):
    paths.WorkdirLock(str(tmp_path)).acquire()
  lock_file.write_text(json.dumps({"host": "elsewhere", "pid": 1, "heartbeat": time.time() - 10 * paths.LOCK_STALE_S}))
  lock = paths.WorkdirLock(str(tmp_path)).acquire()
  assert lock.recovered_from["host"] == "elsewhere"
  lock.release()
