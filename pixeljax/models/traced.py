"""The engine's fast paths for a classifier known only as a JAX function (its traced program).

The zoo's nets are Flax modules: ``models.stem`` and ``models.window`` find their first
convolution and their local prefix by intercepting module calls. A model imported from Keras
or PyTorch (``models.adapters``) is a plain function of NHWC pixels. This module finds the
same structure in its *program*: the function is traced to a jaxpr (nested calls -- jit,
custom_jvp, custom_vjp -- inlined into one flat list of operations), and

* ``factor`` cuts it after the first convolution that reads the pixels (the *stem*: every
  operation on the pixels up to and including it; the *head*: the rest, fed that convolution's
  output), provided nothing after the cut reads the pixels or the stem's intermediates;
* ``localize`` evaluates its longest local prefix -- stride-1 'same' convolutions, elementwise
  maps, layout transposes -- on a window around a one-pixel candidate's pixel, each
  convolution computing only the square its pixel can have reached, and writes the window
  into the clean activations where the prefix ends. The prefix stops at the first other
  operation reading the pixels (a strided convolution, pooling, a reshape, a reduction) or
  where the window would exceed half the image (``_MAX_WINDOW``), beyond which it saves little.

Both results go through the same checks as the Flax paths (``stem.checked``,
``window.checked``): a program that fails them gets the full net. Inside the windowed prefix
every tensor is kept batch-first, rows, columns, then its other axes (*canonical* order), so
PyTorch's NCHW transposes cost nothing there.
"""
import dataclasses
import functools
import itertools
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore

from pixeljax.models import stem as stem_lib
from pixeljax.models import window as window_lib

# Nested programs inlined into the flat list, by primitive: the parameter holding the program.
_INLINED = {"pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr",
            "core_call": "call_jaxpr", "custom_jvp_call": "call_jaxpr",
            "custom_vjp_call": "call_jaxpr", "custom_vjp_call_jaxpr": "fun_jaxpr",
            "remat": "jaxpr", "checkpoint": "jaxpr"}
# Position-wise operations: each output element depends on the same position of each operand.
_ELEMENTWISE = frozenset(
    "add sub mul div max min neg exp exp2 log log1p expm1 tanh logistic rsqrt sqrt cbrt abs "
    "sign integer_pow pow square erf erfc erf_inv select_n clamp convert_element_type sin cos "
    "floor ceil round is_finite ge gt le lt eq ne and or not xor rem atan2 copy copy_p "
    "reduce_precision nextafter".split())
# The windowed prefix stops before a window side above this fraction of the image's side.
_MAX_WINDOW = 0.5


@dataclasses.dataclass(frozen=True, eq=False)   # hashed by identity
class _Literal:
  val: Any


@dataclasses.dataclass(frozen=True)
class _Op:
  prim: Any
  params: Dict[str, Any]
  ins: Tuple[Any, ...]       # value ids (int) or _Literal
  outs: Tuple[int, ...]
  ctx: Any

  @property
  def name(self) -> str:
    return self.prim.name

  def ids(self):
    return [a for a in self.ins if not isinstance(a, _Literal)]


@dataclasses.dataclass(frozen=True)
class _Program:
  """A traced function of one (N, H, W, C) array, flat: ``ops`` in order, ``consts`` by id."""
  consts: Dict[int, Any]
  input: int
  outputs: Tuple[Any, ...]
  ops: Tuple[_Op, ...]
  shapes: Dict[int, Tuple[int, ...]]


