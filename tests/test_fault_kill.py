"""Nothing true gets lost (issue 24, item 8): a campaign killed with SIGKILL at random (seeded)
points and rerun with the same command ends with the records of an uninterrupted run, bit for
bit, and the same metrics.

``experiments/one_pixel.py`` runs a tiny campaign (6 images, 1 and 3 pixels, 2 attacks per
chunk: 3 chunks per pixel count) as a user runs it. An uninterrupted run in folder A is the
reference; a second one in A2 checks that two uninterrupted runs agree (the first fills the
compilation cache, so this is also a cold vs a warm start) and times a start like the ones
killed. Each kill then starts the same command in a folder of its own, SIGKILLs it at a drawn
time, reruns it (the first case is killed a second time, during its first rerun) and lets the
last rerun complete; a last case is killed as soon as it has saved 2 of its 6 chunks, so that
a kill lands however loaded the machine is.

Kill times are drawn with ``numpy.random.default_rng(0)`` as fractions of the window in which
the warm uninterrupted run does its work: from 1 s before its first chunk was saved (start-up:
importing JAX, loading the model and data, selecting images) to its end. Before that window a
kill only interrupts start-up; after it there is nothing left to interrupt.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "one_pixel.py")
ARGS = ["--config.model=cifar10_lenet_hyperparticle", "--config.num_images=6",
        "--config.pixels=(1,3)", "--config.attack.popsize=16", "--config.attack.generations=3",
        "--config.runtime.attacks_per_call=2", "--config.runtime.cpu_devices=1",
        "--config.figures=False", "--config.runtime.progress=False"]
PIXELS = (1, 3)
TAGS = {k: f"untargeted_{k}px" for k in PIXELS}
CHUNKS = 3 * len(PIXELS)        # 6 images, 2 attacks per chunk
KILLS = 3                       # cases; the first is killed twice
TIMING = ("seconds", "attack_seconds", "compile_seconds", "programs_compiled",
          "compile_cache_hits")
# What the closing note reports; printed at the end of the test (pytest -s shows it).
SUMMARY = {}


def _start(workdir):
  return subprocess.Popen([sys.executable, SCRIPT, *ARGS, "--workdir", str(workdir)], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))


def _complete(workdir):
  """Runs the command to its end; returns (stderr, wall seconds, start time)."""
  t0 = time.time()
  proc = _start(workdir)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0 and "Traceback" not in err, err
  return err, time.time() - t0, t0


def _kill_at(workdir, seconds):
  """Starts the command and SIGKILLs it ``seconds`` after the start, or, for ``seconds`` a
  string ``"N chunks"``, as soon as it has saved N chunks (a kill that lands whatever the
  machine's load); returns whether the kill landed (the run was still going)."""
  proc = _start(workdir)
  try:
    if isinstance(seconds, str):
      n = int(seconds.split()[0])
      while proc.poll() is None and (not os.path.isdir(workdir) or sum(
          len(v) for v in _chunks(workdir).values()) < n):
        time.sleep(0.01)
      raise subprocess.TimeoutExpired(SCRIPT, 0)
    _, err = proc.communicate(timeout=seconds)
  except subprocess.TimeoutExpired:
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
  if proc.returncode == -signal.SIGKILL:
    return True
  assert proc.returncode == 0 and "Traceback" not in err, err   # it finished before the kill
  return False


def _chunks(workdir):
  """{pixels: chunk files saved} of a run's folder."""
  out = {}
  for k, tag in TAGS.items():
    folder = os.path.join(workdir, "chunks", tag)
    out[k] = sorted(f for f in os.listdir(folder) if f.startswith("chunk_")) if (
        os.path.isdir(folder)) else []
  return out


def _temporary_files(workdir):
  return {os.path.relpath(os.path.join(d, f), workdir) for d, _, files in os.walk(workdir)
          for f in files if f.startswith(".tmp-")}


def _attacks_in(workdir, k, names):
  folder = os.path.join(workdir, "chunks", TAGS[k])
  total = 0
  for name in names:
    with np.load(os.path.join(folder, name)) as d:
      total += len(d["image_id"])
  return total


def _results(workdir):
  """results.json without what describes a start rather than the attack (timing, versions:
  the command names the folder)."""
  with open(os.path.join(workdir, "results.json")) as f:
    res = json.load(f)
  res.pop("versions")
  res["metrics"] = {k: {m: v for m, v in ms.items() if m not in TIMING}
                    for k, ms in res["metrics"].items()}
  return res


def _assert_same_run(reference, workdir):
  for tag in TAGS.values():
    name = f"records_{tag}.npz"
    with np.load(os.path.join(reference, name)) as a, np.load(os.path.join(workdir, name)) as b:
      assert a.files == b.files
      for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")
    with open(os.path.join(reference, name), "rb") as a, open(os.path.join(workdir, name),
                                                              "rb") as b:
      assert a.read() == b.read(), f"{name} differs from the uninterrupted run's"
  assert _results(reference) == _results(workdir)
  assert _chunks(reference) == _chunks(workdir)      # the same chunk boundaries and keys


def test_killed_campaigns_resume_to_the_records_of_an_uninterrupted_one(tmp_path):
  started = time.time()
  whole = tmp_path / "A"
  _complete(whole)
  warm = tmp_path / "A2"
  _, wall, t0 = _complete(warm)
  _assert_same_run(whole, warm)
  first_chunk = min(os.path.getmtime(os.path.join(warm, "chunks", TAGS[k], f))
                    for k, names in _chunks(warm).items() for f in names) - t0
  lo = max(0.5, first_chunk - 1.0)
  fractions = np.random.default_rng(0).uniform(size=KILLS + 1)
  times = lo + fractions * (wall - lo)
  plan = [[times[0], times[KILLS]]] + [[t] for t in times[1:KILLS]]
  # Drawn times can all miss the run on a loaded machine (its pace is not the warm run's):
  # one more case is killed by progress, after 2 of its 6 chunks.
  plan.append(["2 chunks"])

  kills, landed, partial, identical, temporary = [], 0, 0, 0, set()
  for i, points in enumerate(plan):
    folder = tmp_path / f"B{i}"
    for seconds in points:
      hit = _kill_at(folder, seconds)
      saved = _chunks(folder) if folder.exists() else {k: [] for k in PIXELS}
      count = sum(len(v) for v in saved.values())
      kills.append(dict(case=i, seconds=seconds if isinstance(seconds, str) else
                        round(float(seconds), 2), landed=hit, chunks_saved=count))
      landed += hit
      partial += hit and 0 < count < CHUNKS
      # A kill inside an atomic write leaves its temporary file (never the file itself).
      temporary |= {f"B{i}/{f}" for f in _temporary_files(folder)} if folder.exists() else set()
    err, _, _ = _complete(folder)
    for k, names in saved.items():
      if names:     # the rerun says it reused what the killed run saved
        n = _attacks_in(folder, k, names)
        assert re.search(rf"\[{k} px\] {n} attacks loaded from finished chunks", err), err
    _assert_same_run(whole, folder)
    identical += 1
    left = {f"B{i}/{f}" for f in _temporary_files(folder)}
    assert left <= temporary, f"the completed rerun left temporary files: {left - temporary}"
    assert not os.path.exists(folder / ".lock")
  assert not _temporary_files(whole) and not _temporary_files(warm)

  SUMMARY.update(kills_tried=len(kills), kills_landed=landed,
                 kills_after_some_but_not_all_chunks=partial, resumes=len(plan),
                 resumes_identical=identical, window_s=[round(lo, 2), round(wall, 2)],
                 temporary_files_left_by_kills=sorted(temporary), kills=kills,
                 test_seconds=round(time.time() - started, 1))
  print(f"\nfault-kill summary: {json.dumps(SUMMARY)}")
  assert identical == len(plan)
  assert landed >= 1 and kills[-1]["landed"], f"no kill landed while the run went: {SUMMARY}"
  assert 0 < kills[-1]["chunks_saved"] < CHUNKS, SUMMARY
