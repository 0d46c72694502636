"""experiments/fooling.py, transfer.py and retrain.py as a user runs them: a config in,
results out, resumes that cannot lie, one-line errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import fooling as fooling_exp
from experiments import retrain as retrain_exp
from experiments import transfer as transfer_exp
from pixeljax import data
from pixeljax.fooling import driver
from pixeljax.progress import Progress
from pixeljax.workdir import SettingsMismatch, Workdir, to_jsonable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = lambda s: None


def _set(c, **over):
  """Dotted overrides, as --config.a.b=v would set them."""
  c.update_from_flattened_dict(over)
  return c


def _config(name=None, **over):
  from configs.fooling import get_config
  c = get_config(name)
  c.runtime.progress = False
  return _set(c, **over)


TINY = dict(population=16, generations=6, segment=3)


def _run(path, config):
  wd = Workdir.open(str(path), config, extendable=fooling_exp.EXTENDABLE)
  try:
    return fooling_exp.run(config, wd, QUIET)
  finally:
    wd.close()     # let the folder go now, not when the garbage collector gets to it


class Interrupted(Exception):
  """Stands in for a killed process."""


def test_named_configs_are_the_published_runs():
  c = _config()
  assert (c.model, c.encoding, c.generations, c.population) == (
      "mnist_lenet_fooling", "direct", 400, 400)
  assert c.direct.to_dict() == driver.encoding_defaults("direct")
  assert _config("mnist_cppn").generations == 1500
  assert _config("mnist_gradient").gradient.steps == 1500
  r = _config("cifar_resnet32_cppn")
  assert (r.model, r.encoding, r.generations) == ("cifar10_resnet32_hyperparticle", "cppn", 600)
  # The original code's MNIST CPPN settings (their sources: configs/fooling.py).
  o = _config("mnist_cppn_original")
  assert (o.model, o.encoding, o.generations, o.population) == (
      "mnist_lenet_fooling", "cppn", 1001, 200)
  assert {k: v for k, v in o.cppn.items() if v != driver.encoding_defaults("cppn")[k]} == dict(
      p_add_connection=0.5, p_remove_connection=0.3, p_add_node=0.5, p_remove_node=0.2,
      add_node="split", weight_init="uniform", p_perturb_weight=0.1,
      weight_mutation="polynomial", p_change_activation=0.0, p_resample_activation=0.1,
      max_hidden=48, whole_pixels=True)
  assert o.direct.to_dict() == driver.encoding_defaults("direct")
  assert _config("mnist_cppn").cppn.to_dict() == driver.encoding_defaults("cppn")
  with pytest.raises(ValueError, match="unknown fooling config"):
    _config("mnist_dna")


def test_fooling_experiment_on_the_papers_mnist_net_and_transfer(tmp_path):
  config = _config(generations=50, segment=25)
  res = _run(tmp_path / "run", config)
  assert res["classes_at_99"] >= 8     # direct encoding fools this net within tens of gens
  for f in ("archive.npz", "gallery.png", "confidence.png", "results.json", "config.json",
            "settings.json"):
    assert os.path.getsize(tmp_path / "run" / f) > 0
  with open(tmp_path / "run" / "results.json") as f:
    saved = json.load(f)
  assert saved["config"] == to_jsonable(config) and "jax" in saved["versions"]
  assert saved["classes_at_99"] == res["classes_at_99"]
  from pixeljax import cli
  assert saved["code_versions"] == [dict(cli.code_version(), generations=50)]
  assert "classes_at_9999" in fooling_exp.report(res)
  # The same net as net B: every image scores as it did on net A.
  from configs.transfer import get_config
  tc = _set(get_config(), source=str(tmp_path / "run"), model_b="mnist_lenet_fooling")
  t = transfer_exp.run(tc, Workdir.open(str(tmp_path / "transfer"), tc), QUIET)
  np.testing.assert_allclose(t["confidence_b"], t["confidence_a"], atol=1e-5)
  assert t["model_a"] == "mnist_lenet_fooling" and t["encoding"] == "direct"
  # The exact archive and the run that made it (it may be extended later under one name).
  import hashlib
  assert t["archive_sha256"] == hashlib.sha256(
      (tmp_path / "run" / "archive.npz").read_bytes()).hexdigest()
  assert t["source_config"]["generations"] == 50
  assert t["source_code_versions"] == saved["code_versions"]
  assert t["source_results_match"] and saved["archive_sha256"] == t["archive_sha256"]
  assert os.path.getsize(tmp_path / "transfer" / "transfer.png") > 0
  from pixeljax.errors import UserError
  # A net B of other classes or input shape: one line, not an index or shape error.
  with pytest.raises(UserError, match=r"expects images of shape \(N, 32, 32, 3\)"):
    cifar = _set(get_config(), source=str(tmp_path / "run"),
                 model_b="cifar10_lenet_hyperparticle")
    transfer_exp.run(cifar, Workdir.open(str(tmp_path / "transfer_cifar"), cifar), QUIET)
  # An archive its results.json does not describe (a run stopped between the two writes):
  # refused, rather than labelled with the other run's settings.
  saved["archive_sha256"] = "0" * 64
  (tmp_path / "run" / "results.json").write_text(json.dumps(saved))
  with pytest.raises(UserError, match="is not the archive its results.json describes"):
    transfer_exp.run(tc, Workdir.open(str(tmp_path / "transfer2"), tc), QUIET)


def test_the_original_codes_mnist_cppn_config_runs(tmp_path):
  """Two generations of ``:mnist_cppn_original`` as it stands (200 offspring, its operators)."""
  config = _config("mnist_cppn_original", generations=2)
  res = _run(tmp_path / "run", config)
  with np.load(tmp_path / "run" / "archive.npz") as a:
    assert len(a["stats_median"]) == 2 and a["images"].shape == (10, 28, 28, 1)
    assert a["genome_node_on"].shape == (10, 4 + 48 + 1)
  assert res["config"]["cppn"]["add_node"] == "split" and res["config"]["population"] == 200
  assert len(res["confidence"]) == 10


def test_an_interrupted_fooling_run_resumes_to_identical_records(tmp_path, monkeypatch):
  config = _config(**TINY)
  whole = _run(tmp_path / "whole", config)

  class Killed(Progress):
    def update(self, done, **stats):
      raise Interrupted        # right after the first segment is saved
  monkeypatch.setattr(driver, "Progress", Killed)
  with pytest.raises(Interrupted):
    _run(tmp_path / "cut", config)
  assert not os.path.exists(tmp_path / "cut" / "results.json")
  monkeypatch.undo()
  resumed = _run(tmp_path / "cut", config)
  assert_same_run(tmp_path / "whole", whole, tmp_path / "cut", resumed, generations=6)


def test_a_restart_with_another_config_is_refused_or_starts_a_new_run(tmp_path):
  config = _config(**TINY)
  _run(tmp_path / "run", config)
  other = _config(**dict(TINY, population=32))
  with pytest.raises(SettingsMismatch, match=r"population: 16 -> 32.*--new_run"):
    Workdir.open(str(tmp_path / "run"), other)
  # Settings that never change a result do not count.
  assert Workdir.open(str(tmp_path / "run"),
                      _set(_config(**TINY), **{"runtime.progress_interval": 60.0})).resumed
  logs = []
  wd = Workdir.open(str(tmp_path / "run"), other, new_run=True, log=logs.append)
  assert wd.path == str(tmp_path / "run") + "-2" and not wd.resumed
  assert any("population" in l for l in logs)
  fooling_exp.run(other, wd, QUIET)
  with open(tmp_path / "run-2" / "results.json") as f:
    assert json.load(f)["config"]["population"] == 32
  # The script: a user mistake prints one line and exits 2, with no traceback, before any
  # work is done.
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "fooling.py"),
                         f"--workdir={tmp_path / 'run'}", "--config.population=16",
                         "--config.segment=3", "--config.generations=6", "--config.seed=1"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr
  assert "seed: 0 -> 1" in lines[0] and "population" not in lines[0]


def test_retraining_with_a_fooling_class(tmp_path):
  from configs.retrain import get_config
  ds = data.load("mnist_samples")
  npz = tmp_path / "mnist_small.npz"
  np.savez(npz, x_train=ds.images[:300, ..., 0], y_train=ds.labels[:300],
           x_test=ds.images[300:400, ..., 0], y_test=ds.labels[300:400])
  config = _set(get_config(), train_data=str(npz), iterations=1, runs_per_iteration=2,
                population=8, generations=2, segment=2, **{"train.epochs": 1,
                                                           "train.batch_size": 50,
                                                           "runtime.progress": False})
  res = retrain_exp.run(config, Workdir.open(str(tmp_path / "run"), config), QUIET)
  first, second = res["report"]
  assert first["num_classes"] == 10 and second["num_classes"] == 11
  assert first["new_images_labelled_fooling"] is None
  assert 0 <= second["new_images_labelled_fooling"] <= 1
  assert second["fooling_images_in_training"] == 20
  for f in ("results.json", "retrain.png", "iter0/fooling_images.npz",
            "iter1/fooling_images.npz", "iter1/train/train_state.msgpack",
            "iter0/evolve_seed1/settings.json"):
    assert os.path.getsize(tmp_path / "run" / f) > 0
  # Each stage names the code that made it (a run resumed across commits says so).
  assert set(res["code_versions"]) == {"iter0/evolve_seed0", "iter0/evolve_seed1",
                                       "iter1/evolve_seed0", "iter1/evolve_seed1", "iter1/train"}
  assert res["code_versions"]["iter1/train"][0]["epochs"] == 1
  assert "commit" in res["code_versions"]["iter1/train"][0]


def test_transfer_names_a_file_that_is_not_a_fooling_archive(tmp_path):
  from configs.transfer import get_config
  from pixeljax.errors import UserError
  np.savez(tmp_path / "elites.npz", images=np.zeros((2, 28, 28, 1)), fitness=np.zeros(2))
  tc = _set(get_config(), source=str(tmp_path / "elites.npz"), model_b="mnist_lenet_fooling")
  with pytest.raises(UserError, match="not a fooling archive .*lacks probs"):
    transfer_exp.run(tc, Workdir.open(str(tmp_path / "t"), tc), QUIET)


@pytest.mark.parametrize("over, message", [
    (dict(iterations=-1), "iterations must be >= 0"),
    (dict(runs_per_iteration=0), "runs_per_iteration >= 1"),
    (dict(encoding="cppnn"), "unknown encoding 'cppnn'"),
    (dict(model="cifar10_lenet_hyperparticle"), r"expects images of shape \(N, 32, 32, 3\)"),
    # training settings, checked before iteration 0's evolution (not after it)
    ({"train.optimizer": "adamw"}, "unknown optimizer 'adamw'"),
    ({"train.epochs": 0}, "epochs and batch_size must be >= 1"),
])
def test_retraining_names_bad_settings_before_any_work(tmp_path, over, message):
  from configs.retrain import get_config
  from pixeljax.errors import UserError
  ds = data.load("mnist_samples")
  npz = tmp_path / "mnist_small.npz"
  np.savez(npz, x_train=ds.images[:20, ..., 0], y_train=ds.labels[:20],
           x_test=ds.images[20:30, ..., 0], y_test=ds.labels[20:30])
  config = _set(get_config(), train_data=str(npz), **over)
  with pytest.raises(UserError, match=message):
    retrain_exp.run(config, Workdir.open(str(tmp_path / "run"), config), QUIET)
  assert os.listdir(tmp_path / "run") == ["config.json"]


def test_gradient_ascent_settings_are_checked():
  from pixeljax.errors import UserError
  from pixeljax.fooling.gradient_ascent import GradientAscentConfig
  for bad in (dict(steps=-2), dict(blur_every=-1), dict(learning_rate=0.0),
              dict(blur_sigma=0.0), dict(l2_decay=-1.0)):
    with pytest.raises(UserError, match=f"gradient ascent: {next(iter(bad))} must be"):
      GradientAscentConfig(**bad)
  GradientAscentConfig(steps=0, blur_every=0)


@pytest.mark.parametrize("name, over, message", [
    ("mnist_gradient", {"generations": 5000}, r"'gradient' does not read generations \(set to 5000\)"),
    ("mnist_direct", {"cppn.max_hidden": 3, "gradient.steps": 9},
     r"'direct' does not read cppn\.max_hidden \(set to 3\), gradient\.steps \(set to 9\)"),
])
def test_a_setting_the_method_does_not_read_is_refused(tmp_path, name, over, message):
  """A flag that would be recorded and do nothing (gradient ascent's length is
  gradient.steps, not generations) is one line, before any work; the named runs set none."""
  from configs.fooling import NAMED
  from pixeljax.errors import UserError
  assert all(fooling_exp.unread_settings(_config(n)) == {} for n in NAMED)
  with pytest.raises(UserError, match=message):
    _run(tmp_path / "run", _config(name, **over))
  assert os.listdir(tmp_path / "run") == ["config.json"]


def assert_same_run(folder_a, results_a, folder_b, results_b, generations: int):
  """Two fooling runs made the same archive, bit for bit, and the same results (timing and
  versions aside)."""
  a = dict(np.load(folder_a / "archive.npz"))
  b = dict(np.load(folder_b / "archive.npz"))
  assert sorted(a) == sorted(b) and len(a["stats_median"]) == generations
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  timing = ("seconds", "versions", "resumed")
  assert ({k: v for k, v in results_a.items() if k not in timing} ==
          {k: v for k, v in results_b.items() if k not in timing})
