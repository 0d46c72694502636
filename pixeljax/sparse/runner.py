"""The batched runner: thousands of few-pixel attacks in one XLA call, for any method.

``attack`` vmaps a method (``pixeljax.sparse.method``: ``init`` / ``ask`` / ``tell`` on a pytree
state for one attack) over attacks (image x target rows) and runs its steps in segments of one
jit-compiled ``while_loop``; an attack's loop ends at its stopping rule, its step limit or its
query budget, which it never exceeds. Candidates reach the model through the model's
``Evaluator`` (``pixeljax.sparse.evaluator``: the engine's fastest exact way for that model and
backend). Between segments finished attacks are dropped from the batch (compaction into a few
fixed batch shapes), so a finished attack stops costing model calls -- unless each attack's
candidates fill whole model calls (DE), whose calls are skipped once it finishes: then the
batches keep their first shape and compile once. A method whose first batch is a step's size
(DE) scores it inside the loop's first pass, so its compiled program is one loop. With a
``jax.sharding.Mesh`` the attack axis is sharded over its devices (``pixeljax.sharding``) --
except on one host's CPU devices, where every device runs every attack and the evaluator deals
the model calls to them.

Attack i draws its randomness from its own key (``attack_keys_of``): ``fold_in`` of the image id
then the target (``"per_attack"``), so a row's result does not depend on which batch or device
it runs in; runs stored before it used ``fold_in(key, image_id * 1000 + target + 1)``
(``"id_x1000"``, at most 1,000 classes), which they keep when they resume.
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
from pixeljax import door
from pixeljax.sparse import method as method_lib
from pixeljax.sparse.corner_search import CornerSearch
from pixeljax.sparse.differential_evolution import DifferentialEvolution
from pixeljax.sparse.evaluator import Evaluator, evaluator_for
from pixeljax.sparse.problem import PixelAttackConfig, decode, perturb, score
from pixeljax.sparse.records import AttackRecords
from pixeljax.sparse.sparse_rs import SparseRS

ATTACK_KEYS = ("per_attack", "id_x1000")


def make_method(config: PixelAttackConfig, image_shape, num_classes: int) -> method_lib.Method:
  """The method named by ``config.method`` for images of ``image_shape``."""
  shape = tuple(int(s) for s in image_shape)
  if config.method == "de":
    return DifferentialEvolution(config, shape)
  if config.method == "sparse_rs":
    return SparseRS(config, shape)
  return CornerSearch(config, shape, int(num_classes))


def _threefry_fold_in(keys: np.ndarray, data: np.ndarray) -> np.ndarray:
  """``jax.random.fold_in`` of raw threefry2x32 keys (N, 2) with uint32 ``data`` (N,), on the
  host: Threefry-2x32 (20 rounds) of the count pair (0, data), as JAX computes it -- the same
  bits (tests/test_sparse.py), without compiling JAX's hash (1-3 s per batch shape on CPU)."""
  rotl = lambda v, d: (v << np.uint32(d)) | (v >> np.uint32(32 - d))
  k0, k1 = keys[:, 0], keys[:, 1]
  ks = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
  x0, x1 = np.zeros_like(data) + ks[0], data + ks[1]
  for i in range(5):
    for r in ((13, 15, 26, 6), (17, 29, 16, 24))[i % 2]:
      x0 = x0 + x1
      x1 = rotl(x1, r) ^ x0
    x0 = x0 + ks[(i + 1) % 3]
    x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
  return np.stack([x0, x1], axis=-1)


def attack_keys_of(key, image_ids, targets, derivation: str = "per_attack") -> np.ndarray:
  """Raw key data (host) of each attack's randomness: ``"per_attack"`` folds in the image id
  (high and low 32-bit words) and then target + 1 -- no class or id limit; ``"id_x1000"``
  (runs stored before it) folds in image_id * 1000 + target + 1 as a uint32. Threefry keys
  (JAX's default) are derived on the host, others through ``jax.random.fold_in``."""
  ids = np.asarray(image_ids, np.int64)
  targets = np.asarray(targets, np.int64)
  if derivation == "id_x1000":
    words = [(ids * 1000 + targets + 1).astype(np.uint32)]
  elif derivation == "per_attack":
    words = [(ids >> 32).astype(np.uint32), (ids & 0xFFFFFFFF).astype(np.uint32),
             (targets + 1).astype(np.uint32)]
  else:
    raise UserError(f"unknown attack_keys {derivation!r}; known: {ATTACK_KEYS}")
  typed = jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key)
  data = np.asarray(jax.random.key_data(key) if typed else key)
  impl = str(jax.random.key_impl(key)) if typed else jax.config.jax_default_prng_impl
  if impl == "threefry2x32" and data.shape == (2,) and data.dtype == np.uint32:
    with np.errstate(over="ignore"):
      keys = np.broadcast_to(data, (len(ids), 2))
      for w in words:
        keys = _threefry_fold_in(keys, w)
    return keys
  keys = jax.vmap(lambda *ws: functools.reduce(jax.random.fold_in, ws, key))(
      *(jnp.asarray(w) for w in words))
  return np.asarray(jax.random.key_data(keys))


