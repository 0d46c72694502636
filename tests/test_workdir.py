"""A run's folder: settings claimed first, mismatches named, new runs beside, atomic writes."""
import json
import os

import numpy as np
import pytest

from pixeljax import workdir
from pixeljax.errors import UserError


def test_claim_writes_then_compares(tmp_path):
  folder = str(tmp_path / "w")
  assert workdir.claim(folder, {"a": 1, "b": {"c": (1, 2)}}) is False
  assert workdir.claim(folder, {"a": 1, "b": {"c": [1, 2]}}) is True   # tuples == lists
  with pytest.raises(workdir.SettingsMismatch) as e:
    workdir.claim(folder, {"a": 2, "b": {"c": [1, 2], "d": 0}})
  assert "a: 1 -> 2" in str(e.value) and "b.d: (unset) -> 0" in str(e.value)
  assert "\n" not in str(e.value)


def test_runtime_settings_are_recorded_not_compared(tmp_path):
  config = {"generations": 5, "runtime": {"attacks_per_call": 4}}
  workdir.Workdir.open(str(tmp_path), config)
  wd = workdir.Workdir.open(str(tmp_path), dict(config, runtime={"attacks_per_call": 8}))
  assert wd.resumed


def test_extendable_settings_cover_what_lies_under_them_and_may_disappear(tmp_path):
  old = {"a": 1, "recipe": {"x": {"epochs": 15}, "y": {"epochs": 15}}, "gone": {"n": 1}}
  wd = workdir.Workdir.open(str(tmp_path), old)
  wd.write_json("results.json", {})     # work: a folder holding only its config is free
  wd.finish()
  wd.close()
  new = {"a": 1, "recipe": {"x": {"epochs": 5, "lr": 0.1}}}
  with pytest.raises(workdir.SettingsMismatch):       # "gone" is not extendable
    workdir.Workdir.open(str(tmp_path), new, extendable=("recipe",))
  wd = workdir.Workdir.open(str(tmp_path), new, extendable=("recipe", "gone"))
  assert wd.resumed
  wd.finish()
  wd.close()
  with open(tmp_path / workdir.CONFIG_FILE) as f:
    assert json.load(f) == new        # removed settings leave no empty parents behind
  with pytest.raises(workdir.SettingsMismatch):       # a name that merely starts alike
    workdir.Workdir.open(str(tmp_path), dict(new, recipes=1), extendable=("recipe",))
  flat = {"a": 1, "recipe": "short"}                  # settings under it become one value
  wd = workdir.Workdir.open(str(tmp_path), flat, extendable=("recipe",))
  wd.finish()
  wd.close()
  with open(tmp_path / workdir.CONFIG_FILE) as f:
    assert json.load(f) == flat


def test_open_refuses_or_starts_a_new_run(tmp_path):
  path = str(tmp_path / "run")
  wd = workdir.Workdir.open(path, {"generations": 2})
  wd.write_json("results.json", {"x": 1})       # work done: the folder is no longer empty
  with pytest.raises(workdir.SettingsMismatch, match="generations: 2 -> 50.*--new_run"):
    workdir.Workdir.open(path, {"generations": 50})
  logs = []
  new = workdir.Workdir.open(path, {"generations": 50}, new_run=True, log=logs.append)
  assert new.path == path + "-2" and not new.resumed
  assert any("generations: 2 -> 50" in line for line in logs)
  with open(os.path.join(path, "config.json")) as f:
    assert json.load(f) == {"generations": 2}   # the old run is untouched
  # The same settings again with --new_run: resume the run that has them.
  again = workdir.Workdir.open(path, {"generations": 50}, new_run=True)
  assert again.path == path + "-2" and again.resumed


def test_a_start_that_did_no_work_does_not_block_the_next(tmp_path):
  path = str(tmp_path / "run")
  workdir.Workdir.open(path, {"model": "typo"})      # e.g. stopped at an unknown model
  wd = workdir.Workdir.open(path, {"model": "right"})
  assert wd.path == path and not wd.resumed


