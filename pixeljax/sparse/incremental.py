"""Few-pixel candidates evaluated incrementally: the stem once per image, windows per candidate.

A candidate differs from its attack's image in k pixels. With the model split at its first
convolution (``pixeljax.models.stem.Factored``), the stem of the candidate's image is the
stem of the original plus, per changed pixel, the stem's response window scaled by the
colour change -- k small windows instead of a convolution over the whole image. Only the
head then runs per candidate. Pixels are written in order (``problem.perturb``'s scatter,
last write wins), so an earlier pixel at the same place as a later one contributes nothing.

``candidate_probs`` is the black box the runner gives each attack in place of
``predict(perturb(image, candidates))``; like ``evaluate.micro_batched`` it evaluates a fixed
number of candidates per model call (a ``custom_vmap`` rule flattens the vmapped attacks),
skipping slices none of whose rows is kept. With ``window`` (one-pixel candidates of a net
with a local prefix, ``Factored.window``), the prefix too runs on a window around each
candidate's pixel (``pixeljax.models.window``), and only what follows it on whole maps.
"""
import jax
import jax.numpy as jnp

from pixeljax.evaluate import in_fixed_batches
from pixeljax.models.stem import Factored
from pixeljax.sparse.problem import decode, last_writes


def changed_stems(factored: Factored, stems, images, candidates):
  """The stem outputs (N, H', W', O) of ``images`` (N, H, W, C) with ``candidates`` (N, D)
  written in, given ``stems`` = ``factored.stem(images)``."""
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


def modes(predict) -> dict:
  """How a black box can be evaluated incrementally: ``PixelAttackConfig.resolved``'s
  ``factored`` and ``windowed``."""
  factored = isinstance(predict, Factored)
  return dict(factored=factored, windowed=factored and predict.window is not None)


def candidate_probs(factored: Factored, size: int, window: bool = False, mesh=None):
  """``f(image, candidates, active) -> probabilities`` for one attack's candidates (B, D),
  computed incrementally, ``size`` candidates per model call (0: all at once). ``active`` (B,)
  marks rows whose results are kept; a slice with none is skipped (zeros). ``window``: the
  candidates are one-pixel ones, run through ``factored.window``. ``mesh``: the model calls
  are dealt to its devices (``evaluate.in_fixed_batches``)."""
  if window:
    local = factored.window
    prepare = local.clean

    def rows(maps, images, owner, cands):
      x, y, col = jax.vmap(decode, (0, None))(cands, images.shape[1:])
      return local.pixel_probs(maps, images, owner, y[:, 0], x[:, 0], col[:, 0])
  else:
    prepare = factored.stem

    def rows(stems, images, owner, cands):
      return factored.head(changed_stems(factored, stems[owner], images[owner], cands))

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

