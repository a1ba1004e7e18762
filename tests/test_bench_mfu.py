"""`python -m benchmarks.bench_mfu --size small` runs (on two virtual CPU devices, data parallel over the trainer's
mesh) and reports an MFU, so the GPU/TPU command cannot rot.  Speed itself is not asserted."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_mfu_small_runs_data_parallel(tmp_path):
  out = tmp_path / "mfu.json"
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
  cmd = [sys.executable, "-m", "benchmarks.bench_mfu", "--size", "small", "--steps", "1", "--matmul_n", "128"]
  proc = subprocess.run(cmd + ["--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  r = json.loads(out.read_text())
  assert r["devices"] == 2 and r["mesh"] == {"data": 2, "fsdp": 1}
  assert (r["precision"], r["attention"], r["loop"], r["remat"]) == ("bfloat16_act", "fused", "unroll", False)
  assert r["signature"] == "A^3B" and r["init"] == "host"
  assert r["batch"] == 16 and r["finite"]
  assert r["flops_per_step"] > 0 and r["bf16_matmul_peak_tflop_per_s"] > 0 and 0 < r["mfu"]
  assert r["context_start"]["date_utc"] and "load_avg" in r["context_end"]


def test_bench_mfu_variant_flags_reach_the_model(tmp_path):
  """--precision/--attention/--loop/--remat (the GPU sweep's axes) build the model they name."""
  out = tmp_path / "mfu.json"
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "benchmarks.bench_mfu", "--size", "small", "--steps", "1", "--matmul_n", "128"]
  cmd += ["--precision", "bfloat16", "--attention", "einsum", "--loop", "auto", "--remat", "default"]
  cmd += ["--init", "device"]
  proc = subprocess.run(cmd + ["--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  r = json.loads(out.read_text())
  assert (r["precision"], r["attention"], r["loop"], r["remat"]) == ("bfloat16", "einsum", "auto", None)
  assert r["init"] == "device"
  assert r["finite"] and r["mfu"] > 0
  assert r["cudnn_fused_attention_calls"] == 0  # a CPU runs XLA's attention
  assert "compiled" in proc.stderr  # progress lines, so a run cut short says where its time went
