"""Input-pipeline throughput: images/s (and per CPU core) for the SigLIP pp string
`decode|resize(256)|value_range(-1,1)|tokenize(64)` over generated JPEGs read from a local jsonl dataset.

Usage: python -m benchmarks.bench_input_pipeline [--num_images 256] [--image_size 320 384] [--batch 64]
       [--batches 20] [--out result.json]. Prints one JSON object (also written to --out).
"""

import argparse
import json
import os
import sys
import tempfile
import time

PP = "decode|resize(256)|value_range(-1,1)|tokenize(64{model})|keep('image','labels')"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_images", type=int, default=256)
  parser.add_argument("--image_size", type=int, nargs=2, default=(320, 384))
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--batches", type=int, default=20, help="timed batches (after 2 warm-up batches)")
  parser.add_argument("--tokenizer", default=None, help="tokenizer name/path (default: demo, else tiny)")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)

  sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
  import data_fixtures
  from siglip_rins.data import pipeline

  with tempfile.TemporaryDirectory() as tmp:
    model = args.tokenizer or data_fixtures.tokenizer_path_for_tests(tmp)
    path = data_fixtures.write_jsonl_dataset(tmp + "/ds", args.num_images, tuple(args.image_size))
    pp = PP.format(model=f", model={model!r}")
    cfg = dict(data=dict(type="jsonl", path=str(path)), pp=pp, shuffle_buffer_size=args.num_images, prefetch=2)
    it = pipeline.make_train_iterator(cfg, global_batch_size=args.batch, seed=0)
    for _ in range(2):
      next(it)
    start = time.perf_counter()
    for _ in range(args.batches):
      batch = next(it)
    seconds = time.perf_counter() - start
    del it  # stop reading before the temporary files go
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  images_per_s = args.batches * args.batch / seconds
  result = {
    "benchmark": "input_pipeline",
    "pp": PP.format(model=""),
    "image_size": list(args.image_size),
    "batch": args.batch,
    "batches": args.batches,
    "seconds": round(seconds, 3),
    "images_per_s": round(images_per_s, 1),
    "cpu_cores": cores,
    "images_per_s_per_core": round(images_per_s / cores, 1),
    "output_shapes": {k: list(v.shape) for k, v in batch.items()},
  }
  print(json.dumps(result))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == "__main__":
  main()
