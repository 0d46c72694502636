import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import chex
import jax
import numpy as np
import pytest

from pixeljax import data, models
from pixeljax import train as train_lib
from pixeljax.errors import UserError
from pixeljax.progress import Progress
from pixeljax.train import TrainConfig, augment_batch, train
from pixeljax.workdir import SettingsMismatch

CFG = TrainConfig(epochs=2, batch_size=50, optimizer="adam", learning_rate=1e-3,
                  weight_decay=0.0, augment=False)


class Interrupted(Exception):
  """Stands in for a killed process."""


@pytest.fixture(scope="module")
def mnist():
  ds = data.load("mnist_samples")
  return ds.images[:400], ds.labels[:400], ds.images[400:], ds.labels[400:]


def _train(mnist, folder, config=CFG, logs=None, spec="mnist_lenet", **kwargs):
  return train(models.get(spec), *mnist, config, str(folder),
               log=(logs.append if logs is not None else lambda s: None), show_progress=False,
               **kwargs)


def test_augment_keeps_shape_and_content():
  x = jax.random.uniform(jax.random.PRNGKey(0), (8, 32, 32, 3), maxval=255.)
  y = augment_batch(jax.random.PRNGKey(1), x)
  assert y.shape == x.shape
  assert float(y.max()) <= float(x.max())


def test_training_lowers_the_loss_and_an_interrupted_run_resumes_to_the_same_weights(
    mnist, tmp_path, monkeypatch):
  variables, hist = _train(mnist, tmp_path / "whole")
  assert hist[1]["train_loss"] < hist[0]["train_loss"]
  assert hist[1]["test_accuracy"] > 0.5
  # Killed right after epoch 1 is saved; the rerun resumes there and ends identical.
  count = [0]

  class Killed(Progress):
    def update(self, done, **stats):
      count[0] += 1
      raise Interrupted
  monkeypatch.setattr(train_lib, "Progress", Killed)
  with pytest.raises(Interrupted):
    _train(mnist, tmp_path / "cut")
  monkeypatch.undo()
  logs = []
  resumed, hist_r = _train(mnist, tmp_path / "cut", logs=logs)
  assert count[0] == 1 and any("resumed" in l and "epoch 1" in l for l in logs)
  chex.assert_trees_all_equal(resumed, variables)
  strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
  assert strip(hist_r) == strip(hist)
  # Rerunning a finished run trains nothing and returns the same weights.
  again, hist_a = _train(mnist, tmp_path / "cut")
  chex.assert_trees_all_equal(again, variables)
  assert hist_a == hist_r


def test_a_run_killed_within_an_epoch_resumes_from_its_last_save_to_the_same_weights(
    mnist, tmp_path, monkeypatch):
  variables, hist = _train(mnist, tmp_path / "whole")
  steps = []

  class Killed(Progress):     # killed at the first progress update: step 3 of epoch 1 (of 8)
    def update(self, done, **stats):
      steps.append(done)
      raise Interrupted
  monkeypatch.setattr(train_lib, "Progress", Killed)
  with pytest.raises(Interrupted):      # saved after every step
    _train(mnist, tmp_path / "cut", save_interval=0.0, log_every=3)
  monkeypatch.undo()
  assert steps == [3]
  assert not (tmp_path / "cut" / "history.json").exists()
  # Killed between the two writes of the next save: the sums of step 4 are written, the state
  # is still step 3's, and the rerun resumes from step 3.
  progress = json.loads((tmp_path / "cut" / "epoch_progress.json").read_text())
  assert list(progress) == ["2", "3"]      # the sums of the last two saves
  progress["4"] = dict(progress["3"], loss=123.0)
  (tmp_path / "cut" / "epoch_progress.json").write_text(json.dumps(progress))
  logs = []
  resumed, hist_r = _train(mnist, tmp_path / "cut", logs=logs)
  assert any("resumed" in l and "epoch 0, step 3 of 8" in l for l in logs)
  chex.assert_trees_all_equal(resumed, variables)
  strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
  assert strip(hist_r) == strip(hist)
  # A state within an epoch with no sums for it is refused, not resumed with wrong sums.
  with pytest.raises(Interrupted):
    monkeypatch.setattr(train_lib, "Progress", Killed)
    _train(mnist, tmp_path / "cut2", save_interval=0.0, log_every=3)
  monkeypatch.undo()
  (tmp_path / "cut2" / "epoch_progress.json").unlink()
  with pytest.raises(UserError, match="inconsistent.*step 3 of epoch 1"):
    _train(mnist, tmp_path / "cut2")


