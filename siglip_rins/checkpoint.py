"""Checkpointing: a thin wrapper around orbax-checkpoint's ``CheckpointManager`` (orbax 0.12.x).

Layout: ``<workdir>/checkpoints/<step>/{state,meta}/`` -- ``state`` is the training-state pytree (one
OCDBT/zarr array per leaf, sharded arrays written by every process), ``meta`` a JSON dict (config, data
position, metrics ...).

Atomicity.  orbax writes a step into ``<step>.orbax-checkpoint-tmp-<timestamp>/`` and, once every item and
process has finished, writes ``_CHECKPOINT_METADATA`` (with ``commit_timestamp_nsecs``) and renames the folder
to ``<step>/`` (on object stores without atomic rename it writes ``commit_success.txt`` last instead).  A
process killed during a save therefore leaves only a ``*.orbax-checkpoint-tmp-*`` folder, which orbax does not
list as a step and which this manager removes at start-up.  On top of that, :meth:`CheckpointManager.all_steps`
only reports a step whose folder holds a committed ``_CHECKPOINT_METADATA`` and both items, so a step folder
left incomplete by anything else (a copy interrupted half-way, a non-atomic file system) is never ``latest``.
A checkpoint whose files are truncated or corrupt raises :class:`CheckpointError` naming its path on restore.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import uuid
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp
from etils import epath

from siglip_rins import paths

__all__ = ["CheckpointManager", "CheckpointError"]

_STATE = "state"
_META = "meta"
_METADATA_FILE = "_CHECKPOINT_METADATA"
log = logging.getLogger(__name__)


class CheckpointError(ValueError):
  """A checkpoint could not be read (corrupt, incomplete, or not matching the restore target)."""


def _check_writable(path: epath.Path) -> None:
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".write_probe_{jax.process_index()}_{uuid.uuid4().hex}"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    if e.errno == errno.ENOSPC:
      raise OSError(errno.ENOSPC, f"no space left on the device for the checkpoint directory {path}") from None
    raise PermissionError(f"checkpoint directory {path} is not writable: {e}") from None


def _is_disk_full(e: BaseException) -> bool:
  seen = 0
  while e is not None and seen < 10:
    if getattr(e, "errno", None) == errno.ENOSPC or "No space left" in str(e) or "ENOSPC" in str(e):
      return True
    e, seen = e.__cause__ or e.__context__, seen + 1
  return False


def _state_bytes(state: Any) -> int:
  return int(sum(getattr(x, "nbytes", 0) for x in jax.tree.leaves(state)))


class CheckpointManager:
  """Saves / restores ``(state pytree, meta dict)`` per step, keeping the newest ``keep``.

  Args:
    workdir: run directory (local path, made absolute, or e.g. ``gs://...``); checkpoints go to
      ``<workdir>/checkpoints`` unless ``directory`` is given.
    keep: how many most recent checkpoints to keep (>= 1).
    async_save: write in a background thread; call :meth:`wait` before reading them or exiting.
  """

  def __init__(self, workdir: str | os.PathLike, keep: int = 3, async_save: bool = True, directory: str | None = None):
    if not isinstance(keep, int) or keep < 1:
      raise ValueError(f"keep must be an int >= 1, got {keep!r}")
    self.directory = paths.workdir_path(directory) if directory else paths.workdir_path(workdir) / "checkpoints"
    _check_writable(self.directory)
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, enable_async_checkpointing=async_save, cleanup_tmp_directories=True, create=True
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=(_STATE, _META))

  # ------------------------------------------------------------------------------------------- queries
  def step_path(self, step: int) -> epath.Path:
    """Folder of a (finished) step."""
    return self.directory / str(int(step))

  def _is_complete(self, step: int) -> bool:
    path = self.step_path(step)
    metadata = path / _METADATA_FILE
    try:
      if not (metadata.exists() and (path / _STATE).is_dir() and (path / _META).is_dir()):
        return False
      return json.loads(metadata.read_text()).get("commit_timestamp_nsecs") is not None
    except (OSError, ValueError, AttributeError):
      return False

  def all_steps(self) -> list[int]:
    """Sorted steps of complete checkpoints (incomplete folders and in-flight saves are left out).

    Reads the directory listing itself (not orbax's cached list), so steps written by another manager or
    an earlier run are seen.
    """
    steps = sorted(int(p.name) for p in self.directory.iterdir() if p.name.isdigit() and p.is_dir())
    complete = [s for s in steps if self._is_complete(s)]
    for s in sorted(set(steps) - set(complete)):
      log.warning("Ignoring incomplete checkpoint folder %s", self.step_path(s))
    return complete

  def has_step(self, step: int) -> bool:
    """Whether a complete checkpoint of ``step`` exists."""
    return self._is_complete(int(step))

  def latest_step(self) -> int | None:
    """Newest complete step, or None when there is none."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  # ----------------------------------------------------------------------------------------- save/load
  def save(self, step: int, state: Any, meta: Mapping[str, Any] | None = None, force: bool = False) -> bool:
    """Starts saving ``state`` (pytree of arrays) and ``meta`` (JSON-serialisable dict) as ``step``.

    Returns whether a save was started.  With ``async_save`` it returns before the files are written;
    :meth:`wait` blocks until they are committed.  Saving an existing step raises ``ValueError``.
    """
    meta = dict(meta or {})
    try:
      json.dumps(meta)
    except (TypeError, ValueError) as e:
      raise ValueError(f"checkpoint meta for step {step} is not JSON-serialisable: {e}") from None
    if self.step_path(step).exists():
      raise ValueError(f"checkpoint step {step} already exists at {self.step_path(step)}")
    later = sorted(int(p.name) for p in self.directory.iterdir() if p.name.isdigit() and int(p.name) > step)
    if later:  # orbax only saves increasing steps; say why instead of silently skipping
      raise ValueError(
        f"cannot save step {step}: {self.directory} already holds later step folder(s) "
        f"{later} (complete: {[s for s in later if self._is_complete(s)]}); remove them "
        f"to go back to an earlier step"
      )
    self._check_space(step, state)
    args = ocp.args.Composite(**{_STATE: ocp.args.StandardSave(state), _META: ocp.args.JsonSave(meta)})
    try:
      return bool(self._manager.save(int(step), args=args, force=force))
    except Exception as e:
      raise self._save_error(step, e) from e

  def _check_space(self, step: int, state: Any) -> None:
    """Refuses a save that cannot fit (local file systems), before writing anything: the previous checkpoints
    stay intact and the failure is reported at this save, once.  In-flight saves are waited for first, so
    their space is accounted for and their own failure is reported here too."""
    free = paths.free_bytes(self.directory)
    if free is None:
      return
    self.wait()
    free = paths.free_bytes(self.directory)
    needed = int(_state_bytes(state) * 1.05) + (1 << 20)
    if free is not None and free < needed:
      raise OSError(
        errno.ENOSPC,
        f"no space left on the device for checkpoint step {step} in {self.directory}: it needs about "
        f"{needed / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free; the newest complete checkpoint is step "
        f"{self.latest_step()}",
      )

  def _save_error(self, step, e: BaseException) -> Exception:
    if _is_disk_full(e):
      return OSError(
        errno.ENOSPC,
        f"no space left on the device while saving checkpoint step {step} in {self.directory}; the newest "
        f"complete checkpoint is step {self.latest_step()}",
      )
    first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    return CheckpointError(f"saving checkpoint step {step} in {self.directory} failed: {first}")

  def wait(self) -> None:
    """Blocks until in-flight asynchronous saves are committed (and old ones deleted); a failed background
    save raises here (disk full: OSError(ENOSPC); else CheckpointError), with one-line messages."""
    try:
      self._manager.wait_until_finished()
    except Exception as e:
      raise self._save_error("in flight", e) from e

  def restore(self, step: int | None = None, target: Any = None) -> tuple[Any, dict]:
    """Restores ``(state, meta)``.

    Args:
      step: the step to restore; None = :meth:`latest_step`.
      target: pytree of ``jax.ShapeDtypeStruct`` (with ``sharding``) or concrete arrays giving the tree
        structure, dtypes and shardings to restore into; None restores as saved (same device layout).

    Raises:
      FileNotFoundError: no (complete) checkpoint for ``step``.
      CheckpointError: the files cannot be read or do not match ``target``; names the path.
    """
    self.wait()
    steps = self.all_steps()
    if step is None:
      if not steps:
        raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
      step = steps[-1]
    step = int(step)
    if step not in steps:
      raise FileNotFoundError(f"no complete checkpoint for step {step} in {self.directory}; available steps: {steps}")
    path = self.step_path(step)
    if target is not None:
      target = jax.tree.map(_as_abstract, target)
    args = ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(target), _META: ocp.args.JsonRestore()})
    try:
      restored = self._manager.restore(step, args=args)
    except Exception as e:  # orbax / tensorstore raise many types; give one clear error
      first_line = str(e).strip().splitlines()[0][:500] if str(e).strip() else ""
      raise CheckpointError(
        f"could not restore checkpoint {path}: {type(e).__name__}: {first_line} -- the files are corrupt "
        f"or incomplete, or `target` does not match the saved tree"
      ) from e
    meta = restored[_META]
    if not isinstance(meta, dict):
      raise CheckpointError(f"checkpoint {path / _META} does not hold a JSON object (got {type(meta).__name__})")
    return restored[_STATE], meta

  def close(self) -> None:
    """Waits for saves and releases orbax resources."""
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> "CheckpointManager":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _as_abstract(x: Any) -> Any:
  """jax.Arrays -> ShapeDtypeStruct with their sharding; other leaves (numpy, abstract) pass through."""
  if isinstance(x, jax.ShapeDtypeStruct):
    return x
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  return x
