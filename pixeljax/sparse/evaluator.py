"""The evaluator: how a few-pixel attack's candidates reach the model, chosen by the engine.

A candidate is an image that differs from its attack's image in k pixels. The model can score
it in several exact ways, and which is fastest depends on the model and the backend:

  * **full net** -- ``predict(perturb(image, candidate))``: any black box;
  * **incremental** -- the net split at its first convolution (``models.stem.Factored``): the
    stem once per image plus one response window per changed pixel, then the head
    (``evaluator``'s ``_changed_stems``);
  * **window** -- one-pixel candidates of a net with a translation-equivariant prefix also run
    that prefix on a window around their pixel (``models.window``), only the rest on whole
    maps; **strided window**: the prefix goes on through strided convolutions and pooling,
    with a window per resolution (``models.traced_window``; the one-pixel paper's nets);
  * **call size** -- the candidates of the attacks vmapped together are flattened and run a
    fixed number per model call (XLA:CPU runs a net fastest on calls whose activations stay
    in cache, and its float bits depend on a call's batch size);
  * **devices** -- on one host's CPU split into devices (``sharding.use_cpu_cores``), those
    fixed-size calls are dealt round robin to the devices (XLA:CPU runs a small call's
    convolutions on one core).

``Execution`` names one such choice; ``choose_execution`` picks the fastest exact one for a
model, pixel count and mesh (measured on a 2-core AVX-512 EPYC; see docs/). XLA:CPU's float
bits depend on the choice (~1e-7), so it is *recorded* beside a run's settings and a resumed
run reuses the stored one -- but it is not part of what is attacked (``PixelAttackConfig``).

``Evaluator`` is that choice applied to a model: built once (``evaluator_for``, cached, so the
compiled attacks are reused), it is every path's way to the model -- the attacks' candidates
(``candidates``), the final check of the reported images (``images``), the exhaustive sweep
and image selection (``probabilities``). It owns everything XLA:CPU-specific.

A model is what ``models.load`` returns (``.predict`` and ``.factored``), a ``Factored``, or
any function ``images -> probabilities``: a black box, evaluated on the full net.
"""
import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from pixeljax import sharding
from pixeljax.errors import UserError
from pixeljax.evaluate import in_fixed_batches, predict_in_batches
from pixeljax.models.stem import Factored
from pixeljax.sparse.problem import decode, last_writes, perturb

# Candidates per model call on CPU. XLA:CPU runs a net fastest on calls whose activations stay
# in cache: the akamaster ResNet-20 forward gave 1,110-1,136 images/s at 25-400 images and
# 740-790 at 1,600-5,600; a DE attack on 14 images per call rose from 681 to 1,119
# queries/s scored 400 at a time, the CIFAR LeNet from 14,700 to 16,000. One paper
# population per call, for nets as light as these ...
CPU_CALL_SIZE = 400
# ... i.e. a call holds at most this many floats of a net's largest activation (ResNet-20's
# 32x32x16 at 400 candidates), in steps of 50 from 50: the one-pixel paper's nets (All-CNN-C,
# NiN, VGG16: 32x32 maps of 96, 192, 64 channels) get 50, 50, 100, dealt to the cores, and
# their 3-pixel DE ran 1.64x, 1.53x, 1.34x the queries/s of calls of 400 on one device
# (results/evaluation/call_size_paper_nets.*).
CPU_CALL_FLOATS = CPU_CALL_SIZE * 32 * 32 * 16
# The same for one-pixel candidates on windows, whose model calls are all whole-map layers
# after the window: ResNet-20 DE attack, 4 images: 3,655 queries/s at 400 per call, 4,121
# at 100, 4,232 at 50, 4,225 at 25.
CPU_WINDOW_CALL_SIZE = 50
# The largest call dealt to a host's CPU devices: XLA:CPU runs a call this small mostly on one
# core, a larger one on all. Dealt to 2 devices against one: ResNet-20 one-pixel DE on windows
# (50 per call) 1.46x; the LeNet 1.28x at 50 per call but 0.76x at 400; ResNet-20 3-pixel
# (400 per call) 0.73x; VGG16 3-pixel at 100 per call 1.15x (candidates of one image).
CPU_DEALT_CALL_SIZE = 100
# Steps of an attack between the runner's compactions and progress reports, per method.
# Default steps per segment, by how much a step does: a DE generation, one Sparse-RS proposal,
# CornerSearch's 512 samples, one member of immediate-updating DE (a generation of 400).
SEGMENT = {"de": 10, "sparse_rs": 100, "corner_search": 20, "de_immediate": 400}


