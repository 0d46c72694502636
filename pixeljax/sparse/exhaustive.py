"""The exhaustive one-pixel baseline: every position x every colour of a grid, in blocks.

It bounds what any one-pixel method can find with those colours on an image, and (with the
8 RGB-cube corners) is the first stage of CornerSearch. Its candidates reach the model through
the model's ``Evaluator``, as an attack's do (incremental, on windows, dealt to the cores:
whatever is fastest and exact for that model here).
"""
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pixeljax.errors import UserError
from pixeljax import door, sharding
from pixeljax.sparse.evaluator import Evaluator, evaluator_for
from pixeljax.sparse.problem import corners


def colour_grid(levels: Sequence[float], channels: int = 3) -> np.ndarray:
  """Every colour whose channels all take values in ``levels``: len(levels)^C colours."""
  levels = [float(v) for v in levels]
  if not levels or min(levels) < 0 or max(levels) > 255:
    raise UserError(f"colour levels must be non-empty and in [0, 255], got {levels}")
  grid = np.stack(np.meshgrid(*[levels] * channels, indexing="ij"), -1)
  return grid.reshape(-1, channels).astype(np.float32)


def rgb_cube_corners(channels: int = 3) -> np.ndarray:
  """The default colour set: the 2^C corners of the colour cube (8 for RGB, 2 for gray), in
  the order CornerSearch and Sparse-RS number them (``problem.corners``)."""
  return np.asarray(corners(channels))


@functools.lru_cache(maxsize=8)
def _sweep(ev: Evaluator, image_shape, num_colours, block):
  h, w, c = image_shape
  total = h * w * num_colours

  def one(image, label, colours):
    cand_idx = jnp.arange(total)
    pos, col = cand_idx // num_colours, cand_idx % num_colours
    cands = jnp.concatenate([(pos % w)[:, None].astype(jnp.float32),
                             (pos // w)[:, None].astype(jnp.float32), colours[col]], axis=1)
    pad = (-total) % block
    cands = jnp.concatenate([cands, jnp.repeat(cands[:1], pad, axis=0)])
    valid = jnp.arange(total + pad) < total

    def body(carry, block):
      block, ok = block
      probs = ev.candidates(image, block, ok)
      fooled = (jnp.argmax(probs, -1) != label) & ok
      p_true = jnp.where(ok, probs[:, label], 2.0)
      best = jnp.argmin(p_true)
      found, lowest, lowest_cand, n_fooling = carry
      better = p_true[best] < lowest
      return (found | jnp.any(fooled), jnp.where(better, p_true[best], lowest),
              jnp.where(better, block[best], lowest_cand),
              n_fooling + jnp.sum(fooled)), None

    init = (jnp.zeros((), bool), jnp.full((), 2.0), cands[0], jnp.zeros((), jnp.int32))
    blocks = (cands.reshape(-1, block, 2 + c), valid.reshape(-1, block))
    return jax.lax.scan(body, init, blocks)[0]

  return ev.program(jax.vmap(one, (0, 0, None)))


def exhaustive_one_pixel(model, images, labels, colours=None,
                         candidates_per_call: int = 1024, images_per_call: int = 8,
                         mesh=None, execution=None):
  """For each image: is there any single pixel set to a colour of ``colours`` (default the
  cube's corners) that changes the top-1 class? Also the lowest true-class probability found,
  its candidate and how many of the H*W*len(colours) changes fool the net.

  ``model``: as ``pixeljax.attack`` takes it (a zoo model, an ``Evaluator`` or a black-box
  function); ``mesh`` and ``execution`` as there. Returns a dict of numpy arrays;
  ``queries`` = H * W * len(colours) per image. An image the net already misclassifies is
  marked ``already_misclassified`` and counts as not fooled (no fooling changes): there was
  nothing to fool, as ``AttackRecords.already_misclassified`` says of an attack. With attacks
  sharded over D devices (a mesh that does not deal model calls), ``images_per_call`` is
  rounded up to a multiple of D."""
  images = door.images_for(model, images)
  h, w, c = images.shape[1:]
  colours = rgb_cube_corners(c) if colours is None else door.colours_for(colours, c)
  mesh = sharding.default_mesh() if mesh is None else mesh
  ev = model if isinstance(model, Evaluator) else evaluator_for(model, 1, "de", mesh, execution)
  probs = door.probabilities(ev.probabilities(images[:256]), door.model_name(model),
                             rows=len(images[:256]))
  labels = door.labels_for(labels, len(images), probs.shape[1])
  # An image the net already gets wrong has nothing to fool: every change would count.
  clean = np.concatenate([probs] + [np.asarray(ev.probabilities(images[s:s + 256]))
                                    for s in range(256, len(images), 256)])
  misclassified = clean.argmax(-1) != labels
  total = h * w * len(colours)
  block = min(candidates_per_call, total)
  fn = _sweep(ev, (h, w, c), len(colours), block)
  # With attacks sharded over several devices (accelerators, hosts), so are the images: each
  # call's are padded (repeating its last) to a multiple of the devices. One device keeps
  # its calls as they are (a call's batch can change float bits).
  devices = sharding.mesh_modes(mesh)["devices"]
  per_call = -(-images_per_call // devices) * devices
  if devices > 1:
    place = functools.partial(sharding.put, sharding=sharding.attack_sharding(mesh))
    shared = sharding.put(colours, sharding.replicated(mesh))
  else:
    place, shared = (lambda arrays: arrays), jnp.asarray(colours)
  outs = []
  for start in range(0, len(images), per_call):
    idx = np.arange(start, min(start + per_call, len(images)))
    rows = np.pad(idx, (0, per_call - len(idx)), mode="edge") if devices > 1 else idx
    out = fn(*place((images[rows], labels[rows])), shared)
    outs.append([sharding.gather(o)[:len(idx)] for o in out])
  found, lowest, cand, count = [np.concatenate(o) for o in zip(*outs)]
  return dict(fooled=found & ~misclassified, lowest_true_prob=lowest, best_candidate=cand,
              num_fooling_changes=np.where(misclassified, 0, count),
              queries=np.full(len(images), total), already_misclassified=misclassified)
