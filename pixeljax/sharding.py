"""Multi-device and multi-host set-up with JAX's own machinery.

The attacks are embarrassingly parallel over their first axis (attacks = images x targets), so
one 1-D mesh over every device of every host is all they need: ``pixeljax.attack(...,
mesh=attack_mesh())`` shards that axis with a ``NamedSharding`` and XLA partitions the jitted
DE + model evaluation. On a multi-host slice, call ``initialize()`` first in every process.

Placing host arrays on the mesh (``put``), bringing results back from every process
(``gather``) and sizing a call to device memory (``attacks_per_call``) live here too, so the
runners never deal with devices themselves.
"""
import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pixeljax.errors import UserError

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


def default_mesh() -> Optional[Mesh]:
  """The mesh an attack uses when given none: on a CPU backend split into several devices
  (``use_cpu_cores``), those of this process -- the attacks' model calls are then dealt to
  them where that is faster (``pixeljax.sparse.evaluator``); else None (one device)."""
  if jax.default_backend() != "cpu" or jax.process_count() > 1:
    return None
  devices = jax.local_devices()
  return attack_mesh(devices) if len(devices) > 1 else None


def deals_model_calls(mesh: Optional[Mesh]) -> bool:
  """Whether ``mesh`` is one host's CPU devices (its cores split into devices by
  ``jax_num_cpu_devices``: ``use_cpu_cores``), whose attacks are not sharded: every device
  runs every attack, and where the evaluator's ``Execution.devices`` > 1 the fixed-size model
  calls of each step go round robin to its devices (``evaluate.in_fixed_batches``), so a
  step's work is spread evenly however few attacks there are or however many finished.

  Why: XLA:CPU runs a small model call's convolutions on one core. ResNet-20's 3x3 64 -> 64
  layer on 8x8 maps takes as long pinned to one core as on two (8.5 ms at batch 400, 1.0 ms at
  50), so a one-device attack on windows (50 candidates per call) left the second core
  mostly idle: dealt to two devices, a 4-image attack ran 1.46x faster (2-core EPYC)."""
  if mesh is None or mesh.size < 2:
    return False
  devices = list(mesh.devices.flat)
  return all(d.platform == "cpu" and d.process_index == jax.process_index() for d in devices)


def mesh_modes(mesh: Optional[Mesh]) -> dict:
  """How ``mesh`` can split an attack's work, as ``evaluator.choose_execution`` takes it:
  ``devices``, the devices the attacks are sharded over, and ``dealt``, the devices model
  calls can be dealt to (``deals_model_calls``)."""
  if deals_model_calls(mesh):
    return dict(devices=1, dealt=mesh.size)
  return dict(devices=1 if mesh is None else mesh.size, dealt=1)


def dealing_mesh(mesh: Optional[Mesh], devices: int) -> Optional[Mesh]:
  """The mesh an attack deals its model calls to: the first ``devices`` devices of a mesh
  that ``deals_model_calls``, or None (no dealing: one device, or attacks sharded)."""
  if not deals_model_calls(mesh) or devices < 2:
    return None
  return Mesh(np.asarray(list(mesh.devices.flat)[:devices]), mesh.axis_names)


def on_every_device(f, mesh: Mesh):
  """``jit(f)`` run whole by every device of ``mesh`` on replicated inputs, as a
  ``shard_map`` body: ``evaluate.in_fixed_batches(..., mesh=mesh)`` inside it deals its
  model calls to the devices and all-gathers their results."""
  return jax.jit(jax.shard_map(f, mesh=mesh, in_specs=PartitionSpec(),
                               out_specs=PartitionSpec(), check_vma=False))


def attack_sharding(mesh: Optional[Mesh]) -> Optional[NamedSharding]:
  """Rows (attacks) split over the mesh's one axis (every device holding every row where the
  mesh deals model calls); None without a mesh."""
  if mesh is None:
    return None
  if deals_model_calls(mesh):
    return NamedSharding(mesh, PartitionSpec())
  return NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))


def replicated(mesh: Optional[Mesh]) -> Optional[NamedSharding]:
  """Every device of ``mesh`` holds the whole array (None without a mesh): what arrays shared
  by all of a sharded call's rows (the bound's colours) are ``put`` with."""
  return None if mesh is None else NamedSharding(mesh, PartitionSpec())


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


def smallest_on_every_process(value: int) -> int:
  """``value``, or in a multi-process run the smallest any process has: what every process
  must agree on (a chunk's size) though each measured its own devices."""
  if jax.process_count() == 1:
    return int(value)
  from jax.experimental import multihost_utils
  return int(np.min(multihost_utils.process_allgather(np.asarray(value, np.int64))))


def check_same_on_every_process(value, what: str) -> None:
  """In a multi-process run, every process must hold the same ``value`` (JSON-able: what it
  is about to compute, say); where they differ all raise the same one line naming ``what``,
  rather than sharding rows that differ between processes under process 0's names."""
  if jax.process_count() < 2:
    return
  import json
  import zlib
  from jax.experimental import multihost_utils
  seen = zlib.crc32(json.dumps(value, sort_keys=True, default=str).encode()) & 0x7FFFFFFF
  views = np.asarray(multihost_utils.process_allgather(np.asarray(seen, np.int32)))
  if len(set(views.reshape(-1).tolist())) > 1:
    raise UserError(f"the processes differ in {what}: every process of a multi-process run "
                    f"must be given the same (same data, weights and settings on every host)")


def attacks_per_call(predict, image_shape, popsize: int, budget_bytes: Optional[int] = None,
                     cap: int = 1024) -> int:
  """How many attacks fit on one device in one call: (its memory budget) / (memory of one
  generation of one attack, i.e. a ``popsize`` batch through the model, as XLA reports it).
  The device is this process's own first one (another process's cannot be asked)."""
  if budget_bytes is None:
    stats = getattr(jax.local_devices()[0], "memory_stats", lambda: None)() or {}
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


def split_cpu(devices: Optional[int] = None) -> None:
  """Asks JAX to split this host's CPU into ``devices`` devices (default: one per core this
  process may run on), without starting its backend. Changes nothing once the backend has
  started, or where ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS`` says how many."""
  if devices is None:
    devices = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else os.cpu_count() or 1)
  if devices < 1:
    raise UserError(f"runtime.cpu_devices must be >= 1 (or None: one per core), got {devices}")
  if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    try:
      jax.config.update("jax_num_cpu_devices", int(devices))
    except RuntimeError:   # the backend has started: it keeps its devices
      pass


def use_cpu_cores(devices: Optional[int] = None) -> int:
  """``split_cpu``, for an ``attack_mesh`` whose model calls are dealt to the devices; returns
  the number of CPU devices JAX will have (this starts JAX's backend). Call it before anything
  else starts the backend."""
  split_cpu(devices)
  return len(jax.devices("cpu"))