@dataclasses.dataclass(frozen=True)
class Execution:
  """How candidates are evaluated (see the module docstring): recorded, since XLA:CPU's float
  bits depend on it, but never what is attacked."""
  call_size: int = 0          # candidates per model call; 0: all of a step's in one call
  incremental: bool = False   # stem + windows per changed pixel, then the head
  window: bool = False        # one-pixel candidates through the net's local prefix
  strided_window: bool = False   # ... a prefix going on through strides and pooling
  devices: int = 1            # a host's CPU devices the model calls are dealt to
  segment: int = 10           # steps between the runner's compactions

  def __post_init__(self):
    checks = [(self.call_size >= 0, f"call_size must be >= 0, got {self.call_size}"),
              (self.devices >= 1, f"devices must be >= 1, got {self.devices}"),
              (self.segment >= 1, f"segment must be >= 1, got {self.segment}"),
              (not self.window or self.incremental, "window needs incremental"),
              (not self.strided_window or self.window, "strided_window needs window")]
    for ok, message in checks:
      if not ok:
        raise UserError(f"execution: {message}")


def model_parts(model):
  """(full net, ``Factored`` or None) of a model: a zoo ``Classifier`` (or any object with
  ``predict`` and ``factored``), a ``Factored``, or a bare function (a black box)."""
  if isinstance(model, Factored):
    return model.full, model
  predict = getattr(model, "predict", None)
  if callable(predict) and hasattr(model, "factored"):
    return predict, model.factored
  if callable(model):
    return model, None
  raise UserError(f"a model must be a pixeljax model (models.load) or a function images -> "
                  f"probabilities, got {type(model).__name__}")


