"""Multi-device and multi-host set-up with JAX's own machinery.

The attacks are embarrassingly parallel over their first axis (attacks = images x targets), so
one 1-D mesh over every device of every host is all they need: ``pixel_attack.attack(...,
mesh=attack_mesh())`` shards that axis with a ``NamedSharding`` and XLA partitions the jitted
DE + model evaluation. On a multi-host slice, call ``initialize()`` first in every process.

Placing host arrays on the mesh (``put``), bringing results back from every process
(``gather``) and sizing a call to device memory (``attacks_per_call``) live here too, so the
runners never deal with devices themselves.
"""
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "attacks"


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> None:
  """``jax.distributed.initialize`` for a multi-process run: with the arguments, or from the
  usual environment (``JAX_COORDINATOR_ADDRESS`` ...) or cluster auto-detection (TPU pods,
  SLURM). Call it before anything starts a JAX backend; importing pixeljax does not."""
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


def attack_mesh(devices=None) -> Mesh:
  """A 1-D mesh named ``attacks`` over the given (default: all) devices."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (AXIS,))


def attack_sharding(mesh: Optional[Mesh]) -> Optional[NamedSharding]:
  """Rows (attacks) split over the mesh's one axis; None without a mesh."""
  if mesh is None:
    return None
  return NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))


def put(tree, sharding: Optional[NamedSharding]):
  """Host arrays -> device arrays, sharded over the attack axis. Every process passes the same
  global array and places only its own devices' rows, so this works multi-host."""
  def put_one(a):
    if sharding is None:
      return jax.device_put(np.asarray(a))   # a copy, not a compiled program per shape
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda i: a[i])
  return jax.tree_util.tree_map(put_one, tree)


def gather(a) -> np.ndarray:
  """Device array -> host numpy; gathers from every process when sharded multi-host."""
  if getattr(a, "is_fully_addressable", True):
    return np.asarray(a)
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(a, tiled=True))


def attacks_per_call(predict, image_shape, popsize: int, budget_bytes: Optional[int] = None,
                     cap: int = 1024) -> int:
  """How many attacks fit in one call: (device memory budget) / (memory of one generation of
  one attack, i.e. a ``popsize`` batch through the model, as XLA reports it)."""
  if budget_bytes is None:
    stats = getattr(jax.devices()[0], "memory_stats", lambda: None)() or {}
    budget_bytes = int(stats.get("bytes_limit", 4 << 30) * 0.5)
  x = jax.ShapeDtypeStruct((popsize,) + tuple(image_shape), jnp.float32)
  per_attack = None
  try:
    mem = jax.jit(predict).lower(x).compile().memory_analysis()
    if mem is not None:
      per_attack = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
  except Exception:  # some backends have no memory analysis
    per_attack = None
  if not per_attack:
    per_attack = 64 * popsize * int(np.prod(image_shape)) * 4
  return int(max(1, min(cap, budget_bytes // per_attack)))
