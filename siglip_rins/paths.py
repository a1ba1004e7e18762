"""The one path layer for the files of a run (etils.epath: local paths, gs://, s3://, ...).

Every file a training run writes or reads in its workdir -- config.json, run_info.json, metrics.jsonl, the eval
reports, the checkpoints, the workdir lock, exported models -- goes through these helpers, so
``--workdir gs://bucket/run`` keeps the whole run in the bucket.  Local paths are made absolute once
(:func:`workdir_path`), so a relative ``--workdir`` means the same folder to every component (orbax refuses
relative paths).

What stays local on purpose: config .py files (loaded as Python modules) and the built-in datasets.
TensorBoard event files are written by siglip_rins.tb_events through these helpers, not by TensorFlow.

The workdir lock (:class:`WorkdirLock`) is a JSON file ``<workdir>/trainer.lock`` naming its holder (host,
pid, process start time, heartbeat).  A second trainer on the same workdir is refused with one line naming
the holder; a lock whose holder is gone is taken over: on the same host when the pid is no longer alive (or
now belongs to another process), elsewhere when its heartbeat (refreshed by a daemon thread every
``LOCK_HEARTBEAT_S``) is older than ``LOCK_STALE_S``.  On a local file system the lock is created with
O_EXCL and a stale one is renamed away before the take-over, so two racing trainers cannot both win; on an
object store epath offers no create-if-absent, so the lock there is best effort (write, then read back the
token).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
import uuid
from typing import Optional

from etils import epath

LOCK_NAME = "trainer.lock"
LOCK_HEARTBEAT_S = float(os.environ.get("SIGLIP_RINS_LOCK_HEARTBEAT_S", 30))
LOCK_STALE_S = float(os.environ.get("SIGLIP_RINS_LOCK_STALE_S", 300))

__all__ = [
  "Path",
  "workdir_path",
  "is_local",
  "makedirs",
  "read_text",
  "write_text",
  "append_text",
  "append_bytes",
  "read_bytes",
  "write_bytes",
  "exists",
  "WorkdirLock",
  "WorkdirLocked",
]

Path = epath.Path


def is_uri(path) -> bool:
  return "://" in os.fspath(path)


def workdir_path(workdir) -> epath.Path:
  """The run folder as an ``epath.Path``: URIs as given, local paths absolute (``~`` expanded)."""
  text = os.fspath(workdir)
  if not text:
    raise ValueError("the workdir is empty; give a folder (local path or gs://...)")
  if is_uri(text):
    return epath.Path(text)
  return epath.Path(os.path.abspath(os.path.expanduser(text)))


def is_local(path) -> bool:
  return not is_uri(path)


def makedirs(path) -> epath.Path:
  path = epath.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  return path


def exists(path) -> bool:
  return epath.Path(path).exists()


def read_text(path) -> str:
  return epath.Path(path).read_text(encoding="utf-8")


def write_text(path, text: str, atomic: bool = True) -> None:
  """Writes ``text``; with ``atomic`` through a temporary sibling renamed over the target (on object stores
  a single object write is atomic already)."""
  write_bytes(path, text.encode("utf-8"), atomic=atomic)


def append_text(path, text: str) -> None:
  """Appends ``text``: a real append locally; object stores have none, so the object is rewritten."""
  append_bytes(path, text.encode("utf-8"))


def append_bytes(path, data: bytes) -> None:
  """Appends ``data``: a real append locally; object stores have none, so the object is rewritten."""
  path = epath.Path(path)
  if is_local(path):
    with path.open("ab") as f:
      f.write(data)
    return
  old = path.read_bytes() if path.exists() else b""
  path.write_bytes(old + data)


def read_bytes(path) -> bytes:
  return epath.Path(path).read_bytes()


def write_bytes(path, data: bytes, atomic: bool = True) -> None:
  """Writes ``data``; with ``atomic`` through a temporary sibling renamed over the target (on object stores
  a single object write is atomic already)."""
  path = epath.Path(path)
  if not atomic or not is_local(path):
    path.write_bytes(data)
    return
  tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
  try:
    tmp.write_bytes(data)
    tmp.replace(path)
  finally:
    if tmp.exists():
      tmp.unlink()


def free_bytes(path) -> Optional[int]:
  """Free bytes on the local file system holding `path` (its nearest existing parent); None for URIs."""
  if not is_local(path):
    return None
  p = os.fspath(path)
  while p and not os.path.exists(p):
    parent = os.path.dirname(p)
    if parent == p:
      break
    p = parent
  try:
    st = os.statvfs(p)
  except OSError:
    return None
  return st.f_bavail * st.f_frsize


# --------------------------------------------------------------------------------------------- lock
class WorkdirLocked(RuntimeError):
  """Another live trainer holds the workdir."""


def _proc_start_time(pid: int) -> Optional[str]:
  try:
    with open(f"/proc/{pid}/stat") as f:  # local: describes this machine's processes
      return f.read().rsplit(")", 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class WorkdirLock:
  """``<workdir>/trainer.lock``: acquire() or raise WorkdirLocked naming the holder; release() on exit."""

  def __init__(self, workdir):
    self.path = workdir_path(workdir) / LOCK_NAME
    self.token = uuid.uuid4().hex
    self.info = {
      "host": socket.gethostname(),
      "pid": os.getpid(),
      "proc_start": _proc_start_time(os.getpid()),
      "token": self.token,
      "started": time.time(),
    }
    self._stop = threading.Event()
    self._thread = None
    self.recovered_from = None

  # ------------------------------------------------------------------------------------------- holder
  def _read(self) -> Optional[dict]:
    try:
      return json.loads(self.path.read_text())
    except FileNotFoundError:
      return None
    except (OSError, ValueError):
      return {}

  def _is_stale(self, holder: dict) -> bool:
    if not holder:  # unreadable / half-written: stale once old enough
      try:
        return time.time() - self.path.stat().mtime > LOCK_STALE_S
      except OSError:
        return True
    if holder.get("host") == self.info["host"]:
      pid = int(holder.get("pid", -1))
      if not _pid_alive(pid):
        return True
      start = holder.get("proc_start")
      return start is not None and _proc_start_time(pid) not in (None, start)
    return time.time() - float(holder.get("heartbeat", holder.get("started", 0))) > LOCK_STALE_S

  @staticmethod
  def describe(holder: Optional[dict]) -> str:
    if not holder:
      return "an unknown holder (unreadable lock file)"
    age = time.time() - float(holder.get("heartbeat", holder.get("started", time.time())))
    return f"host {holder.get('host')!r} pid {holder.get('pid')} (heartbeat {age:.0f} s ago)"

  # ---------------------------------------------------------------------------------------- acquire
  def _payload(self) -> str:
    return json.dumps(dict(self.info, heartbeat=time.time()))

  def _create_exclusive(self) -> bool:
    if is_local(self.path):
      try:
        fd = os.open(os.fspath(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        return False
      try:
        with os.fdopen(fd, "w") as f:
          f.write(self._payload())
      except OSError:
        os.unlink(os.fspath(self.path))  # no half-written lock left behind (e.g. disk full)
        raise
      return True
    if self.path.exists():
      return False
    self.path.write_text(self._payload())
    time.sleep(0.5)  # best effort on object stores: let a racing writer land, then check who won
    holder = self._read() or {}
    return holder.get("token") == self.token

  def acquire(self) -> "WorkdirLock":
    try:
      return self._acquire()
    except OSError as e:
      if isinstance(e, WorkdirLocked) or e.errno is None:
        raise
      if e.errno == errno.ENOSPC:
        raise OSError(errno.ENOSPC, f"no space left on the device for the workdir lock {self.path}") from None
      raise OSError(e.errno, f"cannot write the workdir lock {self.path}: {e.strerror}") from None

  def _acquire(self) -> "WorkdirLock":
    self.path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
      if self._create_exclusive():
        self._start_heartbeat()
        return self
      holder = self._read()
      if holder is None:  # released meanwhile
        continue
      if not self._is_stale(holder):
        raise WorkdirLocked(
          f"workdir {self.path.parent} is in use by a running trainer: {self.describe(holder)}; lock file "
          f"{self.path} (stop that trainer, or delete the lock file if it is certainly gone)"
        )
      self.recovered_from = holder
      aside = self.path.parent / f".{LOCK_NAME}.stale-{self.token[:8]}"
      try:
        self.path.rename(aside)  # atomic locally: of two recoverers only one moves it
      except (FileNotFoundError, OSError):
        continue
      try:
        aside.unlink()
      except OSError:
        pass
    raise WorkdirLocked(f"could not take the lock {self.path} (it keeps changing hands)")

  def _start_heartbeat(self) -> None:
    def beat():
      while not self._stop.wait(LOCK_HEARTBEAT_S):
        try:
          holder = self._read() or {}
          if holder.get("token") == self.token:
            self.path.write_text(self._payload())
        except Exception:  # a missed heartbeat is harmless; the next one retries
          pass

    self._thread = threading.Thread(target=beat, name="workdir-lock-heartbeat", daemon=True)
    self._thread.start()

  def release(self) -> None:
    self._stop.set()
    try:
      holder = self._read() or {}
      if holder.get("token") == self.token:
        self.path.unlink()
    except OSError:
      pass

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