def choose_execution(model, pixels: int, segment_kind: str = "de",
                     mesh: Optional[Mesh] = None, **insist) -> Execution:
  """The fastest exact ``Execution`` for ``model``'s ``pixels``-pixel candidates on this
  backend and ``mesh``; ``insist``: fields the caller fixes (a resumed run: the stored ones).
  ``segment_kind`` picks the default segment (``SEGMENT``): an attack method, or
  "de_immediate" (``PixelAttackConfig.segment_kind``).

  On CPU: incremental whenever the net factors, windows for one pixel where the net has a
  local prefix (going on through strides and pooling where it can), calls of up to 400 by the
  net's activations (50 on windows), dealt to a host's CPU devices when at most 100. A strided
  window extends a stride-1 one: a net without one (a strided or 'valid' first convolution)
  keeps the incremental path (windows there are unmeasured).
  Elsewhere (accelerators, or attacks sharded over devices): one call per step's candidates,
  full net (the gathers of incremental evaluation are unmeasured there)."""
  unknown = set(insist) - {f.name for f in dataclasses.fields(Execution)}
  if unknown:
    raise UserError(f"unknown execution setting(s) {sorted(unknown)}; known: "
                    f"{[f.name for f in dataclasses.fields(Execution)]}")
  insist = {k: v for k, v in insist.items() if v is not None}
  _, factored = model_parts(model)
  modes = sharding.mesh_modes(mesh)
  cpu = jax.default_backend() == "cpu"
  # (A net's window is built on first use: only one-pixel attacks ask.)
  windowed = pixels == 1 and factored is not None and factored.window is not None
  incremental = insist.get("incremental", cpu and factored is not None)
  if incremental and factored is None:
    raise UserError("execution.incremental needs a net split at its first convolution (a zoo "
                    "model whose first layer is a convolution); this model is a black box")
  window = insist.get("window", bool(incremental and windowed and pixels == 1))
  if window and not (incremental and windowed and pixels == 1):
    raise UserError(f"execution.window needs incremental evaluation, pixels=1 and a net with a "
                    f"local prefix; got incremental={incremental}, pixels={pixels}, "
                    f"local prefix={'yes' if windowed else 'none'}")
  # The longer prefix wherever a net has one (the paper's nets: 1.2-2.1x the queries/s of the
  # stride-1 window; docs/evaluation.md).
  # (Not built where the run has it off already: a resumed run of an older format.)
  strided = (window and insist.get("strided_window") is not False
             and factored.strided_window is not None)
  strided_window = insist.get("strided_window", strided)
  if strided_window and not strided:
    raise UserError("execution.strided_window needs execution.window and a net whose local "
                    "prefix goes on through strided convolutions or pooling; this one's "
                    + ("does not" if window else "window is off"))
  if "call_size" in insist:
    call_size = insist["call_size"]
  elif cpu and modes["devices"] == 1:
    call_size = CPU_WINDOW_CALL_SIZE if window else _cpu_call_size(model)
  else:
    call_size = 0
  small = 0 < call_size <= CPU_DEALT_CALL_SIZE
  devices = insist.get("devices", modes["dealt"] if small else 1)
  if devices > modes["dealt"]:
    raise UserError(f"execution.devices={devices}, but this run has {modes['dealt']} CPU "
                    f"device(s) to deal its model calls to: start it with more "
                    f"(runtime.cpu_devices), or leave devices unset")
  return Execution(call_size=int(call_size), incremental=bool(incremental), window=bool(window),
                   strided_window=bool(strided_window), devices=int(devices),
                   segment=int(insist.get("segment", SEGMENT[segment_kind])))


