"""Helpers shared by this folder's benchmarks: the bench config, the real training step, timing, JSON output.

The bench config (performance issue): batch 64, float32, Adam lr 1e-3, sigmoid loss with learnable t and b;
image tower 64x64x3, patch 8 (64 tokens), width 256, depth 6, 4 heads, MLP 1024, learned positions, MAP pooling,
no image head; text tower vocab 32000, 16 tokens, width 256, depth 6, 4 heads, MLP 1024, last-token pooling,
linear 256->256 head.  18,595,330 parameters; 154.4 GFLOP per AB training step (analytic, siglip_rins.flops).

Timing convention: every timed call ends with `jax.block_until_ready`; figures are medians over several calls
after warm-up, and ratios are taken between figures measured in the same process (machines are shared/noisy).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Any, Callable, Optional, Sequence

BENCH_IMAGE = 64
BENCH_TEXT_LEN = 16
BENCH_BATCH = 64
BENCH_PARAMS = 18_595_330


def bench_model_config(
  signature: str = "AB",
  loop: str = "scan",
  remat: bool = False,
  model: str = "bench",
  dtype: str = "float32",
  kv_sharing: bool = False,
) -> dict:
  """The siglip_rins model config of the bench config (model='bench') or a full-size one (model='B/16' etc.).

  For model='bench': image 'bench/8' (width 256, depth 6, 4 heads, MLP 1024) with MAP pooling and no head; text
  'bench' with vocab 32000 and a 256->256 head.  For a ViT variant like 'B/16': image '<variant>' with MAP
  pooling, text '<width name>' with a head to the image width (SigLIP-style).
  """
  rec = dict(signature=signature, loop=loop, remat=remat, kv_sharing=kv_sharing)
  if model == "bench":
    return dict(
      name="two_towers",
      image=dict(variant="bench/8", pool_type="map"),
      text=dict(variant="bench", vocab_size=32000),
      out_dim=(None, 256),
      recursion=rec,
      dtype=dtype,
    )
  from siglip_rins.models.vit import decode_variant

  width = decode_variant(model)["width"]
  return dict(
    name="two_towers",
    image=dict(variant=model, pool_type="map"),
    text=dict(variant=model.split("/")[0], vocab_size=32000),
    out_dim=(None, width),
    recursion=rec,
    dtype=dtype,
  )


def image_size_of(model: str) -> int:
  """Input resolution used for a model name: 64 for the bench config, 224 otherwise."""
  return BENCH_IMAGE if model == "bench" else 224


def text_len_of(model: str) -> int:
  return BENCH_TEXT_LEN if model == "bench" else 64


def train_config(model_cfg: dict, batch: int, image_size: int, text_len: int, lr: float = 1e-3):
  """A complete training ConfigDict (Adam, constant lr, no weight decay, sigmoid loss) around `model_cfg`."""
  import ml_collections

  return ml_collections.ConfigDict(
    dict(
      model=model_cfg,
      # The example spec (siglip_rins.example_spec) is read from the training pp; a tokenizer that is not on
      # this machine is accepted for shape-only uses when the model gives vocab_size (random tokens here).
      input=dict(
        batch_size=batch,
        pp=f'decode|resize({image_size})|value_range(-1, 1)|tokenize(max_len={text_len}, model="bench.model", '
        'eos="sticky", pad_value=1, inkey="texts", outkey="labels")|keep("image", "labels")',
      ),
      task=dict(name="contrastive", loss="sigmoid"),
      total_steps=1000,
      lr=lr,
      wd=0.0,
      schedule=dict(decay_type="constant"),
      seed=0,
    )
  )


class TrainSetup:
  """The project's real training step for a config: build_model + ContrastiveTask + make_optimizer +
  make_train_step, jitted with the state donated, plus a fixed random batch.

  Attributes: model, task, tx, step (jitted step(state, batch) -> (state, metrics)), state, batch,
  flops_per_step (analytic training FLOPs of one step), params (count).
  """

  def __init__(
    self,
    model_cfg: dict,
    batch: int = BENCH_BATCH,
    image_size: int = BENCH_IMAGE,
    text_len: int = BENCH_TEXT_LEN,
    lr: float = 1e-3,
    seed: int = 0,
  ):
    import jax
    import numpy as np
    from siglip_rins import flops, optim, sharding, train
    from siglip_rins.models import build_model
    from siglip_rins.tasks import get_task

    config = train_config(model_cfg, batch, image_size, text_len, lr)
    self.config = config
    self.model = build_model(config.model)
    self.task = get_task(config)
    self.tx, self.schedule_fn = optim.make_optimizer(config, config.total_steps, batch_size=batch)
    step = train.make_train_step(self.model, self.task, self.tx, self.schedule_fn, seed)
    self.step = jax.jit(step, donate_argnums=(0,))
    mesh = sharding.make_mesh(None)
    self.state = train.init_state(self.model, self.task, self.tx, mesh, config, jax.random.PRNGKey(seed))
    rng = np.random.default_rng(seed)
    self.batch = {
      "image": rng.uniform(-1, 1, (batch, image_size, image_size, 3)).astype(np.float32),
      "labels": rng.integers(0, 32000, (batch, text_len)).astype(np.int32),
    }
    self.batch = jax.device_put(self.batch)
    self.flops_per_step = flops.train_flops_per_example(self.model, self.task.input_shapes()) * batch
    self.params = int(sum(x.size for x in jax.tree.leaves(self.state["params"])))
    self.compile_s: Optional[float] = None

  def lowered(self):
    return self.step.lower(self.state, self.batch)

  def compile(self) -> float:
    """Compiles and runs one step (warm-up); returns the seconds of the first call (compile + one step)."""
    import jax

    t0 = time.perf_counter()
    self.state, m = self.step(self.state, self.batch)
    jax.block_until_ready(m["loss"])
    self.compile_s = time.perf_counter() - t0
    return self.compile_s

  def run_one(self):
    """Runs one step (not blocked); returns its metrics (block on them to time the step)."""
    self.state, m = self.step(self.state, self.batch)
    self.last_metrics = m
    return m

  def run(self, n: int = 1) -> list[float]:
    """Runs n steps; returns the seconds of each (each blocked until ready)."""
    import jax

    out = []
    for _ in range(n):
      t0 = time.perf_counter()
      self.state, m = self.step(self.state, self.batch)
      jax.block_until_ready(m["loss"])
      out.append(time.perf_counter() - t0)
    self.last_metrics = m
    return out


def time_calls(fn: Callable[[], Any], warmup: int = 1, repeats: int = 5) -> list[float]:
  """Calls fn() `warmup` times untimed, then `repeats` times; returns seconds per call (blocked on results)."""
  import jax

  for _ in range(warmup):
    jax.block_until_ready(fn())
  out = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    out.append(time.perf_counter() - t0)
  return out


def compile_seconds(jitted: Callable, *args, **kwargs) -> tuple[Any, float]:
  """Times tracing + lowering + XLA compilation of a `jax.jit` function for these arguments.
  Returns (compiled, seconds); call `compiled(*args)` to run without recompiling."""
  t0 = time.perf_counter()
  compiled = jitted.lower(*args, **kwargs).compile()
  return compiled, time.perf_counter() - t0


def median(xs: Sequence[float]) -> float:
  return float(statistics.median(xs))


def matmul_flops(dtype: str = "float32", n: int = 2048, repeats: int = 7) -> dict:
  """Jitted n^3 matmul FLOP/s (2 n^3 FLOPs per call): 'float32' or 'bfloat16' (bf16 inputs, f32 accumulation).

  Returns dict(dtype, n, median_s, flops_per_s (from the median), best_flops_per_s).
  """
  import jax
  import jax.numpy as jnp

  dt = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
  ka, kb = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.normal(ka, (n, n), jnp.float32).astype(dt)
  b = jax.random.normal(kb, (n, n), jnp.float32).astype(dt)
  f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
  times = time_calls(lambda: f(a, b), warmup=2, repeats=repeats)
  fl = 2.0 * n**3
  return dict(
    dtype=dtype, n=n, median_s=median(times), flops_per_s=fl / median(times), best_flops_per_s=fl / min(times)
  )


def cpu_load() -> Optional[list[float]]:
  """1/5/15-minute load averages (contention indicator), or None where unavailable."""
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return None


def emit(result: dict, out: Optional[str]) -> dict:
  """Prints `result` as one JSON line and writes it (indented) to `out` when given."""
  result = dict(result, load_avg_end=cpu_load())
  print(json.dumps(result))
  if out:
    with open(out, "w") as f:
      json.dump(result, f, indent=1)
  return result


# ----------------------------------------------------------------------------- interleaved worker processes
def serve(handlers: dict[str, Callable[..., dict]]) -> None:
  """Worker side of `Worker`: prints {"ready": true}, then answers one JSON request per stdin line
  ({"cmd": name, **kwargs} -> handlers[name](**kwargs), printed as one JSON line) until {"cmd": "quit"}.
  Anything else the worker prints must go to stderr."""
  import sys

  out = sys.stdout
  sys.stdout = sys.stderr  # keep library prints off the protocol channel
  out.write(json.dumps({"ready": True}) + "\n")
  out.flush()
  for line in sys.stdin:
    req = json.loads(line)
    cmd = req.pop("cmd")
    if cmd == "quit":
      break
    try:
      reply = handlers[cmd](**req)
    except Exception as e:  # reported to the driver, which raises it there
      reply = {"error": f"{type(e).__name__}: {e}"}
    out.write(json.dumps(reply) + "\n")
    out.flush()


class Worker:
  """A benchmark worker subprocess driven by JSON lines (see `serve`), so that measurements of different
  processes (other XLA flags, another framework) can be interleaved in time on a shared machine.

  Worker(argv, env=None).request(cmd, **kwargs) -> dict; close().
  """

  def __init__(self, argv: Sequence[str], env: Optional[dict] = None, timeout_s: float = 900.0):
    import subprocess

    self.argv = list(argv)
    self.proc = subprocess.Popen(
      self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, text=True, env=env, bufsize=1
    )
    first = self.proc.stdout.readline()
    if not first:
      raise RuntimeError(f"worker {self.argv} exited before it was ready (exit code {self.proc.wait()})")
    if not json.loads(first).get("ready"):
      raise RuntimeError(f"worker {self.argv} sent {first!r} instead of ready")

  def request(self, cmd: str, **kwargs) -> dict:
    self.proc.stdin.write(json.dumps(dict(cmd=cmd, **kwargs)) + "\n")
    self.proc.stdin.flush()
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f"worker {self.argv} died during {cmd!r} (exit code {self.proc.wait()})")
    reply = json.loads(line)
    if "error" in reply:
      raise RuntimeError(f"worker {self.argv} failed on {cmd!r}: {reply['error']}")
    return reply

  def close(self) -> None:
    if self.proc.poll() is None:
      try:
        self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout=30)
      except Exception:
        self.proc.kill()
        self.proc.wait()


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
  """Runs fn() once (blocking on JAX results); returns (wall seconds, process CPU seconds, all threads)."""
  import jax

  w0, c0 = time.perf_counter(), time.process_time()
  jax.block_until_ready(fn())
  return time.perf_counter() - w0, time.process_time() - c0


def maxrss_mb() -> float:
  """This process's peak resident memory (MB)."""
  import resource

  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine_info() -> dict:
  """CPU model, core count, load averages, Python and library versions (whichever are importable)."""
  import platform
  import subprocess

  info = {"python": platform.python_version(), "platform": platform.platform()}
  try:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    fields = dict(l.split(":", 1) for l in lscpu.splitlines() if ":" in l)
    info["cpu_model"] = fields.get("Model name", "").strip()
    info["cpus"] = fields.get("CPU(s)", "").strip()
    info["flags_avx512f"] = "avx512f" in fields.get("Flags", "")
  except (OSError, subprocess.SubprocessError):
    info["cpu_model"] = platform.processor()
  info["cores_available"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  info["load_avg"] = cpu_load()
  try:  # what siglip_rins.host_memory did in this process (benchmarks/__init__.py applies it)
    from siglip_rins import host_memory

    info["host_memory"] = host_memory.status()
  except ImportError:
    pass
  import importlib

  for mod in ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "open_clip"):
    try:
      info[mod] = importlib.import_module(mod).__version__
    except Exception:
      pass
  return info


def context() -> dict:
  """When and where a benchmark ran: UTC date, `uptime` output (load averages), the CPU model from
  /proc/cpuinfo and the cores this process may use.  Call at the start and at the end of a run."""
  import datetime
  import subprocess

  out = {"date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")}
  try:
    out["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    out["uptime"] = None
  out["load_avg"] = cpu_load()
  model, flags = None, []
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name") and model is None:
          model = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
          flags = line.split(":", 1)[1].split()
        if model and flags:
          break
  except OSError:
    pass
  out["cpu_model"] = model
  # the matmul units that decide what bf16 can gain: AMX tiles (Intel Sapphire Rapids+) or AVX512-BF16 dot products
  out["cpu_matmul_flags"] = sorted(f for f in flags if f.startswith("amx") or f in ("avx512_bf16", "avx512f", "avx2"))
  out["cores_available"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return out
