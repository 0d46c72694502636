"""One process of the multi-process campaign test (not a test module: no ``test_`` prefix).

  python multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT FOLDER OUT.npz

Run with JAX_PLATFORMS=cpu and XLA_FLAGS=--xla_force_host_platform_device_count=<devices per
process>. Every process joins ``jax.distributed`` (gloo CPU collectives, the default), runs the
same small campaign over one mesh spanning all processes' devices, and saves the gathered
records; process 0 alone writes the campaign's chunks.
"""
import errno
import os
import sys

process_id, num_processes, port = (int(a) for a in sys.argv[1:4])
folder, out = sys.argv[4], sys.argv[5]

from pixeljax import sharding  # noqa: E402  (importing pixeljax starts no backend)

# Before anything that initialises the backend (jax.devices(), PRNGKey, models.load).
sharding.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=num_processes,
                    process_id=process_id)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from pixeljax import data, models  # noqa: E402
from pixeljax.sparse import PixelAttackConfig, campaign, exhaustive_one_pixel  # noqa: E402

if process_id == 0 and os.environ.get("PIXELJAX_TEST_DISK_FULL"):   # a full disk on process 0
  def _full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device (simulated)")
  campaign.records_lib.save = _full

clf = models.load("cifar10_lenet_hyperparticle")
ds = data.load("cifar10_samples")
images = ds.images[:8].copy()
if process_id == 1 and os.environ.get("PIXELJAX_TEST_OTHER_IMAGES"):   # another host's data
  images[0] = 255 - images[0]
rec = campaign.run(clf.predict, images, ds.labels[:8], ds.index[:8],
                   PixelAttackConfig(pixels=1, popsize=40, generations=3), 0, folder, 10,
                   attacks_per_call=4, mesh=sharding.attack_mesh(), progress=False)
# The exhaustive bound over the same mesh: 3 images, padded to the 4 devices' multiple.
bound = exhaustive_one_pixel(clf.predict, ds.images[:3], ds.labels[:3],
                             mesh=sharding.attack_mesh())
np.savez(out, process_count=jax.process_count(), device_count=jax.device_count(),
         **rec.as_dict(), **{f"bound_{k}": v for k, v in bound.items()})
print(f"process {process_id}: {jax.process_count()} processes, {jax.device_count()} devices",
      flush=True)
