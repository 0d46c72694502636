import os

import pytest

# Compile time is most of this suite's cost on CPU (hundreds of small programs, each run once),
# so the tests compile at XLA's lowest backend optimisation level, about a third less CPU time
# in all. It changes how fast a program runs, never what it computes beyond float rounding, and
# every test passes at both levels: PIXELJAX_TEST_XLA_OPT=default tests at the shipped level.
# Set before JAX starts its backend; the scripts the tests start inherit it.
if os.environ.get("PIXELJAX_TEST_XLA_OPT", "0") != "default":
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_backend_optimization_level=0").strip()

# One CPU device in the test process (pixeljax's import would split the CPU into one per core):
# the tests that deal model calls to several devices ask for them, in their own processes.
os.environ.setdefault("PIXELJAX_CPU_DEVICES", "1")

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


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """One persistent compilation cache for the whole run, in a fresh temporary folder.

  Many tests rebuild the same programs (a campaign builds its jitted runners per call), and the
  scripts they start as subprocesses would otherwise fill the user's own cache
  (``~/.cache/pixeljax``); results never depend on the cache, only compile time does."""
  from pixeljax import compilation
  path = str(tmp_path_factory.mktemp("xla_cache"))
  os.environ["PIXELJAX_CACHE_DIR"] = path
  compilation.enable_cache(path)
  return path
