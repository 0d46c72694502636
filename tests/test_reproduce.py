"""The one-command programme (experiments/reproduce.py): its plan, and a smoke run end to end."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from configs.reproduce import get_config
from experiments import reproduce
from pixeljax.metrics import one_pixel as metrics
from pixeljax.errors import UserError

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def test_the_plan_trains_what_is_missing_then_attacks_as_the_papers_did(tmp_path):
  config = get_config()
  steps, runs = reproduce.plan(config, str(tmp_path))
  assert steps == ["train", "paper", "reimplementation", "tables"]
  names = [os.path.basename(folder) for _, folder, _ in runs]
  trained = [n for n in names if n.startswith("train_")]
  assert trained == [f"train_{n}" for n in ("cifar10_allcnn", "cifar10_nin", "cifar10_vgg16")
                     if not os.path.exists(os.path.join(ROOT, "checkpoints", f"{n}.msgpack"))]
  for (_, folder, cmd) in runs:    # the trained nets' accuracy is measured on the exact images
    if os.path.basename(folder).startswith("train_"):
      assert f"--config.test_data={reproduce.EXACT}" in cmd
      assert "--config.store_dtype=" + ("int4" if "vgg16" in folder else "bfloat16") in cmd
      # the short schedule trains without the nets' dropout (All-CNN-C underfit with it),
      # every setting of the recipe passed as a TrainConfig override
      net = os.path.basename(folder)[len("train_"):]
      assert "--config.train.dropout=False" in cmd
      for k, v in config.train_recipe[net].items():
        assert f"--config.train.{k}={v}" in cmd
  assert len([n for n in names if n.startswith("paper_")]) == 6
  # Every untargeted run (the cheaper cells) before any targeted one.
  targeted = [i for i, n in enumerate(names) if "targeted_" in n and "untargeted_" not in n]
  untargeted = [i for i, n in enumerate(names) if i not in targeted and not n.startswith("train_")]
  assert len(targeted) == 5 and len(untargeted) == 8 and max(untargeted) < min(targeted)
  # Beside each net's untargeted run, the exhaustive one-pixel bound on the same draw.
  by_name = {n: cmd for (_, _, cmd), n in zip(runs, names)}
  for net in ("cifar10_allcnn", "cifar10_nin", "cifar10_vgg16"):
    bound, paper = by_name[f"bound_{net}"], by_name[f"paper_{net}"]
    assert bound[-2:] == ["--config.pixels=()", "--config.exhaustive=True"]
    assert [a for a in paper if not a.startswith("--config.pixels=")] == bound[:-2]
  cells = {n: cmd for (_, f, cmd), n in zip(runs, names) if n.startswith("reimplementation")}
  assert len(cells) == 4          # 2 nets x untargeted / targeted, each 1 / 3 / 5 px: 12 cells
  cmd = " ".join(cells["reimplementation_targeted_cifar10_resnet32_hyperparticle"])
  for flag in ("configs/one_pixel.py:best1bin", "--config.attack.generations=75",
               "--config.attack.stop=first_success", "--config.attack.targeted=True",
               "--config.num_images=100", "--config.pixels=(1,3,5,)"):
    assert flag in cmd


def test_a_smoke_run_writes_the_summary_and_a_rerun_skips_finished_runs(tmp_path):
  smoke_flags = get_config("smoke").attack_flags
  cmd = [sys.executable, os.path.join(ROOT, "experiments", "reproduce.py"),
         "--config=configs/reproduce.py:smoke", "--workdir", str(tmp_path / "r"),
         # a shipped net as the "paper net", to check the trained nets' table
         "--config.paper_nets=cifar10_lenet_hyperparticle"]
  first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  assert first.returncode == 0, first.stderr[-3000:]
  with open(tmp_path / "r" / "results.json") as f:
    results = json.load(f)
  rows = results["rows"]
  # Each paper net with a checkpoint is measured on the 1,017 exact test images; the LeNet's
  # checkpoint records its accuracy on the same images.
  [net] = results["nets"]
  assert net["images"] == 1017 and net["recorded_on"] == "CIFAR-10 exact test images 0..1016"
  assert abs(net["accuracy_exact"] - net["recorded_accuracy"]) < 1e-9
  assert [(r["mode"], r["pixels"]) for r in rows] == [("untargeted", 1), ("targeted", 1)]
  assert rows[0]["published"] == 0.63 and rows[1]["published"] == 0.344
  assert rows[1]["any_misclassification"] >= rows[1]["success"]
  # The paper's four metrics: success, confidence, class pairs, targets reached per image.
  assert 0 <= rows[1]["targets_per_image"] <= 9 and "targets_per_image" not in rows[0]
  fooled = sum(n for _, _, n in rows[1]["top_class_pairs"])
  assert fooled <= round(rows[1]["success"] * rows[1]["attacks"])
  assert "targets reached per image (of 9)" in (tmp_path / "r" / "summary.md").read_text()
  # Beside each cell, the reimplementation's own records: its targeted cells are 10 images x 9
  # targets, its figure their any-misclassification rate; intervals resample images.
  theirs = rows[1]["published_record"]
  assert (theirs["attacks"], theirs["images"]) == (90, 10)
  assert abs(theirs["success"] - 0.344) < 5e-4 and theirs["target_reached"] < theirs["success"]
  lo, hi = theirs["success_ci95_images"]
  assert lo < 0.344 < hi and hi - lo > 0.3        # 10 images: far wider than 90 trials'
  assert rows[0]["published_record"]["attacks"] == 100 and rows[0]["images"] == 2
  assert "like for like" in (tmp_path / "r" / "summary.md").read_text()
  assert "| reimplementation | cifar10_lenet_hyperparticle | targeted | 1 |" in (
      tmp_path / "r" / "summary.md").read_text()
  again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  assert again.returncode == 0 and again.stderr.count(": done") == 2, again.stderr[-3000:]
  # The tables alone report every finished run of the programme.
  tables = subprocess.run(cmd + ["--config.runtime.steps=tables"], cwd=ROOT,
                          capture_output=True, text=True)
  assert tables.returncode == 0 and ": done" not in tables.stderr, tables.stderr[-3000:]
  with open(tmp_path / "r" / "results.json") as f:
    assert json.load(f)["rows"] == rows
  # The programme's folder claims no settings of its own: runtime flags may change, and a
  # finished run made with other settings is named, not counted as done.
  faster = subprocess.run(cmd + ["--config.attack_flags=" + smoke_flags +
                                 " --config.runtime.attacks_per_call=3"], cwd=ROOT,
                          capture_output=True, text=True)
  assert faster.returncode == 0 and faster.stderr.count(": done") == 2, faster.stderr[-3000:]
  # ... but not an execution (it can change float bits; the script refuses a resume under
  # another): before, the finished runs counted as done for it.
  segment = subprocess.run(cmd + ["--config.attack_flags=" + smoke_flags +
                                  " --config.runtime.execution.segment=5"], cwd=ROOT,
                           capture_output=True, text=True)
  assert segment.returncode == 2, segment.stderr[-3000:]
  assert "made with other settings ((none) -> --config.runtime.execution.segment=5)" in (
      segment.stderr)
  more = subprocess.run(cmd + ["--config.reimplementation_images=3"], cwd=ROOT,
                        capture_output=True, text=True)
  assert more.returncode == 2, more.stderr[-3000:]
  assert "holds a finished run made with other settings (--config.num_images=2 -> " \
         "--config.num_images=3)" in more.stderr
  # ... and the tables leave it out rather than label it with these settings.
  other = subprocess.run(cmd + ["--config.reimplementation_images=3",
                                "--config.runtime.steps=tables"], cwd=ROOT,
                         capture_output=True, text=True)
  assert other.returncode == 0, other.stderr[-3000:]
  with open(tmp_path / "r" / "results.json") as f:
    assert json.load(f)["rows"] == []
  # A finished run with no record of what made it (the programme stopped between its script's
  # end and the record) goes back through its script, which checks the settings.
  made_by = tmp_path / "r" / "reimplementation_targeted_cifar10_lenet_hyperparticle" / \
      reproduce.MADE_BY
  recorded = json.loads(made_by.read_text())
  assert recorded["weights_sha256"] and recorded["command"][0] == "one_pixel.py"
  made_by.unlink()
  # A finished run started again by hand and stopped part way (its results.json pending) beside
  # its old record is not done either: it goes back through its script, which finishes it.
  untargeted = tmp_path / "r" / "reimplementation_untargeted_cifar10_lenet_hyperparticle"
  res = json.loads((untargeted / "results.json").read_text())
  (untargeted / "results.json").write_text(json.dumps(dict(res, pending=["1px"])))
  # Started from another folder with a relative --workdir: the scripts (run from the
  # repository root) work in the same folders.
  away = [cmd[0], cmd[1], f"--config={ROOT}/configs/reproduce.py:smoke", "--workdir", "r",
          *cmd[5:]]
  back = subprocess.run(away, cwd=tmp_path, capture_output=True, text=True)
  assert back.returncode == 0 and back.stderr.count(": done") == 0, back.stderr[-3000:]
  assert json.loads(made_by.read_text()) == recorded
  assert json.loads((untargeted / "results.json").read_text())["pending"] == []
  assert not os.path.exists(os.path.join(ROOT, "r"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG: Linux")
def test_a_step_dies_with_a_killed_programme(tmp_path):
  """A programme killed with SIGKILL (or by the end of a session) takes its running step
  with it, so the rerun that resumes is not refused by an orphan holding the folder."""
  parent = subprocess.Popen(
      [sys.executable, "-c",
       "import subprocess, sys, time\n"
       "from experiments.reproduce import _dying_with_parent\n"
       "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'],\n"
       "                         preexec_fn=_dying_with_parent())\n"
       "print(child.pid, flush=True)\n"
       "time.sleep(120)\n"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
  child = int(parent.stdout.readline())
  parent.kill()
  parent.wait()

  def alive():
    try:
      with open(f"/proc/{child}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"    # a zombie has ended
    except FileNotFoundError:
      return False
  deadline = time.time() + 10
  while alive() and time.time() < deadline:
    time.sleep(0.1)
  assert not alive()


def test_the_programme_folder_claims_none_of_its_settings():
  from configs import reproduce as programme
  assert set(reproduce.EXTENDABLE) == set(programme.get_config()) - {"runtime"}


def test_a_checkpoint_made_by_another_recipe_is_refused_by_name(tmp_path, monkeypatch):
  monkeypatch.setenv("PIXELJAX_CHECKPOINT_DIR", str(tmp_path))
  config = get_config()
  recipe = {**config.train_recipe["cifar10_nin"].to_dict(), "batch_size": 128}
  meta = dict(recipe=dict(recipe), stored_dtype=config.store_dtype["cifar10_nin"])
  (tmp_path / "cifar10_nin.json").write_text(json.dumps(meta))
  (tmp_path / "cifar10_nin.msgpack").write_bytes(b"")
  _, runs = reproduce.plan(config, str(tmp_path / "p"))       # the recipe's: not retrained
  names = [os.path.basename(folder) for _, folder, _ in runs]
  assert "train_cifar10_nin" not in names and "train_cifar10_allcnn" in names
  assert "--config.out_dir=" + os.path.relpath(str(tmp_path), ROOT) in runs[0][2]
  meta["recipe"]["epochs"] = recipe["epochs"] + 1
  meta["stored_dtype"] = "float32"
  (tmp_path / "cifar10_nin.json").write_text(json.dumps(meta))
  with pytest.raises(UserError, match=(
      rf"cifar10_nin.msgpack was made with train.epochs={recipe['epochs'] + 1}, "
      rf"store_dtype=float32 and configs/reproduce.py asks train.epochs={recipe['epochs']}, "
      rf"store_dtype=bfloat16; set the recipe to match")):
    reproduce.plan(config, str(tmp_path / "p"))


def test_the_paper_step_reports_the_exhaustive_bound_on_the_attacked_images(tmp_path):
  smoke_flags = get_config("smoke").attack_flags
  cmd = [sys.executable, os.path.join(ROOT, "experiments", "reproduce.py"),
         "--config=configs/reproduce.py:smoke", "--workdir", str(tmp_path / "r"),
         "--config.runtime.steps=paper,tables", "--config.paper_nets=cifar10_lenet_hyperparticle",
         "--config.paper_images=3", "--config.paper_targeted_images=1",
         "--config.attack_flags=" + smoke_flags]
  done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-3000:]
  with open(tmp_path / "r" / "results.json") as f:
    results = json.load(f)
  [bound] = results["bounds"]
  assert bound["images"] == 3 and bound["queries_per_image"] == 32 * 32 * 8
  de = [r for r in results["rows"] if r["mode"] == "untargeted"]
  assert len(de) == 1 and bound["de_1px"] == de[0]["success"]
  # the same images as the untargeted run's
  with open(tmp_path / "r" / "paper_cifar10_lenet_hyperparticle" / "results.json") as f:
    attacked = json.load(f)["image_ids"]
  with open(tmp_path / "r" / "bound_cifar10_lenet_hyperparticle" / "results.json") as f:
    assert json.load(f)["image_ids"] == attacked
  assert "The exhaustive one-pixel bound" in (tmp_path / "r" / "summary.md").read_text()
  # A run still going shows the pixel counts it has finished, marked as running, as long as
  # its partial results.json was written by this command.
  folder = tmp_path / "r" / "paper_cifar10_lenet_hyperparticle"
  (folder / reproduce.MADE_BY).unlink()
  partial = json.loads((folder / "results.json").read_text())
  (folder / "results.json").write_text(json.dumps({**partial, "pending": ["3px"]}))
  tables_only = [a if not a.startswith("--config.runtime.steps=") else
                 "--config.runtime.steps=tables" for a in cmd]
  tables = subprocess.run(tables_only, cwd=ROOT, capture_output=True, text=True)
  assert tables.returncode == 0, tables.stderr[-3000:]
  [running] = [r for r in json.loads((tmp_path / "r" / "results.json").read_text())["rows"]
               if r["mode"] == "untargeted"]
  assert not running["finished"] and running["success"] == de[0]["success"]
  assert "| paper (running) | cifar10_lenet_hyperparticle | untargeted | 1 |" in (
      tmp_path / "r" / "summary.md").read_text()
  other = partial["versions"]["command"]
  other[other.index("--config.num_images=3")] = "--config.num_images=4"
  (folder / "results.json").write_text(json.dumps(
      {**partial, "pending": ["3px"], "versions": {**partial["versions"], "command": other}}))
  assert subprocess.run(tables_only, cwd=ROOT, capture_output=True).returncode == 0
  assert not [r for r in json.loads((tmp_path / "r" / "results.json").read_text())["rows"]
              if r["mode"] == "untargeted"]       # another command's: left out


def test_the_tables_count_the_attacks_the_metrics_count(tmp_path, monkeypatch):
  """Targeted rows quote intervals resampling images (an image's 9 attacks are not
  independent trials) and leave out, as the metrics do, images the net already misclassified
  (for them "any misclassification" holds without an attack). Both were missed before: the
  table printed Wilson over attacks, and counted the misclassified image."""
  from pixeljax.sparse import records as attack_records
  ids = np.repeat(np.arange(3), 2)
  true = np.array([0, 0, 1, 1, 2, 2])
  target = np.array([1, 2, 0, 2, 0, 1])
  success = np.array([True, True, False, False, False, False])
  adv = np.where(success, target, true)
  adv[4:] = 0                                # image 2: already misclassified, as class 0
  prior = np.eye(3)[np.where(ids == 2, 0, true)]
  rec = attack_records.AttackRecords(
      image_id=ids, true_class=true, target_class=target, adversarial_class=adv,
      success=success, probs=np.eye(3)[adv], prior_probs=prior, pixels=np.zeros((6, 1, 5)),
      queries=np.full(6, 400), success_query=np.where(success, 400, -1),
      iterations=np.zeros(6, np.int32))
  folder = tmp_path / "reimplementation_targeted_cifar10_lenet_hyperparticle"
  folder.mkdir()
  m = metrics.summary(rec, 3)
  attack_records.save(str(folder / "records_targeted_1px.npz"), rec)
  (folder / "results.json").write_text(json.dumps(dict(
      config=dict(model="cifar10_lenet_hyperparticle", attack=dict(targeted=True)),
      metrics={"1px": m})))
  monkeypatch.setattr(reproduce, "_made_by_this", lambda folder, command: True)
  [row] = reproduce._rows([("reimplementation", str(folder), [])])
  assert m["excluded_misclassified"] == 2 and (row["attacks"], row["images"]) == (4, 2)
  assert row["any_misclassification"] == 0.5     # not 4 of 6
  assert row["ci95"] == row["success_ci95_images"] == m["success_rate_ci95_images"]
  assert row["ci95"] != m["success_rate_ci95"]   # Wilson over 4 attacks: too narrow
  text = reproduce.summary([row])
  assert "| 34.4% (any misclassification) |" in text and "resampling images, targeted" in text
