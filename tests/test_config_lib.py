"""config_lib: arg strings typed from defaults, --config.key overrides, loading config files."""

import ml_collections
import pytest

from siglip_rins import config_lib
from siglip_rins.config_lib import apply_overrides, load_config, parse_arg

DEFAULTS = dict(variant="B/16", signature="AB", degree=1, p_skip=0.0, runlocal=False, res=(224, 224))


# ------------------------------------------------------------------------------------------------ parse_arg
def test_parse_arg_types_values_from_the_defaults():
  a = parse_arg("variant=L/14,degree=2,p_skip=1,signature=A^3B", **DEFAULTS)  # (commas split items)
  assert a.variant == "L/14" and a.signature == "A^3B"
  assert a.degree == 2 and isinstance(a.degree, int)
  assert a.p_skip == 1.0 and isinstance(a.p_skip, float)
  assert a.runlocal is False  # untouched default


def test_parse_arg_strings_are_kept_verbatim():
  # a str default takes the raw text: no literal parsing, so signatures with brackets survive
  a = parse_arg("signature=(ABB)_2,variant=123", **DEFAULTS)
  assert a.signature == "(ABB)_2" and a.variant == "123"


def test_parse_arg_bare_key_means_true_and_booleans_parse():
  assert parse_arg("runlocal", **DEFAULTS).runlocal is True
  assert parse_arg("runlocal=False", **DEFAULTS).runlocal is False
  assert parse_arg("runlocal=1", **DEFAULTS).runlocal is True
  assert parse_arg("", **DEFAULTS).to_dict() == DEFAULTS
  assert parse_arg(None, **DEFAULTS).to_dict() == DEFAULTS


@pytest.mark.parametrize(
  "arg, key",
  [
    ("degree=2.5", "degree"),
    ("degree=two", "degree"),
    ("p_skip=abc", "p_skip"),
    ("runlocal=maybe", "runlocal"),
    ("res=3", "res"),
  ],
)
def test_parse_arg_rejects_values_of_the_wrong_type(arg, key):
  with pytest.raises(ValueError, match=key):
    parse_arg(arg, **DEFAULTS)


def test_parse_arg_unknown_key_names_the_allowed_keys():
  with pytest.raises(ValueError) as e:
    parse_arg("variant=B/16,signatur=AB", **DEFAULTS)
  msg = str(e.value)
  assert "'signatur'" in msg and all(k in msg for k in DEFAULTS)


# ------------------------------------------------------------------------------------------------ overrides
def _config():
  return ml_collections.ConfigDict(
    dict(
      lr=1e-3,
      log_every=100,
      tensorboard=True,
      name="run",
      model=dict(name="decoder", recursion=dict(signature="AB", p_skip=0.0)),
      input=dict(batch_size=32, data=dict(type="jsonl", path="/data")),
    )
  )


def test_apply_overrides_sets_nested_keys_with_literal_values():
  c = apply_overrides(
    _config(),
    [
      "lr=1e-4",
      "model.recursion.signature='A^3B'",
      "model.recursion.p_skip=0.25",
      "input.data.path=/other/place",
      "log_every=5",
      "tensorboard=False",
    ],
  )
  assert c.lr == 1e-4 and c.model.recursion.signature == "A^3B" and c.model.recursion.p_skip == 0.25
  assert c.input.data.path == "/other/place"  # not a literal -> the plain string
  assert c.log_every == 5 and c.tensorboard is False
  assert apply_overrides(_config(), ["lr=1"]).lr == 1.0  # an int fits a float key


@pytest.mark.parametrize("override", ["lr='fast'", "log_every=1.5", "tensorboard=maybe", "input.batch_size=[1]"])
def test_apply_overrides_type_mismatch_names_the_key(override):
  key = override.split("=")[0]
  with pytest.raises(ValueError, match=key.replace(".", r"\.")):
    apply_overrides(_config(), [override])


def test_apply_overrides_unknown_key_names_it_and_the_allowed_keys():
  with pytest.raises(ValueError) as e:
    apply_overrides(_config(), ["model.recursion.signatur=AB"])
  msg = str(e.value)
  assert "'signatur'" in msg and "p_skip" in msg and "signature" in msg
  with pytest.raises(ValueError) as e:
    apply_overrides(_config(), ["modl.recursion.signature=AB"])
  assert "'modl'" in str(e.value) and "model" in str(e.value) and "input" in str(e.value)
  with pytest.raises(ValueError, match="key=value"):
    apply_overrides(_config(), ["lr"])
  with pytest.raises(ValueError, match="not a config section"):
    apply_overrides(_config(), ["lr.x=1"])


# ------------------------------------------------------------------------------------------------ load_config
def test_load_config_calls_get_config_with_the_arg(tmp_path):
  path = tmp_path / "cfg.py"
  path.write_text(
    "import ml_collections\ndef get_config(arg=None):\n  return ml_collections.ConfigDict(dict(arg=arg or 'none'))\n"
  )
  assert load_config(f"{path}:runlocal,res=3").arg == "runlocal,res=3"
  assert load_config(str(path)).arg == "none"


def test_load_config_errors_name_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothere.py"):
    load_config(str(tmp_path / "nothere.py") + ":runlocal")
  with pytest.raises(ValueError, match="file.py"):
    load_config(str(tmp_path / "config.txt"))
  bare = tmp_path / "bare.py"
  bare.write_text("X = 1\n")
  with pytest.raises(ValueError, match="get_config"):
    load_config(str(bare))
  wrong = tmp_path / "wrong.py"
  wrong.write_text("def get_config(arg=None):\n  return {'lr': 1}\n")
  with pytest.raises(ValueError, match="ConfigDict"):
    load_config(str(wrong))


def test_config_json_round_trip():
  c = _config()
  assert config_lib.from_json(config_lib.to_json(c)).to_dict() == c.to_dict()
