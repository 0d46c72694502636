"""experiments/one_pixel.py as a user runs it: config in, results out, resumes that cannot lie,
one-line errors."""
import json
import os
import shutil
import subprocess
import sys

import chex
import numpy as np
import pytest

from experiments import one_pixel
from pixeljax import cli, workdir as workdir_lib
from pixeljax.errors import UserError
from pixeljax.sparse import records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "one_pixel.py")


def _cli(*args, cwd=ROOT):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=600)


def _config(**over):
  from configs.one_pixel import get_config
  c = get_config("paper")
  c.num_images, c.pixels = 4, (1, 3)
  c.attack.popsize, c.attack.generations = 16, 2
  c.runtime.attacks_per_call, c.runtime.progress = 4, False
  c.update_from_flattened_dict(over)
  return c


def test_experiment_writes_results_and_figures(tmp_path):
  config = _config(exhaustive=True)
  wd = workdir_lib.Workdir.open(str(tmp_path), config)
  res = one_pixel.run(config, wd, log=lambda s: None)
  with open(tmp_path / "results.json") as f:
    saved = json.load(f)
  assert saved["config"] == workdir_lib.to_jsonable(config)
  assert saved["config"]["attack"]["generations"] == 2 and len(saved["image_ids"]) == 4
  assert set(saved["metrics"]) == {"1px", "3px"} and res["metrics"] == saved["metrics"]
  assert saved["exhaustive_one_pixel"]["queries_per_image"] == 32 * 32 * 8
  # Each saved part names the code that made it (this checkout; one chunk or part each here).
  made = [dict(cli.code_version(), chunks=1)]
  assert [saved["metrics"][k]["code_versions"] for k in ("1px", "3px")] == [made, made]
  assert saved["exhaustive_one_pixel"]["code_versions"] == made
  for where in (saved["metrics"]["1px"], saved["metrics"]["3px"], saved["exhaustive_one_pixel"]):
    [machine] = where["machines"]      # and the machine (one here)
    assert machine["backend"] == "cpu" and machine["chunks"] == 1
  for f in ("adversarial_untargeted_1px.png", "class_pairs_untargeted_3px.png",
            "success_vs_pixels_untargeted.png", "records_untargeted_1px.npz", "config.json"):
    assert os.path.getsize(tmp_path / f) > 0
  lo, hi = saved["metrics"]["1px"]["success_rate_ci95"]
  assert lo <= saved["metrics"]["1px"]["success_rate"] <= hi
  rec = records.load(str(tmp_path / "records_untargeted_1px.npz"))
  assert np.all(rec.queries <= 16 * 3)
  np.testing.assert_array_equal(rec.success, rec.adversarial_class != rec.true_class)
  assert "3px" in one_pixel.report(res)


def test_the_exhaustive_bound_alone_is_the_library_bound_on_the_same_images(tmp_path):
  import pixeljax
  from pixeljax import data, models
  config = _config(exhaustive=True, figures=False, pixels=())
  res = one_pixel.run(config, workdir_lib.Workdir.open(str(tmp_path), config),
                      log=lambda s: None)
  assert res["metrics"] == {} and len(res["image_ids"]) == 4
  assert os.listdir(tmp_path / "chunks") == ["exhaustive"]       # no attack ran
  stored = np.load(tmp_path / "exhaustive_one_pixel.npz")
  np.testing.assert_array_equal(stored["image_id"], res["image_ids"])
  d = data.load(config.data)
  pos = [int(np.flatnonzero(d.index == i)[0]) for i in res["image_ids"]]
  direct = pixeljax.exhaustive_one_pixel(models.load(config.model), d.images[pos],
                                         d.labels[pos])
  np.testing.assert_array_equal(stored["fooled"], direct["fooled"])
  np.testing.assert_array_equal(stored["num_fooling_changes"], direct["num_fooling_changes"])
  assert res["exhaustive_one_pixel"]["images_fooled"] == np.mean(direct["fooled"])
  assert "exhaustive one pixel" in one_pixel.report(res)


