"""The shipped configs: they load (default, runlocal, the paper's signatures), pass validation, build their
model and optimiser, have the paper's full-size shapes (parameter counts via jax.eval_shape, no allocation), and
compute-match recursive variants against the AB baseline (fewer examples, in the FLOPs ratio)."""

import glob
import os

import pytest

from siglip_rins import config_lib, flops, optim
from siglip_rins.models import build_model
from siglip_rins.tasks import get_task
from siglip_rins.train import total_steps_of, validate_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
  os.path.basename(p)
  for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
  if os.path.basename(p) not in ("common.py", "__init__.py", "rinsify.py")  # rinsify needs init=: test_model_init
)
SIGNATURES = ["signature=AB", "signature=ABAB", "signature=A^2B", "signature=A^3B,p_skip=0.25", "signature=(ABB)_2"]


def _load(name, arg=""):
  """A shipped config, finalized as at train start (derived compute-matched total_steps)."""
  from siglip_rins import budget

  config = config_lib.load_config(os.path.join(ROOT, "configs", name) + (f":{arg}" if arg else ""))
  budget.finalize(config)
  return config


def _check(config):
  validate_config(config)
  task = get_task(config)
  model = build_model(config.model)
  steps = total_steps_of(config)
  assert steps >= 1
  steps_per_epoch = config.input.num_examples // config.input.batch_size if config.input.get("num_examples") else None
  optim.make_optimizer(config, steps, batch_size=config.input.batch_size, steps_per_epoch=steps_per_epoch)
  return task, model


