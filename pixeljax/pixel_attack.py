"""Su, Vargas & Sakurai's few-pixel attack, run as thousands of DE problems in one XLA call.

A candidate is k pixels x (x, y, colour...) -- (x, y, r, g, b) for RGB, (x, y, v) for
grayscale -- flattened to a vector of length k (2 + C). It is applied by a scatter in pixel
space, so the target classifier is a black box ``predict(images) -> probabilities``.

Fitness (minimised): untargeted, the probability of the true class; targeted, one minus the
probability of the target. Early stop as in the paper: untargeted once the true class falls
below 5%, targeted once the target rises above 50% (``stop_probability``).

``objective="success_first"`` keeps that fitness but ranks every candidate that already fools
the net (top-1 != true, or top-1 = target) before every one that does not (fitness - 1). The
paper's fitness alone can keep a lower-p_true candidate that is still classified correctly over
one that was misclassified; a black-box attacker keeps any query that fooled the model.

``attack`` vmaps the DE over attacks (image x target pairs) and runs generations in segments
of one jit-compiled ``while_loop``; between segments finished attacks are dropped from the batch
(compaction into power-of-two buckets), so a finished attack stops costing model evaluations.
With a ``jax.sharding.Mesh`` the attack axis is sharded over its devices.
"""
import dataclasses
import functools
import math
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pixeljax import de

Predict = Callable[[jax.Array], jax.Array]
OBJECTIVES = ("probability", "success_first")


@dataclasses.dataclass(frozen=True)
class PixelAttackConfig:
  """The paper's settings are the defaults (population 400, 100 generations, DE/rand/1)."""
  pixels: int = 1
  popsize: int = 400
  generations: int = 100
  strategy: str = "rand1"          # "rand1" (paper) or "best1bin" (SciPy / peers)
  targeted: bool = False
  stop_probability: Optional[float] = None   # default: 0.05 untargeted, 0.5 targeted
  recombination: float = 1.0      # best1bin only
  objective: str = "probability"  # "probability" (paper) or "success_first"
  segment_generations: int = 10   # generations between compactions / progress reports

  def __post_init__(self):
    if self.pixels < 1:
      raise ValueError(f"pixels must be >= 1, got {self.pixels}")
    if self.popsize < 4:
      raise ValueError(f"popsize must be >= 4 for DE, got {self.popsize}")
    if self.generations < 0:
      raise ValueError(f"generations must be >= 0, got {self.generations}")
    if self.strategy not in de.STRATEGIES:
      raise ValueError(f"unknown strategy {self.strategy!r}; known: {de.STRATEGIES}")
    if self.objective not in OBJECTIVES:
      raise ValueError(f"unknown objective {self.objective!r}; known: {OBJECTIVES}")

  @property
  def threshold(self) -> float:
    if self.stop_probability is not None:
      return self.stop_probability
    return 0.5 if self.targeted else 0.05

  def de_config(self) -> de.DEConfig:
    # Both modes minimise; untargeted fitness = p_true, targeted = 1 - p_target.
    stop = self.threshold if not self.targeted else 1.0 - self.threshold
    if self.objective == "success_first":
      stop -= 1.0   # below the threshold the candidate always fools the net
    if self.strategy == "rand1":
      return de.DEConfig.paper(stop_fitness=stop)
    return de.DEConfig.scipy_best1bin(self.recombination, stop_fitness=stop)


def bounds(image_shape, pixels: int):
  """(lower, upper) of a candidate: x in [0, W), y in [0, H), colours in [0, 255]."""
  h, w, c = image_shape
  lo = jnp.tile(jnp.zeros(2 + c), pixels)
  hi = jnp.tile(jnp.concatenate([jnp.array([w, h], jnp.float32), jnp.full((c,), 255.)]),
                pixels)
  return lo, hi


