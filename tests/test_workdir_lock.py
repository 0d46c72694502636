"""A workdir cannot be raced: one run holds it, a second start is refused in one line and
changes nothing, claims are atomic, and a corrupt config.json has a way out that cannot leave
the folder stuck. Every test here fails on the code before the lock (issue 24, item 3)."""
import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from pixeljax import workdir
from pixeljax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A second process that opens a workdir. It loads pixeljax.workdir alone (not the package,
# which imports JAX), so that it starts in a fraction of a second: the races stay races.
STARTER = textwrap.dedent(r"""
  import json, os, sys, time, types
  pkg = types.ModuleType("pixeljax")
  pkg.__path__ = [os.path.join(sys.argv[1], "pixeljax")]
  sys.modules["pixeljax"] = pkg
  from pixeljax import workdir
  path, config, go = sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
  while go != "-" and not os.path.exists(go):   # a start line shared by all racers
    time.sleep(0.001)
  try:
    wd = workdir.Workdir.open(path, config)
  except workdir.UserError as e:
    print(f"error: {e}", flush=True)
    sys.exit(2)
  print("held", "resumed" if wd.resumed else "new", flush=True)
  sys.stdin.readline()                          # hold the folder until told
  workdir.write_json(wd.file("results.json"), config)   # "the work"
  wd.close()
""")


def _start(path, config, go="-"):
  return subprocess.Popen([sys.executable, "-c", STARTER, ROOT, str(path), json.dumps(config),
                           str(go)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _held(proc):
  line = proc.stdout.readline()
  assert line.startswith("held"), line
  return line.split()[1]


def _finish(proc):
  out, _ = proc.communicate("\n", timeout=60)
  return proc.returncode, out


def _snapshot(folder):
  return {f: open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder))
          if os.path.isfile(os.path.join(folder, f))}


@pytest.mark.parametrize("first, second", [(100, 99), (99, 100)])
def test_a_second_start_on_a_held_workdir_is_refused_and_writes_nothing(tmp_path, first,
                                                                        second):
  """The issue's race, in both orders: generations 100 and 99 in one new workdir."""
  path = tmp_path / "run"
  holder = _start(path, {"generations": first})
  try:
    assert _held(holder) == "new"
    before = _snapshot(path)
    with pytest.raises(UserError) as e:
      workdir.Workdir.open(str(path), {"generations": second})
    message = str(e.value)
    assert message.startswith(f"{path} is in use by another run (pid {holder.pid}: ")
    assert message.endswith("; wait for it to end or choose another --workdir")
    assert "\n" not in message
    assert _snapshot(path) == before        # the refused start changed nothing
  finally:
    code, _ = _finish(holder)
  assert code == 0
  with open(path / "config.json") as f:      # config.json and the work agree
    assert json.load(f) == {"generations": first}
  with open(path / "results.json") as f:
    assert json.load(f) == {"generations": first}
  assert not os.path.exists(path / ".lock")  # let go when the run ended
  # Not stuck: the first command resumes, the second is refused for its settings.
  assert workdir.Workdir.open(str(path), {"generations": first}).resumed
  with pytest.raises(workdir.SettingsMismatch, match=f"generations: {first} -> {second}"):
    workdir.Workdir.open(str(path), {"generations": second})


def test_two_starts_at_once_one_wins_and_the_folder_tells_its_settings(tmp_path):
  """Started on one signal: exactly one holds the folder, whose config is the winner's."""
  for round_ in range(3):
    path, go = tmp_path / f"run{round_}", tmp_path / f"go{round_}"
    procs = {g: _start(path, {"generations": g}, go) for g in (100, 99)}
    time.sleep(1.0)                          # both interpreters up, polling the start line
    go.write_text("")
    winners, losers = [], []
    for g, p in procs.items():
      line = p.stdout.readline()
      (winners if line.startswith("held") else losers).append((g, p, line))
    assert len(winners) == 1 and len(losers) == 1, (winners, losers)
    (g_win, p_win, _), (g_lose, p_lose, line) = winners[0], losers[0]
    assert f"is in use by another run (pid {p_win.pid}: " in line
    assert _finish(p_lose)[0] == 2 and _finish(p_win)[0] == 0
    with open(path / "config.json") as f:
      assert json.load(f) == {"generations": g_win}


def test_the_same_command_twice_at_once_works_once(tmp_path):
  path = tmp_path / "run"
  first = _start(path, {"generations": 5})
  try:
    assert _held(first) == "new"
    second = _start(path, {"generations": 5})
    code, out = _finish(second)
    assert code == 2 and f"in use by another run (pid {first.pid}: " in out
  finally:
    assert _finish(first)[0] == 0
  again = _start(path, {"generations": 5})      # later, the same command resumes
  assert _held(again) == "resumed"
  assert _finish(again)[0] == 0


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
  path = tmp_path / "run"
  holder = _start(path, {"generations": 5})
  assert _held(holder) == "new"
  holder.send_signal(signal.SIGKILL)
  holder.wait(timeout=60)
  assert os.path.exists(path / ".lock")       # the file stays, its lock died with the process
  wd = workdir.Workdir.open(str(path), {"generations": 5})
  assert wd.resumed
  wd.close()


def test_the_refusal_names_the_holder_and_changes_nothing(tmp_path):
  """A holder simulated on its own file descriptor (flock locks belong to one open file)."""
  path = tmp_path / "run"
  workdir.Workdir.open(str(path), {"a": 1}).close()
  fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT)
  fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  os.write(fd, json.dumps({"pid": 4242, "command": "experiments/fooling.py --workdir r"})
           .encode())
  before = _snapshot(path)
  try:
    for config in ({"a": 1}, {"a": 2}):
      for new_run in (False, True):
        with pytest.raises(UserError) as e:
          workdir.Workdir.open(str(path), config, new_run=new_run)
        assert str(e.value) == (f"{path} is in use by another run (pid 4242: "
                                f"experiments/fooling.py --workdir r); wait for it to end or "
                                f"choose another --workdir")
    assert _snapshot(path) == before and not os.path.exists(f"{path}-2")
  finally:
    os.close(fd)
  assert workdir.Workdir.open(str(path), {"a": 1}).resumed