def test_a_process_that_does_not_write_may_open_a_folder_not_made_yet(tmp_path, monkeypatch):
  """Process 1 of a multi-process run takes no lock and writes nothing: opening before
  process 0 has made the folder is a new run, not a FileNotFoundError."""
  import jax
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
  monkeypatch.setattr(workdir, "is_writer", lambda: False)
  path = str(tmp_path / "not_yet")
  wd = workdir.Workdir.open(path, {"generations": 2})
  assert not wd.resumed and not os.path.exists(path)
  wd.write_json("results.json", {"x": 1})           # process 0 writes; this one does not
  assert not os.path.exists(path)


def test_atomic_writes_leave_no_partial_file(tmp_path, monkeypatch):
  path = str(tmp_path / "a.npz")
  workdir.write_npz(path, x=np.arange(3))

  def boom(*a, **k):
    raise KeyboardInterrupt
  monkeypatch.setattr(os, "replace", boom)
  with pytest.raises(KeyboardInterrupt):
    workdir.write_npz(path, x=np.arange(5))
  monkeypatch.undo()
  np.testing.assert_array_equal(workdir.read_npz(path)["x"], np.arange(3))
  assert os.listdir(tmp_path) == ["a.npz"]


def test_corrupt_files_are_named(tmp_path):
  (tmp_path / "bad.npz").write_bytes(b"not a zip")
  with pytest.raises(UserError, match="bad.npz is corrupt"):
    workdir.read_npz(str(tmp_path / "bad.npz"))
  (tmp_path / "config.json").write_text("{")
  with pytest.raises(UserError, match="config.json is corrupt"):
    workdir.Workdir.open(str(tmp_path), {"a": 1})


def test_a_stored_older_format_is_migrated_before_it_is_compared_and_kept(tmp_path):
  """The folder module knows no attack settings: the caller's ``migrate`` maps what an older
  version stored (here: before ``eval_batch`` existed, i.e. 0) to today's format."""
  assert not hasattr(workdir, "LEGACY") and not hasattr(workdir, "without_legacy")
  old = {"attack": {"pixels": 1}, "seed": 0}
  now = {"attack": {"pixels": 1, "eval_batch": 0}, "seed": 0}
  assert list(workdir.differences(old, now)) == ["attack.eval_batch"]   # no legacy defaults

  def migrate(stored):
    stored["attack"].setdefault("eval_batch", 0)
    return stored
  folder = tmp_path / "chunks"
  folder.mkdir()
  (folder / "settings.json").write_text(json.dumps(old))
  raw = (folder / "settings.json").read_bytes()
  with pytest.raises(workdir.SettingsMismatch, match=r"attack.eval_batch: \(unset\) -> 0"):
    workdir.claim(str(folder), now)
  assert workdir.claim(str(folder), now, migrate=migrate) is True
  with pytest.raises(workdir.SettingsMismatch, match="attack.eval_batch: 0 -> 400"):
    workdir.claim(str(folder), {"attack": {"pixels": 1, "eval_batch": 400}, "seed": 0},
                  migrate=migrate)
  assert (folder / "settings.json").read_bytes() == raw      # the stored file as it was
  # The same for a run's config.json.
  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_text(json.dumps(old))
  (run / "results.json").write_text("{}")
  raw = (run / "config.json").read_bytes()
  with pytest.raises(workdir.SettingsMismatch):
    workdir.Workdir.open(str(run), now)
  wd = workdir.Workdir.open(str(run), now, migrate=migrate)
  assert wd.resumed
  wd.finish()
  wd.close()
  assert (run / "config.json").read_bytes() == raw


def test_bind_compares_on_every_process_and_only_process_0_writes(tmp_path, monkeypatch):
  """Before, the bound's caller bound on process 0 only: a resume against other weights
  raised there while the other processes waited ~100 s in a collective for it."""
  import jax
  from pixeljax import workdir
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  workdir.bind(str(tmp_path), {"weights_sha256": "a"})
  assert not (tmp_path / workdir.INPUTS_FILE).exists()         # process 1 writes nothing
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  workdir.bind(str(tmp_path), {"weights_sha256": "a"})
  assert (tmp_path / workdir.INPUTS_FILE).exists()
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  workdir.bind(str(tmp_path), {"weights_sha256": "a", "images_sha256": "b"})
  assert "images_sha256" not in workdir.read_json(str(tmp_path / workdir.INPUTS_FILE))
  with pytest.raises(workdir.SettingsMismatch, match="other inputs"):
    workdir.bind(str(tmp_path), {"weights_sha256": "c"})