def test_a_restart_with_other_settings_or_data_is_refused(mnist, tmp_path):
  one = dataclasses.replace(CFG, epochs=1)
  _train(mnist, tmp_path, one)
  # settings.json removed (as a corrupt one's message invites): before, a start with other
  # settings claimed the folder afresh beside the old state, and its next start resumed it.
  kept = (tmp_path / "settings.json").read_bytes()
  (tmp_path / "settings.json").unlink()
  with pytest.raises(UserError, match=r"holds train_state\.msgpack, history\.json but no "
                     r"settings\.json"):
    _train(mnist, tmp_path, dataclasses.replace(one, learning_rate=1e-2))
  assert not (tmp_path / "settings.json").exists()
  (tmp_path / "settings.json").write_bytes(kept)
  with pytest.raises(SettingsMismatch, match=r"config\.learning_rate: 0\.001 -> 0\.01"):
    _train(mnist, tmp_path, dataclasses.replace(one, learning_rate=1e-2))
  with pytest.raises(SettingsMismatch, match=r"config\.epochs: 1 -> 2"):
    _train(mnist, tmp_path, CFG)     # the cosine schedule depends on the epoch count
  x, y, xt, yt = mnist
  with pytest.raises(SettingsMismatch, match=r"train_data\.labels_sha1"):
    _train((x, np.roll(y, 1), xt, yt), tmp_path, one)
  with pytest.raises(SettingsMismatch, match=r"train_data\.count: 400 -> 350"):
    _train((x[:350], y[:350], xt, yt), tmp_path, one)
  changed = x.copy()
  changed[3] = 255 - changed[3]        # one image anywhere in the set
  with pytest.raises(SettingsMismatch, match=r"train_data\.images_sha1"):
    _train((changed, y, xt, yt), tmp_path, one)
  with pytest.raises(SettingsMismatch, match="model"):
    _train(mnist, tmp_path, one, spec="mnist_lenet_fooling")
  with pytest.raises(UserError, match="unknown optimizer 'adamw'"):
    _train(mnist, tmp_path / "other", dataclasses.replace(one, optimizer="adamw"))
  # Bad data and settings are named before anything is claimed or trained.
  with pytest.raises(UserError, match=r"training labels must be in \[0, 10\)"):
    _train((x, np.where(np.arange(len(y)) == 5, 10, y), xt, yt), tmp_path / "bad", one)
  with pytest.raises(UserError, match="test images have shape"):
    _train((x, y, xt[:, :20], yt), tmp_path / "bad", one)
  with pytest.raises(UserError, match="epochs and batch_size must be >= 1"):
    _train(mnist, tmp_path / "bad", dataclasses.replace(one, batch_size=0))
  # Before, each of these trained (or failed after the folder was claimed): [0, 1] images
  # gave a net that later reads [0, 255] pixels 255 times too bright; (N, 1) test labels
  # (keras.datasets') were compared N x N and recorded ~10% accuracy; (N, 1) training labels,
  # float labels and a negative seed raised tracebacks, the seed after claiming the folder.
  with pytest.raises(UserError, match=r"^the training images look scaled to \[0, 1\]"):
    _train((x / 255., y, xt / 255., yt), tmp_path / "bad", one)
  with pytest.raises(UserError, match=r"^test labels must have shape \(\d+,\), one class "
                     r"index per image, got \(\d+, 1\): pass labels\.reshape\(-1\)$"):
    _train((x, y, xt, yt[:, None]), tmp_path / "bad", one)
  with pytest.raises(UserError, match=r"^training labels must be integer class indices, "
                     r"got float64$"):
    _train((x, y.astype(np.float64), xt, yt), tmp_path / "bad", one)
  with pytest.raises(UserError, match=r"^test labels must have shape \(\d+,\)"):
    _train((x, y, xt, yt[:-1]), tmp_path / "bad", one)
  with pytest.raises(UserError, match=r"^train\.seed must be >= 0, got -1$"):
    _train(mnist, tmp_path / "bad", dataclasses.replace(one, seed=-1))
  assert not (tmp_path / "bad").exists()