def initial_population(key, image_shape, pixels: int, popsize: int) -> jax.Array:
  """The paper's initialisation: coordinates uniform over the image, colours ~ N(128, 127)
  clipped to [0, 255]."""
  h, w, c = image_shape
  kx, ky, kc = jax.random.split(key, 3)
  x = jax.random.uniform(kx, (popsize, pixels, 1), minval=0, maxval=w)
  y = jax.random.uniform(ky, (popsize, pixels, 1), minval=0, maxval=h)
  col = jnp.clip(128 + 127 * jax.random.normal(kc, (popsize, pixels, c)), 0, 255)
  return jnp.concatenate([x, y, col], axis=-1).reshape(popsize, pixels * (2 + c))


def decode(candidate: jax.Array, image_shape):
  """Candidate vector -> integer (x, y) of shape (k,) each and colours (k, C), rounded to
  integers so that every adversarial image is a real 8-bit image."""
  h, w, c = image_shape
  p = candidate.reshape(-1, 2 + c)
  x = jnp.clip(jnp.floor(p[:, 0]), 0, w - 1).astype(jnp.int32)
  y = jnp.clip(jnp.floor(p[:, 1]), 0, h - 1).astype(jnp.int32)
  return x, y, jnp.clip(jnp.round(p[:, 2:]), 0, 255)


def perturb(image: jax.Array, candidate: jax.Array) -> jax.Array:
  """Writes the candidate's pixels into ``image`` (H, W, C) by scatter."""
  x, y, col = decode(candidate, image.shape)
  return image.at[y, x].set(col.astype(image.dtype))


def fitness_fn(predict: Predict, image, label, target, targeted: bool,
               objective: str = "probability"):
  """The black-box fitness of one attack: population (P, D) -> (P,), lower is better."""
  if objective not in OBJECTIVES:
    raise ValueError(f"unknown objective {objective!r}; known: {OBJECTIVES}")

  def fitness(population):
    probs = predict(jax.vmap(perturb, (None, 0))(image, population))
    top1 = jnp.argmax(probs, axis=-1)
    if targeted:
      value, fooled = 1.0 - probs[:, target], top1 == target
    else:
      value, fooled = probs[:, label], top1 != label
    if objective == "success_first":
      value = value - fooled.astype(value.dtype)
    return value
  return fitness


@struct.dataclass
class AttackRecords:
  """One row per attack (numpy arrays after ``attack``)."""
  image_id: np.ndarray            # (A,) caller's id of the image
  true_class: np.ndarray          # (A,)
  target_class: np.ndarray        # (A,) -1 when untargeted
  adversarial_class: np.ndarray   # (A,) top-1 of the perturbed image
  success: np.ndarray             # (A,) bool
  probs: np.ndarray               # (A, K) probabilities of the perturbed image
  prior_probs: np.ndarray         # (A, K) probabilities of the clean image
  pixels: np.ndarray              # (A, k, 2 + C) decoded (x, y, colour...)
  queries: np.ndarray             # (A,) model evaluations used
  generations: np.ndarray         # (A,) generations run


class _Engine:
  """The compiled pieces of a batched attack for one (predict, shape, config)."""

  def __init__(self, predict: Predict, image_shape, config: PixelAttackConfig):
    self.shape = tuple(image_shape)
    self.config = config
    self.de_config = config.de_config()
    lo, hi = bounds(self.shape, config.pixels)
    targeted = config.targeted

    def one_init(key, image, label, target):
      pop = initial_population(jax.random.fold_in(key, 0), self.shape, config.pixels,
                               config.popsize)
      fit = fitness_fn(predict, image, label, target, targeted, config.objective)
      return de.init(jax.random.fold_in(key, 1), pop, fit, self.de_config)

    def one_run(state, image, label, target, max_gen):
      fit = fitness_fn(predict, image, label, target, targeted, config.objective)
      return de.run(state, fit, self.de_config, lo, hi, max_gen)

    def finish(best, images):
      adv = jax.vmap(perturb)(images, best)
      both = jnp.concatenate([adv, images], axis=0)
      probs = predict(both)
      n = images.shape[0]
      x, y, col = jax.vmap(lambda b: decode(b, self.shape))(best)
      pixels = jnp.concatenate([x[..., None], y[..., None], col], axis=-1)
      return probs[:n], probs[n:], pixels

    self.init = jax.jit(jax.vmap(one_init))
    self.run = jax.jit(jax.vmap(one_run, (0, 0, 0, 0, None)))
    self.finish = jax.jit(finish)


