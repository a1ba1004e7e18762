"""Device mesh, parameter sharding rules, multi-host initialisation and global batches.

Mesh axes are ``('data', 'fsdp')``.  The batch is split over both axes (``PartitionSpec(('data', 'fsdp'))``);
parameters are replicated over ``'data'`` and, by the default rule, sharded over ``'fsdp'`` (ZeRO-3 style).

Multi-host (e.g. a TPU VM pod slice): run the *same* command on every worker, e.g.::

    gcloud compute tpus tpu-vm ssh $TPU_NAME --zone=$ZONE --worker=all \\
        --command="cd siglip_rins && .venv/bin/python -m siglip_rins.train --config ... --workdir gs://..."

and call :func:`initialize_distributed` first thing in the program (``train.py`` does).  On TPU VMs and under
SLURM / Open MPI, ``jax.distributed.initialize()`` discovers the coordinator, the number of processes and the
process id by itself; elsewhere pass them explicitly or set ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``
and ``JAX_PROCESS_ID``.  Each process then feeds only its own shard of the global batch (see
:func:`make_global_batch`); checkpoints go to a shared directory (e.g. ``gs://``) that all processes can reach.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = [
  "MESH_AXES",
  "initialize_distributed",
  "make_mesh",
  "param_shardings",
  "param_partition_specs",
  "opt_state_shardings",
  "opt_state_partition_specs",
  "batch_sharding",
  "make_global_batch",
  "DEFAULT_PARAM_RULES",
]

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")
# Rule value 'fsdp' = shard the largest dimension divisible by the fsdp axis size; 'replicate' = replicate.
DEFAULT_PARAM_RULES = ((".*", "fsdp"),)
_ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
_ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
_ENV_PROCESS_ID = "JAX_PROCESS_ID"
_initialized = False


def _is_distributed_initialized() -> bool:
  try:
    from jax._src import distributed  # no public query exists

    return distributed.global_state.client is not None
  except Exception:  # pragma: no cover - internal layout changed
    return _initialized


def initialize_distributed(
  coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None, force: bool = False
) -> bool:
  """Calls ``jax.distributed.initialize`` once, when asked or when the environment says so.

  It runs when any argument is given, when ``force=True`` (auto-detection on TPU VM / SLURM / MPI), or when
  ``JAX_COORDINATOR_ADDRESS`` is set (then ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` are read too).
  Calling it again is a no-op.  Must run before any other JAX call that touches devices.

  Returns:
    True if the multi-process runtime is (now) initialised, False for a plain single-process run.
  """
  global _initialized
  if _initialized or _is_distributed_initialized():
    _initialized = True
    return True
  env_coordinator = os.environ.get(_ENV_COORDINATOR)
  asked = force or coordinator is not None or num_processes is not None or process_id is not None
  if not asked and not env_coordinator:
    return False
  coordinator = coordinator or env_coordinator
  if num_processes is None and os.environ.get(_ENV_NUM_PROCESSES):
    num_processes = _env_int(_ENV_NUM_PROCESSES)
  if process_id is None and os.environ.get(_ENV_PROCESS_ID):
    process_id = _env_int(_ENV_PROCESS_ID)
  if num_processes is not None and num_processes < 1:
    raise ValueError(f"num_processes must be >= 1, got {num_processes}")
  if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
    raise ValueError(f"process_id={process_id} must be in [0, num_processes={num_processes})")
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
  _initialized = True
  return True


def _env_int(name: str) -> int:
  value = os.environ[name]
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def _mesh_sizes(mesh_cfg: Any) -> dict[str, int]:
  if mesh_cfg is None:
    return {"data": -1, "fsdp": 1}
  if hasattr(mesh_cfg, "to_dict"):
    mesh_cfg = mesh_cfg.to_dict()
  if isinstance(mesh_cfg, Mapping):
    items = list(mesh_cfg.items())
  elif isinstance(mesh_cfg, Sequence) and not isinstance(mesh_cfg, str):
    items = [tuple(x) for x in mesh_cfg]
  else:
    raise ValueError(f"mesh config must be a dict like {{'data': -1, 'fsdp': 1}}, got {mesh_cfg!r}")
  sizes = {"data": 1, "fsdp": 1}
  given = set()
  for name, size in items:
    if name not in MESH_AXES:
      raise ValueError(f"mesh axis {name!r} is unknown; allowed axes: {MESH_AXES}")
    if not isinstance(size, (int, np.integer)) or (size < 1 and size != -1):
      raise ValueError(f"mesh axis {name!r} size must be a positive int or -1, got {size!r}")
    sizes[name] = int(size)
    given.add(name)
  if "data" not in given and "fsdp" not in given:
    sizes["data"] = -1
  return sizes


def make_mesh(mesh_cfg: Any = None, devices: Sequence[Any] | None = None) -> Mesh:
  """Builds the ``('data', 'fsdp')`` mesh.

  Args:
    mesh_cfg: ``{'data': n, 'fsdp': m}`` (dict / ConfigDict / list of pairs); a size of -1 takes the remaining
      devices (at most one -1); missing axes have size 1; ``None`` = all devices on ``'data'``.
    devices: defaults to ``jax.devices()`` (all processes' devices).

  Returns:
    ``jax.sharding.Mesh`` with axis names ``('data', 'fsdp')`` whose sizes multiply to the device count.
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  sizes = _mesh_sizes(mesh_cfg)
  fill = [k for k, v in sizes.items() if v == -1]
  if len(fill) > 1:
    raise ValueError(f"mesh config {sizes}: at most one axis may be -1")
  known = int(np.prod([v for v in sizes.values() if v != -1]))
  if fill:
    if n % known:
      raise ValueError(f"mesh config {sizes}: {n} devices are not divisible by {known}")
    sizes[fill[0]] = n // known
  if sizes["data"] * sizes["fsdp"] != n:
    raise ValueError(f"mesh config {sizes}: data*fsdp = {sizes['data'] * sizes['fsdp']} but there are {n} devices")
  shape = (sizes["data"], sizes["fsdp"])
  try:
    from jax.experimental import mesh_utils

    device_array = mesh_utils.create_device_mesh(shape, devices=devices, allow_split_physical_axes=True)
  except Exception:  # non-TPU topologies the helper does not know: plain order is fine
    device_array = np.asarray(devices, dtype=object).reshape(shape)
  return Mesh(device_array, MESH_AXES)


def _path_str(path) -> str:
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def _fsdp_spec(shape: tuple[int, ...], fsdp_size: int) -> P:
  """Shards the largest dim divisible by ``fsdp_size`` over 'fsdp' (ties: the last such dim)."""
  if fsdp_size <= 1 or not shape:
    return P()
  best = None
  for i, d in enumerate(shape):
    if d % fsdp_size == 0 and d >= fsdp_size and (best is None or d >= shape[best]):
      best = i
  if best is None:
    return P()
  spec = [None] * len(shape)
  spec[best] = "fsdp"
  return P(*spec)


def _template_spec(path: str, shape: tuple[int, ...], template: Any, mesh: Mesh) -> P:
  if template == "fsdp":
    return _fsdp_spec(shape, mesh.shape["fsdp"])
  if template in ("replicate", None):
    return P()
  if isinstance(template, str):
    raise ValueError(
      f"param rule for {path!r}: template {template!r} must be 'fsdp', 'replicate' or a PartitionSpec/tuple"
    )
  entries = tuple(template)
  if len(entries) > len(shape):
    raise ValueError(
      f"param rule for {path!r}: template {template!r} has {len(entries)} entries but the parameter has shape {shape}"
    )
  entries = entries + (None,) * (len(shape) - len(entries))
  for dim, entry in zip(shape, entries):
    names = () if entry is None else ((entry,) if isinstance(entry, str) else tuple(entry))
    size = 1
    for name in names:
      if name not in mesh.shape:
        raise ValueError(f"param rule for {path!r}: axis {name!r} not in mesh axes {tuple(mesh.shape)}")
      size *= mesh.shape[name]
    if dim % size:
      raise ValueError(
        f"param rule for {path!r}: dim {dim} of shape {shape} is not divisible by {size} devices along {entry!r}"
      )
  return P(*entries)


def _compile_rules(rules):
  compiled = []
  for i, rule in enumerate(DEFAULT_PARAM_RULES if rules is None else rules):
    if not isinstance(rule, (tuple, list)) or len(rule) != 2:
      raise ValueError(f"param rules[{i}] must be a (regex, template) pair, got {rule!r}")
    try:
      compiled.append((re.compile(rule[0]), rule[1]))
    except (re.error, TypeError) as e:
      raise ValueError(f"param rules[{i}]: invalid regex {rule[0]!r}: {e}") from None
  return compiled


def _rule_spec(compiled, path: str, shape: tuple[int, ...], mesh: Mesh) -> P:
  for regex, template in compiled:
    if regex.fullmatch(path):
      return _template_spec(path, shape, template, mesh)
  return P()


def param_partition_specs(abstract_params: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]] | None = None) -> Any:
  """Tree of ``PartitionSpec`` for ``abstract_params`` (arrays or ``jax.ShapeDtypeStruct``).

  ``rules``: ``(regex, template)`` pairs over '/'-joined paths (``re.fullmatch``, first match wins); a template
  is ``'fsdp'`` (largest dim divisible by the fsdp size goes on 'fsdp', else replicated), ``'replicate'``,
  or a ``PartitionSpec``/tuple (padded with ``None`` to the rank).  Unmatched leaves are replicated.
  Default: ``[('.*', 'fsdp')]``.
  """
  compiled = _compile_rules(rules)
  return jax.tree_util.tree_map_with_path(
    lambda path, leaf: _rule_spec(compiled, _path_str(path), tuple(np.shape(leaf)), mesh), abstract_params
  )


def opt_state_partition_specs(
  abstract_opt_state: Any, abstract_params: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]] | None = None
) -> Any:
  """Tree of ``PartitionSpec`` for an optimiser state, placed like the parameters it tracks.

  optax states nest the parameter tree under their own keys (Adam's moments live at ``1/mu/img/...``), so the
  rules are matched against the *parameter* path inside each leaf's path: the longest '/'-suffix that is a
  parameter path.  A leaf of the parameter's shape (mu, nu, momentum) gets exactly the parameter's spec; one of
  another shape (e.g. factored second moments) gets the parameter's rule applied to its own shape, replicated
  when that rule does not fit it; leaves that track no parameter (step counts) are matched on their own path.
  """
  compiled = _compile_rules(rules)
  param_paths = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(abstract_params):
    p = _path_str(path)
    param_paths[p] = (tuple(np.shape(leaf)), _rule_spec(compiled, p, tuple(np.shape(leaf)), mesh))

  def spec(path, leaf):
    parts = _path_str(path).split("/")
    shape = tuple(np.shape(leaf))
    for i in range(len(parts)):
      suffix = "/".join(parts[i:])
      if suffix in param_paths:
        param_shape, param_spec = param_paths[suffix]
        if shape == param_shape:
          return param_spec
        try:
          return _rule_spec(compiled, suffix, shape, mesh)
        except ValueError:
          return P()
    return _rule_spec(compiled, "/".join(parts), shape, mesh)

  return jax.tree_util.tree_map_with_path(spec, abstract_opt_state)


def opt_state_shardings(
  abstract_opt_state: Any, abstract_params: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]] | None = None
) -> Any:
  """Tree of ``NamedSharding`` (see :func:`opt_state_partition_specs`)."""
  specs = opt_state_partition_specs(abstract_opt_state, abstract_params, mesh, rules)
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P))


def param_shardings(abstract_params: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]] | None = None) -> Any:
  """Tree of ``NamedSharding`` (see :func:`param_partition_specs` for the rules)."""
  specs = param_partition_specs(abstract_params, mesh, rules)
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of batch arrays: leading (batch) axis split over ``('data', 'fsdp')``, the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def make_global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles global ``jax.Array``s from each process's local rows.

  Args:
    local_batch: dict of numpy arrays ``[B_local, ...]`` -- this process's consecutive shard of the global
      batch (process ``k`` holds rows ``k*B_local ... (k+1)*B_local - 1``); all arrays share ``B_local``.
    mesh: the mesh; the global batch ``B = B_local * process_count`` must be divisible by ``mesh.size``.

  Returns:
    dict of global arrays ``[B, ...]`` sharded with :func:`batch_sharding`.
  """
  if not local_batch:
    raise ValueError("make_global_batch: local_batch is empty")
  sizes = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in local_batch.items()}
  scalars = [k for k, s in sizes.items() if s is None]
  if scalars:
    raise ValueError(f"make_global_batch: features {scalars} have no batch axis")
  if len(set(sizes.values())) != 1:
    raise ValueError(f"make_global_batch: features have different local batch sizes {sizes}")
  local_b = next(iter(sizes.values()))
  global_b = local_b * jax.process_count()
  n_devices = mesh.size
  if global_b % n_devices:
    raise ValueError(
      f"make_global_batch: global batch {global_b} (= {local_b} local x "
      f"{jax.process_count()} processes) is not divisible by the {n_devices} devices"
    )
  sharding = batch_sharding(mesh)
  out = {}
  for key, value in local_batch.items():
    value = np.asarray(value)
    out[key] = jax.make_array_from_process_local_data(sharding, value, (global_b,) + value.shape[1:])
  return out