def test_batches_split_over_devices_are_recorded_and_a_resume_keeps_its_count(tmp_path):
  """Data parallel over the host's devices (the CPU split into two, in its own process): the
  one-device step up to the order of float sums; the count is part of the run's settings, and
  a run stored before it was recorded resumes on one device."""
  script = textwrap.dedent("""
      import dataclasses, json, os, sys
      import chex, jax, numpy as np, pytest
      from pixeljax import data, models
      from pixeljax import train as train_lib
      from pixeljax.errors import UserError
      from pixeljax.train import TrainConfig, train
      from pixeljax.workdir import SettingsMismatch
      assert jax.local_device_count() == 2
      ds = data.load("mnist_samples")
      mnist = ds.images[:400], ds.labels[:400], ds.images[400:], ds.labels[400:]
      one = TrainConfig(epochs=1, batch_size=50, optimizer="adam", learning_rate=1e-3,
                        weight_decay=0.0, augment=False)
      root = sys.argv[1]
      run = lambda name, **kw: train(models.get("mnist_lenet"), *mnist, one,
                                     os.path.join(root, name), log=lambda s: None,
                                     show_progress=False, **kw)
      v1, h1 = run("one", devices=1)
      v2, h2 = run("two")                                    # unset: both devices
      assert train_lib.recorded_devices(os.path.join(root, "two")) == 2
      assert train_lib.recorded_devices(os.path.join(root, "one")) == 1
      np.testing.assert_allclose(h2[0]["train_loss"], h1[0]["train_loss"], rtol=1e-4)
      chex.assert_trees_all_close(v2, v1, atol=1e-3)
      with pytest.raises(SettingsMismatch, match=r"devices: 2 -> 1"):
        run("two", devices=1)
      path = os.path.join(root, "one", "settings.json")
      stored = json.load(open(path))
      del stored["devices"]                   # as stored before the count was recorded
      json.dump(stored, open(path, "w"))
      again, _ = run("one")
      chex.assert_trees_all_equal(again, v1)
      with pytest.raises(UserError, match=r"devices=3: a run splits its batches of 50"):
        run("three", devices=3)
      # A recorded count this process lacks is refused, not run on fewer devices.
      path = os.path.join(root, "two", "settings.json")
      stored = json.load(open(path))
      json.dump(dict(stored, devices=4), open(path, "w"))
      with pytest.raises(UserError, match=r"trains on 4 devices and this process has 2"):
        run("two")
      assert all(isinstance(a, np.ndarray) for a in jax.tree_util.tree_leaves(v2))  # host
      print("ok")
      """)
  env = dict(os.environ, PIXELJAX_CPU_DEVICES="2")
  out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                       text=True, env=env, timeout=600)
  assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_the_script_records_the_accuracy_of_the_stored_net(tmp_path, shared_dir):
  """experiments/train.py ships what it stores (here int8): the accuracy in the checkpoint's
  metadata is the loaded checkpoint's, measured again here; the float net's is kept beside."""
  from configs.train import get_config
  from experiments import train as train_script
  from pixeljax.evaluate import accuracy
  from pixeljax.workdir import Workdir
  config = get_config("mnist_lenet")
  config.train_data = os.path.join(shared_dir, "data", "mnist.npz")
  config.test_data = "mnist_samples"
  config.num_train, config.store_dtype = 300, "int8"
  config.train.update(epochs=1, batch_size=50)
  config.runtime.progress = False
  wd = Workdir.open(str(tmp_path / "run"), config.to_dict())
  try:
    results = train_script.run(config, wd, log=lambda s: None)
  finally:
    wd.close()
  clf = models.load("mnist_lenet", os.path.dirname(results["checkpoint"]))
  test = data.load("mnist_samples", "test")
  assert clf.metadata["stored_dtype"] == "int8"
  assert clf.metadata["accuracy"] == accuracy(clf.predict, test.images, test.labels)
  assert clf.metadata["accuracy_before_storage"] == results["history"][-1]["test_accuracy"]
  # Each epoch names the code that trained it; the checkpoint and results.json tally them.
  from pixeljax import cli
  assert results["history"][0]["code"] == cli.code_version()
  assert clf.metadata["code_versions"] == results["code_versions"] == [
      dict(cli.code_version(), epochs=1)]
  from pixeljax.train import data_fingerprint
  assert clf.metadata["data"]["test_data"] == json.loads(json.dumps(
      data_fingerprint(test.images, test.labels)))
  assert clf.metadata["data"]["train_data"]["count"] == 300