@functools.lru_cache(maxsize=16)
def _engine(predict, image_shape, config) -> _Engine:
  return _Engine(predict, image_shape, config)


def _bucket(n: int, multiple: int, cap: int) -> int:
  """Smallest power of two >= n (times the device count), at most ``cap``: few shapes to
  compile, little padding."""
  size = max(1, 1 << max(0, math.ceil(math.log2(max(n, 1)))))
  size = min(max(size, n), max(cap, n))
  return int(math.ceil(size / multiple) * multiple)


def _padded_batches(rows: np.ndarray, cap: int, devices: int):
  """Splits ``rows`` into batches of at most ``cap``, each padded (by repeating its first row)
  to a bucket size; yields (rows, padded rows)."""
  for start in range(0, len(rows), cap):
    idx = rows[start:start + cap]
    size = _bucket(len(idx), devices, cap)
    yield idx, np.concatenate([idx, np.full(size - len(idx), idx[0])])


def _put(tree, sharding):
  """Host arrays -> device arrays, sharded over the attack axis (every process passes the
  same global array; each places only its own devices' rows, so this works multi-host)."""
  def put(a):
    if sharding is None:
      return jnp.asarray(a)
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda i: a[i])
  return jax.tree_util.tree_map(put, tree)


def _get(a) -> np.ndarray:
  """Device array -> host numpy, gathering from every process when sharded multi-host."""
  if getattr(a, "is_fully_addressable", True):
    return np.asarray(a)
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(a, tiled=True))


def validate_inputs(images, labels, targets, num_classes: int, pixels: int):
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
  if np.issubdtype(images.dtype, np.floating):
    if not np.all(np.isfinite(images)) or images.min() < 0 or images.max() > 255:
      raise ValueError("images must hold pixels in [0, 255] without NaN")
  elif images.dtype != np.uint8:
    raise ValueError(f"images must be uint8 or float, got {images.dtype}")
  n, h, w, _ = images.shape
  if pixels > h * w:
    raise ValueError(f"pixels={pixels} exceeds the {h * w} pixels of a {h}x{w} image")
  labels = np.asarray(labels)
  targets = np.asarray(targets)
  if labels.shape != (n,) or targets.shape != (n,):
    raise ValueError(f"labels and targets must have shape ({n},), got {labels.shape} "
                     f"and {targets.shape}")
  for what, arr, low in (("label", labels, 0), ("target", targets, -1)):
    if arr.size and (arr.min() < low or arr.max() >= num_classes):
      raise ValueError(f"{what} out of range [{low}, {num_classes}): found "
                       f"{arr.min()}..{arr.max()}")
  return images.astype(np.float32), labels.astype(np.int32), targets.astype(np.int32)


