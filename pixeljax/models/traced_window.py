"""A traced program's local prefix (``models.traced``) evaluated on windows around one pixel.

A one-pixel candidate differs from its image only where the changed pixel can reach. Through
convolutions, pooling and position-wise maps that region stays small for a while: ``localize``
finds the program's longest such prefix and evaluates it on windows -- each convolution or
pooling computes only the square its pixel can have reached (read from the clean activations
of the image, computed once, with the window of its input written in), the rest of its window
being its clean output -- and writes the windows into the clean activations where the prefix
ends, so only the rest of the net runs on whole maps.

Two reaches, recorded apart (``Execution.window`` / ``strided_window``) because XLA:CPU's float
bits depend on which operations run on windows:

* **stride-1** (``strided=False``): 'same' convolutions of stride 1, position-wise maps and
  layout transposes, all on one window of the image's resolution. On ResNets this is the first
  stage (akamaster ResNet-20: 7 of 19 convolutions on 15x15 instead of 32x32).
* **strided** (``strided=True``): also strided or 'valid' convolutions and pooling (max, sum;
  an average pool is a sum and a division), each starting a window at its output's resolution
  (*group*). On All-CNN-C the prefix then reaches its fifth convolution (8x8 of 16x16 maps),
  on NiN its second block, on VGG16 its second.

Either prefix ends at the first other operation reading the pixels (a reshape, a reduction, an
operation mixing two resolutions) or where a window would exceed half its map
(``_MAX_WINDOW``), beyond which it saves little. Where a change reaches is worked out exactly,
per pixel row and column (``_Plan``), so windows need not be centred: a stride-2 layer's square
depends on the pixel's parity. The result goes through ``window.checked``: a program that
fails it gets no window. Inside the prefix every tensor is kept batch-first, rows, columns,
then its other axes (*canonical* order), so PyTorch's NCHW transposes cost nothing there.
"""
import dataclasses
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pixeljax.models import window as window_lib
from pixeljax.models.traced import (_ELEMENTWISE, _Literal, _Program, _Traced, _bind,
                                    _dependent, _is_conv, _read, _read_from, _run)

# The windowed prefix stops before a window side above this fraction of its map's side.
_MAX_WINDOW = 0.5
# Pooling operations a strided prefix evaluates on windows, with the value of their padding.
_POOLS = {"reduce_window_max": -np.inf, "reduce_window_min": np.inf, "reduce_window_sum": 0.0}


@dataclasses.dataclass(frozen=True, eq=False)
class _Axes:
  """Where a pixel-dependent tensor keeps its batch, rows and columns, its group, and, per
  pixel row (``lo[0]``, ``hi[0]``) and column (``lo[1]``, ``hi[1]``), the first and last
  position of its rows / columns a change of that pixel can reach."""
  spatial: Tuple[int, int, int]     # positions of batch, rows, columns in its own layout
  group: int
  lo: Tuple[np.ndarray, np.ndarray]
  hi: Tuple[np.ndarray, np.ndarray]

  def canonical(self, rank: int) -> Tuple[int, ...]:
    """The permutation to canonical order: batch, rows, columns, the rest as they come."""
    return self.spatial + tuple(d for d in range(rank) if d not in self.spatial)


@dataclasses.dataclass(frozen=True, eq=False)
class _Local:
  """A convolution or pooling of the prefix, per axis (rows, columns): kernel, stride and
  padding, the square it computes (``size``, at ``corner`` per pixel coordinate), and the
  clean input it reads that square from (``margin``-padded with ``fill``, ``span`` from
  ``start``: the union of the square's inputs and its input's window)."""
  op: int
  kernel: Tuple[int, int]
  stride: Tuple[int, int]
  pad: Tuple[int, int]              # the low side's padding
  fill: float
  size: Tuple[int, int]
  corner: Tuple[np.ndarray, np.ndarray]
  start: Tuple[np.ndarray, np.ndarray] = ()
  span: Tuple[int, int] = ()
  margin: Tuple[Tuple[int, int], Tuple[int, int]] = ()


@dataclasses.dataclass(frozen=True, eq=False)
class _Plan:
  end: int                               # the first operation after the prefix
  axes: Dict[int, _Axes]                 # every pixel-dependent value of the prefix
  locals: Tuple[_Local, ...]             # the prefix's convolutions and pooling, in order
  live: Tuple[int, ...]                  # prefix values read after it, placed in clean maps
  dims: Tuple[Tuple[int, int], ...]      # each group's map size
  origin: Tuple[Tuple[np.ndarray, np.ndarray], ...]   # each group's window, per pixel coord.
  size: Tuple[Tuple[int, int], ...]
  # Prefix operations rerun on whole maps after the placement: chains of elementwise ops and
  # transposes leading from one live value to another (a ReLU's output and its NHWC copy, a
  # sum and its batch norm), so only one of the two is placed.
  deferred: Tuple[int, ...] = ()


