r"""Do net A's fooling images fool net B? ``source`` is a finished fooling run's workdir.

  python experiments/transfer.py --config=configs/transfer.py:mnist_direct \
      --workdir runs/transfer_direct
  python experiments/transfer.py --config.source=runs/my_fooling_run \
      --config.model_b=mnist_lenet --workdir runs/transfer_mine

Named settings are the rows of results/README.md's transfer table; each expects the fooling run of
the same name (``configs/fooling.py:<name>``) in ``runs/fooling_<name>``.
"""
from ml_collections import ConfigDict

NAMED = {
    "mnist_direct": "mnist_lenet",
    "mnist_cppn": "mnist_lenet",
    "cifar_lenet_direct": "cifar10_resnet32_hyperparticle",
    "cifar_lenet_cppn": "cifar10_resnet32_hyperparticle",
    "cifar_resnet32_direct": "cifar10_resnet32_akamaster",
    "cifar_resnet32_cppn": "cifar10_resnet32_akamaster",
}
DEFAULT = "mnist_direct"


def get_config(arg=None):
  name = arg or DEFAULT
  if name not in NAMED:
    raise ValueError(f"unknown transfer config {name!r}; known: {', '.join(NAMED)}")
  c = ConfigDict()
  c.name = name
  c.source = f"runs/fooling_{name}"   # a fooling run's workdir (or its archive.npz)
  c.model_b = NAMED[name]             # the net the images are scored on
  return c
