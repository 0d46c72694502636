"""The batched runner: thousands of few-pixel attacks in one XLA call, for any method.

``attack`` vmaps a method (``differential_evolution``, ``sparse_rs``, ``corner_search``: each an
``init`` / ``step`` pair on a pytree state for one attack, the black box passed in) over attacks
(image x target rows) and runs its steps in segments of one jit-compiled ``while_loop``; an
attack's loop ends at its stopping rule, its step limit or its query budget, which it never
exceeds. Between segments finished attacks are dropped from the batch (compaction into a few
fixed batch shapes), so a finished attack stops costing model evaluations -- unless each
attack's candidates fill whole model calls (DE), whose calls are skipped once it finishes:
then the batches keep their first shape and compile once. A method whose first batch is a
step's size (DE: its population) also initialises inside the loop's first pass, so that
its compiled program is one loop, not an init program beside it. With a
``jax.sharding.Mesh`` the attack axis is sharded over its devices (placement and gathering:
``pixeljax.sharding``) -- except on one host's CPU devices, where every device runs every
attack and the model calls are dealt to them (``config.eval_devices``,
``sharding.deals_model_calls``).
"""
import functools
import math
from typing import Callable, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from pixeljax import sharding as sharding_lib
from pixeljax.errors import UserError
from pixeljax.evaluate import in_fixed_batches, micro_batched
from pixeljax.sparse import method as method_lib
from pixeljax.sparse.corner_search import CornerSearch
from pixeljax.sparse.differential_evolution import DifferentialEvolution
from pixeljax.models.stem import Factored
from pixeljax.sparse.incremental import candidate_probs, modes
from pixeljax.sparse.problem import PixelAttackConfig, Predict, decode, evaluation, perturb
from pixeljax.sparse.records import AttackRecords
from pixeljax.sparse.sparse_rs import SparseRS


def make_method(config: PixelAttackConfig, image_shape, num_classes: int):
  """The method named by ``config.method`` for images of ``image_shape``."""
  shape = tuple(int(s) for s in image_shape)
  if config.method == "de":
    return DifferentialEvolution(config, shape)
  if config.method == "sparse_rs":
    return SparseRS(config, shape)
  return CornerSearch(config, shape, int(num_classes))


