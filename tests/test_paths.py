"""The path layer: a whole run in a non-local workdir (an in-memory fsspec filesystem registered as s3:// for the
test, so no network is needed), and a source scan that keeps run files off plain `open`/`os`/`pathlib`."""

import ast
import json
import os

import pytest

from siglip_rins import paths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Modules whose run files must go through siglip_rins.paths, and the calls that would bypass it.
SCANNED = ["siglip_rins/train.py", "siglip_rins/checkpoint.py", "evaluators/report.py"]
BANNED_NAMES = {"open"}
BANNED_MODULES = {"os", "os.path", "pathlib", "shutil", "tempfile", "io", "glob"}
OS_ALLOWED = {"PathLike", "fspath", "environ", "getpid", "getenv", "strerror"}  # not file access
ALLOW = {}  # {(file, line text fragment)} for genuinely local files; none are needed today


def _dotted(node):
  parts = []
  while isinstance(node, ast.Attribute):
    parts.append(node.attr)
    node = node.value
  if isinstance(node, ast.Name):
    parts.append(node.id)
    return ".".join(reversed(parts))
  return None


def test_run_files_only_through_the_path_layer():
  problems = []
  for rel in SCANNED:
    source = open(os.path.join(ROOT, rel)).read()
    tree = ast.parse(source)
    for node in ast.walk(tree):
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        for name in names:
          if name in ("pathlib", "shutil", "tempfile", "glob", "io"):
            problems.append(f"{rel}:{node.lineno}: imports {name}")
      if isinstance(node, ast.Call):
        name = _dotted(node.func)
        if name in BANNED_NAMES:
          problems.append(f"{rel}:{node.lineno}: calls {name}()")
        elif name and "." in name:
          module, attr = name.rsplit(".", 1)
          if module in BANNED_MODULES and not (module == "os" and attr in OS_ALLOWED):
            problems.append(f"{rel}:{node.lineno}: calls {name}()")
      if isinstance(node, ast.Attribute) and _dotted(node) and _dotted(node).startswith("os.path."):
        problems.append(f"{rel}:{node.lineno}: uses {_dotted(node)}")
  problems = [p for p in problems if not any(p.startswith(f) for f in ALLOW)]
  assert not problems, "run files must go through siglip_rins.paths:\n" + "\n".join(sorted(set(problems)))


@pytest.fixture
def memory_s3(monkeypatch):
  """s3:// served by fsspec's in-memory filesystem inside this process (epath's fsspec backend)."""
  import fsspec
  from etils.epath import gpath
  from fsspec.implementations.memory import MemoryFileSystem

  class FakeS3(MemoryFileSystem):
    protocol = ("s3", "s3a")
    store = {}
    pseudo_dirs = [""]

  fsspec.register_implementation("s3", FakeS3, clobber=True)
  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)  # TF's gfile would want real S3
  from etils.epath import backend

  backend.fsspec_backend._get_filesystem.cache_clear()
  yield FakeS3()
  backend.fsspec_backend._get_filesystem.cache_clear()
  FakeS3.store.clear()


def test_helpers_on_a_non_local_filesystem(memory_s3):
  root = paths.workdir_path("s3://bucket/run")
  assert str(root) == "s3://bucket/run" and not paths.is_local(root)
  paths.makedirs(root)
  paths.write_text(root / "a.json", "1")
  paths.append_text(root / "m.jsonl", "x\n")
  paths.append_text(root / "m.jsonl", "y\n")
  assert paths.read_text(root / "a.json") == "1" and paths.read_text(root / "m.jsonl") == "x\ny\n"
  with paths.WorkdirLock("s3://bucket/run") as lock:
    assert json.loads(paths.read_text(root / paths.LOCK_NAME))["token"] == lock.token
    with pytest.raises(paths.WorkdirLocked):
      paths.WorkdirLock("s3://bucket/run").acquire()
  assert not paths.exists(root / paths.LOCK_NAME)
  assert paths.workdir_path("rel/dir") == paths.Path(os.path.abspath("rel/dir"))


@pytest.mark.slow
def test_a_run_in_a_non_local_workdir_keeps_its_files_there(memory_s3, tmp_path):
  """train() with workdir s3://...: config, run info, metrics, eval reports and the lock live in the bucket.
  Checkpoints go to a local `checkpoint_dir` here only because orbax writes arrays with tensorstore, whose own
  s3/gcs drivers cannot see a filesystem registered with fsspec in this process (on a real bucket they can)."""
  from siglip_rins import config_lib
  from siglip_rins.train import train

  config = config_lib.load_config(os.path.join(ROOT, "configs", "siglip_rins.py:runlocal,steps=6"))
  config_lib.apply_overrides(config, ["tensorboard=False", "log_every=3"])
  config.checkpoint_dir = str(tmp_path / "ckpt")
  summary = train(config, "s3://bucket/run", verbose=False)
  assert summary["stopped"] == "finished"
  files = {k.rsplit("/", 1)[-1] for k in memory_s3.store if k.startswith("s3://bucket/run/")}
  assert {"config.json", "run_info.json", "metrics.jsonl", "eval_results.json", "eval_report.md"} <= files, files
  assert paths.LOCK_NAME not in files  # released
  rows = [
    json.loads(line) for line in memory_s3.store["s3://bucket/run/metrics.jsonl"].getvalue().decode().splitlines()
  ]
  assert [r["step"] for r in rows if "train/loss" in r] == [3, 6]
  assert not os.path.exists("s3:") and not os.path.exists(os.path.join(os.getcwd(), "s3:"))
  assert (tmp_path / "ckpt" / "6").is_dir()
