"""benchmarks/bench_dynamic_rounds.py runs at a tiny size (so it cannot rot) and reports what it claims to."""

import json

from benchmarks import bench_dynamic_rounds


def test_bench_dynamic_rounds_tiny(tmp_path):
  out = tmp_path / "r.json"
  result = bench_dynamic_rounds.main(
    ["--batch", "2", "--rounds", "1", "3", "--repeats", "1", "--precision", "float32", "--out", str(out)]
  )
  assert json.loads(out.read_text())["benchmark"] == "dynamic_rounds"
  (run,) = result["runs"]
  assert run["max_rounds"] == 4 and [row["r"] for row in run["rows"]] == [1, 3]
  assert set(run["compile_s"]) == {"static r=1", "static r=3", "dynamic", "static total"}
  for row in run["rows"]:
    assert row["static_s"] > 0 and row["dynamic_s"] > 0
    assert row["max_abs_diff"] < 1e-5  # the dynamic program computes what the static plan computes