class _Engine:
  """The compiled pieces of a batched attack for one (predict, shape, config, mesh to deal
  model calls to)."""

  def __init__(self, predict: Predict, image_shape, config: PixelAttackConfig,
               num_classes: int, mesh: Optional[Mesh] = None):
    self.shape = tuple(image_shape)
    self.config = config      # resolved by ``attack`` (which knows the mesh)
    size = config.eval_batch
    # The final evaluation pads to whole calls of ``size``, so a row's recorded
    # probabilities do not depend on how many rows share the call either.
    full = predict.full if isinstance(predict, Factored) else predict
    final = (lambda x: in_fixed_batches(full, x, size, mesh=mesh)) if size else full
    if config.incremental:
      probs_of = candidate_probs(predict, size, config.local_window, mesh)
    else:
      model = micro_batched(full, size, mesh) if size else (lambda x, active: full(x))
      probs_of = lambda image, cands, active: model(
          jax.vmap(perturb, (None, 0))(image, cands), active)
    self.method = method = make_method(config, self.shape, num_classes)
    budget = config.budget

    def problem(image, label, target, active=True):
      """``active``: whether this attack's results will be kept; when not (it finished, or
      it pads a batch), its model calls can be skipped (``micro_batched``)."""
      def evaluate(cands):
        chex.assert_rank(cands, 2)
        probs = probs_of(image, cands, jnp.broadcast_to(active, cands.shape[:1]))
        return evaluation(probs, label, target, config)
      return method_lib.Problem(image, label, target, evaluate)

    def one_init(key, image, label, target):
      chex.assert_shape(image, self.shape)
      return method.init(key, problem(image, label, target))

    def go_on(s, max_iteration):
      t = s.tracker
      return ((~t.done) & (t.iteration < max_iteration)
              & (t.queries + method.queries_per_step <= budget))

    def one_run(state, image, label, target, max_iteration):
      # Under vmap the loop runs while any row goes on; the others' steps are discarded.
      return jax.lax.while_loop(
          lambda s: go_on(s, max_iteration),
          lambda s: method.step(s, problem(image, label, target, go_on(s, max_iteration))),
          state)

    def one_started_run(started, state, key, image, label, target, max_iteration):
      """``one_run`` whose rows that have not ``started`` first initialise -- in the loop's
      first pass, through the same model call as the steps' (a method whose first batch has
      a step's size: DE's population). An init program beside the loop cost 0.5-0.7 s more
      compile per pixel count (100 LeNet attacks): mostly the vmapped bookkeeping and its
      threefry draws, not the net."""
      def go(carry):
        started, s = carry
        return ~started | go_on(s, max_iteration)

      def body(carry):
        started, s = carry
        trial, asked = method.ask(s)
        first = method.first(key)
        cands = jnp.where(started, trial, first)
        ev = problem(image, label, target, go(carry)).evaluate(cands)
        new = jax.tree_util.tree_map(lambda a, b: jnp.where(started, a, b),
                                     method.tell(asked, trial, ev), method.begin(key, first, ev))
        return jnp.ones((), bool), new
      return jax.lax.while_loop(go, body, (started, state))[1]

    def finish(best, images):
      adv = jax.vmap(perturb)(images, best)
      both = jnp.concatenate([adv, images], axis=0)
      probs = final(both)
      n = images.shape[0]
      x, y, col = jax.vmap(lambda b: decode(b, self.shape))(best)
      pixels = jnp.concatenate([x[..., None], y[..., None], col], axis=-1)
      return probs[:n], probs[n:], pixels

    # Whether finished attacks must be dropped from the batch between segments: not when each
    # attack's candidates fill whole model calls (DE's population = eval_batch), since those
    # calls are skipped once it finishes -- the batch then keeps one shape (one compiled
    # program) for the whole run.
    self.compacts = not (size and method.queries_per_step % size == 0)
    # Whether attacks initialise inside the first run (``one_started_run``).
    self.starts_in_run = (hasattr(method, "ask")
                          and method.first_queries == method.queries_per_step)
    # With a dealing mesh every device runs the whole program on every attack, and the
    # model calls are dealt to them.
    program = jax.jit if mesh is None else (lambda f: sharding_lib.on_every_device(f, mesh))
    self.init = program(jax.vmap(one_init))
    self.run = program(jax.vmap(one_run, (0, 0, 0, 0, None)))
    self.started_run = program(jax.vmap(one_started_run, (0, 0, 0, 0, 0, 0, None)))
    self.finish = program(finish)

  def active(self, state, max_iteration: int) -> np.ndarray:
    """Rows that can still take a step before ``max_iteration``."""
    t = state.tracker
    return ((~t.done) & (t.iteration < max_iteration)
            & (t.queries + self.method.queries_per_step <= self.config.budget))


@functools.lru_cache(maxsize=16)
def _engine(predict, image_shape, config, num_classes, mesh=None) -> _Engine:
  """``mesh``: one whose devices the model calls are dealt to (else None)."""
  return _Engine(predict, image_shape, config, num_classes, mesh)


def _sizes(cap: int, devices: int):
  """The batch shapes a call may have, largest first: the full batch ``cap`` (so the first
  calls carry no padding) and powers of sixteen below it (times the device count). Every
  shape is one compiled program per pixel count (2-3 s each on CPU): three for a batch of 100
  (powers of four needed five, powers of two eight). Rows that fit no shape well are split
  over calls of smaller shapes (``_split``), which cost little more than one call."""
  cap = int(math.ceil(cap / devices) * devices)
  sizes, s = [cap], devices
  while s < cap:
    sizes.append(s)
    s *= 16
  return sorted(set(sizes), reverse=True)


def _split(n: int, sizes) -> list:
  """Batch shapes (from ``sizes``, largest first) whose calls cover ``n`` rows: a call is
  padded up to the next shape when at most a quarter of it would be padding, else the rows are
  split over smaller shapes -- padding rows cost as much compute as real ones."""
  out = []
  while n > 0:
    up = min((s for s in sizes if s >= n), default=None)
    if up is not None and (up - n) * 4 <= up:
      out.append(up)
      break
    down = max((s for s in sizes if s <= n), default=None)
    if down is None:          # fewer rows than the smallest shape (the device count)
      out.append(min(sizes))
      break
    out.append(down)
    n -= down
  return out


def _padded_batches(rows: np.ndarray, cap: int, devices: int):
  """Splits ``rows`` into calls of the shapes ``_split`` picks, each padded (by repeating its
  first row) to its shape; yields (rows, padded rows)."""
  start = 0
  for size in _split(len(rows), _sizes(cap, devices)):
    idx = rows[start:start + size]
    start += len(idx)
    yield idx, np.concatenate([idx, np.full(size - len(idx), idx[0])])


