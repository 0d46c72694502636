"""VGG16 for 32x32 CIFAR-10 inputs (13 convs with BN, 5 max-pools, a small classifier), the
third of the one-pixel paper's CIFAR-10 targets."""
import flax.linen as nn

from pixeljax.models import layers

_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
          512, 512, 512, "M")


class VGG16(nn.Module):
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    for v in _VGG16:
      if v == "M":
        x = nn.max_pool(x, (2, 2), (2, 2))
      else:
        x = layers.Conv(v, (3, 3), padding="SAME", use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
    x = x.reshape(x.shape[0], -1)
    x = nn.Dropout(0.5, deterministic=not train)(x)
    x = nn.relu(nn.Dense(512)(x))
    x = nn.Dropout(0.5, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)
