r"""Fooling images (Nguyen, Yosinski & Clune): one config per published run.

  python experiments/fooling.py --workdir runs/fooling_mnist_direct     # the default
  python experiments/fooling.py --config=configs/fooling.py:mnist_cppn --workdir runs/x
  python experiments/fooling.py --config=configs/fooling.py:mnist_cppn \
      --config.generations=2000 --workdir runs/y

Named settings (``:name``) are the runs in ``results/fooling/``; the default is the paper's
MNIST direct-encoding run. Encoding, evolution and gradient-ascent defaults come from the
library's dataclasses (written once, there); only the paper's choices are set here.
"""
import dataclasses

from ml_collections import ConfigDict

from pixeljax.fooling import driver, gradient_ascent

# name -> (model, encoding, generations); the gradient run's length is gradient.steps.
NAMED = {
    "mnist_direct": ("mnist_lenet_fooling", "direct", 400),
    "mnist_cppn": ("mnist_lenet_fooling", "cppn", 1500),
    "mnist_gradient": ("mnist_lenet_fooling", "gradient", None),
    "cifar_lenet_direct": ("cifar10_lenet_hyperparticle", "direct", 2000),
    "cifar_lenet_cppn": ("cifar10_lenet_hyperparticle", "cppn", 2000),
    "cifar_resnet32_direct": ("cifar10_resnet32_hyperparticle", "direct", 600),
    "cifar_resnet32_cppn": ("cifar10_resnet32_hyperparticle", "cppn", 600),
}
DEFAULT = "mnist_direct"


def get_config(arg=None):
  name = arg or DEFAULT
  if name not in NAMED:
    raise ValueError(f"unknown fooling config {name!r}; known: {', '.join(NAMED)}")
  model, encoding, generations = NAMED[name]
  c = ConfigDict()
  c.name = name
  c.model = model                   # the net to fool (a zoo name)
  c.encoding = encoding             # "direct" or "cppn" (MAP-Elites), or "gradient"
  # MAP-Elites: population, generations, segment (generations per compiled call and save
  # point) and seed, at their library defaults unless the run says otherwise.
  c.update(dataclasses.asdict(driver.EvolutionConfig()))
  if generations is not None:
    c.generations = generations
  c.direct = ConfigDict(driver.encoding_defaults("direct"))
  c.cppn = ConfigDict(driver.encoding_defaults("cppn"))
  c.gradient = ConfigDict(dataclasses.asdict(gradient_ascent.GradientAscentConfig()))
  if encoding == "gradient":
    c.gradient.steps = 1500
  # never change a result: progress shown (bar or log lines), seconds between lines
  c.runtime = ConfigDict(dict(progress=True, progress_interval=5.0))
  return c