def validate_inputs(images, labels, targets, num_classes: int, pixels: int,
                    method: str = "de"):
  images = np.asarray(images)
  if images.ndim != 4:
    raise UserError(f"images must be (N, H, W, C), got shape {images.shape}")
  if np.issubdtype(images.dtype, np.floating):
    if not np.all(np.isfinite(images)) or images.min() < 0 or images.max() > 255:
      raise UserError("images must hold pixels in [0, 255] without NaN")
  elif images.dtype != np.uint8:
    raise UserError(f"images must be uint8 or float, got {images.dtype}")
  n, h, w, _ = images.shape
  if num_classes > 1000:
    # Attack keys fold in image_id * 1000 + target + 1 (unique for at most 1000 classes).
    raise UserError(f"at most 1000 classes are supported, the model has {num_classes}")
  if pixels > h * w:
    raise UserError(f"pixels={pixels} exceeds the {h * w} pixels of a {h}x{w} image")
  if method == "sparse_rs" and 2 * pixels > h * w:
    raise UserError(f"Sparse-RS moves pixels to positions outside its k={pixels}: a {h}x{w} "
                    f"image needs k <= {h * w // 2}")
  labels = np.asarray(labels)
  targets = np.asarray(targets)
  if labels.shape != (n,) or targets.shape != (n,):
    raise UserError(f"labels and targets must have shape ({n},), got {labels.shape} "
                    f"and {targets.shape}")
  for what, arr, low in (("label", labels, 0), ("target", targets, -1)):
    if arr.size and (arr.min() < low or arr.max() >= num_classes):
      raise UserError(f"{what} out of range [{low}, {num_classes}): found "
                      f"{arr.min()}..{arr.max()}")
  return images.astype(np.float32), labels.astype(np.int32), targets.astype(np.int32)