class _Engine:
  """The compiled pieces of a batched attack for one (evaluator, image shape, config)."""

  def __init__(self, ev: Evaluator, image_shape, config: PixelAttackConfig, num_classes: int):
    self.shape = tuple(image_shape)
    self.config = config
    self.method = method = make_method(config, self.shape, num_classes)
    budget = config.budget

    def problem(image, label, target, active=True):
      """``active``: whether this attack's results will be kept; when not (it finished, or
      it pads a batch), its model calls can be skipped."""
      def score_candidates(cands):
        chex.assert_rank(cands, 2)
        probs = ev.candidates(image, cands, jnp.broadcast_to(active, cands.shape[:1]))
        return score(probs, label, target, config)
      return method_lib.Problem(image, label, target, score_candidates)

    def one_init(key, image, label, target):
      chex.assert_shape(image, self.shape)
      return method.init(key, problem(image, label, target))

    def go_on(s, max_iteration):
      t = s.tracker
      return ((~t.done) & (t.iteration < max_iteration)
              & (t.queries + method.queries_per_step <= budget))

    def one_run(started, state, key, image, label, target, max_iteration):
      """Steps until the stopping rule, ``max_iteration`` or the budget; rows that have not
      ``started`` first score their first batch -- through the same model call as the
      steps' (``method.init_in_loop``). Under vmap the loop runs while any row goes on; the
      others' steps are discarded."""
      def go(carry):
        started, s = carry
        return ~started | go_on(s, max_iteration)

      def body(carry):
        started, s = carry
        prob = problem(image, label, target, go(carry))
        if not self.starts_in_run:
          return started, method.step(s, prob)
        trial, asked = method.ask(s, prob)
        first = method.first(key, prob)
        cands = jnp.where(started, trial, first)
        sc = prob.score(cands)
        new = jax.tree_util.tree_map(lambda a, b: jnp.where(started, a, b),
                                     method.tell(asked, trial, sc, prob),
                                     method.begin(key, first, sc, prob))
        return jnp.ones((), bool), new
      return jax.lax.while_loop(go, body, (started, state))[1]

    def finish(best, images):
      adv = jax.vmap(perturb)(images, best)
      probs = ev.images(jnp.concatenate([adv, images], axis=0))
      n = images.shape[0]
      x, y, col = jax.vmap(lambda b: decode(b, self.shape))(best)
      pixels = jnp.concatenate([x[..., None], y[..., None], col], axis=-1)
      return probs[:n], probs[n:], pixels

    size = ev.execution.call_size
    # Whether finished attacks must be dropped from the batch between segments: not when each
    # attack's candidates fill whole model calls (DE's population = call_size), since those
    # calls are skipped once it finishes -- the batch then keeps one shape (one program).
    self.compacts = not (size and method.queries_per_step % size == 0)
    self.starts_in_run = method.init_in_loop and method.first_queries == method.queries_per_step
    program = ev.program     # with a dealing mesh, every device runs every attack
    self.init = program(jax.vmap(one_init))
    self.run = program(jax.vmap(one_run, (0, 0, 0, 0, 0, 0, None)))
    self.finish = program(finish)

  def active(self, state, max_iteration: int) -> np.ndarray:
    """Rows that can still take a step before ``max_iteration``."""
    t = state.tracker
    return ((~t.done) & (t.iteration < max_iteration)
            & (t.queries + self.method.queries_per_step <= self.config.budget))


@functools.lru_cache(maxsize=16)
def _engine(ev: Evaluator, image_shape, config, num_classes) -> _Engine:
  return _Engine(ev, image_shape, config, num_classes)


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


def _check_key(key):
  """One JAX random key, typed (``jax.random.key``) or raw (``jax.random.PRNGKey``), or one
  ``UserError`` line (a batch of keys or an int would fail deep inside ``fold_in``)."""
  bad = UserError(f"key must be one JAX random key (jax.random.PRNGKey(seed) or "
                  f"jax.random.key(seed)), got {type(key).__name__} "
                  f"{getattr(key, 'dtype', '')} {getattr(key, 'shape', '')}".rstrip())
  if not (hasattr(key, "dtype") and hasattr(key, "shape")):
    raise bad
  if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    try:
      key = jax.random.wrap_key_data(jnp.asarray(key))
    except (TypeError, ValueError):
      raise bad from None
  if key.shape != ():
    raise bad


