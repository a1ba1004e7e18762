"""Peak temporary memory per device: chunked (ring) vs global sigmoid loss, value and gradient.

Runs on simulated CPU devices (``--devices``, default 8) and reads the compiled executables'
``memory_analysis()`` (``temp_size_in_bytes``: XLA's scratch buffers per device, excluding arguments and
outputs), so nothing is executed and the numbers do not depend on the machine's load.

Variants, each ``jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))`` on ``[B, D]`` float32 embeddings:
  * ``global_1dev``: :func:`siglip_rins.losses.sigmoid_loss` on one device (the whole ``[B, B]`` logits).
  * ``global_sharded``: the same function with inputs batch-sharded over all devices (XLA's SPMD partitioner
    decides how to split the logits; typically ``[B/n, B]`` per device plus an all-gather of ``ztxt``).
  * ``chunked``: :func:`siglip_rins.losses.sharded_sigmoid_loss` (ring of ``ppermute``, ``[B/n, B/n]`` blocks).

Usage: ``python -m benchmarks.bench_chunked_loss --out bench_chunked_loss.json [--batches 512,2048,8192]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--devices", type=int, default=8, help="number of simulated CPU devices")
  parser.add_argument("--batches", default="256,1024,4096,16384", help="comma-separated global batch sizes")
  parser.add_argument("--dim", type=int, default=128, help="embedding width D")
  parser.add_argument("--out", default="bench_chunked_loss.json", help="where to write the JSON results")
  return parser.parse_args(argv)


def main(argv=None) -> dict:
  args = _parse_args(argv)
  if "jax" in sys.modules:  # imported by benchmarks/__init__ (host memory); XLA reads XLA_FLAGS at backend start
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
      raise RuntimeError("bench_chunked_loss must set XLA_FLAGS before JAX starts its backends; run it as a script")
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices}"
  ).strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

  from siglip_rins import losses

  if jax.device_count() != args.devices:
    raise RuntimeError(f"expected {args.devices} devices, got {jax.device_count()}")
  mesh = Mesh(np.array(jax.devices()), ("data",))
  batch_spec = NamedSharding(mesh, P("data"))
  scalar_spec = NamedSharding(mesh, P())
  one_device = jax.devices()[0]

  def temp_bytes(fn, *avals):
    return int(jax.jit(fn).lower(*avals).compile().memory_analysis().temp_size_in_bytes)

  grad = lambda f: jax.value_and_grad(f, argnums=(0, 1, 2, 3))  # noqa: E731
  rows = []
  for batch in [int(b) for b in args.batches.split(",")]:
    if batch % args.devices:
      raise ValueError(f"batch {batch} is not divisible by {args.devices} devices")
    emb_sh = jax.ShapeDtypeStruct((batch, args.dim), jnp.float32, sharding=batch_spec)
    sc_sh = jax.ShapeDtypeStruct((), jnp.float32, sharding=scalar_spec)
    single = jax.sharding.SingleDeviceSharding(one_device)
    emb_1 = jax.ShapeDtypeStruct((batch, args.dim), jnp.float32, sharding=single)
    sc_1 = jax.ShapeDtypeStruct((), jnp.float32, sharding=single)
    row = {
      "global_batch": batch,
      "dim": args.dim,
      "devices": args.devices,
      "global_1dev_temp_bytes": temp_bytes(grad(losses.sigmoid_loss), emb_1, emb_1, sc_1, sc_1),
      "global_sharded_temp_bytes": temp_bytes(grad(losses.sigmoid_loss), emb_sh, emb_sh, sc_sh, sc_sh),
      "chunked_temp_bytes": temp_bytes(
        grad(lambda a, b, t, c: losses.sharded_sigmoid_loss(a, b, t, c, mesh, "data")), emb_sh, emb_sh, sc_sh, sc_sh
      ),
      "logits_block_bytes_global": 4 * batch * batch,
      "logits_block_bytes_chunked": 4 * (batch // args.devices) ** 2,
    }
    rows.append(row)
    print(json.dumps(row), flush=True)
  result = {
    "benchmark": "chunked_sigmoid_loss_memory",
    "jax": jax.__version__,
    "backend": jax.default_backend(),
    "metric": "compiled memory_analysis().temp_size_in_bytes per device",
    "rows": rows,
  }
  with open(args.out, "w") as fh:
    json.dump(result, fh, indent=1)
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