def _trace(f: Callable, shape: Tuple[int, ...]) -> _Program:
  closed = jax.make_jaxpr(f)(jax.ShapeDtypeStruct(tuple(shape), jnp.float32))
  counter = itertools.count()
  consts, shapes, ops = {}, {}, []

  def new(aval):
    i = next(counter)
    shapes[i] = tuple(getattr(aval, "shape", ()))
    return i

  def inline(jaxpr, const_values, atoms):
    env = {}
    for v, c in zip(jaxpr.constvars, const_values):
      env[v] = new(v.aval)
      consts[env[v]] = c
    env.update(zip(jaxpr.invars, atoms))
    atom = lambda v: _Literal(v.val) if isinstance(v, jcore.Literal) else env[v]
    for eqn in jaxpr.eqns:
      ins = [atom(v) for v in eqn.invars]
      key = _INLINED.get(eqn.primitive.name)
      inner = eqn.params.get(key) if key else None
      if inner is not None:
        body, body_consts = ((inner.jaxpr, inner.consts) if isinstance(inner, jcore.ClosedJaxpr)
                             else (inner, ()))
        outs = inline(body, body_consts, ins[len(ins) - len(body.invars):])
      else:
        outs = [new(v.aval) for v in eqn.outvars]
        ops.append(_Op(eqn.primitive, dict(eqn.params), tuple(ins), tuple(outs), eqn.ctx))
      env.update(zip(eqn.outvars, outs))
    return [atom(v) for v in jaxpr.outvars]

  x = new(closed.in_avals[0])
  outputs = inline(closed.jaxpr, closed.consts, [x])
  return _Program(consts, x, tuple(outputs), tuple(ops), shapes)


def _bind(op: _Op, values) -> List[Any]:
  with op.ctx.manager:
    out = op.prim.bind(*values, **op.prim.get_bind_params(op.params))
  return list(out) if op.prim.multiple_results else [out]


def _read(env, a):
  return a.val if isinstance(a, _Literal) else env[a]


def _run(env: Dict[int, Any], ops, skip=frozenset()):
  for k, op in enumerate(ops):
    if k not in skip:
      env.update(zip(op.outs, _bind(op, [_read(env, a) for a in op.ins])))


def _dependent(program: _Program) -> List[bool]:
  """Per operation: whether it reads the pixels (through any chain of operations)."""
  seen, flags = {program.input}, []
  for op in program.ops:
    flags.append(any(a in seen for a in op.ids()))
    if flags[-1]:
      seen.update(op.outs)
  return flags


def _read_from(program: _Program, k: int) -> set:
  """The values read by operation ``k`` onwards, or returned."""
  read = {a for op in program.ops[k:] for a in op.ids()}
  return read | {a for a in program.outputs if not isinstance(a, _Literal)}


def _is_conv(op: _Op) -> bool:
  return op.name == "conv_general_dilated"


def _nhwc(spec) -> Tuple[int, int, int, int]:
  """The permutation taking a conv operand in ``spec`` (batch, feature, rows, cols) to NHWC."""
  return (spec[0], spec[2], spec[3], spec[1])


class _Traced:
  """``f`` traced once per input shape."""

  def __init__(self, f: Callable, input_shape):
    self.f = f
    self.input_shape = tuple(int(s) for s in input_shape)

  @functools.lru_cache(maxsize=8)
  def program(self, batch: int) -> _Program:
    return _trace(self.f, (batch,) + self.input_shape)


# ------------------------------------------------------------------------------ the stem split

def _cut(program: _Program) -> Optional[int]:
  """The index of the first convolution reading the pixels, if nothing after it reads the
  pixels or what was computed from them on the way there."""
  flags = _dependent(program)
  first = next((k for k, op in enumerate(program.ops) if flags[k] and _is_conv(op)), None)
  if first is None:
    return None
  before = {program.input}
  for k in range(first):
    if flags[k]:
      before.update(program.ops[k].outs)
  conv = program.ops[first]
  if conv.ins[1] in before:    # a kernel computed from the pixels
    return None
  return None if _read_from(program, first + 1) & before else first


