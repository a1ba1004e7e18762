"""Training-loop overhead: examples/s of `siglip_rins.train.train` (real input pipeline, metrics, guard, prefetch)
divided by the bare jitted step's on the same config in the same process (one fixed device batch, no input,
no metrics read back except once at the end).  Goal: >= 0.95 on the built-in data runlocal config.

Usage: python -m benchmarks.bench_loop [--config configs/siglip_rins.py:runlocal] [--steps 300] [--log_every 50]
       [--repeats 2] [--cache auto] [--out benchmarks/results_loop.json]

Everything runs in one process, interleaved: each repeat measures bare, loop (real input), loop (fixed input
batch), bare, in that order, each with the 1-minute load average before it.  The loop's rate is the median of
its logged `examples_per_sec` windows after the first (which holds the compile and, with input.cache, the
first epoch that fills the cache); the bare rate is the mean of the bare runs before and after the loops, so
slow drift of a shared machine's load hits both sides alike.  The reported ratios are medians over repeats.
`ratio` includes the real input pipeline, which on a CPU-only machine decodes on the same cores the step
computes on; `ratio_fixed_input` replaces the data iterator by one fixed host batch (still fetched, checked
and transferred by the prefetch thread every step) and so measures the loop's own overhead.  Each repeat also
times the input pipeline alone (no step) without and with input.cache (`input_alone_cache_*_ex_s`).  `--cache`
sets input.cache ('auto' by default, as the config; False measures the uncached pipeline).  Prints one JSON
object (also written to --out) with the load averages.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bare_rate(config, steps: int) -> float:
  """Examples/s of the jitted step alone: same model, optimiser, shardings and batch shapes as the loop."""
  import jax

  from siglip_rins import sharding, train
  from siglip_rins.data import pipeline

  run = train._setup_model(config)
  state = train.init_state(run.model, run.task, run.tx, run.mesh, config, jax.random.PRNGKey(0))
  it = pipeline.make_train_iterator(config.input, global_batch_size=run.global_bs)
  local = next(it)
  keep = set(run.task.batch_keys) | {"segment_ids", "positions"}
  batch = sharding.make_global_batch({k: v for k, v in local.items() if k in keep}, run.mesh)
  sh = train.state_shardings(state)
  step = jax.jit(
    train.make_train_step(run.model, run.task, run.tx, run.schedule_fn, 0),
    donate_argnums=(0,),
    in_shardings=(sh, sharding.batch_sharding(run.mesh)),
    out_shardings=(sh, None),
  )
  for _ in range(3):  # compile + warm-up
    state, m = step(state, batch)
  jax.block_until_ready(m["loss"])
  t0 = time.perf_counter()
  for _ in range(steps):
    state, m = step(state, batch)
  jax.block_until_ready((state, m))
  return steps * run.global_bs / (time.perf_counter() - t0)


def input_rate(config, cache, batches: int = 64) -> float:
  """Examples/s of the input pipeline alone (no step), with input.cache = `cache`, after a few warm-up batches
  (with the cache, it is filled when the iterator is made)."""
  from siglip_rins.data import pipeline

  config.input.cache = str(cache).lower()  # a string: the ConfigDict field is one
  it = pipeline.make_train_iterator(config.input, global_batch_size=int(config.input.batch_size))
  for _ in range(8):
    next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * int(config.input.batch_size) / (time.perf_counter() - t0)


class _FixedInput:
  """Stands in for the data iterator: the same host batch every step (no decoding), so the loop's own
  machinery -- prefetch thread, host->device transfer, metric handling -- is what is measured."""

  def __init__(self, batch):
    self.batch = batch

  def __iter__(self):
    return self

  def __next__(self):
    return dict(self.batch)

  def stats(self):
    return {}

  def position(self):
    return None


def loop_rate(config, workdir: str, fixed_input: bool = False) -> tuple[float, list]:
  from siglip_rins import train
  from siglip_rins.data import pipeline

  original = pipeline.make_train_iterator
  if fixed_input:
    first = next(original(config.input, global_batch_size=int(config.input.batch_size)))
    pipeline.make_train_iterator = lambda *a, **k: _FixedInput(first)
  try:
    train.train(config, workdir, verbose=False)
  finally:
    pipeline.make_train_iterator = original
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  rates = [r["examples_per_sec"] for r in rows if "examples_per_sec" in r][1:]
  return statistics.median(rates), rates


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default=os.path.join(ROOT, "configs", "siglip_rins.py:runlocal"))
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--log_every", type=int, default=50)
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results_loop.json"))
  p.add_argument("--cache", default="auto", choices=["auto", "True", "False"], help="input.cache")
  p.add_argument("--threadpool_size", type=int, default=None, help="input.threadpool_size (default: the config's)")
  args = p.parse_args(argv)
  sys.path.insert(0, ROOT)
  from siglip_rins import config_lib

  def config():
    c = config_lib.load_config(args.config)
    c.total_examples, c.total_steps, c.total_epochs = None, args.steps, None
    if "compute_match" in c:
      c.compute_match = None  # a fixed number of steps, not the compute-matched budget
    c.evals = {}
    config_lib.apply_overrides(c, [f"log_every={args.log_every}", "tensorboard=False", "ckpt_every=0"])
    c.input.cache = args.cache.lower()  # the config holds a string; pipeline reads "true" / "false" too
    if args.threadpool_size is not None:
      c.input.threadpool_size = args.threadpool_size
    return c

  def load():
    return round(os.getloadavg()[0], 2)

  import jax

  results = []
  load_before = os.getloadavg()
  for r in range(args.repeats):
    one = {"load_before_bare": load()}
    one["bare_before"] = bare_rate(config(), args.steps // 2)
    one["load_before_loop"] = load()
    with tempfile.TemporaryDirectory() as work:
      one["loop_ex_s"], one["windows"] = loop_rate(config(), work)
    one["load_before_loop_fixed_input"] = load()
    with tempfile.TemporaryDirectory() as work:
      one["loop_fixed_input_ex_s"], one["windows_fixed_input"] = loop_rate(config(), work, fixed_input=True)
    one["load_before_bare_after"] = load()
    one["bare_after"] = bare_rate(config(), args.steps // 2)
    one["load_after"] = load()
    one["bare_ex_s"] = (one["bare_before"] + one["bare_after"]) / 2
    for cache in (False, True):  # the input pipeline alone, without and with input.cache
      one[f"load_before_input_cache_{cache}"] = load()
      one[f"input_alone_cache_{cache}_ex_s"] = input_rate(config(), cache)
    results.append(one)
    print(
      f"repeat {r}: loop {one['loop_ex_s']:.0f} ex/s, loop with fixed input {one['loop_fixed_input_ex_s']:.0f} "
      f"ex/s, bare {one['bare_ex_s']:.0f} ex/s, ratios {one['loop_ex_s'] / one['bare_ex_s']:.3f} / "
      f"{one['loop_fixed_input_ex_s'] / one['bare_ex_s']:.3f}; input alone {one['input_alone_cache_False_ex_s']:.0f} "
      f"ex/s uncached, {one['input_alone_cache_True_ex_s']:.0f} cached (load {one['load_before_bare']}.."
      f"{one['load_after']})",
      flush=True,
    )
  ratios = [x["loop_ex_s"] / x["bare_ex_s"] for x in results]
  fixed_ratios = [x["loop_fixed_input_ex_s"] / x["bare_ex_s"] for x in results]
  out = dict(
    benchmark="bench_loop",
    config=args.config,
    steps=args.steps,
    log_every=args.log_every,
    input_cache=args.cache,
    input_threadpool_size=args.threadpool_size,
    ratio=statistics.median(ratios),
    ratios=ratios,
    ratio_fixed_input=statistics.median(fixed_ratios),
    ratios_fixed_input=fixed_ratios,
    repeats=results,
    machine=dict(cpus=os.cpu_count(), loadavg_before=load_before, loadavg_after=os.getloadavg()),
    devices=jax.device_count(),
  )
  print(json.dumps(out, indent=1))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(out, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
