"""A finished fooling run extends with more generations, bit for bit as a longer run from the
start; named configs find ../shared beside the repository from any directory (issue 24,
item 7). Both fail on the code before: the extension was refused (``generations: 4 -> 6``)
and ``../shared`` was resolved against the current directory."""
import importlib.util
import json
import os

import numpy as np
import pytest

from experiments import fooling as fooling_exp
from tests.test_fooling_experiments import assert_same_run
from pixeljax.errors import UserError
from pixeljax.workdir import SettingsMismatch, Workdir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = lambda s: None


def _config(**over):
  from configs.fooling import get_config
  c = get_config("mnist_direct")
  c.runtime.progress = False
  c.update_from_flattened_dict(dict(dict(population=16, segment=3), **over))
  return c


def _run(path, config):
  """What ``cli.main`` does around an experiment."""
  wd = Workdir.open(str(path), config, extendable=fooling_exp.EXTENDABLE)
  try:
    results = fooling_exp.run(config, wd, QUIET)
    wd.finish()
  finally:
    wd.close()
  return results


def test_a_finished_fooling_run_extends_to_the_records_of_a_longer_run(tmp_path):
  straight = _run(tmp_path / "straight", _config(generations=6))
  _run(tmp_path / "extended", _config(generations=4))   # ends mid-segment (3 + 1)
  extended = _run(tmp_path / "extended", _config(generations=6))
  assert_same_run(tmp_path / "straight", straight, tmp_path / "extended", extended,
                  generations=6)
  with open(tmp_path / "extended" / "config.json") as f:
    assert json.load(f)["generations"] == 6     # config.json tells what the work is now
  # Fewer generations than saved: refused by the run, and nothing is rewritten.
  before = (tmp_path / "extended" / "config.json").read_bytes()
  with pytest.raises(UserError, match="holds a run at generation 6, beyond the 5 asked for"):
    _run(tmp_path / "extended", _config(generations=5))
  assert (tmp_path / "extended" / "config.json").read_bytes() == before
  # Any other setting still refuses, generations among the differences or not.
  with pytest.raises(SettingsMismatch, match=r"population: 16 -> 32\)"):
    Workdir.open(str(tmp_path / "extended"), _config(generations=9, population=32),
                 extendable=fooling_exp.EXTENDABLE)


def _load_config(name):
  spec = importlib.util.spec_from_file_location(f"cfg_{name}",
                                                os.path.join(ROOT, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config


@pytest.mark.parametrize("name, arg, data", [
    ("train", None, "mnist.npz"), ("train", "cifar10_allcnn", "cifar10_jpeg75.npz"),
    ("retrain", None, "mnist.npz"), ("one_pixel", "lenet_rand1", "cifar10_test_exact1017.npz")])
def test_named_configs_find_shared_beside_the_repository(tmp_path, monkeypatch, name, arg,
                                                         data):
  """The named configs say ``../shared/data/...`` (the same on every machine, so a stored
  config.json compares equal anywhere); the data loader reads such a path relative to the
  repository when it does not exist from the current directory."""
  from pixeljax import data as data_lib
  monkeypatch.chdir(tmp_path)            # a user running a script from another directory
  path = _load_config(name)(arg)
  path = path.train_data if name != "one_pixel" else path.data
  assert path == f"../shared/data/{data}" and not os.path.exists(path)
  assert data_lib._beside_repo(path) == os.path.normpath(
      os.path.join(ROOT, "..", "shared", "data", data))
  if data != "cifar10_jpeg75.npz":      # (decoding the JPEG copy takes a minute)
    assert len(data_lib.load(path, "test")) > 0