@dataclasses.dataclass(frozen=True, eq=False)
class Evaluator:
  """An ``Execution`` applied to a model. Build it with ``evaluator_for`` (cached): the compiled
  attacks are keyed by it. ``count_rows``: a host function called with the number of rows
  every model call inside an attack executes (padding and finished attacks riding along
  included) -- for benchmarks; it changes nothing the model computes."""
  model: Any
  execution: Execution
  mesh: Optional[Mesh] = None       # the devices model calls are dealt to (None: no dealing)
  count_rows: Optional[Callable[[int], None]] = None

  @property
  def full(self):
    return model_parts(self.model)[0]

  @property
  def factored(self) -> Optional[Factored]:
    return model_parts(self.model)[1]

  def _counted(self, f):
    """``f(..., x)`` reporting its rows (``x``'s leading axis) to ``count_rows``."""
    if self.count_rows is None:
      return f

    def g(*args):
      x = args[-1]
      # A value that depends on the rows, so that under vmap the callback runs per row.
      jax.debug.callback(lambda n: self.count_rows(int(np.sum(n))),
                         jnp.ones((x.shape[0],), jnp.int32) + 0 * x.reshape(x.shape[0], -1)[
                             :, 0].astype(jnp.int32))
      return f(*args)
    return g

  def program(self, f):
    """``jit(f)``; with a dealing mesh, run whole by every device (``shard_map`` on replicated
    inputs), so the model calls inside can be dealt to them."""
    return jax.jit(f) if self.mesh is None else sharding.on_every_device(f, self.mesh)

  def images(self, x):
    """Probabilities of whole images (the final check of the reported candidates), on the full
    net in calls of ``call_size`` (padded), so a row's numbers do not depend on its batch."""
    size = self.execution.call_size
    return in_fixed_batches(self.full, x, size, mesh=self.mesh) if size else self.full(x)

  def probabilities(self, images, batch_size: int = 256) -> np.ndarray:
    """Probabilities of ``images`` on the host, in batches of ``batch_size`` (the last one
    padded), so every call of one model runs one compiled program (image selection, the
    door's check, transfer)."""
    return predict_in_batches(_jitted(self.full), images, batch_size, always_pad=True)

  @functools.cached_property
  def candidates(self):
    """``f(image, candidates, active) -> probabilities`` for one attack's candidates (B, D):
    the attack's black box. ``active`` (B,) marks rows whose results are kept; a model call
    none of whose rows is kept is skipped (zeros). Under vmap (the runner's attacks) every
    vmapped axis is flattened into one batch (a ``custom_vmap`` rule) and run ``call_size``
    rows per model call, so a row's numbers do not depend on how many attacks share a call."""
    ex = self.execution
    if ex.window:
      local = self.factored.strided_window if ex.strided_window else self.factored.window
      prepare = local.clean

      def rows(maps, images, owner, cands):
        x, y, col = jax.vmap(decode, (0, None))(cands, images.shape[1:])
        return local.pixel_probs(maps, images, owner, y[:, 0], x[:, 0], col[:, 0])
    elif ex.incremental:
      factored = self.factored
      prepare = factored.stem

      def rows(stems, images, owner, cands):
        return factored.head(_changed_stems(factored, stems[owner], images[owner], cands))
    else:
      full = self.full
      prepare = lambda images: images

      def rows(maps, images, owner, cands):
        return full(jax.vmap(perturb)(images[owner], cands))
    # One model call and the per-image maps, jitted so that every re-trace on the same shapes
    # is JAX's cached one: a call is traced for its output shape and for its branch of the
    # skip test, again by the flattening rule and by a scan's batching passes (6 traces of a
    # ResNet's window program per sweep, ~0.4 s each). Inlined: the program stays the same,
    # bit for bit (a nested program moved a sweep's probabilities by 2e-6).
    rows, prepare = (jax.jit(f, inline=True) for f in (self._counted(rows), prepare))
    size, mesh = ex.call_size, self.mesh

    if not size:
      def whole(image, cands, active):
        del active
        return rows(prepare(image[None]), image[None],
                    jnp.zeros(cands.shape[:1], jnp.int32), cands)
      return whole

    @jax.custom_batching.custom_vmap
    def flat(images, owner, cands, active):
      """``images`` (A, H, W, C) of the attacks in this call; row i is a candidate of attack
      ``owner[i]``."""
      maps = prepare(images)     # once per image per call: a few, against N candidates
      if cands.shape[0] <= size:
        return rows(maps, images, owner, cands)
      return in_fixed_batches(lambda a: rows(maps, images, *a), (owner, cands), size, active,
                              mesh)

    @flat.def_vmap
    def _flatten(axis_size, in_batched, images, owner, cands, active):
      args = [v if b else jnp.broadcast_to(v, (axis_size,) + v.shape)
              for v, b in zip((images, owner, cands, active), in_batched)]
      images, owner, cands, active = args
      per = images.shape[1]
      owner = owner + (jnp.arange(axis_size, dtype=owner.dtype) * per)[:, None]
      y = flat(images.reshape((-1,) + images.shape[2:]), owner.reshape(-1),
               cands.reshape((-1,) + cands.shape[2:]), active.reshape(-1))   # an outer vmap
      return y.reshape((axis_size, -1) + y.shape[1:]), True                    # flattens again

    def f(image, cands, active):
      return flat(image[None], jnp.zeros(cands.shape[:1], jnp.int32), cands, active)
    return f


@functools.lru_cache(maxsize=32)
def _jitted(full):
  """One jitted function per model (``model.predict`` is a new bound method at each access):
  selection, the door and a sweep of one model share its compiled programs."""
  return jax.jit(full)


def _cpu_call_size(model) -> int:
  """``CPU_CALL_SIZE``, or fewer for a net whose largest activation would not fit a call of
  that many in ``CPU_CALL_FLOATS`` (a black box of unknown input shape: ``CPU_CALL_SIZE``).
  Traced once per model (cached where the model object is hashable)."""
  try:
    hash(model)
  except TypeError:
    return _cpu_call_size_of.__wrapped__(model)
  return _cpu_call_size_of(model)


