"""siglip_rins.host_memory: XLA:CPU's per-call buffers come from memory the process holds (no page faults per
call), as every `siglip-rins` command, benchmark and this test session run it; one error line for a bad mode."""

import json
import os
import subprocess
import sys

import pytest

from siglip_rins import host_memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A jitted program whose output (128 MB) is allocated anew by every call, then dropped; minor page faults of each
# of 7 calls after 2 warm-up calls, median.
PROBE = r"""
import json, resource
from siglip_rins import host_memory
status = host_memory.configure()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.sin(x) * 2.0 + jnp.cos(x)[::-1])
x = jnp.ones((32 * 2**20,), jnp.float32)
for _ in range(2):
  f(x).block_until_ready()
per_call = []
for _ in range(7):
  r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x).block_until_ready()
  per_call.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
# The median call: a call that meets a heap still growing (a previous output not yet freed, on a busy machine)
# faults its pages in once; the claim is about the calls of a running program, not that one.
print(json.dumps({"status": status, "faults_per_call": sorted(per_call)[3], "per_call": per_call}))
"""


def _python(code: str, mode: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
  env[host_memory.ENV] = mode
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def _glibc() -> bool:
  return host_memory._glibc() is not None


def test_this_session_runs_as_the_command_line_does():
  st = host_memory.status()
  assert st is not None and st["mode"] == "reuse", st
  assert st["cpu_dispatch"] == "sync", st
  if _glibc():
    assert st["malloc"].startswith("glibc ") and "mmap_max=0" in st["malloc"], st


@pytest.mark.skipif(not _glibc(), reason="the heap setting is glibc's (mallopt)")
def test_reuse_stops_the_page_faults_of_every_call():
  runs = {}
  for mode in ("system", "reuse"):
    r = _python(PROBE, mode)
    assert r.returncode == 0, r.stderr[-2000:]
    runs[mode] = json.loads(r.stdout.strip().splitlines()[-1])
  assert runs["system"]["status"] == {"mode": "system", "malloc": "unchanged", "cpu_dispatch": "unchanged"}
  assert runs["reuse"]["status"]["cpu_dispatch"] == "sync"
  # system defaults: the 128 MB output is mmap-ed per call, one fault per 4 KiB page (~32,768)
  assert runs["system"]["faults_per_call"] > 16_000, runs
  assert runs["reuse"]["faults_per_call"] < 0.02 * runs["system"]["faults_per_call"], runs


def test_after_jax_started_the_dispatch_is_left_and_said_so():
  code = (
    "import json, jax, jax.numpy as jnp\n"
    "jnp.ones(2).block_until_ready()\n"
    "from siglip_rins import host_memory\n"
    "print(json.dumps(host_memory.configure()))\n"
  )
  r = _python(code, "reuse")
  assert r.returncode == 0, r.stderr[-2000:]
  st = json.loads(r.stdout.strip().splitlines()[-1])
  assert st["mode"] == "reuse" and st["cpu_dispatch"].startswith("unchanged"), st


@pytest.mark.parametrize("entry", ["siglip_rins.cli", "siglip_rins.train"])
def test_a_bad_mode_is_one_error_line_from_the_command_line(entry):
  r = _python(f"import sys; from {entry} import main; sys.exit(main(['--help']))", "fast")
  assert r.returncode == 1
  lines = [l for l in r.stderr.splitlines() if l.strip()]
  assert lines == [f"error: {host_memory.ENV}='fast' is not a host memory mode; allowed: reuse, system"], r.stderr
