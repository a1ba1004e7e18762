"""`siglip-rins sweep`: App. E.1's architecture sweep for a depth, as a table or JSON."""

import json

from siglip_rins import cli
from siglip_rins.recursion import sweep


def test_sweep_json_lists_the_app_e1_entries(capsys):
  assert cli.main(["sweep", "--depth", "10", "--json"]) == 0
  rows = json.loads(capsys.readouterr().out)
  assert rows == json.loads(json.dumps(sweep(10)))
  assert len(rows) == 28 and rows[0]["compact"] == "A" and rows[0]["layers_per_block"] == 10
  abbc = next(r for r in rows if r["signature"] == "ABBC" and r["degree"] == 1)
  assert (abbc["layers_per_block"], abbc["dropped_layers"], abbc["param_layers_rel"]) == (3, 1, 0.9)


def test_sweep_table_with_a_variant_and_one_degree(capsys):
  assert cli.main(["sweep", "--variant", "lm_mu", "--degree", "1", "--split", "spread"]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].split()[:4] == ["compact", "degree", "unique_blocks", "layers_per_block"]
  assert "params_rel" in lines[0] and len(lines) == 1 + 13  # header + 13 degree-1 signatures
  abbc = next(line.split() for line in lines if line.startswith("AB^2C "))
  assert abbc[3] == "2:1:1" and abbc[-1] == "1.000"  # lm_mu: 4 layers, spread -> 2, 1, 1; all parameters kept


def test_sweep_needs_a_depth(capsys):
  assert cli.main(["sweep"]) == 1
  assert "give the baseline depth" in capsys.readouterr().err