def test_an_interrupted_bound_resumes_from_its_saved_parts(tmp_path, monkeypatch):
  config = _config(exhaustive=True, figures=False, pixels=(), exhaustive_levels=(255.,))
  monkeypatch.setattr(one_pixel, "BOUND_PART", 2)
  whole = one_pixel.run(config, workdir_lib.Workdir.open(str(tmp_path / "whole"), config),
                        log=lambda s: None)
  real, calls = one_pixel.exhaustive_one_pixel, []

  def stopped_after_one(*args, **kwargs):
    calls.append(len(args[1]))
    if len(calls) == 2:
      raise KeyboardInterrupt
    return real(*args, **kwargs)

  monkeypatch.setattr(one_pixel, "exhaustive_one_pixel", stopped_after_one)
  folder = str(tmp_path / "resumed")
  wd = workdir_lib.Workdir.open(folder, config)
  with pytest.raises(KeyboardInterrupt):
    one_pixel.run(config, wd, log=lambda s: None)
  wd.close()
  assert sorted(os.listdir(os.path.join(folder, "chunks", "exhaustive"))) == [
      "inputs.json", "part_00000.npz"]
  # Its config.json gone (as a corrupt one's message invites), other levels: the saved part
  # names its colours (before, it was taken as this bound's and the bound mixed two grids).
  os.remove(os.path.join(folder, "config.json"))
  other = _config(exhaustive=True, figures=False, pixels=(), exhaustive_levels=(0.,))
  with pytest.raises(workdir_lib.SettingsMismatch, match=r"other colours \(levels \[255\.0\], in this "
                     r"order\); set exhaustive_levels"):
    one_pixel.run(other, workdir_lib.Workdir.open(folder, other), log=lambda s: None)
  calls.clear()
  monkeypatch.setattr(one_pixel, "exhaustive_one_pixel",
                      lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
  resumed = one_pixel.run(config, workdir_lib.Workdir.open(folder, config), log=lambda s: None)
  assert calls == [2]                       # only the second part was computed again
  assert resumed["exhaustive_one_pixel"]["images_fooled"] == (
      whole["exhaustive_one_pixel"]["images_fooled"])
  a, b = (np.load(os.path.join(f, "exhaustive_one_pixel.npz")) for f in (tmp_path / "whole",
                                                                          folder))
  assert set(a.files) == set(b.files)
  for k in a.files:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_each_finished_pixel_count_lands_in_results_json_at_once(tmp_path, monkeypatch):
  from pixeljax.sparse import campaign
  config = _config(figures=False, exhaustive=True, exhaustive_levels=(255.,))
  real = campaign.run

  def stopped_at_3px(*args, **kwargs):
    if args[4].pixels == 3:
      raise KeyboardInterrupt
    return real(*args, **kwargs)

  monkeypatch.setattr(campaign, "run", stopped_at_3px)
  with pytest.raises(KeyboardInterrupt):
    one_pixel.run(config, workdir_lib.Workdir.open(str(tmp_path), config), log=lambda s: None)
  partial = workdir_lib.read_json(str(tmp_path / "results.json"))
  assert set(partial["metrics"]) == {"1px"}
  assert partial["pending"] == ["3px", "exhaustive_one_pixel"]
  monkeypatch.setattr(campaign, "run", real)
  whole = one_pixel.run(config, workdir_lib.Workdir.open(str(tmp_path), config),
                        log=lambda s: None)
  assert whole["pending"] == [] and set(whole["metrics"]) == {"1px", "3px"}
  assert workdir_lib.read_json(str(tmp_path / "results.json"))["pending"] == []
  for key in ("success_rate", "confidence", "attacks"):
    assert whole["metrics"]["1px"][key] == partial["metrics"]["1px"][key]


def test_resumed_run_gives_the_records_of_an_uninterrupted_one(tmp_path):
  config = _config(**{"attack.success_first": True, "figures": False})
  config.runtime.attacks_per_call = 2
  whole = one_pixel.run(config, workdir_lib.Workdir.open(str(tmp_path / "a"), config),
                        log=lambda s: None)
  shutil.copytree(tmp_path / "a", tmp_path / "b")   # the same finished run, then interrupted:
  chunks = tmp_path / "b" / "chunks" / "untargeted_3px"
  os.remove(chunks / sorted(f for f in os.listdir(chunks) if f.startswith("chunk_"))[-1])
  os.remove(tmp_path / "b" / "records_untargeted_3px.npz")
  resumed = one_pixel.run(config, workdir_lib.Workdir.open(str(tmp_path / "b"), config),
                          log=lambda s: None)
  for k in ("1px", "3px"):
    tag = f"untargeted_{k}"
    chex.assert_trees_all_equal(records.load(str(tmp_path / "a" / f"records_{tag}.npz")),
                                records.load(str(tmp_path / "b" / f"records_{tag}.npz")))
    assert {m: v for m, v in whole["metrics"][k].items() if m not in one_pixel.TIMING} == \
        {m: v for m, v in resumed["metrics"][k].items() if m not in one_pixel.TIMING}


def test_shape_mismatch_is_named(tmp_path):
  config = _config(data="mnist_samples")
  with pytest.raises(UserError, match=r"expects images of shape \(N, 32, 32, 3\)"):
    one_pixel.run(config, workdir_lib.Workdir.open(str(tmp_path), config), log=lambda s: None)


def test_the_two_reported_mislabelled_runs_are_refused_or_moved(tmp_path):
  """Issue 9's reproductions: a rerun with --generations 50 (or --seed 3) in a workdir made
  with 2 generations must not reuse its chunks and label them with the new settings."""
  w = str(tmp_path / "W")
  small = ["--config.num_images=8", "--config.pixels=1", "--config.attack.popsize=40"]
  first = _cli(*small, "--config.attack.generations=2", "--workdir", w)
  assert first.returncode == 0, first.stderr
  for change, shown in (("--config.attack.generations=50", "attack.generations: 2 -> 50"),
                        ("--config.seed=3", "seed: 0 -> 3")):
    again = _cli(*small, "--config.attack.generations=2", change, "--workdir", w)
    assert again.returncode == 2, again.stderr
    assert "Traceback" not in again.stderr and shown in again.stderr
    assert again.stderr.strip().splitlines()[-1].startswith("error: ")
  moved = _cli(*small, "--config.attack.generations=50", "--new_run", "--workdir", w)
  assert moved.returncode == 0, moved.stderr
  with open(w + "-2/results.json") as f:
    res = json.load(f)
  with open(w + "/results.json") as f:
    old = json.load(f)
  assert res["config"]["attack"]["generations"] == 50
  assert old["config"]["attack"]["generations"] == 2
  assert old["metrics"]["1px"]["queries_per_attack"] <= 40 * 3
  assert res["metrics"]["1px"]["queries_per_attack"] > 40 * 3   # really ran 50 generations
  assert "1px" in moved.stdout and "Unable to initialize backend" not in moved.stderr


def test_cpu_devices_are_recorded_and_a_resume_on_other_ones_is_refused(tmp_path):
  """runtime.cpu_devices splits the CPU into devices that small model calls are dealt to;
  XLA:CPU's float bits depend on it, so the run records it (execution.devices), a resume
  reuses it, and a resume on fewer devices is refused instead of mixing its chunks."""
  w = str(tmp_path / "W")
  small = ["--config.num_images=4", "--config.pixels=1", "--config.attack.popsize=16",
           "--config.attack.generations=2", "--config.runtime.execution.call_size=8",
           "--config.figures=False"]
  two = _cli(*small, "--config.runtime.cpu_devices=2", "--workdir", w)
  assert two.returncode == 0, two.stderr
  with open(w + "/results.json") as f:
    assert json.load(f)["metrics"]["1px"]["execution"]["devices"] == 2
  one = _cli(*small, "--config.runtime.cpu_devices=1", "--workdir", w)
  assert one.returncode == 2 and (
      "execution.devices=2, but this run has 1 CPU device" in one.stderr), one.stderr
  bad = _cli(*small, "--config.runtime.cpu_devices=0", "--workdir", str(tmp_path / "x"))
  assert bad.returncode == 2 and "runtime.cpu_devices must be >= 1" in bad.stderr


@pytest.mark.parametrize("args, message", [
    (["--config.model=resnet_nope"], "unknown model 'resnet_nope'"),
    (["--config.data=/no/such/file.npz"], "does not exist"),
    (["--config.data=mnist_samples"], "expects images of shape"),
    (["--config.attack.strategy=nope"], "unknown strategy 'nope'"),
    (["--config.pixels=0"], "pixels must be >= 1"),
])
def test_user_mistakes_print_one_line(tmp_path, args, message):
  out = _cli(*args, "--config.num_images=2", "--workdir", str(tmp_path / "w"))
  assert out.returncode == 2
  assert "Traceback" not in out.stderr
  assert out.stderr.strip().splitlines()[-1].startswith("error: ")
  assert message in out.stderr


@pytest.mark.parametrize("arg, message", [
    ("--config.num_images=many", "--config.num_images=many"),
    ("--config.attack.nope=3", "--config.attack.nope names no setting"),
    ("--config.attack.methodd=de", 'names no setting of the config (AttributeError: methodd; '
                                   'Did you mean "method"'),
    ("--config=configs/one_pixel.py:nope", "unknown named config 'nope'"),
    ("--bogus", "Unknown command line flag 'bogus'"),
])
def test_bad_flags_exit_with_one_line(tmp_path, arg, message):
  out = _cli(arg, "--workdir", str(tmp_path / "w"))
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert out.stderr.strip().splitlines() == [out.stderr.strip().splitlines()[-1]]
  assert message in out.stderr and out.stderr.startswith("error: ")


@pytest.mark.parametrize("over, message", [
    ({"seed": -1}, "seed must be >= 0"),
    ({"runtime.attacks_per_call": 0}, "attacks_per_call must be >= 1"),
    ({"attack.stop_probability": 1.5}, r"stop_probability must be in \[0, 1\]"),
    ({"attack.recombination": -2.0}, r"recombination must be in \[0, 1\]"),
    ({"attack.method": "corner_search", "attack.top_candidates": 2, "pixels": (5,)},
     r"top_candidates \(2\) must be >= pixels \(5\)"),
    ({"exhaustive": True, "exhaustive_levels": (0., 300.)}, "300"),
    ({"pixels": ()}, "pixels is empty"),
])
def test_bad_settings_are_named_before_any_attack(tmp_path, over, message):
  config = _config(**over)
  with pytest.raises(UserError, match=message):
    one_pixel.run(config, workdir_lib.Workdir.open(str(tmp_path), config), log=lambda s: None)
  assert not os.path.exists(tmp_path / "chunks")


def _data_file(path, images, labels):
  np.savez(path, x_test=images, y_test=labels, index_test=np.arange(len(labels)))
  return str(path)


def test_a_resume_on_rewritten_data_is_refused(tmp_path):
  """The settings name the data file; the chunks are bound to the attacked images' contents,
  so a file rewritten in place (same name, same ids) does not get the old attacks."""
  from pixeljax import data
  c = data.load("cifar10_samples")
  path = tmp_path / "d.npz"
  config = _config(data=_data_file(path, c.images[:6], c.labels[:6]), num_images=8,
                   pixels=(1,), figures=False)
  logs = []
  one_pixel.run(config, workdir_lib.Workdir.open(str(tmp_path / "w"), config), log=logs.append)
  assert any(line.startswith("warning: d.npz has only ") and "num_images=8" in line
             for line in logs)                         # fewer correct images than asked
  one_pixel.run(config, workdir_lib.Workdir.open(str(tmp_path / "w"), config), log=print)
  _data_file(path, c.images[:6] // 2 + 60, c.labels[:6])    # same ids, other pixels
  with pytest.raises(workdir_lib.SettingsMismatch, match="images_sha256"):
    one_pixel.run(config, workdir_lib.Workdir.open(str(tmp_path / "w"), config), log=print)


def test_data_the_model_gets_all_wrong_is_named(tmp_path):
  from pixeljax import data, models
  c = data.load("cifar10_samples")
  pred = np.asarray(models.load("cifar10_lenet_hyperparticle").predict(
      c.images[:8].astype(np.float32))).argmax(-1)
  config = _config(data=_data_file(tmp_path / "d.npz", c.images[:8], (pred + 1) % 10))
  with pytest.raises(UserError, match="classifies none of the 8 images"):
    one_pixel.run(config, workdir_lib.Workdir.open(str(tmp_path / "w"), config),
                  log=lambda s: None)