def test_one_process_may_reopen_the_folder_it_holds(tmp_path):
  """Within a process the lock is shared (a library user's sequential calls, the tests)."""
  path = str(tmp_path / "run")
  a = workdir.Workdir.open(path, {"a": 1})
  b = workdir.Workdir.open(path, {"a": 1})
  assert b.resumed
  a.close()
  assert os.path.exists(os.path.join(path, ".lock"))    # b still holds it
  b.close()
  assert not os.path.exists(os.path.join(path, ".lock"))


def test_claims_at_once_cannot_both_win(tmp_path, monkeypatch):
  """A rival claim lands between this claim's look and its write: the rival keeps the
  folder and this one is compared with it (before: it overwrote the rival's settings)."""
  folder = tmp_path / "chunks"
  real_mkstemp = workdir.tempfile.mkstemp

  def rival_first(*args, **kwargs):
    if not os.path.exists(folder / "settings.json"):
      (folder / "settings.json").write_text(json.dumps({"seed": 1}))
    return real_mkstemp(*args, **kwargs)
  folder.mkdir()
  monkeypatch.setattr(workdir.tempfile, "mkstemp", rival_first)
  with pytest.raises(workdir.SettingsMismatch, match="seed: 1 -> 2"):
    workdir.claim(str(folder), {"seed": 2})
  assert json.loads((folder / "settings.json").read_text()) == {"seed": 1}
  assert os.listdir(folder) == ["settings.json"]
  # Many threads at once: one creates, every other compares.
  monkeypatch.undo()
  results, barrier = {}, threading.Barrier(8)

  def claimer(i):
    barrier.wait()
    try:
      results[i] = workdir.claim(str(tmp_path / "many"), {"seed": i % 2})
    except workdir.SettingsMismatch:
      results[i] = "refused"
  threads = [threading.Thread(target=claimer, args=(i,)) for i in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert list(results.values()).count(False) == 1
  won = json.loads((tmp_path / "many" / "settings.json").read_text())["seed"]
  for i, r in results.items():
    if r is not False:
      assert r == (True if i % 2 == won else "refused"), (i, r)


def test_a_corrupt_config_has_a_way_out_that_cannot_get_stuck(tmp_path):
  path = tmp_path / "run"
  a, b = {"model": "lenet", "seed": 0}, {"model": "lenet", "seed": 1}

  def start(config, **kw):   # an experiment: its chunk folder is claimed by its settings
    wd = workdir.Workdir.open(str(path), config, **kw)
    try:
      workdir.claim(wd.file("chunks"), config)
      wd.write_json("results.json", config)
      wd.finish()
    finally:
      wd.close()
    return wd
  start(a)
  (path / "config.json").write_text('{"model": "len')         # truncated
  before = _snapshot(path)
  with pytest.raises(UserError) as e:
    start(a)
  message = str(e.value)
  assert message.startswith(f"{path}/config.json is corrupt (")
  assert message.endswith(
      "; to resume the run remove that file (the run's own settings files are then checked, "
      "and config.json is written again when it completes); pass --new_run to start a new "
      "run beside it, or choose another --workdir")
  assert _snapshot(path) == before
  assert start(a, new_run=True).path == f"{path}-2"            # or a new run beside it
  # The way out: remove it. A start with another setting is refused by the work's own
  # settings and leaves no config.json behind ...
  os.remove(path / "config.json")
  logs = []
  with pytest.raises(workdir.SettingsMismatch, match="seed: 0 -> 1"):
    start(b, log=logs.append)
  assert logs == [f"{path} holds work but no config.json: its own settings files are "
                  f"checked, and config.json is written when the run completes"]
  assert not os.path.exists(path / "config.json")
  # ... so the original command still resumes, and config.json is written once it completes.
  assert start(a).resumed
  assert json.loads((path / "config.json").read_text()) == a
  assert workdir.Workdir.open(str(path), a).resumed
