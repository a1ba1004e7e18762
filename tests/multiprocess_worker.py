"""One process of the 2-process loopback training test (tests/test_train.py::test_two_processes_match_one).

    python tests/multiprocess_worker.py PORT NUM_PROCESSES PROCESS_ID DATA_JSONL WORKDIR OUT_NPZ

Runs `make_config(DATA_JSONL)` (a small contrastive runlocal config with deterministic, unshuffled data) under
jax.distributed on 127.0.0.1:PORT with CPU (gloo) collectives; process 0 writes the final parameters (flattened,
'/'-joined paths) and the last logged loss to OUT_NPZ.  The test imports `make_config` to train the same config
in one process.  With WORKER_STEPS=N (the preemption test) it trains N steps verbosely and every process prints
`RESULT {"stopped": ..., "step": ...}`.
"""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLOBAL_BATCH = 8
STEPS = 3


def make_config(data_jsonl: str, steps: int = STEPS, global_batch: int = GLOBAL_BATCH):
  """configs/siglip_rins.py:runlocal shrunk to 2-layer towers, reading `data_jsonl` in file order."""
  from siglip_rins import config_lib

  c = config_lib.load_config(os.path.join(ROOT, "configs", "siglip_rins.py:runlocal"))
  c.model.image.depth = 2
  c.model.text.depth = 2
  c.input.batch_size = global_batch
  c.input.data = dict(type="jsonl", path=data_jsonl)
  c.input.shuffle_buffer_size = 1  # no shuffle: the stream is the file order (see the test's data layout)
  c.input.pp = c.input.pp.replace(
    'choice(inkey="texts", skip_empty=True)', 'choice(inkey="texts", mode="first", skip_empty=True)'
  )
  c.total_steps, c.compute_match = steps, None  # an unmatched run of exactly `steps` steps
  c.schedule = dict(decay_type="rsqrt", warmup_steps=1)
  # plain SGD: updates are linear in the gradients, so float reordering across devices stays ~1e-7 (Adam's
  # g / sqrt(v) would blow it up for parameters with near-zero gradients)
  c.optax_name, c.lr = "identity", 0.3
  c.evals = {}
  c.log_every, c.ckpt_every, c.tensorboard = 1, 0, False
  c.async_checkpoint = False
  return c


def flat_params(params) -> dict:
  import jax
  import numpy as np

  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    key = "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)
    if leaf.is_fully_addressable:
      out[key] = np.asarray(jax.device_get(leaf))
    elif leaf.sharding.is_fully_replicated:
      out[key] = np.asarray(leaf.addressable_data(0))
    else:
      out[key] = np.asarray(jax.experimental.multihost_utils.process_allgather(leaf, tiled=True))
  return out


def main(argv):
  port, num_processes, process_id, data_jsonl, workdir, out_npz = argv
  import jax

  jax.config.update("jax_platforms", "cpu")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  from siglip_rins import sharding

  sharding.initialize_distributed(f"127.0.0.1:{port}", int(num_processes), int(process_id))
  import jax.experimental.multihost_utils  # noqa: F401  (for flat_params)
  import numpy as np
  from siglip_rins.train import train

  steps = int(os.environ.get("WORKER_STEPS", STEPS))  # the preemption test runs long and sends SIGTERM
  summary = train(make_config(data_jsonl, steps=steps), workdir, verbose=steps != STEPS)
  print("RESULT " + json.dumps({"stopped": summary["stopped"], "step": summary["step"]}), flush=True)
  if steps != STEPS:
    return 0
  params = flat_params(summary["state"]["params"])
  if jax.process_index() == 0:
    np.savez(out_npz, __loss__=np.float64(summary["metrics"]["train/loss"]), **params)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