def attack(predict: Predict, images, labels, key, config: PixelAttackConfig,
           targets=None, image_ids=None, num_classes: Optional[int] = None,
           mesh: Optional[Mesh] = None, max_batch: Optional[int] = None,
           progress: Optional[Callable[[dict], None]] = None) -> AttackRecords:
  """Attacks each (image, label, target) row; returns numpy ``AttackRecords``.

  ``predict`` must be a pure, traceable function (e.g. ``Classifier.predict``); reuse the same
  function object across calls so the compiled engine is reused. Attack ``i`` draws its
  randomness from ``fold_in(key, image_ids[i] * 1000 + target + 1)``, so a row's result does
  not depend on which batch or device it runs in.
  """
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
  n = len(images)
  if targets is None:
    if config.targeted:
      raise ValueError("targeted attack needs targets")
    targets = np.full((n,), -1, np.int32)
  if image_ids is None:
    image_ids = np.arange(n)
  image_ids = np.asarray(image_ids, np.int64)
  if num_classes is None:
    num_classes = int(jax.eval_shape(predict, jax.ShapeDtypeStruct((1,) + images.shape[1:],
                                                                   jnp.float32)).shape[-1])
  images, labels, targets = validate_inputs(images, labels, targets, num_classes,
                                            config.pixels)
  if config.targeted and np.any((targets < 0) | (targets == labels)):
    raise ValueError("targeted attack: every target must differ from the true label")
  engine = _engine(predict, images.shape[1:], config)
  devices = mesh.size if mesh is not None else 1
  sharding = (NamedSharding(mesh, PartitionSpec(mesh.axis_names[0])) if mesh is not None
              else None)
  cap = max_batch or max(n, 1)
  # Raw key data on the host (key_data takes typed and legacy keys alike), gathered per batch.
  keys = np.asarray(jax.random.key_data(jax.vmap(lambda i: jax.random.fold_in(key, i))(
      jnp.asarray(image_ids * 1000 + targets + 1, jnp.uint32))))

  # Initialise in batches of at most `cap`, then advance the unfinished ones in segments.
  states = []
  for idx, pad in _padded_batches(np.arange(n), cap, devices):
    s = engine.init(*_put((keys[pad], images[pad], labels[pad], targets[pad]), sharding))
    states.append(jax.tree_util.tree_map(lambda a: _get(a)[:len(idx)], s))
  state = jax.tree_util.tree_map(lambda *a: np.concatenate(a), *states)
  _check_finite(state.fitness)

  seg = max(1, config.segment_generations)
  for max_gen in range(seg, config.generations + seg, seg):
    max_gen = min(max_gen, config.generations)
    active = np.nonzero(~state.done & (state.generation < max_gen))[0]
    for idx, pad in _padded_batches(active, cap, devices):
      sub = jax.tree_util.tree_map(lambda a: a[pad], state)
      out = engine.run(*_put((sub, images[pad], labels[pad], targets[pad]), sharding),
                       max_gen)
      out = jax.tree_util.tree_map(lambda a: _get(a)[:len(idx)], out)
      state = jax.tree_util.tree_map(lambda a, b: _scatter(a, idx, b), state, out)
    _check_finite(state.best_fitness)
    if progress is not None:
      progress(dict(generation=max_gen, active=int(len(active)),
                    done=int(np.sum(state.done)), attacks=n))
    if max_gen >= config.generations:
      break

  probs, prior, pixels = [], [], []
  for idx, pad in _padded_batches(np.arange(n), cap, devices):
    p, q, px = engine.finish(*_put((state.best_member[pad], images[pad]), sharding))
    probs.append(_get(p)[:len(idx)])
    prior.append(_get(q)[:len(idx)])
    pixels.append(_get(px)[:len(idx)])
  probs, prior, pixels = map(np.concatenate, (probs, prior, pixels))
  _check_finite(probs)
  adv = probs.argmax(-1)
  success = (adv == targets) if config.targeted else (adv != labels)
  return AttackRecords(image_id=image_ids, true_class=labels, target_class=targets,
                       adversarial_class=adv.astype(np.int32), success=success,
                       probs=probs, prior_probs=prior, pixels=pixels,
                       queries=state.evaluations.astype(np.int64),
                       generations=state.generation.astype(np.int32))


def _scatter(a, idx, b):
  a = a.copy()
  a[idx] = b
  return a


def _check_finite(x):
  if not np.all(np.isfinite(np.asarray(x))):
    raise FloatingPointError("the model returned NaN or infinite probabilities; check its "
                             "weights and preprocessing")