@functools.lru_cache(maxsize=32)
def _cpu_call_size_of(model) -> int:
  full = model_parts(model)[0]
  shape = getattr(getattr(model, "spec", None), "input_shape", None) or \
      getattr(model, "input_shape", None)
  if shape is None:      # a black box, or a Factored (whose full net is called on any shape)
    return CPU_CALL_SIZE
  from pixeljax.models import traced
  try:
    floats = traced.largest_activation(full, tuple(shape))
  except Exception:        # a program the reader cannot trace: the default
    return CPU_CALL_SIZE
  return int(np.clip(CPU_CALL_FLOATS // floats // 50 * 50, 50, CPU_CALL_SIZE))


@functools.lru_cache(maxsize=32)
def _cached(model, execution: Execution, mesh, count_rows) -> Evaluator:
  return Evaluator(model, execution, mesh, count_rows)


def evaluator_for(model, pixels: int = 1, segment_kind: str = "de",
                  mesh: Optional[Mesh] = None, execution=None, count_rows=None) -> Evaluator:
  """The ``Evaluator`` of ``model`` for ``pixels``-pixel candidates of an attack of
  ``segment_kind`` (``choose_execution``) on ``mesh`` (``sharding.attack_mesh``; on one
  host's CPU devices its model calls may be dealt to them). ``execution``: an ``Execution`` or a dict of the fields to insist on (a resumed run
  passes the stored one); the rest is chosen (``choose_execution``). The same arguments give
  the same object, so the attacks compiled for it are reused."""
  if isinstance(execution, Execution):
    execution = dataclasses.asdict(execution)
  chosen = choose_execution(model, pixels, segment_kind, mesh, **(execution or {}))
  dealing = sharding.dealing_mesh(mesh, chosen.devices)
  return _cached(model, chosen, dealing, count_rows)


def _changed_stems(factored: Factored, stems, images, candidates):
  """The stem outputs (N, H', W', O) of ``images`` (N, H, W, C) with ``candidates`` (N, D)
  written in, given ``stems`` = ``factored.stem(images)``: the stem of the original plus, per
  changed pixel, the stem's response window scaled by the colour change. Pixels are written in
  order (``problem.perturb``: last write wins), so an overwritten pixel contributes nothing."""
  n = candidates.shape[0]
  shape = images.shape[1:]
  x, y, col = jax.vmap(decode, (0, None))(candidates, shape)         # (N, k) ...
  rows = jnp.arange(n)[:, None]
  delta = col - images[rows, y, x]                                    # (N, k, C)
  overwritten = jax.vmap(last_writes)(x, y) != jnp.arange(x.shape[1])
  delta = jnp.where(overwritten[..., None], 0.0, delta)
  response = jnp.asarray(factored.response)
  kh, kw = response.shape[:2]
  windows = jnp.einsum("nkc,hwco->nkhwo", delta, response,
                       precision=jax.lax.Precision.HIGHEST)   # as the net's conv (logits)
  # Pad the stem maps so that every window fits, wherever its pixel is.
  (oy, ox), (hs, ws) = factored.offset, factored.stem_shape[:2]
  top, left = max(0, -oy), max(0, -ox)
  bottom = max(0, shape[0] - 1 + oy + kh - hs)
  right = max(0, shape[1] - 1 + ox + kw - ws)
  padded = jnp.pad(stems, ((0, 0), (top, bottom), (left, right), (0, 0)))
  rr = (y + oy + top)[:, :, None, None] + jnp.arange(kh)[:, None]
  cc = (x + ox + left)[:, :, None, None] + jnp.arange(kw)
  padded = padded.at[rows[:, :, None, None], rr, cc].add(windows)
  return padded[:, top:top + hs, left:left + ws]