def attack(predict: Predict, images, labels, key, config: PixelAttackConfig,
           targets=None, image_ids=None, num_classes: Optional[int] = None,
           mesh: Optional[Mesh] = None, attacks_per_call: Optional[int] = None,
           progress: Optional[Callable[[dict], None]] = None) -> AttackRecords:
  """Attacks each (image, label, target) row; returns numpy ``AttackRecords``.

  ``predict`` must be a pure, traceable function (e.g. ``Classifier.predict``); reuse the same
  function object across calls so the compiled engine is reused. Attack ``i`` draws its
  randomness from ``fold_in(key, image_ids[i] * 1000 + target + 1)``, so a row's result does
  not depend on which batch or device it runs in. XLA's float sums can depend on a model
  call's batch size (~1e-7 on CPU); ``config.eval_batch`` fixes that size whenever a call
  holds at least that many candidates (DE: one population per model call).
  """
  images = np.asarray(images)
  if images.ndim != 4:
    raise UserError(f"images must be (N, H, W, C), got shape {images.shape}")
  split = sharding_lib.mesh_modes(mesh)
  config = config.resolved(**split, **modes(predict))
  devices, dealt = split["devices"], None
  if sharding_lib.deals_model_calls(mesh):   # attacks not sharded: calls dealt, or one device
    mesh = dealt = sharding_lib.dealing_mesh(mesh, config.eval_devices)
  n = len(images)
  if targets is None:
    if config.targeted:
      raise UserError("targeted attack needs targets")
    targets = np.full((n,), -1, np.int32)
  if image_ids is None:
    image_ids = np.arange(n)
  image_ids = np.asarray(image_ids, np.int64)
  if num_classes is None:
    num_classes = int(jax.eval_shape(predict, jax.ShapeDtypeStruct((1,) + images.shape[1:],
                                                                   jnp.float32)).shape[-1])
  images, labels, targets = validate_inputs(images, labels, targets, num_classes,
                                            config.pixels, config.method)
  if config.targeted and np.any((targets < 0) | (targets == labels)):
    raise UserError("targeted attack: every target must differ from the true label")
  engine = _engine(predict, images.shape[1:], config, num_classes, dealt)
  if config.budget < engine.method.first_queries:
    raise UserError(f"max_queries={config.budget} is below the {engine.method.first_queries} "
                    f"queries of {config.method}'s first step")
  sharding = sharding_lib.attack_sharding(mesh)
  cap = n if n else 1
  if attacks_per_call and (attacks_per_call < n
                           or 4 * (attacks_per_call - n) <= attacks_per_call):
    cap = attacks_per_call    # a call a little short of it pads up to it: one batch shape
  # Raw key data on the host (key_data takes typed and legacy keys alike), gathered per batch.
  keys = np.asarray(jax.random.key_data(jax.vmap(lambda i: jax.random.fold_in(key, i))(
      jnp.asarray(image_ids * 1000 + targets + 1, jnp.uint32))))

  # Initialise in batches of at most `cap`, then advance the unfinished ones in segments --
  # or, where the method allows, initialise in the first segment's loop (``started``).
  started = np.zeros(n, bool)
  if engine.starts_in_run:
    shapes = jax.eval_shape(engine.init, keys[:1], images[:1], labels[:1], targets[:1])
    state = jax.tree_util.tree_map(lambda s: np.zeros((n,) + s.shape[1:], s.dtype), shapes)
  else:
    states = []
    for idx, pad in _padded_batches(np.arange(n), cap, devices):
      s = engine.init(*sharding_lib.put((keys[pad], images[pad], labels[pad], targets[pad]),
                                        sharding))
      states.append(jax.tree_util.tree_map(lambda a: sharding_lib.gather(a)[:len(idx)], s))
    state = jax.tree_util.tree_map(lambda *a: np.concatenate(a), *states)
    _check_finite(state.tracker.best_probs)
    started[:] = True

  seg, limit = config.segment, engine.method.max_iterations
  for max_it in range(seg, max(limit, 1) + seg, seg):   # once at least: rows may not have started
    max_it = min(max_it, limit)
    going = engine.active(state, max_it) | ~started
    if engine.compacts:
      batches = list(_padded_batches(np.nonzero(going)[0], cap, devices))
    else:   # the batches of the first call, as long as any of their attacks goes on
      batches = [(idx, pad) for idx, pad in _padded_batches(np.arange(n), cap, devices)
                 if going[idx].any()]
    for idx, pad in batches:
      sub = jax.tree_util.tree_map(lambda a: a[pad], state)
      done = sub.tracker.done.copy()
      done[len(idx):] = True     # padding rows: discarded, so their model calls are skipped
      sub = sub.replace(tracker=sub.tracker.replace(done=done))
      if engine.starts_in_run:
        begun = started[pad]
        begun[len(idx):] = True      # padding rows neither start nor step
        out = engine.started_run(*sharding_lib.put(
            (begun, sub, keys[pad], images[pad], labels[pad], targets[pad]), sharding), max_it)
        started[idx] = True
      else:
        out = engine.run(*sharding_lib.put((sub, images[pad], labels[pad], targets[pad]),
                                           sharding), max_it)
      out = jax.tree_util.tree_map(lambda a: sharding_lib.gather(a)[:len(idx)], out)
      state = jax.tree_util.tree_map(lambda a, b: _scatter(a, idx, b), state, out)
    _check_finite(state.tracker.best_probs)
    if progress is not None:
      t = state.tracker
      finished = ~engine.active(state, limit)
      progress(dict(iteration=max_it, attacks=n, finished=int(np.sum(finished)),
                    stopped=int(np.sum(t.done)),
                    work=int(np.sum(np.where(finished, limit, t.iteration))),
                    total_work=n * max(limit, 1),
                    evaluations=int(np.sum(t.queries))))
    if max_it >= limit:
      break

  probs, prior, pixels = [], [], []
  for idx, pad in _padded_batches(np.arange(n), cap, devices):
    p, q, px = engine.finish(*sharding_lib.put((state.tracker.best[pad], images[pad]),
                                               sharding))
    probs.append(sharding_lib.gather(p)[:len(idx)])
    prior.append(sharding_lib.gather(q)[:len(idx)])
    pixels.append(sharding_lib.gather(px)[:len(idx)])
  probs, prior, pixels = map(np.concatenate, (probs, prior, pixels))
  _check_finite(probs)
  adv = probs.argmax(-1)
  success = (adv == targets) if config.targeted else (adv != labels)
  success_query = state.tracker.success_query
  if config.stop_rule == "first_success":
    # The attack returns its first fooling candidate, so the full net's final check agrees --
    # unless incremental evaluation (~1e-6 from the full net) saw a near-tie as fooling.
    success_query = np.where(success, success_query, -1)
  # The reverse near-tie: the full net says the reported candidate fools although the attack's
  # own evaluations never did. It was queried by the attack's last query, so that is recorded
  # (an upper bound on its first success): a success always has a first-success query.
  success_query = np.where(success & (success_query < 0), state.tracker.queries, success_query)
  return AttackRecords(image_id=image_ids, true_class=labels, target_class=targets,
                       adversarial_class=adv.astype(np.int32), success=success,
                       probs=probs, prior_probs=prior, pixels=pixels,
                       queries=state.tracker.queries.astype(np.int64),
                       success_query=success_query.astype(np.int64),
                       iterations=state.tracker.iteration.astype(np.int32))


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


