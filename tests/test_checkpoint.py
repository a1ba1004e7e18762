"""Tests for siglip_rins.checkpoint: round trip, keep-K, atomicity (incomplete saves ignored), corrupt files."""

import os
import shutil
import stat

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from siglip_rins.checkpoint import CheckpointError, CheckpointManager


def _state(seed):
  rng = np.random.default_rng(seed)
  return {
    "params": {
      "img": {"kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)},
      "t": jnp.asarray(2.3, jnp.float32),
    },
    "opt": {"mu": jnp.asarray(rng.normal(size=(4, 3)), jnp.bfloat16)},
    "step": jnp.asarray(seed, jnp.int32),
  }


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))


def test_round_trip_keep_k_and_abstract_target(tmp_path):
  mgr = CheckpointManager(tmp_path, keep=2)
  assert mgr.latest_step() is None
  for step in (10, 20, 30):
    assert mgr.save(step, _state(step), {"step": step, "examples_seen": step * 8, "cfg": {"lr": 1e-3}})
  mgr.wait()
  assert mgr.all_steps() == [20, 30]  # keep=2 dropped step 10
  assert mgr.latest_step() == 30
  state, meta = mgr.restore()
  _assert_trees_equal(state, _state(30))
  assert meta == {"step": 30, "examples_seen": 240, "cfg": {"lr": 1e-3}}
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), _state(0))
  state20, meta20 = mgr.restore(20, target=abstract)
  _assert_trees_equal(state20, _state(20))
  assert meta20["step"] == 20
  mgr.close()
  # A new manager on the same workdir resumes from the latest step.
  again = CheckpointManager(tmp_path, keep=2, async_save=False)
  assert again.latest_step() == 30
  with pytest.raises(FileNotFoundError, match="step 10"):
    again.restore(10)
  with pytest.raises(ValueError, match="already exists"):
    again.save(30, _state(1), {})
  with pytest.raises(ValueError, match="JSON"):
    again.save(40, _state(1), {"bad": object()})
  again.close()


def test_incomplete_checkpoints_are_never_latest(tmp_path):
  mgr = CheckpointManager(tmp_path, keep=5, async_save=False)
  mgr.save(1, _state(1), {"step": 1})
  mgr.wait()
  ckpt_dir = mgr.directory
  # 1) A process killed mid-save leaves orbax's temporary folder.
  shutil.copytree(str(ckpt_dir / "1"), str(ckpt_dir / "2.orbax-checkpoint-tmp-1234567"))
  os.remove(str(ckpt_dir / "2.orbax-checkpoint-tmp-1234567" / "_CHECKPOINT_METADATA"))
  # 2) A step folder whose commit never happened (non-atomic copy / file system): no commit metadata.
  shutil.copytree(str(ckpt_dir / "1"), str(ckpt_dir / "3"))
  os.remove(str(ckpt_dir / "3" / "_CHECKPOINT_METADATA"))
  # 3) A bare step folder.
  os.makedirs(str(ckpt_dir / "4" / "state"))
  assert mgr.all_steps() == [1]
  assert mgr.latest_step() == 1
  mgr.close()
  fresh = CheckpointManager(tmp_path, keep=5, async_save=False)
  assert fresh.latest_step() == 1
  state, meta = fresh.restore()
  assert meta == {"step": 1}
  _assert_trees_equal(state, _state(1))
  with pytest.raises(FileNotFoundError, match="step 3"):
    fresh.restore(3)
  # Orbax only saves increasing steps; an earlier step than a leftover folder gets a clear error.
  with pytest.raises(ValueError, match=r"later step folder\(s\) \[3, 4\]"):
    fresh.save(2, _state(2), {"step": 2})
  # The leftover temporary folder is removed before the first save.
  assert fresh.save(5, _state(5), {"step": 5})
  fresh.wait()
  assert not os.path.exists(str(ckpt_dir / "2.orbax-checkpoint-tmp-1234567"))
  assert fresh.all_steps() == [1, 5]
  _assert_trees_equal(fresh.restore()[0], _state(5))
  fresh.close()


# A failed tensorstore read leaves a callback aimed at orbax's closed event loop; harmless, reported at GC.
_IGNORE_CLOSED_LOOP = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@_IGNORE_CLOSED_LOOP
def test_corrupt_checkpoint_raises_one_clear_error(tmp_path):
  mgr = CheckpointManager(tmp_path, keep=3, async_save=False)
  mgr.save(5, _state(5), {"step": 5})
  mgr.wait()
  step_dir = str(mgr.directory / "5")
  data_files = [
    os.path.join(root, f)
    for root, _, files in os.walk(os.path.join(step_dir, "state"))
    for f in files
    if os.path.basename(root) == "d"
  ]
  assert data_files, "expected array data files under state/**/d/"
  for path in data_files:
    with open(path, "r+b") as fh:
      fh.truncate(8)
  with pytest.raises(CheckpointError, match=f"could not restore checkpoint {step_dir}"):
    mgr.restore(5)
  mgr.close()


@_IGNORE_CLOSED_LOOP
def test_corrupt_meta_raises_clear_error(tmp_path):
  mgr = CheckpointManager(tmp_path, keep=3, async_save=False)
  mgr.save(7, _state(7), {"step": 7})
  mgr.wait()
  meta_dir = str(mgr.directory / "7" / "meta")
  meta_file = os.path.join(meta_dir, "metadata")
  assert os.path.exists(meta_file)
  with open(meta_file, "w") as fh:
    fh.write('{"step": 7, "trunc')
  with pytest.raises(CheckpointError, match="checkpoints/7"):
    mgr.restore(7)
  mgr.close()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_workdir_raises(tmp_path):
  locked = tmp_path / "locked"
  locked.mkdir()
  locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
  try:
    with pytest.raises(PermissionError, match="not writable"):
      CheckpointManager(locked / "run")
  finally:
    locked.chmod(stat.S_IRWXU)


def test_workdir_that_is_a_file_raises(tmp_path):
  not_a_dir = tmp_path / "file"
  not_a_dir.write_text("x")
  with pytest.raises(PermissionError, match="not writable"):
    CheckpointManager(not_a_dir)


def test_bad_keep_raises(tmp_path):
  with pytest.raises(ValueError, match="keep"):
    CheckpointManager(tmp_path, keep=0)
