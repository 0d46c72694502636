"""Building blocks shared by the model families: preprocessing inside the model.

Every pixeljax classifier takes raw pixels in [0, 255] (NHWC float32) so that the attacks can
work in pixel space without knowing how a network was trained. Each family's own input
normalisation therefore lives in the module, as ``(x * scale - mean) / std``.
"""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class Normalize(nn.Module):
  """``(x * scale - mean) / std`` per channel; no parameters."""
  scale: float = 1.0
  mean: Sequence[float] = (0.0,)
  std: Sequence[float] = (1.0,)

  def __call__(self, x):
    mean = jnp.asarray(self.mean, jnp.float32)
    std = jnp.asarray(self.std, jnp.float32)
    return (x * self.scale - mean) / std


# The preprocessing of each source, named once.
KERAS_CIFAR = dict(scale=1.0, mean=(125.307, 122.95, 113.865),
                   std=(62.9932, 62.0887, 66.7048))
TORCH_IMAGENET = dict(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
CAFFE_MNIST = dict(scale=1 / 256, mean=(0.0,), std=(1.0,))
# Ours, for the nets trained in pixeljax: per-channel CIFAR-10 training-set statistics.
CIFAR_STANDARD = dict(scale=1 / 255, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
MNIST_STANDARD = dict(scale=1 / 255, mean=(0.1307,), std=(0.3081,))
IMAGENET_STANDARD = TORCH_IMAGENET