def _validate_inputs(model, images, labels, targets, num_classes: int,
                    config: PixelAttackConfig):
  """The rest of ``attack``'s door (``images``: already through ``door.images_for``): one
  ``UserError`` line for what cannot be attacked."""
  n, h, w, _ = images.shape
  pixels = config.pixels
  if pixels > h * w:
    raise UserError(f"pixels={pixels} exceeds the {h * w} pixels of a {h}x{w} image")
  if config.method == "sparse_rs" and 2 * pixels > h * w:
    raise UserError(f"Sparse-RS moves pixels to positions outside its k={pixels}: a {h}x{w} "
                    f"image needs k <= {h * w // 2}")
  labels = np.asarray(labels)
  targets = np.asarray(targets)
  if labels.shape != (n,) or targets.shape != (n,):
    raise UserError(f"labels and targets must have shape ({n},), got {labels.shape} "
                    f"and {targets.shape}")
  for what, arr, low in (("label", labels, 0), ("target", targets, -1)):
    if not np.issubdtype(arr.dtype, np.integer):   # 3.7 would be attacked as class 3
      raise UserError(f"{what}s must be integer class indices, got {arr.dtype}")
    if arr.size and (arr.min() < low or arr.max() >= num_classes):
      raise UserError(f"{what} out of range [{low}, {num_classes}): found "
                      f"{arr.min()}..{arr.max()}")
  if config.targeted and np.any((targets < 0) | (targets == labels)):
    raise UserError("targeted attack: every target must differ from the true label")
  return images.astype(np.float32), labels.astype(np.int32), targets.astype(np.int32)


def attack(model, images, labels, key, config: PixelAttackConfig, targets=None,
           image_ids=None, num_classes: Optional[int] = None, mesh: Optional[Mesh] = None,
           attacks_per_call: Optional[int] = None,
           progress: Optional[Callable[[dict], None]] = None, execution=None,
           attack_keys: str = "per_attack") -> AttackRecords:
  """Attacks each (image, label, target) row of ``model``; returns numpy ``AttackRecords``.

  ``model``: what ``models.load`` returns (the engine then evaluates candidates its fastest
  exact way: ``pixeljax.sparse.evaluator``), an ``Evaluator``, or any pure, traceable function
  ``images -> probabilities`` -- a black box, run on the whole image per query (slower).
  ``mesh``: devices to shard the attacks over (default: on CPU, a host's CPU devices, which
  the model calls are dealt to). ``execution``: an ``Execution`` (or dict of its fields) to
  insist on instead of the engine's choice. ``attack_keys``: how each attack's key is derived
  from ``key`` (module docstring)."""
  if isinstance(model, Evaluator) and execution is not None:
    raise UserError("an Evaluator has its execution already: pass execution to "
                    "evaluator_for, not to attack")
  images = door.images_for(model, images)
  n = len(images)
  mesh = sharding_lib.default_mesh() if mesh is None else mesh
  ev = (model if isinstance(model, Evaluator)
        else evaluator_for(model, config.pixels, config.segment_kind, mesh, execution))
  devices = sharding_lib.mesh_modes(mesh)["devices"]
  if sharding_lib.deals_model_calls(mesh):   # attacks not sharded: calls dealt, or one device
    mesh = ev.mesh
  if targets is None:
    if config.targeted:
      raise UserError("targeted attack needs targets")
    targets = np.full((n,), -1, np.int32)
  image_ids = np.arange(n) if image_ids is None else np.asarray(image_ids, np.int64)
  if image_ids.shape != (n,):
    raise UserError(f"image_ids must have shape ({n},), one per image, got {image_ids.shape}")
  _check_key(key)
  if attacks_per_call is not None and attacks_per_call < 1:
    raise UserError(f"attacks_per_call must be >= 1 (or None: all at once), got "
                    f"{attacks_per_call}")
  # The model's first outputs, before anything is compiled: probabilities, or one clear line
  # (a first call's worth of images; the final check computes every clean image's anyway).
  outputs = door.probabilities(ev.probabilities(images[:256]), door.model_name(model),
                               rows=len(images[:256])).shape[1]
  if num_classes is None:
    num_classes = outputs
  elif num_classes != outputs:   # else a label past the outputs reads a clamped column: "fooled"
    raise UserError(f"num_classes={num_classes}, but {door.model_name(model)} outputs "
                    f"{outputs} class probabilities")
  images, labels, targets = _validate_inputs(model, images, labels, targets, num_classes,
                                             config)
  if attack_keys == "id_x1000" and num_classes > 1000:
    raise UserError(f"attack_keys='id_x1000' supports at most 1000 classes, the model has "
                    f"{num_classes}")
  engine = _engine(ev, images.shape[1:], config, num_classes)
  if config.budget < engine.method.first_queries:
    raise UserError(f"max_queries={config.budget} is below the {engine.method.first_queries} "
                    f"queries of {config.method}'s first step")
  rows = (attack_keys_of(key, image_ids, targets, attack_keys), images, labels, targets)
  cap = n if n else 1
  if attacks_per_call and (attacks_per_call < n
                           or 4 * (attacks_per_call - n) <= attacks_per_call):
    cap = attacks_per_call    # a call a little short of it pads up to it: one batch shape
  batches = functools.partial(_padded_batches, cap=cap, devices=devices)
  place = functools.partial(sharding_lib.put, sharding=sharding_lib.attack_sharding(mesh))
  state, started = _start(engine, rows, batches, place)
  state = _search(engine, rows, state, started, batches, place, progress, ev.execution.segment)
  return _records(engine, rows, state, image_ids, batches, place)


