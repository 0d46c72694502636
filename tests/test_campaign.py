"""Resumable campaigns: chunks keyed by settings and rows, resume == uninterrupted."""
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pixeljax import sharding, workdir
from pixeljax.sparse import campaign
from pixeljax.sparse.problem import PixelAttackConfig
from pixeljax.workdir import SettingsMismatch

SMALL = dict(popsize=24, generations=4)
SEGMENT = dict(segment=2)     # steps between the runner's compactions (an execution choice)


def _correct(clf, ds, n):
  probs = np.asarray(clf(ds.images[:60]))
  return np.nonzero(probs.argmax(-1) == ds.labels[:60])[0][:n]


def _chunks(folder):
  return sorted(f for f in os.listdir(folder) if f.startswith("chunk_"))


def test_interrupted_campaign_resumes_to_the_same_records(cifar_lenet, cifar_samples, tmp_path):
  idx = _correct(cifar_lenet, cifar_samples, 5)
  args = (cifar_lenet.predict, cifar_samples.images[idx], cifar_samples.labels[idx], idx,
          PixelAttackConfig(pixels=1, **SMALL), 0)
  full = campaign.run(*args, str(tmp_path / "a"), 10, attacks_per_call=2, progress=False,
                      execution=SEGMENT)
  # "Kill" a run after its second chunk: keep only the first two chunk files, then rerun.
  first, fixed = dict(commit="a" * 40, dirty=False), dict(commit="b" * 40, dirty=True)
  campaign.run(*args, str(tmp_path / "b"), 10, attacks_per_call=2, progress=False,
               execution=SEGMENT, code=first)
  chunks = _chunks(tmp_path / "b")
  assert len(chunks) == 3
  os.remove(tmp_path / "b" / chunks[-1])
  logs = []
  resumed = campaign.run(*args, str(tmp_path / "b"), 10, attacks_per_call=2, progress=False,
                         log=logs.append, code=fixed)   # the stored execution (segment 2)
  assert any("4 attacks loaded" in line for line in logs)
  assert _chunks(tmp_path / "b") == chunks
  chex.assert_trees_all_equal(full, resumed)
  # The run was made by two code versions, chunk by chunk; a run made without saying so has
  # its chunks counted as unrecorded.
  assert campaign.code_versions(str(tmp_path / "b")) == [dict(first, chunks=2),
                                                         dict(fixed, chunks=1)]
  assert campaign.code_versions(str(tmp_path / "a")) == [dict(commit=None, unrecorded=True,
                                                              chunks=3)]
  # Each chunk names the machine it was computed on (a resume elsewhere would say so);
  # chunks saved before they recorded it count as unrecorded.
  here = dict(campaign.machine(), chunks=3)
  assert campaign.machines(str(tmp_path / "b")) == [here]
  assert here["backend"] == "cpu" and here["attack_devices"] == 1
  old = dict(np.load(tmp_path / "a" / _chunks(tmp_path / "a")[0]))
  del old["machine"]
  np.savez(tmp_path / "a" / _chunks(tmp_path / "a")[0], **old)
  assert campaign.machines(str(tmp_path / "a")) == [dict(unrecorded=True, chunks=1),
                                                    dict(campaign.machine(), chunks=2)]
  # Each chunk keeps the seconds it took, so a resumed run still reports its whole cost.
  per_chunk = [float(np.load(tmp_path / "b" / c)["seconds"]) for c in chunks]
  assert all(s > 0 for s in per_chunk)
  assert campaign.attack_seconds(str(tmp_path / "b")) == pytest.approx(sum(per_chunk))


def test_a_restart_with_other_settings_is_refused(cifar_lenet, cifar_samples, tmp_path):
  """The bug of the old chunk names: 50 generations reusing a 2-generation chunk."""
  idx = _correct(cifar_lenet, cifar_samples, 2)
  run = lambda config, seed=0, **kw: campaign.run(
      cifar_lenet.predict, cifar_samples.images[idx], cifar_samples.labels[idx], idx, config,
      seed, str(tmp_path), 10, progress=False, **kw)
  run(PixelAttackConfig(popsize=8, generations=2))
  with pytest.raises(SettingsMismatch, match=r"attack\.generations: 2 -> 3"):
    run(PixelAttackConfig(popsize=8, generations=3))
  with pytest.raises(SettingsMismatch, match=r"seed: 0 -> 3"):
    run(PixelAttackConfig(popsize=8, generations=2), seed=3)
  with pytest.raises(SettingsMismatch, match=r"model: \(unset\) -> \"other\""):
    run(PixelAttackConfig(popsize=8, generations=2), identity={"model": "other"})


