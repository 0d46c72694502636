"""A classifier split at its first convolution, so a few changed pixels cost a few windows.

Every zoo net starts with an input normalisation and a convolution: together an affine,
translation-equivariant map of the pixels (the *stem*). Changing pixel (y, x) of an image by
``delta`` (C values) therefore changes the stem's output by ``delta`` times a fixed window of
the kernel (the *response*), placed at (y, x) -- whatever the image. A few-pixel attack
evaluates hundreds of candidates of one image that differ from it in k pixels each: with
``stem(image)`` computed once, each candidate's stem output is that map plus k windows, and
only the rest of the net (the *head*) runs per candidate. On the CIFAR LeNet the first
convolution is most of the forward pass (3.3x fewer milliseconds per candidate batch).

``factor`` finds the split without knowing the architecture: it runs the module with
``flax.linen.intercept_methods`` and stops at (stem) or substitutes (head) the output of the
first ``nn.Conv`` call, then *checks* what it assumes -- ``head(stem(x))`` equals the full
forward pass, the stem is affine, and its response to a pixel is the same window at the
centre, at every corner and at a random pixel. A net that fails a check (a strided first
convolution, an input read by a later layer) is not factored; attacks then run the full net.
"""
import dataclasses
import functools
from typing import Any, Callable, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pixeljax.models import layers

# Largest relative disagreement the checks accept: the same values summed in another order
# (the stem's output plus a window vs the convolution of the changed image) differ by ~1e-7.
_TOLERANCE = 1e-5


@dataclasses.dataclass(frozen=True, eq=False)
class Factored:
  """``full`` (images -> probabilities) split as ``head(stem(images))``.

  Calling it runs ``full``, the unsplit net, so it can stand wherever a ``predict`` is taken.
  ``response[i, j, c]`` is the change of the stem's output at (y + offset[0] + i,
  x + offset[1] + j) per unit change of channel c of pixel (y, x), clipped at the borders.
  """
  full: Callable[[jax.Array], jax.Array]
  stem: Callable[[jax.Array], jax.Array]     # (N, H, W, C) pixels -> (N, H', W', O)
  head: Callable[[jax.Array], jax.Array]     # (N, H', W', O) -> (N, K) probabilities
  response: np.ndarray                       # (KH, KW, C, O) float32
  offset: Tuple[int, int]
  stem_shape: Tuple[int, int, int]           # (H', W', O)
  # ``localizer(strided)`` builds the net's one-pixel evaluation on windows (``models.window``,
  # ``models.traced_window``), or None where it has no such prefix; called once per reach, on
  # first use of ``window`` / ``strided_window`` (only one-pixel attacks use them).
  localizer: Optional[Callable[..., Optional[Any]]] = None

  @functools.cached_property
  def window(self):
    """One-pixel candidates through the net's stride-1 local prefix on windows, or None."""
    return None if self.localizer is None else self.localizer(strided=False)

  @functools.cached_property
  def strided_window(self):
    """The same through a prefix that goes on past strided convolutions and pooling, or None
    where it reaches no further than ``window``'s."""
    return None if self.localizer is None else self.localizer(strided=True)

  def __call__(self, images):
    return self.full(images)


class _Stop(Exception):
  def __init__(self, value):
    super().__init__("first convolution reached")
    self.value = value


def _is_conv(context) -> bool:
  return isinstance(context.module, nn.Conv) and context.method_name == "__call__"


def _split(module: nn.Module, variables: Any, input_shape):
  """The (stem, head) functions of ``module`` cut at its first ``nn.Conv`` call."""

  def stem(images):
    def stop_at_conv(f, args, kwargs, context):
      if _is_conv(context):
        raise _Stop(f(*args, **kwargs))
      return f(*args, **kwargs)
    try:
      with nn.intercept_methods(stop_at_conv):
        module.apply(variables, images)
    except _Stop as e:
      return e.value
    raise ValueError("the module calls no nn.Conv")

  def head(h):
    substituted = []

    def substitute(f, args, kwargs, context):
      if _is_conv(context) and not substituted:
        substituted.append(True)
        return h
      return f(*args, **kwargs)
    # The input is a placeholder: only the first convolution read it, and its output is `h`;
    # the normalisation feeding it is dead code that XLA removes.
    with nn.intercept_methods(substitute):
      return module.apply(variables, jnp.zeros((h.shape[0],) + tuple(input_shape), h.dtype))

  return stem, head


def _impulses(stem, image, pixels):
  """The stem's exact change per unit change of each channel of each pixel (y, x) in
  ``pixels``: (P, H', W', C, O), all in one compiled program (forward-mode autodiff)."""
  c = image.shape[-1]
  tangents = jnp.stack([jnp.zeros_like(image).at[y, x, ch].set(1.0)
                        for y, x in pixels for ch in range(c)])
  one = lambda v: stem(v[None])[0]
  with layers.forward_mode_convolutions():
    out = jax.jit(jax.vmap(lambda t: jax.jvp(one, (image,), (t,))[1]))(tangents)
  out = np.asarray(out).reshape((len(pixels), c) + out.shape[1:])
  return np.moveaxis(out, 1, 3)