def _split(traced: _Traced):
  """(stem, head) of the traced program, or None: the stem's output in NHWC."""
  cut = _cut(traced.program(1))
  if cut is None:
    return None

  def stem(images):
    program = traced.program(images.shape[0])
    env = {**program.consts, program.input: images}
    _run(env, program.ops[:cut + 1])
    conv = program.ops[cut]
    return jnp.transpose(env[conv.outs[0]], _nhwc(conv.params["dimension_numbers"].out_spec))

  def head(h):
    program = traced.program(h.shape[0])
    flags = _dependent(program)
    conv = program.ops[cut]
    env = dict(program.consts)
    _run(env, program.ops[:cut], skip={k for k in range(cut) if flags[k]})
    order = _nhwc(conv.params["dimension_numbers"].out_spec)
    env[conv.outs[0]] = jnp.transpose(h, np.argsort(order))
    _run(env, program.ops[cut + 1:])
    return _read(env, program.outputs[0])

  return stem, head


def factor(full: Callable, input_shape, seed: int = 0) -> Optional[stem_lib.Factored]:
  """``full`` (pixels -> probabilities, a JAX function) split at its first convolution and
  checked like a Flax module's (``stem.checked``), its windowed prefix attached when it has
  one; None when the program does not split."""
  traced = _Traced(full, input_shape)
  try:
    parts = _split(traced)
  except Exception:      # a program this reader does not understand: the full net
    return None
  if parts is None:
    return None
  factored = stem_lib.checked(full, *parts, input_shape, seed=seed)
  if factored is not None:
    factored = dataclasses.replace(
        factored, localizer=lambda: localize(full, input_shape, seed=seed, traced=traced))
  return factored


# --------------------------------------------------------------------------- the window prefix

@dataclasses.dataclass(frozen=True)
class _Axes:
  """Where a pixel-dependent tensor keeps its batch, rows and columns, and how far (in pixels)
  a one-pixel change can have spread in it."""
  spatial: Tuple[int, int, int]     # positions of batch, rows, columns in its own layout
  radius: int

  def canonical(self, rank: int) -> Tuple[int, ...]:
    """The permutation to canonical order: batch, rows, columns, the rest as they come."""
    return self.spatial + tuple(d for d in range(rank) if d not in self.spatial)


@dataclasses.dataclass(frozen=True)
class _Plan:
  end: int                               # the first operation after the prefix
  axes: Dict[int, _Axes]                 # every pixel-dependent value of the prefix
  convs: Tuple[int, ...]                 # indices of the prefix's windowed convolutions
  live: Tuple[int, ...]                  # prefix values read after it, placed in clean maps
  radius: int
  # Prefix operations rerun on whole maps after the placement: chains of elementwise ops and
  # transposes leading from one live value to another (a ReLU's output and its NHWC copy, a
  # sum and its batch norm), so only one of the two is placed.
  deferred: Tuple[int, ...] = ()


def _same_padding(op: _Op, shapes) -> Optional[int]:
  """The per-side padding of a stride-1, undilated 'same' conv with an odd square kernel."""
  p = op.params
  dn = p["dimension_numbers"]
  kernel = shapes[op.ins[1]] if not isinstance(op.ins[1], _Literal) else ()
  if len(kernel) != 4 or p["batch_group_count"] != 1:
    return None
  k = (kernel[dn.rhs_spec[2]], kernel[dn.rhs_spec[3]])
  if (k[0] != k[1] or k[0] % 2 == 0 or tuple(p["window_strides"]) != (1, 1)
      or tuple(p["lhs_dilation"]) != (1, 1) or tuple(p["rhs_dilation"]) != (1, 1)):
    return None
  half = k[0] // 2
  return half if tuple(map(tuple, p["padding"])) == ((half, half), (half, half)) else None


