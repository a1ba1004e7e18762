"""benchmarks/bench_chunked_loss.py runs the way run_all runs it (`python -m`, a fresh process whose
benchmarks package has already imported JAX for the host memory setting) and still simulates its devices."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_chunked_loss_runs_as_a_module_on_simulated_devices(tmp_path):
  out = tmp_path / "cl.json"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = subprocess.run(
    [sys.executable, "-m", "benchmarks.bench_chunked_loss", "--devices", "4", "--batches", "256", "--out", str(out)],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  (row,) = json.loads(out.read_text())["rows"]
  assert row["devices"] == 4 and row["global_batch"] == 256
  # Sharding the batch over 4 devices must shrink each device's temporary memory, chunking more so.
  assert row["chunked_temp_bytes"] < row["global_sharded_temp_bytes"] < row["global_1dev_temp_bytes"]