def _apply(response, offset, out_shape, delta):
  """The stem's change for a change ``delta`` (H, W, C) of every pixel, as the sum of each
  pixel's placed window (float64)."""
  kh, kw = response.shape[:2]
  h, w = delta.shape[:2]
  ho, wo = out_shape[:2]
  out = np.zeros((ho, wo, response.shape[-1]))
  for i in range(kh):
    for j in range(kw):
      dy, dx = offset[0] + i, offset[1] + j       # pixel (y, x) -> output (y + dy, x + dx)
      y0, y1 = max(0, -dy), min(h, ho - dy)
      x0, x1 = max(0, -dx), min(w, wo - dx)
      if y0 < y1 and x0 < x1:
        out[y0 + dy:y1 + dy, x0 + dx:x1 + dx] += delta[y0:y1, x0:x1] @ response[i, j]
  return out


def _pixel(h: int, w: int, y: int, x: int):
  """(H, W, 1): one at pixel (y, x), zero elsewhere."""
  return (np.arange(h)[:, None, None] == y) & (np.arange(w)[None, :, None] == x)


def factor(full: Callable, module: nn.Module, variables: Any, input_shape,
           seed: int = 0) -> Optional[Factored]:
  """``full`` (the module's forward pass) as a ``Factored``, or None when the checks fail."""
  return checked(full, *_split(module, variables, input_shape), input_shape, seed=seed)


def checked(full: Callable, stem: Callable, head: Callable, input_shape,
            seed: int = 0) -> Optional[Factored]:
  """``full`` split as ``head(stem(x))`` (however the split was found: here for Flax
  modules, ``models.traced`` for any JAX function) as a ``Factored``, or None when a check
  fails: the split loses nothing, the stem is affine and translation-equivariant."""
  h, w, c = (int(s) for s in input_shape)
  rng = np.random.default_rng(seed)
  image = jnp.asarray(rng.uniform(0, 255, (h, w, c)), jnp.float32)
  y, x = int(rng.integers(h)), int(rng.integers(w))
  delta = rng.uniform(-255, 255, c).astype(np.float32)
  changed = image.at[y, x].add(delta)
  # Candidates are whole pixel values, often 0 and 255 (DE at its bounds, the exhaustive
  # bound's and CornerSearch's corners): the affine check also runs on a whole-valued image
  # whose pixel takes a corner colour and its complement, so a stem that treats those values
  # apart (a mask of saturated pixels, say) is caught, not only on a random float image.
  whole_image = jnp.round(image)
  corner = np.where(rng.integers(0, 2, c) == 1, 255.0, 0.0).astype(np.float32)
  colours = (corner, 255.0 - corner)
  probe = jnp.stack([image, changed, whole_image,
                     *(whole_image.at[y, x].set(v) for v in colours)])
  try:   # one program for the checks' forward passes
    stems, split, whole = jax.jit(lambda v: (stem(v), head(stem(v)), full(v)))(probe)
  except ValueError:
    return None
  base, moved, whole_base, *at_corners = np.asarray(stems)
  if base.ndim != 3:
    return None
  # The split loses nothing: head(stem(x)) is the full forward pass.
  if np.abs(np.asarray(split) - np.asarray(whole)).max() > _TOLERANCE:
    return None
  shape = (base.shape[0], base.shape[1], c, base.shape[2])
  cy, cx = h // 2, w // 2
  probes = [(cy, cx), (0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1),
            (int(rng.integers(h)), int(rng.integers(w)))]
  responses = _impulses(stem, image, probes)
  centre = responses[0]
  if centre.shape != shape:
    return None
  rows = np.nonzero(np.abs(centre).sum((1, 2, 3)))[0]
  cols = np.nonzero(np.abs(centre).sum((0, 2, 3)))[0]
  if not len(rows):
    return None
  response = centre[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
  offset = (int(rows[0]) - cy, int(cols[0]) - cx)
  scale = float(np.abs(response).max())
  # Translation equivariance, borders included (a strided or dilated stem fails here).
  for (py, px), got in zip(probes[1:], responses[1:]):
    want = np.stack([_apply(response, offset, shape, np.eye(c)[ch] * _pixel(h, w, py, px))
                     for ch in range(c)], 2)
    if np.abs(got - want).max() > _TOLERANCE * scale:
      return None
  # Every pixel at once (a position-dependent map would pass the probes above by chance).
  dense = rng.standard_normal((h, w, c)).astype(np.float32)
  with layers.forward_mode_convolutions():
    exact = np.asarray(jax.jit(lambda t: jax.jvp(lambda v: stem(v[None])[0], (image,), (t,))[1])(
        jnp.asarray(dense)))
  placed = _apply(response.astype(np.float64), offset, shape, dense)
  if np.abs(exact - placed).max() > _TOLERANCE * max(1e-6, np.abs(placed).max()):
    return None
  # Affine: the stem of a changed image is the stem of the image plus the placed windows.
  window = _apply(response, offset, shape, delta * _pixel(h, w, y, x))
  if np.abs(moved - (base + window)).max() > _TOLERANCE * max(1.0, np.abs(base).max()):
    return None
  for colour, got in zip(colours, at_corners):
    step = (colour - np.asarray(whole_image[y, x])) * _pixel(h, w, y, x)
    want = whole_base + _apply(response, offset, shape, step)
    if np.abs(got - want).max() > _TOLERANCE * max(1.0, np.abs(whole_base).max()):
      return None
  return Factored(full=full, stem=stem, head=head, response=response.astype(np.float32),
                  offset=offset, stem_shape=tuple(int(s) for s in base.shape))
