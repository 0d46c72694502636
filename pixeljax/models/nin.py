"""Network in Network (Lin et al. 2014) for CIFAR-10, one of the one-pixel paper's targets:
three "mlpconv" blocks (a spatial conv followed by two 1x1 convs), pooling between them and
global average pooling instead of dense layers. BN after each conv is on by default (faster
training); ``batch_norm=False`` gives the original layer list.
"""
import flax.linen as nn
import jax.numpy as jnp

from pixeljax.models import layers


class NiN(nn.Module):
  num_classes: int = 10
  batch_norm: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    def conv(x, features, kernel):
      x = layers.Conv(features, (kernel, kernel), padding="SAME", use_bias=not self.batch_norm)(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
      return nn.relu(x)

    x = conv(x, 192, 5)
    x = conv(x, 160, 1)
    x = conv(x, 96, 1)
    x = nn.max_pool(x, (3, 3), (2, 2), padding="SAME")
    x = nn.Dropout(0.5, deterministic=not train)(x)
    x = conv(x, 192, 5)
    x = conv(x, 192, 1)
    x = conv(x, 192, 1)
    x = nn.avg_pool(x, (3, 3), (2, 2), padding="SAME")
    x = nn.Dropout(0.5, deterministic=not train)(x)
    x = conv(x, 192, 3)
    x = conv(x, 192, 1)
    x = layers.Conv(self.num_classes, (1, 1))(x)
    return jnp.mean(x, axis=(1, 2))
