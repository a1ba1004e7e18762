"""Every failure of `siglip-rins train` is one `error: ...` line naming what is wrong, exit code 1, no
traceback (--debug shows it): bad numbers in overrides, an all-bad dataset, a full disk at start and during
training (the latter noticed at the failing save, once, with the previous checkpoint intact).

The disk-full tests mount a small tmpfs (needs root; skipped otherwise)."""

import json
import os
import subprocess
import sys
import uuid

import pytest

from siglip_rins import checkpoint as ckpt_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "siglip_rins.py")


def _train(workdir, *overrides, spec="runlocal,steps=6", debug=False, timeout=300):
  cmd = [sys.executable, "-m", "siglip_rins.cli", "train", "--config", f"{CONFIG}:{spec}", "--workdir", str(workdir)]
  cmd += ["--config.tensorboard=False"] + [f"--config.{o}" for o in overrides] + (["--debug"] if debug else [])
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  env.pop("XLA_FLAGS", None)
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _one_error(out) -> str:
  errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
  assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-3000:]
  assert len(errors) == 1, out.stderr[-3000:]
  assert "Traceback" not in out.stderr and "Event loop is closed" not in out.stderr, out.stderr[-3000:]
  return errors[0]


@pytest.mark.parametrize(
  "override, expected",
  [
    ("seed=1e400", ["'seed'", "expected an integer", "inf"]),
    ("log_every=0", ["config.log_every", "an integer >= 1", "got 0"]),
    ("seed=-3", ["config.seed", "[0, 4294967295]", "-3"]),
    ("ckpt_every=-2", ["config.ckpt_every", "an integer >= 0", "-2"]),
  ],
)
def test_bad_numbers_fail_before_any_work_in_one_line(tmp_path, override, expected):
  line = _one_error(_train(tmp_path / "run", override))
  for fragment in expected:
    assert fragment in line, line
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_debug_shows_the_traceback(tmp_path):
  out = _train(tmp_path / "run", "log_every=0", debug=True)
  assert out.returncode != 0 and "Traceback" in out.stderr


def test_all_bad_dataset_is_one_line_naming_the_source(tmp_path):
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import data_fixtures

  path = data_fixtures.write_jsonl_dataset(tmp_path / "d", 0, bad=("bad_bytes", "zero_byte", "missing_file"))
  line = _one_error(_train(tmp_path / "run", f"input.data.path='{path}'"))
  assert "data.jsonl" in line and "every record seems bad" in line, line
  assert "assert" not in line.lower() or "SIGLIP_RINS" not in line, line


# ------------------------------------------------------------------------------------------------ disk full
@pytest.fixture
def small_disk(tmp_path):
  """mount(size) -> a fresh tmpfs of that many bytes (unmounted afterwards)."""
  mounted = []

  def mount(size: int):
    where = tmp_path / f"disk_{uuid.uuid4().hex[:6]}"
    where.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if out.returncode:
      pytest.skip(f"cannot mount a tmpfs here: {out.stderr.decode()[:200]}")
    mounted.append(where)
    return where

  yield mount
  for where in mounted:
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_full_disk_at_start_says_so(small_disk):
  disk = small_disk(256 * 1024)
  with open(disk / "filler", "wb") as f:
    try:
      while True:
        f.write(b"\0" * 65536)
        f.flush()
    except OSError:
      pass
  line = _one_error(_train(disk / "run"))
  assert "no space left" in line and str(disk) in line, line
  assert "PermissionError" not in line


@pytest.mark.slow
def test_full_disk_during_training_is_reported_at_that_save_with_the_previous_checkpoint_intact(small_disk, tmp_path):
  # measure one checkpoint of this config, then give the run room for one and a half of them
  probe = _train(tmp_path / "probe", "log_every=6", "evals={}", spec="runlocal,steps=6")
  assert probe.returncode == 0, probe.stderr[-3000:]
  step_dir = tmp_path / "probe" / "checkpoints" / "6"
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(step_dir) for f in fs)
  disk = small_disk(int(size * 1.5) + 256 * 1024)
  out = _train(disk / "run", "ckpt_every=2", "log_every=2", "keep_ckpts=5", "evals={}", spec="runlocal,steps=10")
  line = _one_error(out)
  assert "no space left" in line and "checkpoint step 4" in line and "newest complete checkpoint is step 2" in line
  manager = ckpt_lib.CheckpointManager(str(disk / "run"))
  assert manager.all_steps() == [2]
  state, meta = manager.restore(2)
  assert meta["step"] == 2
  rows = [json.loads(x) for x in open(disk / "run" / "metrics.jsonl")]
  assert max(r["step"] for r in rows) == 4  # stopped at the failing save, not one save later