def _spatial_op(op, src: _Axes, shapes, strided: bool):
  """(kernel, stride, low padding, fill, output spatial positions, whether it keeps its
  input's group) of a convolution or pooling the prefix can window, else None."""
  p = op.params
  if _is_conv(op):
    if isinstance(op.ins[1], _Literal) or p["batch_group_count"] != 1:
      return None
    dn = p["dimension_numbers"]
    if src.spatial != (dn.lhs_spec[0],) + tuple(dn.lhs_spec[2:]):
      return None
    kernel = shapes[op.ins[1]]
    if len(kernel) != 4 or tuple(p["lhs_dilation"]) != (1, 1) or \
        tuple(p["rhs_dilation"]) != (1, 1):
      return None
    k = (kernel[dn.rhs_spec[2]], kernel[dn.rhs_spec[3]])
    s, pads = tuple(p["window_strides"]), tuple(map(tuple, p["padding"]))
    out = (dn.out_spec[0],) + tuple(dn.out_spec[2:])
    fill = 0.0
  elif op.name in _POOLS and strided:
    rank = len(p["window_dimensions"])
    spatial = src.spatial
    rest = [d for d in range(rank) if d not in spatial[1:]]
    if any(p["window_dimensions"][d] != 1 or p["window_strides"][d] != 1 or
           tuple(p["padding"][d]) != (0, 0) for d in rest) or \
        any(v != 1 for v in tuple(p["base_dilation"]) + tuple(p["window_dilation"])):
      return None
    k = tuple(p["window_dimensions"][d] for d in spatial[1:])
    s = tuple(p["window_strides"][d] for d in spatial[1:])
    pads = tuple(tuple(p["padding"][d]) for d in spatial[1:])
    out, fill = spatial, _POOLS[op.name]
  else:
    return None
  same = s == (1, 1) and all(q % 2 == 1 and pad == (q // 2, q // 2) for q, pad in zip(k, pads))
  if not strided and not (same and k[0] == k[1]):     # the stride-1 prefix: square kernels
    return None
  return k, s, tuple(pad[0] for pad in pads), fill, out, same


def _reach(lo, hi, k, s, pad, size):
  """The output positions of a window operation (kernel ``k``, stride ``s``, ``pad`` on the
  low side, ``size`` outputs) that read an input position in [lo, hi]."""
  first = np.clip(-((pad - k + 1 + lo) // -s), 0, size - 1)     # ceil division
  last = np.clip((hi + pad) // s, 0, size - 1)
  return np.minimum(first, last), last


def _square(lo, hi, dim):
  """The static side and per-pixel corner of the squares covering [lo, hi], inside the map."""
  size = int(np.max(hi - lo + 1))
  return size, np.clip(lo, 0, dim - size)


def _groups(squares, dims):
  """Each group's window (per pixel coordinate: origin; and its static size): the union of
  its squares ``(group, size, corner)``, inside its map."""
  origin, size = [], []
  for g, dim in enumerate(dims):
    mine = [(t, c) for group, t, c in squares if group == g]
    o, z = [], []
    for a in range(2):
      lo = np.min([c[a] for _, c in mine], axis=0)
      hi = np.max([c[a] + t[a] - 1 for t, c in mine], axis=0)
      side, corner = _square(lo, hi, dim[a])
      o.append(corner)
      z.append(side)
    origin.append(tuple(o))
    size.append(tuple(z))
  return tuple(origin), tuple(size)


def _plan(program: _Program, input_shape, strided: bool) -> Optional[_Plan]:
  h, w = input_shape[:2]
  pixel = (np.arange(h), np.arange(w))
  axes = {program.input: _Axes((0, 1, 2), 0, pixel, pixel)}
  dims = [(h, w)]
  squares = [(0, (1, 1), pixel)]
  locals_, end = [], len(program.ops)
  for k, op in enumerate(program.ops):
    ins = [a for a in op.ids() if a in axes]
    if not ins:
      continue
    shape = program.shapes[op.outs[0]]
    out = None
    first = axes[ins[0]]
    if op.name in _ELEMENTWISE and len(op.outs) == 1:
      if all(axes[a].spatial == first.spatial and axes[a].group == first.group for a in ins) \
          and len(shape) >= 3 and \
          (shape[first.spatial[1]], shape[first.spatial[2]]) == dims[first.group]:
        out = _Axes(first.spatial, first.group,
                    tuple(np.min([axes[a].lo[i] for a in ins], 0) for i in range(2)),
                    tuple(np.max([axes[a].hi[i] for a in ins], 0) for i in range(2)))
    elif op.name == "transpose" and len(ins) == 1:
      perm = tuple(op.params["permutation"])
      out = dataclasses.replace(first, spatial=tuple(perm.index(d) for d in first.spatial))
    elif op.ins[0] in axes and len(ins) == 1:
      found = _spatial_op(op, first, program.shapes, strided)
      if found is not None:
        kernel, stride, pad, fill, spatial, same = found
        out_dims = (shape[spatial[1]], shape[spatial[2]])
        group = first.group if same else len(dims)
        reach = [_reach(first.lo[i], first.hi[i], kernel[i], stride[i], pad[i], out_dims[i])
                 for i in range(2)]
        made = [_square(lo, hi, out_dims[i]) for i, (lo, hi) in enumerate(reach)]
        size, corner = tuple(m[0] for m in made), tuple(m[1] for m in made)
        trial = squares + [(group, size, corner)]
        trial_dims = dims if same else dims + [out_dims]
        limit = max(1, int(_MAX_WINDOW * min(trial_dims[group])))
        if max(_groups(trial, trial_dims)[1][group]) <= limit:
          out = _Axes(spatial, group, tuple(r[0] for r in reach), tuple(r[1] for r in reach))
          squares, dims = trial, trial_dims
          locals_.append(_Local(k, kernel, stride, pad, fill, size, corner))
    if out is None:
      end = k
      break
    axes[op.outs[0]] = out
  if not locals_:
    return None
  origin, size = _groups(squares, dims)
  # Each operation's clean input: the union of the inputs of its square and its input's
  # window, padded (with its padding value) so that every pixel's union is inside.
  done = []
  for loc in locals_:
    src = axes[program.ops[loc.op].ins[0]]
    start, span, margin = [], [], []
    for a in range(2):
      need = loc.corner[a] * loc.stride[a] - loc.pad[a]
      length = (loc.size[a] - 1) * loc.stride[a] + loc.kernel[a]
      o, z = origin[src.group][a], size[src.group][a]
      lo, hi = np.minimum(need, o), np.maximum(need + length, o + z)
      side = int(np.max(hi - lo))
      start.append(lo)
      span.append(side)
      margin.append((max(0, -int(lo.min())), max(0, int((lo + side).max()) - dims[src.group][a])))
    done.append(dataclasses.replace(loc, start=tuple(start), span=tuple(span),
                                    margin=tuple(margin)))
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
  return _Plan(end, axes, tuple(done), tuple(live), tuple(dims), origin, size,
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
      value[0], (o[0], o[1]) + (0,) * (value.ndim - 3), tuple(size) + value.shape[3:]))(origin)


def _crop(maps, owner, origin, size):
  """(N, size[0], size[1], ...) crops of canonical ``maps[owner]`` at ``origin`` (N, 2)."""
  rest = maps.shape[3:]
  return jax.vmap(lambda o, yx: lax.dynamic_slice(
      maps, (o, yx[0], yx[1]) + (0,) * len(rest), (1,) + tuple(size) + rest)[0])(owner, origin)


def _write(base, windows, at):
  """``base`` (N, ...) with ``windows`` (N, ...) written at ``at`` (N, 2) (rows, columns)."""
  return jax.vmap(lambda b, v, r: lax.dynamic_update_slice(
      b, v.astype(b.dtype), (r[0], r[1]) + (0,) * (b.ndim - 2)))(base, windows, at)


def _at(tables, pixel):
  """Per candidate: the (rows, columns) entry of per-pixel-coordinate ``tables``."""
  return jnp.stack([jnp.asarray(tables[0])[pixel[:, 0]],
                    jnp.asarray(tables[1])[pixel[:, 1]]], axis=-1)


@dataclasses.dataclass(frozen=True, eq=False)
class Windowed:
  """One-pixel candidates' probabilities from windows, as ``window.Localized``:
  ``clean(images)`` once per image, then ``pixel_probs(maps, images, owner, y, x, colours)``
  per candidate -- ``images[owner]`` with pixel (y, x) set to ``colours``."""
  clean: Any
  _probs: Any
  origin: Tuple[np.ndarray, np.ndarray]    # the image's window, per pixel row / column
  size: Tuple[int, int]
  plan: _Plan

  def pixel_probs(self, maps, images, owner, y, x, colours):
    pixel = jnp.stack([y, x], axis=-1)
    origin = _at(self.origin, pixel)
    windows = _crop(images, owner, origin, self.size)
    windows = windows.at[jnp.arange(owner.shape[0]), y - origin[:, 0], x - origin[:, 1]].set(
        colours.astype(windows.dtype))
    return self._probs(maps, owner, pixel, windows)


def _local_params(op, axes: _Axes, rank: int):
  """``op``'s parameters for its canonical-order input square, unpadded."""
  p = dict(op.params)
  if _is_conv(op):
    p["padding"] = ((0, 0), (0, 0))
    p["dimension_numbers"] = lax.ConvDimensionNumbers(
        (0, 3, 1, 2), tuple(p["dimension_numbers"].rhs_spec), (0, 3, 1, 2))
    return p
  order = axes.canonical(rank)
  for key in ("window_dimensions", "window_strides", "base_dilation", "window_dilation"):
    p[key] = tuple(p[key][d] for d in order)
  p["padding"] = ((0, 0),) * rank
  return p


def localize(full, input_shape, seed: int = 0, traced: Optional[_Traced] = None,
             strided: bool = False) -> Optional[Windowed]:
  """One-pixel evaluation of ``full`` with its local prefix on windows (checked by
  ``window.checked``), or None when its program has none. ``strided``: the prefix may go on
  through strided convolutions and pooling; None when that reaches no further than stride 1
  (the two would be the same program)."""
  traced = traced or _Traced(full, input_shape)
  try:
    plan = _plan(traced.program(1), traced.input_shape, strided)
    if strided and plan is not None:
      plain = _plan(traced.program(1), traced.input_shape, False)
      if plain is not None and plain.end == plan.end:
        return None
  except Exception:
    return None
  if plan is None:
    return None

  def clean(images):
    """Each windowed operation's padded input and its output, and the live values, all in
    canonical order, for whole images."""
    program = traced.program(images.shape[0])
    env = {**program.consts, program.input: images}
    ins, outs = [], []
    at = {loc.op: loc for loc in plan.locals}
    for k, op in enumerate(program.ops[:plan.end]):
      values = [_read(env, a) for a in op.ins]
      env.update(zip(op.outs, _bind(op, values)))
      if k in at:
        loc, src = at[k], plan.axes[op.ins[0]]
        x = _canonical(values[0], src.canonical(values[0].ndim))
        widths = ((0, 0),) + loc.margin + ((0, 0),) * (x.ndim - 3)
        ins.append(jnp.pad(x, widths, constant_values=jnp.asarray(loc.fill, x.dtype)))
        y = env[op.outs[0]]
        outs.append(_canonical(y, plan.axes[op.outs[0]].canonical(y.ndim)))
    live = tuple(_canonical(env[a], plan.axes[a].canonical(env[a].ndim)) for a in plan.live)
    return tuple(ins), tuple(outs), live

  def probs(maps, owner, pixel, windows):
    ins, outs, live = maps
    program = traced.program(windows.shape[0])
    flags = _dependent(program)
    env = dict(program.consts)
    win = {program.input: windows}      # canonical windows of the pixel-dependent values
    origin = [_at(o, pixel) for o in plan.origin]
    at = {loc.op: (i, loc) for i, loc in enumerate(plan.locals)}
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
      elif k in at:
        i, loc = at[k]
        src = plan.axes[op.ins[0]]
        start = _at(loc.start, pixel)
        canvas = _crop(ins[i], owner, start + jnp.array([m[0] for m in loc.margin]), loc.span)
        canvas = _write(canvas, win[op.ins[0]], origin[src.group] - start)
        corner = _at(loc.corner, pixel)
        need = corner * jnp.array(loc.stride) - jnp.array(loc.pad)
        length = tuple((t - 1) * s + q for t, s, q in zip(loc.size, loc.stride, loc.kernel))
        x = jax.vmap(lambda v, r: lax.dynamic_slice(
            v, (r[0], r[1]) + (0,) * (v.ndim - 2), length + v.shape[2:]))(canvas, need - start)
        operands = [x] + [_read(env, a) for a in op.ins[1:]]
        y = _bind(dataclasses.replace(op, params=_local_params(op, src, rank)),
                  operands)[0]
        whole = plan.size[out.group]
        if loc.size == whole and all(np.array_equal(c, o) for c, o in
                                     zip(loc.corner, plan.origin[out.group])):
          win[op.outs[0]] = y
        else:
          win[op.outs[0]] = _write(_crop(outs[i], owner, origin[out.group], whole), y,
                                   corner - origin[out.group])
      else:
        values = [win[a] if a in win else
                  _operand(_read(env, a), rank, out.spatial, origin[out.group],
                           plan.size[out.group])
                  for a in op.ins]
        win[op.outs[0]] = _bind(op, values)[0]
    # The prefix's values read later: clean maps with their windows written in.
    for a, maps_a in zip(plan.live, live):
      placed = _write(maps_a[owner], win[a], origin[plan.axes[a].group])
      env[a] = _canonical(placed, np.argsort(plan.axes[a].canonical(placed.ndim)))
    _run(env, [program.ops[k] for k in plan.deferred])
    _run(env, program.ops[plan.end:])
    return _read(env, program.outputs[0])

  local = Windowed(clean=clean, _probs=probs, origin=plan.origin[0], size=plan.size[0],
                   plan=plan)
  return window_lib.checked(local, full, traced.input_shape, seed=seed)
