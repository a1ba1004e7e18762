"""Tests for siglip_rins.sharding: mesh shapes, parameter rules, global batch assembly on 8 CPU devices."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from siglip_rins import sharding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _FakeMesh:
  """Only ``.shape`` is read by the rule code; lets rules be tested without 8 real devices."""

  def __init__(self, data, fsdp):
    self.shape = {"data": data, "fsdp": fsdp}


def _abstract_params():
  f32 = np.float32
  return {
    "img": {
      "embedding": {"kernel": jax.ShapeDtypeStruct((16, 16, 3, 64), f32), "bias": jax.ShapeDtypeStruct((64,), f32)},
      "pos_embedding": jax.ShapeDtypeStruct((1, 196, 64), f32),
    },
    "txt": {"Embed_0": {"embedding": jax.ShapeDtypeStruct((1000, 64), f32)}, "odd": jax.ShapeDtypeStruct((3, 5), f32)},
    "t": jax.ShapeDtypeStruct((), f32),
  }


def test_default_fsdp_rule_shards_largest_divisible_dim():
  specs = sharding.param_partition_specs(_abstract_params(), _FakeMesh(2, 4))
  assert specs["img"]["embedding"]["kernel"] == P(None, None, None, "fsdp")  # 64 is the largest divisible dim
  assert specs["img"]["embedding"]["bias"] == P("fsdp")
  assert specs["img"]["pos_embedding"] == P(None, "fsdp", None)  # 196 % 4 == 0 and 196 > 64
  assert specs["txt"]["Embed_0"]["embedding"] == P("fsdp", None)
  assert specs["txt"]["odd"] == P()  # nothing divisible by 4: replicated
  assert specs["t"] == P()


def test_fsdp_size_one_replicates_everything():
  specs = sharding.param_partition_specs(_abstract_params(), _FakeMesh(8, 1))
  assert all(s == P() for s in jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P)))


def test_custom_rules_first_match_wins_and_pad():
  rules = [("txt/Embed_0/embedding", ("fsdp",)), ("img/.*", "replicate"), (".*", "fsdp")]
  specs = sharding.param_partition_specs(_abstract_params(), _FakeMesh(1, 4), rules)
  assert specs["txt"]["Embed_0"]["embedding"] == P("fsdp", None)
  assert specs["img"]["embedding"]["kernel"] == P()
  assert specs["txt"]["odd"] == P()


def test_rules_place_optimizer_moments_like_their_parameters():
  """Adam's mu/nu live at paths like `0/mu/img/...`; a rule written for `img/.*` must shard them too."""
  import optax

  params = _abstract_params()
  rules = [("img/.*", "fsdp"), ("txt/Embed_0/embedding", (None, ("data", "fsdp")))]  # no catch-all
  opt = jax.eval_shape(optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3)).init, params)
  mesh = _FakeMesh(4, 2)
  pspecs = sharding.param_partition_specs(params, mesh, rules)
  specs = sharding.opt_state_partition_specs(opt, params, mesh, rules)
  adam = specs[1][0]
  for moment in (adam.mu, adam.nu):
    assert moment["img"]["embedding"]["kernel"] == pspecs["img"]["embedding"]["kernel"] == P(None, None, None, "fsdp")
    assert moment["img"]["pos_embedding"] == P(None, "fsdp", None)
    assert moment["txt"]["Embed_0"]["embedding"] == P(None, ("data", "fsdp"))
    assert moment["txt"]["odd"] == P() and moment["t"] == P()  # unmatched parameters stay replicated
  assert adam.count == P()


@pytest.mark.parametrize(
  "rules,match",
  [
    ([("txt/odd", ("fsdp",))], "not divisible"),
    ([("t", ("fsdp",))], "has 1 entries"),
    ([("txt/odd", ("model",))], "not in mesh axes"),
    ([("(", "fsdp")], "invalid regex"),
    ([(".*", "shard")], "must be 'fsdp'"),
  ],
)
def test_bad_rules_raise(rules, match):
  with pytest.raises(ValueError, match=match):
    sharding.param_partition_specs(_abstract_params(), _FakeMesh(1, 4), rules)


def test_mesh_single_device_and_bad_configs():
  mesh = sharding.make_mesh()
  assert mesh.axis_names == ("data", "fsdp")
  assert dict(mesh.shape) == {"data": jax.device_count(), "fsdp": 1}
  with pytest.raises(ValueError, match="unknown"):
    sharding.make_mesh({"model": 2})
  with pytest.raises(ValueError, match="at most one"):
    sharding.make_mesh({"data": -1, "fsdp": -1})
  with pytest.raises(ValueError, match="devices"):
    sharding.make_mesh({"data": 3, "fsdp": 1})


def test_initialize_distributed_is_noop_without_request(monkeypatch):
  monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
  assert sharding.initialize_distributed() is False
  with pytest.raises(ValueError, match="process_id"):
    sharding.initialize_distributed(coordinator="localhost:1234", num_processes=2, process_id=5)


_MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import os, json
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax, numpy as np
    from siglip_rins import sharding
    out = {}
    for cfg in [None, {"data": -1, "fsdp": 2}, {"fsdp": -1}, {"data": 2, "fsdp": 4}]:
        m = sharding.make_mesh(cfg)
        out[json.dumps(cfg)] = [m.shape["data"], m.shape["fsdp"]]
    mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
    local = {"image": np.arange(16 * 3, dtype=np.float32).reshape(16, 3), "label": np.arange(16, dtype=np.int32)}
    batch = sharding.make_global_batch(local, mesh)
    out["shapes"] = {k: list(v.shape) for k, v in batch.items()}
    out["roundtrip"] = all(np.array_equal(np.asarray(batch[k]), local[k]) for k in local)
    # each of the 8 devices holds 2 consecutive rows of the batch
    shards = sorted((s.index[0].start, s.data.shape[0]) for s in batch["label"].addressable_shards)
    out["shards"] = shards
    params = {"w": {"kernel": jax.ShapeDtypeStruct((6, 8), np.float32)}}
    sh = sharding.param_shardings(params, mesh)
    arr = jax.device_put(np.ones((6, 8), np.float32), sh["w"]["kernel"])
    out["param_shard_shape"] = list(arr.addressable_shards[0].data.shape)
    import optax
    mesh42 = sharding.make_mesh({"data": 4, "fsdp": 2})
    p = {"img": {"w": jax.ShapeDtypeStruct((6, 8), np.float32)}, "txt": {"w": jax.ShapeDtypeStruct((6, 8), np.float32)}}
    rules = [("img/.*", (None, "data"))]
    opt_sh = sharding.opt_state_shardings(jax.eval_shape(optax.adam(1e-3).init, p), p, mesh42, rules)
    out["mu_nu_specs"] = [str(opt_sh[0].mu["img"]["w"].spec), str(opt_sh[0].nu["img"]["w"].spec),
                          str(opt_sh[0].mu["txt"]["w"].spec)]
    try:
        sharding.make_global_batch({"x": np.zeros((12, 2))}, mesh)
        out["error"] = None
    except ValueError as e:
        out["error"] = str(e)
    print("RESULT" + json.dumps(out))
""")


def test_mesh_and_global_batch_on_8_devices():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [sys.executable, "-c", _MULTI_DEVICE_SCRIPT], capture_output=True, text=True, env=env, timeout=300
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1][len("RESULT") :])
  assert out["null"] == [8, 1]
  assert out[json.dumps({"data": -1, "fsdp": 2})] == [4, 2]
  assert out[json.dumps({"fsdp": -1})] == [1, 8]
  assert out[json.dumps({"data": 2, "fsdp": 4})] == [2, 4]
  assert out["shapes"] == {"image": [16, 3], "label": [16]}
  assert out["roundtrip"] is True
  assert out["shards"] == [[i, 2] for i in range(0, 16, 2)]
  assert out["param_shard_shape"] == [6, 2]  # 8 columns over fsdp=4, replicated over data
  assert out["mu_nu_specs"] == [str(P(None, "data"))] * 2 + [str(P())]  # 4x2 mesh: moments follow the img rule
  assert out["error"] is not None and "12" in out["error"] and "8 devices" in out["error"]


_HOST_INIT_SCRIPT = textwrap.dedent("""
    import os, json
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax, numpy as np
    from benchmarks import _util as U
    from siglip_rins import optim, sharding, train
    from siglip_rins.models import build_model
    from siglip_rins.tasks import get_task
    model_cfg = dict(name="two_towers", image=dict(variant="mu/8", pool_type="map"),
                     text=dict(variant="mu", vocab_size=100), out_dim=(None, 16), recursion=dict(signature="A^2B"))
    config = U.train_config(model_cfg, 8, 16, 8)
    config.mesh = {"data": 4, "fsdp": 2}
    config.sharding_rules = [("img/.*/kernel", (None, "fsdp"))]
    mesh = sharding.make_mesh(config.mesh)
    model, task = build_model(config.model), get_task(config, mesh)
    tx, _ = optim.make_optimizer(config, config.total_steps, batch_size=8)
    a = train.init_state(model, task, tx, mesh, config, jax.random.PRNGKey(3))
    b = train.init_state(model, task, tx, mesh, config, jax.random.PRNGKey(3), on_host=True)
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    out = {"n": len(la), "same_structure": jax.tree.structure(a) == jax.tree.structure(b),
           "equal": all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb)),
           "same_sharding": all(x.sharding == y.sharding for x, y in zip(la, lb)),
           "sharded": sum(len(set(s.device for s in y.addressable_shards)) == 8 and not y.sharding.is_fully_replicated
                          for y in lb)}
    print("RESULT" + json.dumps(out))
""")


def test_init_state_on_host_gives_the_same_values_and_shardings():
  """`init_state(on_host=True)` (bench_mfu --init host: no accelerator compile of the initialiser) places the
  values of the on-mesh initialiser with its shardings, a custom rule included, on a 4x2 mesh."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
  proc = subprocess.run(
    [sys.executable, "-c", _HOST_INIT_SCRIPT], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1][len("RESULT") :])
  assert out["n"] > 10 and out["same_structure"]
  assert out["equal"] and out["same_sharding"]
  assert out["sharded"] > 0  # the rule and fsdp split some leaves: placement is not trivially replicated
