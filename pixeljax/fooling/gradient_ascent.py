"""Fooling images by gradient ascent from noise (Nguyen et al., Section 3.6 / Simonyan et al.).

Every class is optimised at once (a batch of K images) with an optax optimiser on the log
probability of its class, with the original's options: L2 decay of the image (around mid-grey),
periodic Gaussian blur, and clipping to the valid pixel range. The history records, per class,
the first step at which the image is classified as its class (top-1) and reaches confidence
0.99, 0.999 and 0.9999.
"""
import dataclasses
from typing import Callable, Tuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from pixeljax.errors import UserError

THRESHOLDS = (0.99, 0.999, 0.9999)


@dataclasses.dataclass(frozen=True)
class GradientAscentConfig:
  steps: int = 200
  learning_rate: float = 2.0           # pixels per step (Adam)
  l2_decay: float = 0.0                # pulls pixels towards 128
  blur_every: int = 0                  # 0: never
  blur_sigma: float = 0.5
  clip: bool = True

  def __post_init__(self):
    for ok, message in [
        (self.steps >= 0, f"steps must be >= 0, got {self.steps}"),
        (self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}"),
        (self.l2_decay >= 0, f"l2_decay must be >= 0, got {self.l2_decay}"),
        (self.blur_every >= 0, f"blur_every must be >= 0 (0: never), got {self.blur_every}"),
        (self.blur_sigma > 0, f"blur_sigma must be > 0, got {self.blur_sigma}")]:
      if not ok:
        raise UserError(f"gradient ascent: {message}")


@struct.dataclass
class AscentState:
  images: jax.Array       # (K, H, W, C)
  opt_state: any
  step: jax.Array
  first_top1: jax.Array   # (K,) step, -1 until reached
  first_conf: jax.Array   # (K, len(THRESHOLDS)) step, -1 until reached


def gaussian_blur(images, sigma: float):
  radius = max(1, int(3 * sigma))
  x = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  k = jnp.exp(-x ** 2 / (2 * sigma ** 2))
  k = k / k.sum()
  c = images.shape[-1]
  kh = jnp.tile(k[:, None, None, None], (1, 1, 1, c))
  kw = jnp.tile(k[None, :, None, None], (1, 1, 1, c))
  conv = lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c,
      precision=jax.lax.Precision.HIGHEST)   # float32 on GPUs too (not TF32)
  return conv(conv(images, kh), kw)


def run(predict: Callable, key, image_shape: Tuple[int, int, int], num_classes: int,
        config: GradientAscentConfig = GradientAscentConfig()):
  """Returns (final state, per-step confidence (steps, K))."""
  tx = optax.adam(config.learning_rate)
  images = jax.random.uniform(key, (num_classes,) + tuple(image_shape), maxval=255.0)
  classes = jnp.arange(num_classes)

  def objective(x):
    probs = predict(x)
    return -jnp.sum(jnp.log(probs[classes, classes] + 1e-30)) + \
        config.l2_decay * jnp.sum((x - 128.0) ** 2), probs

  def body(state: AscentState, _):
    (_, probs), grad = jax.value_and_grad(objective, has_aux=True)(state.images)
    updates, opt_state = tx.update(grad, state.opt_state, state.images)
    x = optax.apply_updates(state.images, updates)
    if config.blur_every:
      x = jnp.where((state.step + 1) % config.blur_every == 0,
                    gaussian_blur(x, config.blur_sigma), x)
    if config.clip:
      x = jnp.clip(x, 0.0, 255.0)
    new_probs = predict(x)
    conf = new_probs[classes, classes]
    top1 = jnp.argmax(new_probs, -1) == classes
    step = state.step + 1
    first_top1 = jnp.where((state.first_top1 < 0) & top1, step, state.first_top1)
    reached = (conf[:, None] >= jnp.asarray(THRESHOLDS)[None]) & top1[:, None]
    first_conf = jnp.where((state.first_conf < 0) & reached, step, state.first_conf)
    return AscentState(x, opt_state, step, first_top1, first_conf), conf

  state = AscentState(images, tx.init(images), jnp.zeros((), jnp.int32),
                      jnp.full((num_classes,), -1, jnp.int32),
                      jnp.full((num_classes, len(THRESHOLDS)), -1, jnp.int32))
  return jax.lax.scan(body, state, None, length=config.steps)