def _start(engine: _Engine, rows, batches, place):
  """Every attack's state before its first step, and whether it has started: either
  initialised in batches now, or (``starts_in_run``) zeros to be initialised in the loop."""
  n = len(rows[1])
  if engine.starts_in_run:
    shapes = jax.eval_shape(engine.init, *(r[:1] for r in rows))
    state = jax.tree_util.tree_map(lambda s: np.zeros((n,) + s.shape[1:], s.dtype), shapes)
    return state, np.zeros(n, bool)
  parts = []
  for idx, pad in batches(np.arange(n)):
    s = engine.init(*place(tuple(r[pad] for r in rows)))
    parts.append(jax.tree_util.tree_map(lambda a: sharding_lib.gather(a)[:len(idx)], s))
  state = jax.tree_util.tree_map(lambda *a: np.concatenate(a), *parts)
  _check_finite(state.tracker.best_probs)
  return state, np.ones(n, bool)


def _search(engine: _Engine, rows, state, started, batches, place, progress, segment: int):
  """Advances the unfinished attacks ``segment`` steps at a time, compacting between."""
  n = len(started)
  limit = engine.method.max_iterations
  for max_it in range(segment, max(limit, 1) + segment, segment):   # once at least
    max_it = min(max_it, limit)
    going = engine.active(state, max_it) | ~started
    if engine.compacts:
      calls = list(batches(np.nonzero(going)[0]))
    else:   # the batches of the first call, as long as any of their attacks goes on
      calls = [(idx, pad) for idx, pad in batches(np.arange(n)) if going[idx].any()]
    for idx, pad in calls:
      sub = jax.tree_util.tree_map(lambda a: a[pad], state)
      done = sub.tracker.done.copy()
      done[len(idx):] = True     # padding rows: discarded, so their model calls are skipped
      sub = sub.replace(tracker=sub.tracker.replace(done=done))
      begun = started[pad]
      begun[len(idx):] = True      # padding rows neither start nor step
      out = engine.run(*place((begun, sub) + tuple(r[pad] for r in rows)), max_it)
      started[idx] = True
      out = jax.tree_util.tree_map(lambda a: sharding_lib.gather(a)[:len(idx)], out)
      state = jax.tree_util.tree_map(lambda a, b: _scatter(a, idx, b), state, out)
    _check_finite(state.tracker.best_probs)
    if progress is not None:
      t = state.tracker
      finished = ~engine.active(state, limit)
      progress(dict(iteration=max_it, attacks=n, finished=int(np.sum(finished)),
                    stopped=int(np.sum(t.done)),
                    work=int(np.sum(np.where(finished, limit, t.iteration))),
                    total_work=n * max(limit, 1), queries=int(np.sum(t.queries))))
    if max_it >= limit:
      break
  return state


def _records(engine: _Engine, rows, state, image_ids, batches, place) -> AttackRecords:
  """The full net's verdict on each attack's reported candidate, as records."""
  _, images, labels, targets = rows
  parts = []
  for idx, pad in batches(np.arange(len(images))):
    out = engine.finish(*place((state.tracker.best[pad], images[pad])))
    parts.append([sharding_lib.gather(o)[:len(idx)] for o in out])
  probs, prior, pixels = (np.concatenate(p) for p in zip(*parts))
  _check_finite(probs)
  adv = probs.argmax(-1)
  success = (adv == targets) if engine.config.targeted else (adv != labels)
  success_query = state.tracker.success_query
  if engine.config.stop_rule == "first_success":
    # The attack returns its first fooling candidate, so the full net's final check agrees --
    # unless incremental evaluation (~1e-6 from the full net) saw a near-tie as fooling.
    success_query = np.where(success, success_query, -1)
  # The reverse near-tie: the full net says the reported candidate fools although the attack's
  # own scores never did. It was queried by the attack's last query, so that is recorded
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


