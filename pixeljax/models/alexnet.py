"""AlexNet (Krizhevsky et al. 2012) for 224x224x3 ImageNet-shaped inputs, as the fooling
paper's ImageNet target. Architecture only (no ImageNet weights exist offline); it serves the
scale tests: attacks and renderers must work at 224x224 with automatic chunking."""
import flax.linen as nn

from pixeljax.models import layers


class AlexNet(nn.Module):
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(layers.Conv(96, (11, 11), (4, 4), padding=((2, 2), (2, 2)))(x))
    x = nn.max_pool(x, (3, 3), (2, 2))
    x = nn.relu(layers.Conv(256, (5, 5), padding="SAME")(x))
    x = nn.max_pool(x, (3, 3), (2, 2))
    x = nn.relu(layers.Conv(384, (3, 3), padding="SAME")(x))
    x = nn.relu(layers.Conv(384, (3, 3), padding="SAME")(x))
    x = nn.relu(layers.Conv(256, (3, 3), padding="SAME")(x))
    x = nn.max_pool(x, (3, 3), (2, 2))
    x = x.reshape(x.shape[0], -1)
    x = nn.Dropout(0.5, deterministic=not train)(x)
    x = nn.relu(nn.Dense(4096)(x))
    x = nn.Dropout(0.5, deterministic=not train)(x)
    x = nn.relu(nn.Dense(4096)(x))
    return nn.Dense(self.num_classes)(x)
