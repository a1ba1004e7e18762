"""Restart cost vs how far the run was: restart-to-first-step of a built-in-data run resumed at step 10 and at
step 5,000 (goal: ratio <= 1.2), and the input part alone (iterator build + first batch).

Usage: python -m benchmarks.bench_resume [--far 5000] [--repeats 3] [--out benchmarks/results_resume.json]

How the step-5,000 checkpoint is made without training 5,000 steps on a CPU: the step-10 checkpoint's state
is saved again as step 5,000 with the input position a real run has there.  The built-in data has no bad
records, so that position is exact: example n of host 0's stream is record n mod N of epoch n div N.
Restart-to-first-step = a fresh `train(..., stop_after=1)` call (setup, restore, iterator, compile, one step),
timed in this process for both workdirs in alternating order, after dropping the process's memos of jitted
functions and filled input caches (each restart compiles and fills the cache as a new process would); medians
are reported.  For contrast, the old resume by
`start_example` (skip after decoding) is timed for the input part at a smaller distance (--skip_far steps).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(steps_total: int):
  from siglip_rins import config_lib

  c = config_lib.load_config(os.path.join(ROOT, "configs", f"siglip_rins.py:runlocal,steps={steps_total}"))
  c.evals = {}
  return config_lib.apply_overrides(c, ["tensorboard=False", "log_every=1000", "ckpt_every=10"])


def _forget() -> None:
  """Drops what this process keeps for later runs (the jitted step and initialiser, the filled input cache,
  JAX's compiled executables), so each timed restart pays what a new process pays (imports aside)."""
  import jax

  from siglip_rins import train
  from siglip_rins.data import pipeline

  train.clear_step_memo()
  pipeline.clear_cache_memo()
  jax.clear_caches()


def _first_batch_seconds(config, **kw) -> float:
  from siglip_rins.data import pipeline

  _forget()
  t0 = time.perf_counter()
  it = pipeline.make_train_iterator(config.input, global_batch_size=int(config.input.batch_size), seed=0, **kw)
  next(it)
  return time.perf_counter() - t0


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--near", type=int, default=10)
  p.add_argument("--far", type=int, default=5000)
  p.add_argument("--skip_far", type=int, default=300, help="distance (steps) for the old skip-based contrast")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results_resume.json"))
  args = p.parse_args(argv)
  sys.path.insert(0, ROOT)
  import jax

  from siglip_rins import checkpoint as ckpt_lib
  from siglip_rins.data import sources
  from siglip_rins.train import train

  load_before = os.getloadavg()
  total = 4 * args.far
  config = _config(total)
  bs = int(config.input.batch_size)
  n = sources.build_source(config.input.data).num_records
  work = tempfile.mkdtemp(prefix="bench_resume_")
  try:
    near_dir, far_dir = os.path.join(work, "near"), os.path.join(work, "far")
    train(config, near_dir, stop_after=args.near, verbose=False)
    mgr = ckpt_lib.CheckpointManager(near_dir, async_save=False)
    assert mgr.latest_step() == args.near
    state, meta = mgr.restore(args.near)
    examples = args.far * bs
    position = {"mix": examples, "components": [[examples // n, examples % n]]}
    far_mgr = ckpt_lib.CheckpointManager(far_dir, async_save=False)
    state["step"] = jax.numpy.asarray(args.far, state["step"].dtype)
    far_meta = dict(meta, step=args.far, examples_seen=examples, data_position=[position])
    far_mgr.save(args.far, state, far_meta, force=True)
    far_mgr.close()
    mgr.close()

    restart = {"near": [], "far": []}
    cases = [("near", near_dir, args.near), ("far", far_dir, args.far)]
    for r in range(args.repeats):
      for name, d, step in cases if r % 2 == 0 else cases[::-1]:  # alternate the order: no first-call bias
        scratch = os.path.join(work, f"run_{name}")
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(d, scratch)
        _forget()
        t0 = time.perf_counter()
        summary = train(_config(total), scratch, stop_after=1, verbose=False)
        restart[name].append(time.perf_counter() - t0)
        assert summary["step"] == step + 1, summary["step"]
    near_pos = ckpt_lib.CheckpointManager(near_dir).restore(args.near)[1]["data_position"][0]
    input_near = [_first_batch_seconds(config, start_position=near_pos) for _ in range(args.repeats)]
    input_far = [_first_batch_seconds(config, start_position=position) for _ in range(args.repeats)]
    skip_near = _first_batch_seconds(config, start_example=args.near * bs)
    skip_far = _first_batch_seconds(config, start_example=args.skip_far * bs)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  med = {k: statistics.median(v) for k, v in restart.items()}
  out = dict(
    benchmark="bench_resume",
    near_step=args.near,
    far_step=args.far,
    batch_size=bs,
    records_per_epoch=n,
    restart_to_first_step_s=dict(near=med["near"], far=med["far"], all=restart),
    ratio=med["far"] / med["near"],
    input_first_batch_s=dict(near=statistics.median(input_near), far=statistics.median(input_far)),
    input_ratio=statistics.median(input_far) / statistics.median(input_near),
    old_skip_first_batch_s={f"step_{args.near}": skip_near, f"step_{args.skip_far}": skip_far},
    machine=dict(cpus=os.cpu_count(), loadavg_before=load_before, loadavg_after=os.getloadavg()),
  )
  print(json.dumps(out, indent=1))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(out, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
