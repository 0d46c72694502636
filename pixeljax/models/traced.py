"""The engine's fast paths for a classifier known only as a JAX function (its traced program).

The zoo's nets are Flax modules: ``models.stem`` and ``models.window`` find their first
convolution and their local prefix by intercepting module calls. A model imported from Keras
or PyTorch (``models.adapters``) is a plain function of NHWC pixels. This module finds the
same structure in its *program*: the function is traced to a jaxpr (nested calls -- jit,
custom_jvp, custom_vjp -- inlined into one flat list of operations), and

* ``factor`` cuts it after the first convolution that reads the pixels (the *stem*: every
  operation on the pixels up to and including it; the *head*: the rest, fed that convolution's
  output), provided nothing after the cut reads the pixels or the stem's intermediates;
* its local prefix, evaluated on windows around a one-pixel candidate's pixel, is found in the
  same program by ``models.traced_window`` (attached to the factored model as its
  ``localizer``).

The split goes through the same checks as the Flax path (``stem.checked``): a program that
fails them gets the full net.
"""
import dataclasses
import functools
import itertools
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from pixeljax.models import stem as stem_lib

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


def largest_activation(f: Callable, input_shape) -> int:
  """The element count of the largest value in ``f``'s program (one image) that depends on
  the image: how much memory a batch of it moves through one layer."""
  program = _Traced(f, input_shape).program(1)
  flags = _dependent(program)
  values = [program.input] + [o for k, op in enumerate(program.ops) if flags[k] for o in op.outs]
  return max(int(np.prod(program.shapes[v])) for v in values)


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
    from pixeljax.models import traced_window   # it builds on this module
    factored = dataclasses.replace(factored, localizer=lambda strided=False: traced_window.localize(
        full, input_shape, seed=seed, traced=traced, strided=strided))
  return factored