def test_chunks_are_keyed_by_their_rows(cifar_lenet, cifar_samples, tmp_path):
  """Same settings, other images: a chunk file of other rows is never reused."""
  idx = _correct(cifar_lenet, cifar_samples, 4)
  config = PixelAttackConfig(popsize=8, generations=1)
  go = lambda rows: campaign.run(cifar_lenet.predict, cifar_samples.images[rows],
                                 cifar_samples.labels[rows], rows, config, 0, str(tmp_path), 10,
                                 attacks_per_call=2, progress=False)
  a = go(idx[:2])
  b = go(idx[2:])
  np.testing.assert_array_equal(b.image_id, idx[2:])
  assert len(_chunks(tmp_path)) == 2 and not np.array_equal(a.image_id, b.image_id)


def test_select_images_draws_correct_ones_with_seed(cifar_lenet, cifar_samples):
  a = campaign.select_images(cifar_lenet.predict, cifar_samples.images[:100],
                             cifar_samples.labels[:100], 20, seed=1)
  b = campaign.select_images(cifar_lenet.predict, cifar_samples.images[:100],
                             cifar_samples.labels[:100], 20, seed=1)
  np.testing.assert_array_equal(a, b)
  probs = np.asarray(cifar_lenet(cifar_samples.images[a]))
  assert np.all(probs.argmax(-1) == cifar_samples.labels[a])


