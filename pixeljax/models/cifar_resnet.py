"""He et al.'s CIFAR ResNet of depth 6n+2 with option-A (parameter-free) shortcuts.

This is the family of akamaster/pytorch_resnet_cifar10 (ResNet-20/32/44/56/110): widths
16/32/64, three stages of n basic blocks, batch norm eps 1e-5, global average pooling and one
linear layer. Padding is explicit (1 pixel each side) so strided convolutions sample the same
positions as PyTorch's.
"""
import flax.linen as nn
import jax.numpy as jnp

from pixeljax.models import layers

_PAD1 = ((1, 1), (1, 1))


class _BasicBlock(nn.Module):
  planes: int
  stride: int

  @nn.compact
  def __call__(self, x, train):
    bn = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                   name=name)
    y = layers.Conv(self.planes, (3, 3), self.stride, padding=_PAD1, use_bias=False,
                name="conv1")(x)
    y = nn.relu(bn("bn1")(y))
    y = layers.Conv(self.planes, (3, 3), 1, padding=_PAD1, use_bias=False, name="conv2")(y)
    y = bn("bn2")(y)
    if self.stride != 1 or x.shape[-1] != self.planes:
      # Option A: subsample spatially, zero-pad the channels by planes//4 on each side.
      x = x[:, ::2, ::2, :]
      pad = self.planes // 4
      x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (pad, pad)))
    return nn.relu(y + x)


class CifarResNet(nn.Module):
  """ResNet-(6n+2) for 32x32 inputs; returns logits."""
  depth: int = 20
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    if (self.depth - 2) % 6:
      raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {self.depth}")
    n = (self.depth - 2) // 6
    x = layers.Conv(16, (3, 3), 1, padding=_PAD1, use_bias=False, name="conv1")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     name="bn1")(x)
    x = nn.relu(x)
    for stage, planes in enumerate((16, 32, 64)):
      for i in range(n):
        stride = 2 if (stage > 0 and i == 0) else 1
        x = _BasicBlock(planes, stride, name=f"layer{stage + 1}_{i}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name="linear")(x)
