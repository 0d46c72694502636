"""A net's translation-equivariant prefix evaluated on a window around one changed pixel.

Up to some layer, many CIFAR nets are stride-1 convolutions with 'same' padding and
per-position maps (normalisation, batch norm at inference, ReLU, residual sums): a change of
pixel (y, x) can only reach positions within the layers' summed kernel radius ``r`` of it.
A one-pixel candidate therefore differs from its image's activations only inside a
(2r + 1)-square window around its pixel (clamped inside the image). ``localize`` evaluates
the prefix on that window alone -- each convolution reads its clean input around the window
(computed once per image) with the window written in, and computes only the square its
pixel can have reached so far (3x3 after the first, 5x5 after the second, ...), the rest of
its window being its clean output -- and writes the window into the clean activations where
the prefix ends, so only the rest of the net runs on whole maps. On the akamaster ResNet-20
the first stage (7 of its 19 convolutions, 44% of its forward time at batch 400) then runs
on 15x15 instead of 32x32 maps, its convolutions on 3x3 to 15x15.

The prefix ends at a named child module of the backbone (``ModelSpec.window_end``): that
module and everything after it see whole maps. ``localize`` checks what it assumes --
windowed probabilities equal the full net's at the centre, corners, edges and random pixels
-- and returns None when they do not (a strided convolution, a pooling layer or a global
operation inside the prefix).
"""
import dataclasses
from typing import Any, Callable, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pixeljax.models.stem import _Stop, _is_conv   # the stem split's own cut

# Largest disagreement (probabilities) the checks accept: the window's convolutions sum the
# same products as the whole map's, in XLA's order for another shape (~1e-7 measured).
_TOLERANCE = 1e-5


class NotLocal(Exception):
  """The prefix holds a layer that a window cannot evaluate."""


def _same_padding(conv: nn.Conv) -> int:
  """The per-side padding of a stride-1 'same' convolution with an odd square kernel."""
  k = tuple(conv.kernel_size)
  strides = conv.strides if conv.strides is not None else 1
  strides = (strides,) * 2 if isinstance(strides, int) else tuple(strides)
  dilated = any(d not in (None, 1) and tuple(np.atleast_1d(d)) != (1,) * len(np.atleast_1d(d))
                for d in (conv.input_dilation, conv.kernel_dilation))
  if len(k) != 2 or k[0] != k[1] or k[0] % 2 == 0 or strides != (1, 1) or dilated:
    raise NotLocal(f"convolution {conv.name}: kernel {k}, strides {strides}, dilations "
                   f"{conv.input_dilation} / {conv.kernel_dilation}")
  p = k[0] // 2
  pad = conv.padding
  not_same = NotLocal(f"convolution {conv.name}: padding {pad!r} is not 'same'")
  try:   # Flax's own reading: an int, or per dimension an int or a (low, high) pair
    pairs = nn.linear.canonicalize_padding(pad, 2)
  except ValueError:
    raise not_same from None
  if pairs == "SAME" or (not isinstance(pairs, str)
                         and tuple(tuple(int(v) for v in q) for q in pairs) == ((p, p), (p, p))):
    return p
  raise not_same


def _ends(context, end: str) -> bool:
  return context.module.name == end and context.method_name == "__call__"


@dataclasses.dataclass(frozen=True, eq=False)
class Localized:
  """One-pixel candidates' probabilities from windows: ``clean(images)`` once per image
  (each windowed convolution's padded input and its output, and the input of the module
  ``end``), then ``pixel_probs(maps, images, owner, y, x, colours)`` per candidate --
  ``images[owner]`` with pixel (y, x) set to ``colours``."""
  clean: Callable[[jax.Array], Tuple[Any, ...]]
  _probs: Callable[..., jax.Array]
  size: int            # the window's side, 2 * radius + 1
  radius: int          # the prefix's summed kernel radius

  def origin(self, y, x, image_shape):
    """The (N, 2) top-left corner of the windows around pixels (y, x), clamped inside."""
    h, w = image_shape[:2]
    return jnp.stack([jnp.clip(y - self.radius, 0, h - self.size),
                      jnp.clip(x - self.radius, 0, w - self.size)], axis=-1)

  def pixel_probs(self, maps, images, owner, y, x, colours):
    origin = self.origin(y, x, images.shape[1:])
    rows = jnp.arange(owner.shape[0])
    windows = _crop(images, owner, origin, self.size)
    windows = windows.at[rows, y - origin[:, 0], x - origin[:, 1]].set(
        colours.astype(windows.dtype))
    return self._probs(maps, owner, origin, jnp.stack([y, x], axis=-1), windows)


def _crop(maps, owner, origin, size):
  """(N, size, size, C) crops of ``maps[owner]`` at ``origin`` (N, 2)."""
  c = maps.shape[-1]
  return jax.vmap(lambda o, yx: lax.dynamic_slice(
      maps, (o, yx[0], yx[1], 0), (1, size, size, c))[0])(owner, origin)


def _place(maps, owner, origin, windows):
  """``maps[owner]`` (N, H, W, C) with ``windows`` written at ``origin``."""
  return jax.vmap(lambda o, yx, w: lax.dynamic_update_slice(
      maps[o], w, (yx[0], yx[1], 0)))(owner, origin, windows)


def _plan(module, variables, input_shape, end: str):
  """The kernel radius summed over the prefix's convolutions (and their paddings)."""
  pads = []

  def record(f, args, kwargs, context):
    if _ends(context, end):
      raise _Stop(None)
    if _is_conv(context):
      pads.append(_same_padding(context.module))
    return f(*args, **kwargs)
  try:
    with nn.intercept_methods(record):
      jax.eval_shape(lambda x: module.apply(variables, x), jnp.zeros((1,) + tuple(input_shape)))
  except _Stop:
    return pads
  raise NotLocal(f"the net calls no module named {end!r}")