def _plan(program: _Program, input_shape) -> Optional[_Plan]:
  h, w = input_shape[:2]
  limit = max(1, int(_MAX_WINDOW * min(h, w)))
  axes = {program.input: _Axes((0, 1, 2), 0)}
  convs, end = [], len(program.ops)
  for k, op in enumerate(program.ops):
    ins = [a for a in op.ids() if a in axes]
    if not ins:
      continue
    shape = program.shapes[op.outs[0]]
    out = None
    if op.name in _ELEMENTWISE and len(op.outs) == 1:
      first = axes[ins[0]]
      if all(axes[a].spatial == first.spatial for a in ins) and len(shape) >= 3 and \
          (shape[first.spatial[1]], shape[first.spatial[2]]) == (h, w):
        out = _Axes(first.spatial, max(axes[a].radius for a in ins))
    elif op.name == "transpose" and len(ins) == 1:
      perm = tuple(op.params["permutation"])
      out = _Axes(tuple(perm.index(d) for d in axes[ins[0]].spatial), axes[ins[0]].radius)
    elif _is_conv(op) and op.ins[0] in axes and op.ins[1] not in axes:
      dn = op.params["dimension_numbers"]
      half = _same_padding(op, program.shapes)
      src = axes[op.ins[0]]
      if half is not None and src.spatial == (dn.lhs_spec[0],) + tuple(dn.lhs_spec[2:]):
        radius = src.radius + half
        if 2 * radius + 1 <= limit:
          out = _Axes((dn.out_spec[0],) + tuple(dn.out_spec[2:]), radius)
          convs.append(k)
    if out is None:
      end = k
      break
    axes[op.outs[0]] = out
  if not convs:
    return None
  later = _read_from(program, end)
  live = [a for a in axes if a in later]
  producer = {o: k for k, op in enumerate(program.ops[:end]) for o in op.outs}
  deferred = set()
  for v in list(live):
    chain, u = [], v
    while u in producer:
      op = program.ops[producer[u]]
      deps = [a for a in op.ids() if a in axes]
      if len(deps) != 1 or not (op.name in _ELEMENTWISE or op.name == "transpose"):
        break
      chain.append(producer[u])
      u = deps[0]
      if u in live:
        deferred.update(chain)
        live.remove(v)
        break
  return _Plan(end, axes, tuple(convs), tuple(live), max(a.radius for a in axes.values()),
               tuple(sorted(deferred)))


def _canonical(x, order):
  return jnp.transpose(x, order) if tuple(order) != tuple(range(x.ndim)) else x


def _operand(value, rank, spatial, origin, size):
  """A pixel-independent operand of a windowed elementwise op, in canonical order over the
  window: broadcast dimensions stay, full-size row / column dimensions are cropped."""
  value = jnp.asarray(value)
  if value.ndim == 0:
    return value
  value = value.reshape((1,) * (rank - value.ndim) + value.shape)
  value = _canonical(value, spatial + tuple(d for d in range(rank) if d not in spatial))
  if value.shape[1:3] == (1, 1):
    return value
  value = value[:1]     # the same for every image (it does not depend on them)
  return jax.vmap(lambda o: lax.dynamic_slice(
      value[0], (o[0], o[1]) + (0,) * (value.ndim - 3), (size, size) + value.shape[3:]))(origin)


def _crop(maps, owner, origin, size):
  """(N, size, size, ...) crops of canonical ``maps[owner]`` at ``origin``."""
  rest = maps.shape[3:]
  return jax.vmap(lambda o, yx: lax.dynamic_slice(
      maps, (o, yx[0], yx[1]) + (0,) * len(rest), (1, size, size) + rest)[0])(owner, origin)


