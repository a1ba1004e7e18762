"""siglip_rins.compile_cache: where the commands' persistent compilation cache goes, how it is turned off, and
that an unusable folder costs one warning line, not the command (the user path is in test_loop_cli.py)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = (
  "import json, jax; from siglip_rins import compile_cache as c; s = c.configure(); "
  "print(json.dumps([s, jax.config.jax_compilation_cache_dir, jax.config.jax_compilation_cache_max_size]))"
)


def _probe(tmp_path, **env_over):
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))}
  env.update(XDG_CACHE_HOME=str(tmp_path / "xdg"), JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, **env_over)
  out = subprocess.run(
    [sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
  )
  assert out.returncode == 0, out.stderr[-2000:]
  status, folder, max_size = json.loads(out.stdout.splitlines()[-1])
  return status, folder, max_size, out.stderr


def test_default_folder_custom_folder_off_and_unusable(tmp_path):
  from siglip_rins import compile_cache

  status, folder, max_size, _ = _probe(tmp_path)
  default = str(tmp_path / "xdg" / "siglip_rins" / "xla")
  assert status == {"state": "on", "dir": default, "why": "default"} and folder == default
  assert os.path.isdir(default) and max_size == compile_cache.MAX_BYTES  # bounded: JAX evicts the oldest

  status, folder, _, _ = _probe(tmp_path, SIGLIP_RINS_COMPILE_CACHE="mine")  # relative: made absolute
  assert status["state"] == "on" and folder == str(tmp_path / "mine")

  status, folder, _, _ = _probe(tmp_path, SIGLIP_RINS_COMPILE_CACHE="off")
  assert status["state"] == "off" and not folder

  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  status, folder, _, stderr = _probe(tmp_path, SIGLIP_RINS_COMPILE_CACHE=str(blocker / "cache"))
  warnings = [line for line in stderr.splitlines() if line.startswith("warning: compilation cache off")]
  assert status["state"] == "off" and not folder
  assert len(warnings) == 1 and str(blocker / "cache") in warnings[0], stderr[-2000:]

  status, folder, _, _ = _probe(tmp_path, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_own"))  # left alone
  assert status["state"] == "jax" and folder == str(tmp_path / "jax_own")