def test_224_inputs_work_with_automatic_sizing(tmp_path):
  """AlexNet-shaped inputs: attacks per call follow a memory budget and the attack runs."""
  from pixeljax.models import get
  alexnet = get("imagenet_alexnet")
  variables = jax.eval_shape(lambda: alexnet.init(jax.random.PRNGKey(0)))
  variables = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), variables)
  n = sharding.attacks_per_call(lambda x: alexnet.module().apply(variables, x),
                                (224, 224, 3), popsize=400, budget_bytes=16 << 30)
  assert 1 <= n < 100   # a 400-image AlexNet generation takes gigabytes
  # A small conv net on 224x224x3 stands in for AlexNet (whose 62M parameters are slow on CPU).
  w = jax.random.normal(jax.random.PRNGKey(0), (8, 8, 3, 5)) * 0.01

  def predict(x):
    y = jax.lax.conv_general_dilated(x / 255.0, w, (8, 8), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.nn.softmax(y.mean(axis=(1, 2)) * 50)

  images = np.asarray(jax.random.randint(jax.random.PRNGKey(1), (3, 224, 224, 3), 0, 256),
                      np.uint8)
  labels = np.asarray(predict(images.astype(np.float32)).argmax(-1))
  small = sharding.attacks_per_call(predict, (224, 224, 3), popsize=8,
                                    budget_bytes=8 * 224 * 224 * 3 * 4 * 3)
  rec = campaign.run(predict, images, labels, np.arange(3), PixelAttackConfig(
      pixels=5, popsize=8, generations=2), 0, str(tmp_path), 5, attacks_per_call=small,
      progress=False)
  assert small < 3 and len(rec.success) == 3
  assert rec.pixels.shape == (3, 5, 5) and rec.pixels[..., :2].max() < 224


def test_a_resumed_run_keeps_its_chunk_boundaries(cifar_lenet, cifar_samples, tmp_path):
  """Chunks are sized when a run starts (equal sizes); a restart with another
  attacks_per_call (or an older sizing rule) reuses the chunks it finds."""
  idx = _correct(cifar_lenet, cifar_samples, 6)
  args = (cifar_lenet.predict, cifar_samples.images[idx], cifar_samples.labels[idx], idx,
          PixelAttackConfig(pixels=1, **SMALL), 0, str(tmp_path), 10)
  first = campaign.run(*args, attacks_per_call=4, progress=False)
  chunks = _chunks(tmp_path)
  assert [len(np.load(tmp_path / c)["image_id"]) for c in chunks] == [3, 3]   # 4 -> 3 + 3
  logs = []
  again = campaign.run(*args, attacks_per_call=5, progress=False, log=logs.append)
  assert any("6 attacks loaded" in line for line in logs)
  assert _chunks(tmp_path) == chunks
  chex.assert_trees_all_equal(first, again)


def test_format_1_settings_migrate_and_keep_their_chunk_names():
  """A folder claimed before the redesign (format 1: execution switches inside ``attack``,
  some absent because they did not exist yet) compares equal to today's settings for the
  same work, and its chunk names are rebuilt from the stored dict as they were hashed."""
  from pixeljax.sparse import formats
  old = {"model": "m", "attack": {"pixels": 1, "method": "de", "eval_batch": 400,
                                  "incremental": False, "segment_iterations": None},
         "seed": 0}
  new = formats.migrate(old)
  assert new["attack"] == {"pixels": 1, "method": "de", **formats.ADDED_ATTACK}
  assert new["execution"] == dict(call_size=400, incremental=False, window=False,
                                  strided_window=False, devices=1, segment=10)
  assert new["attack_keys"] == "id_x1000" and new["format"] == formats.FORMAT
  assert formats.migrate(new) == new
  ids, targets = np.arange(3), -np.ones(3)
  # Format 1 hashed the stored dict without keys at their legacy value (incremental False).
  hashed_then = {"model": "m", "attack": {"pixels": 1, "method": "de", "eval_batch": 400,
                                          "segment_iterations": None}, "seed": 0}
  assert formats.chunk_key(formats.chunk_basis(new, old), ids, targets) == \
      formats.chunk_key(hashed_then, ids, targets)
  # Today's format hashes today's settings.
  assert formats.chunk_basis(new, new) == new and formats.chunk_basis(new, None) == new
  # Older still: made before eval_batch existed, i.e. every candidate in one model call.
  assert formats.migrate({"model": "m", "attack": {"pixels": 1, "method": "sparse_rs"},
                          "seed": 0})["execution"] == dict(call_size=0, incremental=False,
                                                           window=False,
                                                           strided_window=False, devices=1,
                                                           segment=100)
  # A one-pixel config.json of format 1 loses its execution switches (chosen by the engine),
  # and gains the imported models' options, unset (it named a zoo model).
  from pixeljax.models import files
  cfg = {"model": "m", "attack": {"popsize": 4, "eval_batch": None, "local_window": None}}
  assert formats.migrate_config(cfg) == {**files.config_defaults(), "model": "m",
                                         "attack": {"popsize": 4, **formats.ADDED_ATTACK}}


def test_format_2_settings_gain_the_strided_window_off_and_keep_their_chunk_names():
  """A folder claimed before strided windows (format 2) ran windows that stopped at the first
  strided layer: it migrates with ``strided_window`` off, so it resumes with that execution,
  and its chunk names are still the hash of the dict it stored."""
  from pixeljax.sparse import formats
  stored = {"format": 2, "model": "m", "attack": {"pixels": 1, "method": "de"},
            "execution": dict(call_size=50, incremental=True, window=True, devices=2,
                              segment=10), "attack_keys": "per_attack", "seed": 0}
  new = formats.migrate(stored)
  assert new["format"] == formats.FORMAT and new["execution"] == {**stored["execution"],
                                                                  "strided_window": False}
  assert {k: v for k, v in new.items() if k not in ("format", "execution", "attack")} == \
      {k: v for k, v in stored.items() if k not in ("format", "execution", "attack")}
  ids, targets = np.arange(3), -np.ones(3)
  assert formats.chunk_key(formats.chunk_basis(new, stored), ids, targets) == \
      formats.chunk_key(stored, ids, targets)
  assert formats.chunk_basis(new, stored) != new


def test_format_3_settings_gain_the_de_loop_they_ran_and_keep_their_chunk_names():
  """A folder claimed before DE's ``updating`` and ``initialization`` settings (format 3) ran
  deferred DE from the paper's start: it migrates with them, so today's settings for the same
  work compare equal, and its chunk names are still the hash of the dict it stored."""
  from pixeljax.sparse import formats
  stored = {"format": 3, "model": "m", "attack": {"pixels": 1, "method": "de"},
            "execution": dict(call_size=50, incremental=True, window=True,
                              strided_window=True, devices=2, segment=10),
            "attack_keys": "per_attack", "seed": 0}
  new = formats.migrate(stored)
  assert new == {**stored, "format": 4,
                 "attack": {"pixels": 1, "method": "de", "updating": "deferred",
                            "initialization": "paper"}}
  ids, targets = np.arange(3), -np.ones(3)
  assert formats.chunk_key(formats.chunk_basis(new, stored), ids, targets) == \
      formats.chunk_key(stored, ids, targets)
  assert formats.chunk_basis(new, new) == new


def test_a_resumed_format_1_folder_runs_its_stored_execution_and_keys(cifar_lenet,
                                                                        cifar_samples,
                                                                        tmp_path):
  """A stored run resumes with the execution and the key derivation it was made with: its
  recomputed chunk equals the chunk of a run made with them from the start."""
  from pixeljax.sparse import formats
  idx = _correct(cifar_lenet, cifar_samples, 2)
  config = PixelAttackConfig(pixels=1, **SMALL)
  args = (cifar_lenet, cifar_samples.images[idx], cifar_samples.labels[idx], idx, config, 0)
  made = campaign.run(*args, str(tmp_path / "a"), 10, progress=False,
                      execution=dict(call_size=0, incremental=False))
  stored = formats.migrate(campaign.stored_settings(str(tmp_path / "a")))
  assert stored["execution"]["incremental"] is False and stored["attack_keys"] == "per_attack"
  # The same work claimed in format 1, with the old keys: resumed from its settings alone.
  v1 = {"attack": {**stored["attack"], "eval_batch": 0, "segment_iterations": None},
        "seed": 0, "num_classes": 10}
  workdir.write_json(str(tmp_path / "b" / "settings.json"), v1)
  resumed = campaign.run(*args, str(tmp_path / "b"), 10, progress=False)
  again = formats.migrate(campaign.stored_settings(str(tmp_path / "b")))
  assert again["execution"] == dict(call_size=0, incremental=False, window=False,
                                    strided_window=False, devices=1,
                                    segment=10) and again["attack_keys"] == "id_x1000"
  from pixeljax.sparse.runner import attack
  direct = attack(cifar_lenet, *args[1:3], jax.random.PRNGKey(0), config, image_ids=idx,
                  execution=dict(call_size=0, incremental=False), attack_keys="id_x1000")
  chex.assert_trees_all_equal(resumed, direct)
  assert not np.array_equal(made.pixels, resumed.pixels)     # the key derivation matters


def test_a_resume_against_other_weights_is_refused(cifar_lenet, cifar_samples, tmp_path):
  """Settings name the model; ``inputs`` bind the chunks to its exact weights, so a resume
  after the checkpoint was retrained under the same name does not reuse the old chunks."""
  idx = _correct(cifar_lenet, cifar_samples, 2)
  args = (cifar_lenet.predict, cifar_samples.images[idx], cifar_samples.labels[idx], idx,
          PixelAttackConfig(pixels=1, **SMALL), 0, str(tmp_path), 10)
  first = campaign.run(*args, inputs={"weights_sha256": "aaa"}, progress=False)
  with pytest.raises(workdir.SettingsMismatch, match="weights_sha256"):
    campaign.run(*args, inputs={"weights_sha256": "bbb"}, progress=False)
  again = campaign.run(*args, inputs={"weights_sha256": "aaa"}, progress=False)
  chex.assert_trees_all_equal(first, again)
  # A folder from before inputs were recorded is bound by the start that resumes it.
  os.remove(tmp_path / workdir.INPUTS_FILE)
  campaign.run(*args, inputs={"weights_sha256": "ccc"}, progress=False)
  assert workdir.read_json(str(tmp_path / workdir.INPUTS_FILE)) == {"weights_sha256": "ccc"}
  # An input recorded only since (the images' hash) is added by the start that resumes, and
  # binds the folder from then on.
  both = {"weights_sha256": "ccc", "images_sha256": "x"}
  campaign.run(*args, inputs=both, progress=False)
  assert workdir.read_json(str(tmp_path / workdir.INPUTS_FILE)) == both
  with pytest.raises(workdir.SettingsMismatch, match="images_sha256"):
    campaign.run(*args, inputs={**both, "images_sha256": "y"}, progress=False)


def test_progress_counts_the_whole_campaign(cifar_lenet, cifar_samples, tmp_path, capsys):
  """The progress line's counters are the campaign's, not the current chunk's, and its
  success is the final success rate (the returned candidate fools)."""
  idx = _correct(cifar_lenet, cifar_samples, 4)
  rec = campaign.run(cifar_lenet, cifar_samples.images[idx], cifar_samples.labels[idx], idx,
                     PixelAttackConfig(pixels=1, popsize=24, generations=4,
                                       stop_probability=0.6), 0, str(tmp_path), 10,
                     attacks_per_call=2, progress=True, desc="p")
  last = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[p]")][-1]
  early = int(np.sum(rec.iterations < 4))
  assert early >= 1 and len(_chunks(tmp_path)) == 2
  assert f"stopped early {early}" in last and "attacks done 4/4" in last, last
  assert f"success {100 * np.mean(rec.success):.1f}%" in last, last


def test_a_corrupt_settings_file_is_compared_across_processes_first(tmp_path, monkeypatch):
  """Before, a settings.json that one process could not parse raised on that process before
  the shared-folder check, and the others waited in its collective (~100 s) for it."""
  from jax.experimental import multihost_utils
  (tmp_path / workdir.SETTINGS_FILE).write_text("{not json")
  seen = []
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(multihost_utils, "process_allgather",
                      lambda x: seen.append(np.asarray(x)) or np.stack([x, x]))
  with pytest.raises(workdir.UserError, match="is corrupt"):
    campaign.run(None, np.zeros((1, 4, 4, 3)), np.zeros(1), np.zeros(1), PixelAttackConfig(),
                 0, str(tmp_path), 10)
  assert len(seen) == 1          # every process took part in the comparison before raising
