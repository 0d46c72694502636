"""All-CNN-C (Springenberg et al. 2015, "Striving for simplicity"), one of the one-pixel
paper's three CIFAR-10 targets: only convolutions, strided convolutions instead of pooling,
global average pooling at the end. ``batch_norm`` (default on) adds BN after each conv, which
trains in far fewer epochs than the original's plain SGD; set it off for the exact original.
"""
import flax.linen as nn
import jax.numpy as jnp

from pixeljax.models import layers


class AllCNNC(nn.Module):
  num_classes: int = 10
  batch_norm: bool = True
  dropout: float = 0.5

  @nn.compact
  def __call__(self, x, train: bool = False):
    def conv(x, features, kernel, stride=1, padding="SAME"):
      x = layers.Conv(features, (kernel, kernel), stride, padding=padding,
                  use_bias=not self.batch_norm)(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
      return nn.relu(x)

    x = nn.Dropout(0.2, deterministic=not train)(x)
    x = conv(x, 96, 3)
    x = conv(x, 96, 3)
    x = conv(x, 96, 3, stride=2)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = conv(x, 192, 3)
    x = conv(x, 192, 3)
    x = conv(x, 192, 3, stride=2)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = conv(x, 192, 3, padding="VALID")
    x = conv(x, 192, 1)
    x = layers.Conv(self.num_classes, (1, 1))(x)
    return jnp.mean(x, axis=(1, 2))
