"""Multi-device and multi-host set-up with JAX's own machinery.

The attacks are embarrassingly parallel over their first axis (attacks = images x targets), so
one 1-D mesh over every device of every host is all they need: ``pixel_attack.attack(...,
mesh=attack_mesh())`` shards that axis with a ``NamedSharding`` and XLA partitions the jitted
DE + model evaluation. On a multi-host slice, call ``initialize()`` first in every process.
"""
import os
from typing import Optional

import jax
import numpy as np
from jax.sharding import Mesh

AXIS = "attacks"


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> None:
  """``jax.distributed.initialize`` when running multi-host (arguments or the usual
  environment / TPU auto-detection); a no-op in a single process."""
  if coordinator_address is None and num_processes is None and not os.environ.get(
      "JAX_COORDINATOR_ADDRESS"):
    return
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


def attack_mesh(devices=None) -> Mesh:
  """A 1-D mesh named ``attacks`` over the given (default: all) devices."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (AXIS,))