def targets_for_all(labels, num_classes: int):
  """Expands each image to its num_classes - 1 targets: (image_index, target) arrays."""
  labels = np.asarray(labels)
  rows = [(i, t) for i, y in enumerate(labels) for t in range(num_classes) if t != y]
  idx = np.array([r[0] for r in rows], np.int64)
  return idx, np.array([r[1] for r in rows], np.int32)


# --- Exhaustive one-pixel baseline ------------------------------------------------------

def colour_grid(levels: Sequence[float], channels: int = 3) -> np.ndarray:
  """Every colour whose channels all take values in ``levels``: len(levels)^C colours."""
  levels = [float(v) for v in levels]
  if not levels or min(levels) < 0 or max(levels) > 255:
    raise ValueError(f"colour levels must be non-empty and in [0, 255], got {levels}")
  grid = np.stack(np.meshgrid(*[levels] * channels, indexing="ij"), -1)
  return grid.reshape(-1, channels).astype(np.float32)


def rgb_cube_corners(channels: int = 3) -> np.ndarray:
  """The default colour set: the 2^C corners of the colour cube (8 for RGB, 2 for gray)."""
  return colour_grid((0.0, 255.0), channels)


@functools.lru_cache(maxsize=8)
def _exhaustive_fn(predict, image_shape, num_colours, chunk):
  h, w, c = image_shape
  total = h * w * num_colours

  def one(image, label, colours):
    cand_idx = jnp.arange(total)
    pos, col = cand_idx // num_colours, cand_idx % num_colours
    cands = jnp.concatenate([(pos % w)[:, None].astype(jnp.float32),
                             (pos // w)[:, None].astype(jnp.float32), colours[col]], axis=1)
    pad = (-total) % chunk
    cands = jnp.concatenate([cands, jnp.repeat(cands[:1], pad, axis=0)])
    valid = jnp.arange(total + pad) < total

    def body(carry, block):
      block, ok = block
      probs = predict(jax.vmap(perturb, (None, 0))(image, block))
      fooled = (jnp.argmax(probs, -1) != label) & ok
      p_true = jnp.where(ok, probs[:, label], 2.0)
      best = jnp.argmin(p_true)
      found, lowest, lowest_cand, n_fooling = carry
      better = p_true[best] < lowest
      return (found | jnp.any(fooled), jnp.where(better, p_true[best], lowest),
              jnp.where(better, block[best], lowest_cand),
              n_fooling + jnp.sum(fooled)), None

    init = (jnp.zeros((), bool), jnp.full((), 2.0), cands[0], jnp.zeros((), jnp.int32))
    blocks = (cands.reshape(-1, chunk, 2 + c), valid.reshape(-1, chunk))
    return jax.lax.scan(body, init, blocks)[0]

  return jax.jit(jax.vmap(one, (0, 0, None)))


def exhaustive_one_pixel(predict: Predict, images, labels, colours=None, chunk: int = 1024,
                         batch: int = 8):
  """For each image: is there any single pixel set to a colour of ``colours`` (default the
  cube's corners) that changes the top-1 class? Also the lowest true-class probability found,
  its candidate and how many of the H*W*len(colours) changes fool the net.

  Returns a dict of numpy arrays; ``queries`` = H * W * len(colours) per image."""
  images = np.asarray(images, np.float32)
  labels = np.asarray(labels, np.int32)
  h, w, c = images.shape[1:]
  colours = rgb_cube_corners(c) if colours is None else np.asarray(colours, np.float32)
  total = h * w * len(colours)
  chunk = min(chunk, total)
  fn = _exhaustive_fn(predict, (h, w, c), len(colours), chunk)
  outs = []
  for start in range(0, len(images), batch):
    sl = slice(start, start + batch)
    outs.append([np.asarray(o) for o in fn(images[sl], labels[sl], jnp.asarray(colours))])
  found, lowest, cand, count = [np.concatenate(o) for o in zip(*outs)]
  return dict(fooled=found, lowest_true_prob=lowest, best_candidate=cand,
              num_fooling_changes=count, queries=np.full(len(images), total))
