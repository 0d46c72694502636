"""LeNet for MNIST, as in Caffe's example and the fooling paper (Nguyen et al. 2015).

conv 20@5x5 -> maxpool 2 -> conv 50@5x5 -> maxpool 2 -> dense 500 + ReLU -> dense 10.
There is no nonlinearity after the convolutions, exactly as in the Caffe prototxt. The flatten
is NHWC (HWC order); Caffe's CHW-ordered ``ip1`` weights are permuted at import.
"""
import flax.linen as nn

from pixeljax.models import layers


class LeNetMNIST(nn.Module):
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = layers.Conv(20, (5, 5), padding="VALID", name="conv1")(x)
    x = nn.max_pool(x, (2, 2), (2, 2))
    x = layers.Conv(50, (5, 5), padding="VALID", name="conv2")(x)
    x = nn.max_pool(x, (2, 2), (2, 2))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(500, name="ip1")(x))
    return nn.Dense(self.num_classes, name="ip2")(x)
