import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("PIXELJAX_SHARED", os.path.join(HERE, "..", "..", "shared"))


@pytest.fixture(scope="session")
def shared_dir():
  """``../shared`` (real data + peer weights) beside the checkout; CI has it."""
  if not os.path.isdir(os.path.join(SHARED, "data")):
    pytest.skip(f"shared data not found at {SHARED} (set PIXELJAX_SHARED)")
  return SHARED


@pytest.fixture(scope="session")
def cifar_lenet():
  from pixeljax import models
  return models.load("cifar10_lenet_hyperparticle")


@pytest.fixture(scope="session")
def cifar_samples():
  from pixeljax import data
  return data.load("cifar10_samples")