def test_the_three_configs_ship():
  assert {"siglip_rins.py", "lm_rins.py", "vit_rins.py"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("base", ["", "runlocal"])
def test_config_loads_validates_and_builds(name, base):
  _check(_load(name, base))


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("signature", SIGNATURES)
@pytest.mark.parametrize("runlocal", [False, True])
def test_config_loads_for_the_paper_signatures(name, signature, runlocal):
  config = _load(name, signature + (",runlocal" if runlocal else ""))
  expected = signature.split(",")[0].split("=")[1]
  assert config.model.recursion.signature == expected
  _check(config)


def test_a_signature_the_depth_does_not_allow_fails_at_load_naming_it():
  with pytest.raises(ValueError, match="ABBC"):  # split=exact: 3 unique blocks do not divide 16 layers
    _load("lm_rins.py", "signature=ABBC,split=exact")
  with pytest.raises(ValueError, match=r"cannot be split into 27 unique blocks for signature '\(ABC\)_3'"):
    _load("lm_rins.py", "signature=(ABC)_3")  # 27 unique blocks > 16 layers: 0 layers per block


@pytest.mark.parametrize(
  "args, blocks",
  [
    ("signature=ABBC", (5, 5, 5)),  # App. E.1 (floor): 16 // 3 layers per block, one layer dropped
    ("signature=ABCC,split=spread", (6, 5, 5)),
    ("signature=AABC,layers_per_block=4:6:6", (4, 6, 6)),
    ("signature=AABC,layers_per_block=5", (5, 5, 5)),
  ],
)
def test_lm_600m_trains_the_app_e1_three_block_signatures(args, blocks):
  """ABBC / AABC / ABCC on the 16 layers of lm_600m (the old code refused them: 3 does not divide 16)."""
  config = _load("lm_rins.py", args)
  model = build_model(config.model)
  assert model.recursion.plan(model.depth).block_layers == blocks
  assert config.total_steps < config.compute_match.baseline_steps  # compute-matched against the AB baseline


# ------------------------------------------------------------------------------------------------ sizes
def _encoder_layer(d, mlp):
  return 2 * 2 * d + 4 * (d * d + d) + (d * mlp + mlp) + (mlp * d + d)


def _params(config) -> int:
  task = get_task(config)
  return flops.count_params(build_model(config.model), task.init_args(task.example_batch(1)))


def test_siglip_b16_two_towers_has_the_public_size():
  d, mlp = 768, 3072
  image = (
    (16 * 16 * 3 * d + d)
    + 256 * d
    + 12 * _encoder_layer(d, mlp)
    + 2 * d
    + d
    + 4 * (d * d + d)
    + 2 * d
    + (d * mlp + mlp + mlp * d + d)
  )  # MAP head: probe, attention, LN, MLP
  text = 32_000 * d + 64 * d + 12 * _encoder_layer(d, mlp) + 2 * d + (d * d + d)
  expected = image + text + 2  # + t, b
  assert _params(_load("siglip_rins.py")) == pytest.approx(expected, rel=1e-4)  # ~203M


def test_vit_b16_classifier_size():
  d, mlp = 768, 3072
  expected = (16 * 16 * 3 * d + d) + 196 * d + d + 12 * _encoder_layer(d, mlp) + 2 * d + (d * 1000 + 1000)
  assert _params(_load("vit_rins.py")) == pytest.approx(expected, rel=1e-4)  # ~86.6M


def test_lm_600m_size():
  d, mlp, vocab = 1536, 6144, 32_000
  expected = 2 * vocab * d + 16 * _encoder_layer(d, mlp) + 2 * d  # embedding, 16 blocks, head
  count = _params(_load("lm_rins.py"))
  assert count == pytest.approx(expected, rel=1e-3)  # ~552M ("600M" in the paper)
  # parameter sharing: RINS A^3B has the baseline's unique blocks, so the same size
  assert _params(_load("lm_rins.py", "signature=A^3B")) == count


# ------------------------------------------------------------------------------------------------ compute matching
def _budget_examples(config) -> float:
  if config.get("total_steps") is not None:
    return config.total_steps * config.input.batch_size
  if config.get("total_examples") is not None:
    return config.total_examples
  return config.total_epochs * config.input.num_examples


def _train_flops(config) -> float:
  return flops.train_flops_per_example(build_model(config.model), get_task(config).input_shapes())


@pytest.mark.parametrize("name", CONFIGS)
def test_recursive_variants_train_on_fewer_examples_in_the_flops_ratio(name):
  base = _load(name)
  base_examples, base_flops = _budget_examples(base), _train_flops(base)
  assert base.compute_match.baseline_examples == pytest.approx(base_examples, rel=1e-4)
  examples = {}
  for arg in ["signature=ABAB", "signature=A^2B", "signature=A^3B", "signature=A^3B,p_skip=0.25"]:
    cand = _load(name, arg)
    examples[arg] = _budget_examples(cand)
    assert examples[arg] < base_examples, arg
    # equal training FLOPs: examples ratio = inverse FLOPs ratio (up to rounding to whole steps)
    assert examples[arg] / base_examples == pytest.approx(base_flops / _train_flops(cand), rel=1e-4), arg
  assert examples["signature=A^3B"] < examples["signature=A^2B"]
  assert examples["signature=A^3B,p_skip=0.25"] > examples["signature=A^3B"]  # skipped rounds cost nothing


def test_longer_sequence_baselines_are_compute_matched():
  lm, lm_long = _load("lm_rins.py"), _load("lm_rins.py", "seq_len=1536")
  assert lm.total_steps == 200_000 and lm_long.total_steps < lm.total_steps
  assert lm_long.total_steps / lm.total_steps == pytest.approx(_train_flops(lm) / _train_flops(lm_long), rel=1e-4)
  vit, vit336 = _load("vit_rins.py"), _load("vit_rins.py", "res=336")
  vit_examples, vit336_examples = _budget_examples(vit), _budget_examples(vit336)
  assert vit_examples == pytest.approx(300 * vit.input.num_examples, rel=1e-4) and vit336_examples < vit_examples
  assert _budget_examples(_load("vit_rins.py", "epochs=1000")) == pytest.approx(1000 * vit.input.num_examples, rel=1e-4)
  assert vit336_examples / vit_examples == pytest.approx(_train_flops(vit) / _train_flops(vit336), rel=1e-4)


# ------------------------------------------------------------------------------------------------ paper settings
def test_lm_config_follows_appendix_e21():
  c = _load("lm_rins.py")
  assert (c.input.batch_size, c.input.seq_len, c.lr, c.wd) == (1024, 1024, 5e-4, 5e-5)
  assert c.schedule.to_dict() == dict(decay_type="rsqrt", warmup_steps=5000, cooldown_steps=5000)
  assert c.model.name == "decoder" and c.model.vocab_size == 32_000 and c.input.tokenizer == "c4_en"
  sources = c.input.data.sources
  assert [s["data"]["name"] for s in sources] == ["c4/en", "huggingface:cerebras__slimpajama_627b"]
  assert sources[0]["weight"] == sources[1]["weight"]
  assert c.input.pack.seq_len == 1025  # packed rows of seq_len + 1 ids: inputs and shifted targets
  assert c.input.pp.startswith('tok(model="c4_en", eos="yes"')  # whole documents (no truncation), then packed


def test_vit_config_follows_appendix_e22():
  c = _load("vit_rins.py")
  assert (c.input.batch_size, c.lr, c.wd, c.model.head_bias_init) == (1024, 1e-3, 1e-4, -6.9)
  assert c.mixup.p == 0.2 and c.optax.to_dict() == dict(mu_dtype="bfloat16", b2=0.95)
  assert c.schedule.decay_type == "cosine" and c.schedule.warmup_steps == 10_000
  assert c.input.pp.startswith("decode|inception_crop(224)|flip_lr|value_range(-1, 1)|onehot(1000")
  assert c.model.variant == "B/16" and c.input.data.name == "imagenet2012"


def test_compute_matching_follows_overrides_and_refuses_stale_budgets():
  """The budget is derived from the final config: an override of the signature gets its own matched budget, and a
  declared total that does not hold is refused with one line."""
  from siglip_rins import budget

  base = _load("siglip_rins.py", "runlocal,steps=60")
  over = config_lib.load_config(os.path.join(ROOT, "configs", "siglip_rins.py") + ":runlocal,steps=60")
  config_lib.apply_overrides(over, ["model.recursion.signature='A^3B'"])
  info = budget.finalize(over)
  direct = _load("siglip_rins.py", "runlocal,steps=60,signature=A^3B")
  assert info["derived"] and over.total_steps == direct.total_steps < base.total_steps
  assert over.total_steps * _train_flops(over) <= 60 * _train_flops(base)
  stale = config_lib.load_config(os.path.join(ROOT, "configs", "siglip_rins.py") + ":runlocal,steps=60")
  config_lib.apply_overrides(stale, ["model.recursion.signature='A^3B'", "total_steps=60"])
  with pytest.raises(ValueError, match=r"compute_match does not hold: the config trains 60 steps"):
    budget.finalize(stale)
  ok = config_lib.load_config(os.path.join(ROOT, "configs", "siglip_rins.py") + ":runlocal,steps=60")
  config_lib.apply_overrides(ok, ["total_steps=60", "compute_match=None"])
  assert budget.finalize(ok) is None and ok.total_steps == 60
