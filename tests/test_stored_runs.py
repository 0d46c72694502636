"""Every run stored in results/ still loads, compares and resumes under today's code.

The stored folders were claimed in settings format 1 (execution switches inside ``attack``,
``pixeljax.sparse.formats``). For each chunk folder: its settings migrate to a dict that
today's ``PixelAttackConfig`` and ``Execution`` rebuild exactly (so a resume's claim compares
equal), and every chunk file's name is the key today's campaign computes for its rows (so a
resume finds every finished chunk instead of redoing it). For each experiment's config.json:
the migrated config has exactly the settings today's configs/one_pixel.py has.
"""
import dataclasses
import glob
import os
import re

import numpy as np
import pytest

from pixeljax import workdir
from pixeljax.sparse import formats, records
from pixeljax.sparse.evaluator import Execution
from pixeljax.sparse.problem import PixelAttackConfig

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CHUNK_FOLDERS = sorted(os.path.dirname(p) for p in glob.glob(
    os.path.join(ROOT, "results", "**", "chunks", "*", "settings.json"), recursive=True))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "results", "**", "config.json"), recursive=True))


def _name(path):
  return os.path.relpath(path, ROOT)


def test_there_are_stored_runs_to_check():
  assert len(CHUNK_FOLDERS) >= 60 and len(CONFIGS) >= 20


@pytest.mark.parametrize("folder", CHUNK_FOLDERS, ids=_name)
def test_a_stored_chunk_folder_resumes(folder):
  stored = workdir.read_json(os.path.join(folder, workdir.SETTINGS_FILE))
  migrated = formats.migrate(stored)
  attack = PixelAttackConfig(**migrated["attack"])
  execution = Execution(**migrated["execution"])
  today = {**migrated, "attack": dataclasses.asdict(attack),
           "execution": dataclasses.asdict(execution)}
  assert workdir.differences(migrated, today) == {}
  basis = formats.chunk_basis(today, stored)
  # A run of the programme (results/reproduce) may be committed just as a pixel count starts:
  # its settings, no chunk yet. Its settings are checked above; the chunks, where there are.
  chunks = sorted(f for f in os.listdir(folder) if f.startswith("chunk_"))
  assert chunks or "reproduce" in _name(folder).split(os.sep), f"{_name(folder)} holds no chunk"
  for name in chunks:
    rec = records.load(os.path.join(folder, name))
    key = re.fullmatch(r"chunk_\d{5}_([0-9a-f]{16})\.npz", name).group(1)
    assert formats.chunk_key(basis, rec.image_id, rec.target_class) == key, name


def _flat(d, prefix=""):
  out = set()
  for k, v in d.items():
    out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {prefix + k}
  return out


@pytest.mark.parametrize("path", CONFIGS, ids=_name)
def test_a_stored_experiment_config_compares_with_todays(path):
  stored = workdir.read_json(path)
  skip = lambda keys: {k for k in keys if not k.startswith("runtime.")}
  if "train" in stored:             # a training run's (experiments/train.py)
    from configs.train import get_config as training
    assert skip(_flat(stored)) == skip(_flat(training(stored["name"]).to_dict()))
    return
  if "paper_nets" in stored:        # the one-pixel programme's (experiments/reproduce.py)
    from configs.reproduce import get_config as programme
    from experiments.reproduce import migrate_config
    assert skip(_flat(migrate_config(stored))) == skip(_flat(programme().to_dict()))
    return
  if "attack" not in stored:        # a comparison's config (runs, budgets): nothing migrates
    assert set(stored) <= {"runs", "budgets", "figures", "runtime"}
    return
  from configs.one_pixel import get_config
  today = get_config().to_dict()
  migrated = formats.migrate_config(stored)
  assert skip(_flat(migrated)) == skip(_flat(today))