def localize(full: Callable, input_shape, seed: int = 0,
             traced: Optional[_Traced] = None) -> Optional[window_lib.Localized]:
  """One-pixel evaluation of ``full`` with its local prefix on windows (``window.Localized``,
  checked by ``window.checked``), or None when its program has no such prefix."""
  traced = traced or _Traced(full, input_shape)
  h, w = traced.input_shape[:2]
  try:
    plan = _plan(traced.program(1), traced.input_shape)
  except Exception:
    return None
  if plan is None:
    return None
  size = 2 * plan.radius + 1
  if size >= min(h, w):
    return None

  def clean(images):
    """Each windowed conv's padded NHWC input and NHWC output, and the live values, all in
    canonical order, for whole images."""
    program = traced.program(images.shape[0])
    env = {**program.consts, program.input: images}
    ins, outs = [], []
    for k, op in enumerate(program.ops[:plan.end]):
      values = [_read(env, a) for a in op.ins]
      if k in plan.convs:
        dn, p = op.params["dimension_numbers"], _same_padding(op, program.shapes)
        x = jnp.transpose(values[0], _nhwc(dn.lhs_spec))
        ins.append(jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0))))
      env.update(zip(op.outs, _bind(op, values)))
      if k in plan.convs:
        outs.append(jnp.transpose(env[op.outs[0]], _nhwc(dn.out_spec)))
    live = tuple(_canonical(env[a], plan.axes[a].canonical(env[a].ndim)) for a in plan.live)
    return tuple(ins), tuple(outs), live

  def probs(maps, owner, origin, pixel, windows):
    ins, outs, live = maps
    program = traced.program(windows.shape[0])
    flags = _dependent(program)
    env = dict(program.consts)
    win = {program.input: windows}      # canonical windows of the pixel-dependent values
    convs = iter(range(len(plan.convs)))
    for k, op in enumerate(program.ops[:plan.end]):
      if not flags[k]:
        env.update(zip(op.outs, _bind(op, [_read(env, a) for a in op.ins])))
        continue
      out = plan.axes[op.outs[0]]
      rank = len(program.shapes[op.outs[0]])
      if op.name == "transpose":
        src = plan.axes[op.ins[0]]
        old = src.canonical(rank)
        new = tuple(op.params["permutation"][d] for d in out.canonical(rank))
        win[op.outs[0]] = _canonical(win[op.ins[0]], tuple(old.index(d) for d in new))
      elif _is_conv(op):
        i = next(convs)
        dn, p = op.params["dimension_numbers"], _same_padding(op, program.shapes)
        around = _crop(ins[i], owner, origin, size + 2 * p)
        x = jax.vmap(lambda a, v: lax.dynamic_update_slice(a, v, (p, p, 0)))(
            around, win[op.ins[0]].astype(around.dtype))
        t = min(2 * out.radius + 1, size)
        corner = jnp.clip(pixel - out.radius, 0, jnp.array([h - t, w - t]))
        rel = corner - origin
        x = jax.vmap(lambda v, r: lax.dynamic_slice(
            v, (r[0], r[1], 0), (t + 2 * p, t + 2 * p, v.shape[-1])))(x, rel)
        params = dict(op.params, padding=((0, 0), (0, 0)), dimension_numbers=lax.ConvDimensionNumbers(
            (0, 3, 1, 2), tuple(dn.rhs_spec), (0, 3, 1, 2)))
        y = _bind(dataclasses.replace(op, params=params), [x, _read(env, op.ins[1])])[0]
        if t < size:
          y = jax.vmap(lambda b, v, r: lax.dynamic_update_slice(b, v, (r[0], r[1], 0)))(
              _crop(outs[i], owner, origin, size), y.astype(outs[i].dtype), rel)
        win[op.outs[0]] = y
      else:
        spatial = out.spatial
        values = [win[a] if a in win else
                  _operand(_read(env, a), rank, spatial, origin, size)
                  for a in op.ins]
        win[op.outs[0]] = _bind(op, values)[0]
    # The prefix's values read later: clean maps with their windows written in.
    for a, maps_a in zip(plan.live, live):
      placed = jax.vmap(lambda m, o, v: lax.dynamic_update_slice(
          m, v, (o[0], o[1]) + (0,) * (m.ndim - 2)))(
              maps_a[owner], origin, win[a].astype(maps_a.dtype))
      order = plan.axes[a].canonical(placed.ndim)
      env[a] = _canonical(placed, np.argsort(order))
    _run(env, [program.ops[k] for k in plan.deferred])
    _run(env, program.ops[plan.end:])
    return _read(env, program.outputs[0])

  local = window_lib.Localized(clean=clean, _probs=probs, size=size, radius=plan.radius)
  return window_lib.checked(local, full, traced.input_shape, seed=seed)
