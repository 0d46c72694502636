"""The door: what comes into an attack is checked once, in one line each.

Every public entry that attacks images (``attack``, ``exhaustive_one_pixel``,
``select_images``) passes its images through ``images_for`` and the model's first outputs
through ``probabilities`` before any attack is compiled: the mistakes that would otherwise
run for hours and report nonsense -- images scaled to [0, 1] (the net sees a black image it
already misclassifies: every attack "succeeds" at once), NCHW images, images of another size,
an empty batch, a ``predict`` that returns logits or log-probabilities (a loss of 385%, or
every attack stopping after its first population) -- each raise a ``UserError`` naming the
problem and the fix.
"""
import numpy as np

from pixeljax.errors import UserError
from pixeljax.models.registry import check_images


def _unwrapped(model):
  from pixeljax.sparse.evaluator import Evaluator
  return model.model if isinstance(model, Evaluator) else model


def model_name(model) -> str:
  return getattr(_unwrapped(model), "name", None) or "the model"


def input_shape(model):
  """(H, W, C) the model declares (zoo models and adapters), or None (a black box)."""
  model = _unwrapped(model)
  spec = getattr(model, "spec", None)
  shape = getattr(spec, "input_shape", None) or getattr(model, "input_shape", None)
  return tuple(shape) if shape is not None else None


def labels_for(labels, n: int, num_classes: int = None, what: str = "labels") -> np.ndarray:
  """``labels`` as int32 of shape (n,), in [0, num_classes) when that is known."""
  labels = np.asarray(labels)
  if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
    raise UserError(f"{what} must be integers of shape ({n},), one per image, got "
                    f"{labels.dtype} {labels.shape}")
  if num_classes is not None and labels.size and (labels.min() < 0
                                                  or labels.max() >= num_classes):
    raise UserError(f"label out of range [0, {num_classes}): found "
                    f"{labels.min()}..{labels.max()}")
  return labels.astype(np.int32)


def colours_for(colours, channels: int) -> np.ndarray:
  """A colour list of shape (n, channels) with values in [0, 255]."""
  colours = np.asarray(colours, np.float32)
  if colours.ndim != 2 or colours.shape[1] != channels or not len(colours):
    raise UserError(f"colours must have shape (n, {channels}) for {channels}-channel images, "
                    f"got {colours.shape}")
  if not np.all(np.isfinite(colours)) or colours.min() < 0 or colours.max() > 255:
    raise UserError(f"colours must be in [0, 255], got values in "
                    f"[{colours.min()}, {colours.max()}]")
  return colours


def images_for(model, images) -> np.ndarray:
  """``images`` as float32 NHWC pixels in [0, 255] for ``model``, or one clear error."""
  who = model_name(model)
  shape = np.shape(images)
  want = input_shape(model)
  if len(shape) == 4 and shape[0] == 0:
    raise UserError("no images to attack: the batch is empty")
  if (len(shape) == 4 and shape[1] in (1, 3) and shape[3] not in (1, 3)
      and (want is None or tuple(shape[1:]) != want)):
    raise UserError(f"images of shape {tuple(shape)} look like NCHW; pixeljax takes NHWC "
                    f"(N, H, W, C): pass images.transpose(0, 2, 3, 1)")
  images = np.asarray(check_images(images, want, who))
  check_pixel_scale(images)
  return images


def check_pixel_scale(images, what: str = "the images") -> None:
  """Refuses pixels scaled to [0, 1] (pixeljax takes [0, 255]): any dtype, uint8 images of 0
  and 1 too; an all-black batch (largest value 0) is the same image in either scale."""
  largest = np.max(images) if np.size(images) else 0
  if 0 < largest <= 1.0:
    raise UserError(f"{what} look scaled to [0, 1] (largest value {largest:.3g}); "
                    f"pixeljax takes pixels in [0, 255]: pass images * 255")


def probability_tolerance(dtype) -> float:
  """How far from 1 a row of probabilities held in ``dtype`` may sum: 1e-3, or two of the
  dtype's eps where that is more (bfloat16: 0.0156, float16: 0.0020). Rounding each
  probability to the dtype moves the row's sum by at most half an eps (the row sums to 1), the
  normalisation computed in it as much again: a net whose softmax runs in bfloat16 sums to
  1 +- 4e-3, and a 1e-3 rule would call its probabilities logits."""
  import jax.numpy as jnp           # its finfo knows bfloat16 (numpy's alone does not)
  try:
    eps = float(jnp.finfo(dtype).eps)
  except (TypeError, ValueError):     # integers, objects: no finer rule than the default
    eps = 0.0
  return max(1e-3, 2 * eps)


def probabilities(probs, who: str = "the model", rows: int = None) -> np.ndarray:
  """``probs`` (N, K), checked to be probabilities: rows in [0, 1] summing to 1 (within
  ``probability_tolerance`` of their dtype); ``rows``: the N it must have (one per image)."""
  tolerance = probability_tolerance(getattr(probs, "dtype", np.float64))
  probs = np.asarray(probs, np.float64)
  if probs.ndim != 2 or probs.shape[1] < 2 or (rows is not None and len(probs) != rows):
    raise UserError(f"{who} returned outputs of shape {probs.shape} for "
                    f"{'a batch' if rows is None else f'{rows} images'}; it must return "
                    f"probabilities of shape (N images, classes)")
  if not np.all(np.isfinite(probs)):
    raise UserError(f"{who} returned NaN or infinite outputs; check its weights and "
                    f"preprocessing")
  sums = probs.sum(-1)
  if probs.min() >= -1e-6 and probs.max() <= 1 + 1e-6 and np.all(np.abs(sums - 1) <= tolerance):
    return probs
  if probs.max() <= 1e-6 and np.all(np.abs(np.log(np.exp(probs).sum(-1))) <= tolerance):
    raise UserError(f"{who} returns log-probabilities (rows of exp sum to 1), not "
                    f"probabilities: wrap it as lambda x: jnp.exp(predict(x))")
  raise UserError(f"{who} returns logits, not probabilities (values in [{probs.min():.3g}, "
                  f"{probs.max():.3g}], rows summing to {sums.min():.3g}..{sums.max():.3g}): "
                  f"wrap it as lambda x: jax.nn.softmax(predict(x))")