def test_dropout_off_takes_the_nets_dropout_out_of_training_and_old_runs_keep_it_on():
  """``TrainConfig.dropout=False``: a step no longer depends on the dropout key (All-CNN-C has
  three dropout layers); with it on, it does. Stored settings from before the field resume
  with dropout on."""
  spec = models.get("cifar10_allcnn")
  module = spec.module()
  v = spec.init(jax.random.PRNGKey(0))
  cfg = TrainConfig(optimizer="adam", learning_rate=1e-3, augment=False)
  tx = train_lib.make_optimizer(cfg, 10)
  state = train_lib.TrainState(step=np.int32(0), epoch=np.int32(0), params=v["params"],
                               batch_stats=v["batch_stats"], opt_state=tx.init(v["params"]))
  images = np.asarray(data.load("cifar10_samples").images[:4], np.float32)
  labels = np.arange(4)
  losses = {}
  for dropout in (True, False):
    step = train_lib._make_step(module, tx, False, dropout)
    losses[dropout] = [float(step(state, images, labels, jax.random.PRNGKey(k))[1])
                       for k in (1, 2)]
  assert losses[False][0] == losses[False][1]
  assert losses[True][0] != losses[True][1]
  assert train_lib._legacy({"config": {"epochs": 3}})["config"] == {"dropout": True, "epochs": 3}
  assert train_lib.migrate_config({"train": {"epochs": 3}, "model": "x"}) == {
      "train": {"dropout": True, "epochs": 3}, "model": "x"}


def test_a_finished_run_started_again_with_another_store_dtype_only_stores_again(tmp_path,
                                                                                shared_dir):
  """``store_dtype`` and ``out_dir`` shape only the checkpoint written at the end (how VGG16's
  int8 checkpoint became int4 without training again): the script resumes the finished
  state, stores it in the new dtype and measures it again; other settings are still refused."""
  run = lambda *flags: subprocess.run(
      [sys.executable, "experiments/train.py", "--config=configs/train.py:mnist_lenet",
       f"--config.train_data={os.path.join(shared_dir, 'data', 'mnist.npz')}",
       "--config.test_data=mnist_samples", "--config.num_train=200",
       "--config.train.epochs=1", "--config.train.batch_size=50",
       "--config.runtime.progress=False", f"--workdir={tmp_path / 'run'}", *flags],
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), capture_output=True,
      text=True)
  first = run("--config.store_dtype=int8")
  assert first.returncode == 0, first.stderr
  again = run("--config.store_dtype=float32", f"--config.out_dir={tmp_path / 'ckpt'}")
  assert again.returncode == 0, again.stderr
  assert "resumed from" in again.stderr and "at epoch 1" in again.stderr
  meta = json.load(open(tmp_path / "ckpt" / "mnist_lenet.json"))
  old = json.load(open(tmp_path / "run" / "checkpoint" / "mnist_lenet.json"))
  assert (meta["stored_dtype"], old["stored_dtype"]) == ("float32", "int8")
  assert meta["history"] == old["history"]          # the same training, stored otherwise
  assert meta["accuracy"] == meta["accuracy_before_storage"]      # float32 is the net itself
  stored = json.load(open(tmp_path / "run" / "config.json"))
  assert stored["store_dtype"] == "float32"
  refused = run("--config.store_dtype=float32", "--config.train.epochs=2")
  assert refused.returncode == 2 and "train.epochs: 1 -> 2" in refused.stderr