def localize(full: Callable, module: nn.Module, variables: Any, input_shape, end: str,
             seed: int = 0) -> Optional[Localized]:
  """One-pixel evaluation of ``full`` (the module's forward pass) with its prefix up to the
  module named ``end`` on windows, or None when that prefix is not local (the checks).
  ``end`` must be called with the prefix's output as its first argument."""
  h, w, c = (int(s) for s in input_shape)
  try:
    pads = _plan(module, variables, input_shape, end)
  except NotLocal:
    return None
  radius = sum(pads)
  size = 2 * radius + 1
  if not pads or size >= min(h, w):
    return None

  # The affected radius of each prefix convolution's output: its own and those before it
  # (a residual branch that skips some reaches less; the main path carries the sum).
  reach = np.cumsum(pads)

  def clean(images):
    ins, outs = [], []

    def record(f, args, kwargs, context):
      if _ends(context, end):
        raise _Stop(args[0])
      if _is_conv(context):
        p = pads[len(ins)]
        ins.append(jnp.pad(args[0], ((0, 0), (p, p), (p, p), (0, 0))))
        outs.append(f(*args, **kwargs))
        return outs[-1]
      return f(*args, **kwargs)
    try:
      with nn.intercept_methods(record):
        module.apply(variables, images)
    except _Stop as e:
      return tuple(ins), tuple(outs), e.value
    raise NotLocal(f"the net calls no module named {end!r}")

  def probs(maps, owner, origin, pixel, windows):
    """Every tensor of the prefix is a ``size`` window at ``origin``; convolution i computes
    only the (2 reach[i] + 1)-square around ``pixel`` that it can change, and takes the rest
    of its window from its clean output."""
    ins, outs, at_end = maps
    calls = iter(range(len(pads)))
    ended, inner = [], []

    def windowed(f, args, kwargs, context):
      if ended or inner:
        return f(*args, **kwargs)
      if _ends(context, end):
        ended.append(True)
        return f(_place(at_end, owner, origin, args[0]), *args[1:], **kwargs)
      if _is_conv(context):
        i = next(calls)
        conv, p = context.module, pads[i]
        around = _crop(ins[i], owner, origin, size + 2 * p)
        x = lax.dynamic_update_slice(around, args[0].astype(around.dtype), (0, p, p, 0))
        t = min(2 * int(reach[i]) + 1, size)
        # The square it can change, clamped inside the image (so inside the window too).
        corner = jnp.clip(pixel - int(reach[i]), 0, jnp.array([h - t, w - t]))
        rel = corner - origin
        x = jax.vmap(lambda v, r: lax.dynamic_slice(
            v, (r[0], r[1], 0), (t + 2 * p, t + 2 * p, v.shape[-1])))(x, rel)
        valid = conv.clone(parent=None, padding="VALID")
        inner.append(True)
        try:
          y = valid.apply({"params": conv.variables["params"]}, x)
        finally:
          inner.pop()
        if t == size:
          return y
        return jax.vmap(lambda b, v, r: lax.dynamic_update_slice(b, v, (r[0], r[1], 0)))(
            _crop(outs[i], owner, origin, size), y.astype(outs[i].dtype), rel)
      return f(*args, **kwargs)
    with nn.intercept_methods(windowed):
      return module.apply(variables, windows)

  return checked(Localized(clean=clean, _probs=probs, size=size, radius=radius), full,
                 input_shape, seed=seed)


def checked(local: Localized, full: Callable, input_shape,
            seed: int = 0) -> Optional[Localized]:
  """``local`` if its probabilities equal the full net's for one-pixel changes at the
  centre, the corners, the edges, pixels of each parity there and random pixels of a random
  image; else None."""
  h, w, c = (int(s) for s in input_shape)
  # The checks: a random image, each pixel of the probes changed to a random colour.
  rng = np.random.default_rng(seed)
  image = rng.uniform(0, 255, (1, h, w, c)).astype(np.float32)
  # ... and pixels of every row and column parity near each border and the centre (a strided
  # prefix's window depends on it).
  ys = np.clip([h // 2, 0, 0, h - 1, h - 1, 0, h // 2, h - 1, h // 2]
               + list(rng.integers(h, size=7))
               + [1, 2, 3, 1, h - 2, h - 2, h - 3, h // 2 + 1], 0, h - 1)
  xs = np.clip([w // 2, 0, w - 1, 0, w - 1, w // 2, 0, w // 2, w - 1]
               + list(rng.integers(w, size=7))
               + [2, 1, 3, w - 2, 1, w - 3, w - 2, w // 2 - 1], 0, w - 1)
  colours = rng.uniform(0, 255, (len(ys), c)).astype(np.float32)
  changed = np.repeat(image, len(ys), 0)
  changed[np.arange(len(ys)), ys, xs] = colours

  def both(image, changed, y, x, colours):
    owner = jnp.zeros(y.shape, jnp.int32)
    return local.pixel_probs(local.clean(image), image, owner, y, x, colours), full(changed)
  try:
    got, want = jax.jit(both)(image, changed, ys, xs, colours)
  except (NotLocal, TypeError, ValueError):   # e.g. a pooling layer's window of another shape
    return None
  if np.abs(np.asarray(got) - np.asarray(want)).max() > _TOLERANCE:
    return None
  return local
