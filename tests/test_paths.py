"""The path layer: a whole run in a non-local workdir (an in-memory fsspec filesystem registered as s3:// for the
test, so no network is needed), and a source scan that keeps run files off plain `open`/`os`/`pathlib`."""

import ast
import json
import os
import sys

import numpy as np
import pytest

from siglip_rins import paths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Modules whose run files must go through siglip_rins.paths, and the calls that would bypass it.
SCANNED = [
  "siglip_rins/train.py",
  "siglip_rins/checkpoint.py",
  "evaluators/report.py",
  "siglip_rins/tb_events.py",  # TensorBoard event files
  "siglip_rins/export.py",  # exported models: write, read
  "siglip_rins/exported_format.py",
  "siglip_rins/interop/hf.py",  # export-hf writer
]
BANNED_NAMES = {"open"}
BANNED_MODULES = {"os", "os.path", "pathlib", "shutil", "tempfile", "io", "glob"}
OS_ALLOWED = {"PathLike", "fspath", "environ", "getpid", "getenv", "strerror"}  # not file access
# (file, fragment of the offending line) for genuinely local files: images named on the classify/retrieve command
# line (read by image_io), and transformers' save_pretrained, which writes only local files (staged, then copied
# through the path layer).
ALLOW = {
  ("siglip_rins/export.py", "import pathlib"),
  ("siglip_rins/export.py", "pathlib.Path(p) for p in image_paths"),
  ("siglip_rins/interop/hf.py", "import tempfile"),
  ("siglip_rins/interop/hf.py", "tempfile.TemporaryDirectory()"),
  ("siglip_rins/interop/hf.py", "os.listdir(staging)"),
}


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
          if name in ("pathlib", "shutil", "tempfile", "glob"):
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

  def allowed(problem):
    rel, lineno = problem.split(":")[:2]
    return any(rel == f and fragment in lines_of[rel][int(lineno) - 1] for f, fragment in ALLOW)

  lines_of = {rel: open(os.path.join(ROOT, rel)).read().splitlines() for rel in SCANNED}
  problems = [p for p in problems if not allowed(p)]
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
  config_lib.apply_overrides(config, ["tensorboard=True", "log_every=3"])
  config.checkpoint_dir = str(tmp_path / "ckpt")
  summary = train(config, "s3://bucket/run", verbose=False)
  assert summary["stopped"] == "finished"
  files = {k.rsplit("/", 1)[-1] for k in memory_s3.store if k.startswith("s3://bucket/run/")}
  assert {"config.json", "run_info.json", "metrics.jsonl", "eval_results.json", "eval_report.md"} <= files, files
  assert paths.LOCK_NAME not in files  # released
  events = [k for k in memory_s3.store if k.startswith("s3://bucket/run/tb/events.out.tfevents.")]
  assert len(events) == 1, sorted(memory_s3.store)
  from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
  from tensorboard.compat.proto import event_pb2

  local_copy = tmp_path / "events"
  local_copy.write_bytes(memory_s3.store[events[0]].getvalue())
  tags = {}
  for raw in RawEventFileLoader(str(local_copy)).Load():
    for v in event_pb2.Event.FromString(raw).summary.value:
      tags.setdefault(v.tag, []).append(v.simple_value)
  assert len(tags["train/loss"]) == 2 and all(np.isfinite(tags["train/loss"]))
  rows = [
    json.loads(line) for line in memory_s3.store["s3://bucket/run/metrics.jsonl"].getvalue().decode().splitlines()
  ]
  assert [r["step"] for r in rows if "train/loss" in r] == [3, 6]
  assert not os.path.exists("s3:") and not os.path.exists(os.path.join(os.getcwd(), "s3:"))
  assert (tmp_path / "ckpt" / "6").is_dir()


def test_exported_model_written_to_and_loaded_from_a_non_local_folder(memory_s3):
  """export_params / load_exported / export-hf's reader through the path layer: nothing local is needed."""
  from siglip_rins import export
  from siglip_rins.interop import hf
  from siglip_rins.models import build_model

  sys.path.insert(0, os.path.dirname(__file__))
  from test_export import IMAGE_SIZE, RINS_CFG, TEXT_LEN, random_params

  params = random_params(build_model(RINS_CFG), IMAGE_SIZE, TEXT_LEN)
  out = export.export_params(params, RINS_CFG, "s3://bucket/model", tokenizer="demo")
  assert str(out) == "s3://bucket/model"
  files = {k.rsplit("/", 1)[-1] for k in memory_s3.store if k.startswith("s3://bucket/model/")}
  assert {"config.json", "params.safetensors", "tokenizer.model"} <= files, files
  assert not os.path.exists("s3:")
  model = export.load_exported("s3://bucket/model")
  emb = model.encode_texts(["a red square"])
  assert emb.shape == (1, 32) and np.isfinite(emb).all()
  config, flat, proto, spec = hf.read_exported("s3://bucket/model")
  assert proto and set(flat) >= {"t", "b"} and spec.text.max_len == TEXT_LEN
