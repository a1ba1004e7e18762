"""Stochastic RINS with linear adapters trains: the regression test of the demo's collapse (issue 13, item 7).

In the built-in demo, stochastic A^3B (p_s = 1/2, adapters) sat on the trivial loss plateau for the whole run.
Measured with benchmarks/probe_stochastic.py (docs/DESIGN.md, "Linear adapters"): every variant passes close to
the collapsed point early (embeddings' mean pairwise cosine ~0.999); runs whose D x D adapter kernels took Adam's
plain steps (up to lr * D in spectral norm per step: singular values 0.6 .. 1.8 within 100 steps at the demo's lr)
never left it, while the same runs with the kernels frozen, or learning at lr / D (optim's
`adapter_lr_mult='fan_in'`, the default), did.

This test trains the demo's stochastic variant for a few steps with the real trainer and checks that the
adapters stay near the identity (|W_k - I|_2 < 0.1; the old behaviour, adapter_lr_mult=1, is shown to break the
bound, so the test can fail).
"""

import os

import numpy as np
import pytest

from siglip_rins import config_lib
from siglip_rins.demo import runner
from siglip_rins.train import train

STEPS = 20


def _adapter_deviation(config, workdir) -> list[float]:
  summary = train(config, str(workdir), stop_after=STEPS, verbose=False)
  assert summary["step"] == STEPS and np.isfinite(summary["metrics"]["train/loss"])
  params = summary["state"]["params"]
  out = []
  for tree in (params["img"]["Transformer"], params["txt"]["Encoder_0"]):
    kernel = np.asarray(tree["adapter_kernel"], np.float64)
    out += [float(np.linalg.norm(k - np.eye(k.shape[-1]), 2)) for k in kernel]
  return out


@pytest.mark.slow
def test_demo_stochastic_adapters_stay_near_identity(tmp_path, monkeypatch):
  if "SIGLIP_RINS_DATA_DIR" not in os.environ:  # the demo's generated shapes data: a throwaway folder
    monkeypatch.setenv("SIGLIP_RINS_DATA_DIR", str(tmp_path / "data"))
  settings = dict(runner.DEFAULTS, steps=100, batch_size=16, image_size=16, train_examples=128, warmup_steps=5, seed=0)
  config = runner.variant_config("rins_stochastic", settings)  # the demo's lr (3e-3), p_s = 1/2, adapters
  config.log_every = STEPS
  assert config.adapter_lr_mult == "fan_in"
  default = _adapter_deviation(config, tmp_path / "default")
  assert max(default) < 0.1, default
  config_lib.apply_overrides(config, ["adapter_lr_mult=1.0"])  # Adam's plain step: what collapsed the demo
  plain = _adapter_deviation(config, tmp_path / "plain")
  assert max(plain) > 3 * max(default) and max(plain) > 0.2, (plain, default)
