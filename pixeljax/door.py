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
  floating = np.issubdtype(np.asarray(images).dtype, np.floating)
  images = np.asarray(check_images(images, want, who))
  if floating and images.max() <= 1.0:
    raise UserError(f"the images look scaled to [0, 1] (largest value {images.max():.3g}); "
                    f"pixeljax takes pixels in [0, 255]: pass images * 255")
  return images


def probabilities(probs, who: str = "the model") -> np.ndarray:
  """``probs`` (N, K), checked to be probabilities: rows in [0, 1] summing to 1 (1e-3)."""
  probs = np.asarray(probs, np.float64)
  if probs.ndim != 2 or probs.shape[1] < 2:
    raise UserError(f"{who} returned outputs of shape {probs.shape}; it must return "
                    f"probabilities of shape (N, classes)")
  if not np.all(np.isfinite(probs)):
    raise UserError(f"{who} returned NaN or infinite outputs; check its weights and "
                    f"preprocessing")
  sums = probs.sum(-1)
  if probs.min() >= -1e-6 and probs.max() <= 1 + 1e-6 and np.all(np.abs(sums - 1) <= 1e-3):
    return probs
  if probs.max() <= 1e-6 and np.all(np.abs(np.log(np.exp(probs).sum(-1))) <= 1e-3):
    raise UserError(f"{who} returns log-probabilities (rows of exp sum to 1), not "
                    f"probabilities: wrap it as lambda x: jnp.exp(predict(x))")
  raise UserError(f"{who} returns logits, not probabilities (values in [{probs.min():.3g}, "
                  f"{probs.max():.3g}], rows summing to {sums.min():.3g}..{sums.max():.3g}): "
                  f"wrap it as lambda x: jax.nn.softmax(predict(x))")

