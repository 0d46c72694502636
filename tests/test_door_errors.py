"""Every mistake of the user or the machine is one line (exit 2), Ctrl-C one line (exit 130),
and results say which code and command made them (issue 24, items 4 and 6). Each test fails
on the code before: tracebacks, a second "starting" line, no code version."""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pixeljax import cli, workdir
from pixeljax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_failing_write_keeps_the_old_file_and_says_so(tmp_path, monkeypatch):
  path = tmp_path / "results.json"
  workdir.write_json(str(path), {"x": 1})

  def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")
  monkeypatch.setattr(os, "replace", disk_full)
  with pytest.raises(UserError) as e:
    workdir.write_json(str(path), {"x": 2})
  assert str(e.value) == (f"cannot write {path} (No space left on device); its previous "
                          f"version is kept")
  with pytest.raises(UserError, match=r"\(No space left on device\); nothing was written$"):
    workdir.write_npz(str(tmp_path / "new.npz"), x=np.arange(3))
  monkeypatch.undo()
  assert json.loads(path.read_text()) == {"x": 1}
  assert sorted(os.listdir(tmp_path)) == ["results.json"]     # no temporary file left


def test_a_workdir_that_is_a_file_or_not_writable_is_one_line(tmp_path, monkeypatch):
  (tmp_path / "f").write_text("")
  with pytest.raises(UserError) as e:
    workdir.Workdir.open(str(tmp_path / "f"), {"a": 1})
  assert str(e.value) == (f"--workdir {tmp_path}/f is a file, not a folder; choose another "
                          f"--workdir")
  with pytest.raises(UserError) as e:
    workdir.Workdir.open(str(tmp_path / "f" / "run"), {"a": 1})
  assert str(e.value).startswith(f"cannot write in --workdir {tmp_path}/f/run (")
  # A read-only folder (simulated: this suite may run as root, which writes anywhere).
  ro = tmp_path / "ro"
  ro.mkdir()
  real_open = os.open

  def denied(path, *args, **kwargs):
    if str(path).startswith(str(ro)):
      raise PermissionError(errno.EACCES, "Permission denied", str(path))
    return real_open(path, *args, **kwargs)
  monkeypatch.setattr(os, "open", denied)
  with pytest.raises(UserError) as e:
    workdir.Workdir.open(str(ro), {"a": 1})
  assert str(e.value) == (f"cannot write in --workdir {ro} (Permission denied); fix its "
                          f"permissions or choose another --workdir")
  monkeypatch.undo()
  assert os.listdir(ro) == []


def test_new_run_says_once_where_it_runs(tmp_path):
  path = str(tmp_path / "run")
  workdir.Workdir.open(path, {"g": 1}).write_json("results.json", {})
  logs = []
  workdir.Workdir.open(path, {"g": 2}, new_run=True, log=logs.append)
  assert logs[-1] == f"starting a new run in {path}-2"
  logs = []
  again = workdir.Workdir.open(path, {"g": 2}, new_run=True, log=logs.append)
  assert again.path == f"{path}-2" and again.resumed
  assert logs == [f"{path} holds work made with other settings (g: 1 -> 2)"]   # no "starting"


def test_the_cli_turns_disk_errors_and_ctrl_c_into_one_line(monkeypatch, capsys):
  monkeypatch.setattr(sys, "argv", ["experiment.py"])
  cli.note_saved("")

  def full(argv):
    raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/records.npz")
  with pytest.raises(SystemExit) as e:
    cli.run(full)
  assert e.value.code == 2
  assert capsys.readouterr().err == "error: /runs/x/records.npz: No space left on device\n"

  def interrupted(argv):
    cli.note_saved("3 of 8 chunks saved")
    raise KeyboardInterrupt
  with pytest.raises(SystemExit) as e:
    cli.run(interrupted)
  assert e.value.code == 130
  assert capsys.readouterr().err == ("interrupted: 3 of 8 chunks saved; rerun the same command "
                                     "to resume\n")
  cli.note_saved("")


def test_results_record_the_code_and_the_command(monkeypatch):
  monkeypatch.setattr(sys, "argv", ["experiments/fooling.py", "--workdir=r",
                                    "--config=configs/fooling.py:mnist_cppn",
                                    "--config.generations=3"])
  v = workdir.versions()
  assert v["command"] == sys.argv and v["named_config"] == "configs/fooling.py:mnist_cppn"
  assert set(v["code"]) == {"commit", "dirty", "version"}
  head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                        text=True)
  if head.returncode == 0:        # a checkout with git: the commit and whether it is edited
    assert v["code"]["commit"] == head.stdout.strip() and isinstance(v["code"]["dirty"], bool)
  assert cli.named_config(["x.py", "--config", "configs/train.py:cifar10_allcnn"]) == (
      "configs/train.py:cifar10_allcnn")
  assert cli.named_config(["x.py", "--config.seed=2"]) is None     # the script's default


def test_uncommitted_results_do_not_make_the_code_dirty(tmp_path):
  git = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True,
                                  capture_output=True)
  git("init", "-q")
  for name in ("pixeljax/a.py", "results/run/summary.md", "checkpoints/net.json"):
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text("0")
  git("add", ".")
  git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
  assert cli._git_state(str(tmp_path))["dirty"] is False
  (tmp_path / "results/run/summary.md").write_text("1")      # an earlier run's new tables
  (tmp_path / "checkpoints/net.json").write_text("1")
  assert cli._git_state(str(tmp_path))["dirty"] is False
  (tmp_path / "pixeljax/a.py").write_text("1")               # the code itself
  assert cli._git_state(str(tmp_path))["dirty"] is True
  assert cli._git_state(str(tmp_path / "pixeljax")) == dict(commit=None, dirty=None)


def _ctrl_c_heard():
  """In the child before exec: Ctrl-C at its default. A runner started in the background of
  a non-interactive shell (``make test &``) ignores SIGINT, its children inherit that, and
  Python then leaves SIGINT ignored: the test's Ctrl-C would never arrive."""
  signal.signal(signal.SIGINT, signal.SIG_DFL)


def _script(*args, **kwargs):
  return subprocess.Popen([sys.executable, os.path.join(ROOT, "experiments", "fooling.py"),
                           *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=dict(os.environ, JAX_PLATFORMS="cpu",
                                              PYTHONFAULTHANDLER="1"),
                          preexec_fn=_ctrl_c_heard, **kwargs)


def _one_line(proc, code, timeout=300):
  out, err = proc.communicate(timeout=timeout)
  lines = err.strip().splitlines()
  assert proc.returncode == code and "Traceback" not in err, err
  return lines[-1]


def test_the_scripts_mistakes_lock_ctrl_c_and_extension(tmp_path):
  """As a user meets them: a file for --workdir, a second start on a running run, Ctrl-C,
  and a rerun of the interrupted run with fewer generations than it asked (extends it)."""
  (tmp_path / "file").write_text("")
  line = _one_line(_script(f"--workdir={tmp_path / 'file'}"), 2)
  assert line == (f"error: --workdir {tmp_path}/file is a file, not a folder; choose another "
                  f"--workdir")
  run = tmp_path / "run"
  args = [f"--workdir={run}", "--config=configs/fooling.py:mnist_direct",
          "--config.population=16", "--config.segment=1", "--config.runtime.progress=False"]
  first = _script(*args, "--config.generations=100000")
  try:
    deadline = time.monotonic() + 300
    while not os.path.exists(run / "evolution_state.npz"):
      assert first.poll() is None and time.monotonic() < deadline, first.communicate()
      time.sleep(0.2)
    line = _one_line(_script(*args, "--config.generations=100000"), 2)
    assert line.startswith(f"error: {run} is in use by another run (pid {first.pid}: ")
    assert "experiments/fooling.py" in line
    first.send_signal(signal.SIGINT)
    try:
      first.wait(timeout=60)
    except subprocess.TimeoutExpired:   # the signal fell where Python ignores it: again
      first.send_signal(signal.SIGINT)
    try:
      first.wait(timeout=120)
    except subprocess.TimeoutExpired:   # stuck: every thread's stack (faulthandler), then fail
      first.send_signal(signal.SIGABRT)
      _, err = first.communicate(timeout=60)
      pytest.fail(f"the run ignored two Ctrl-C; its threads:\n{err[-6000:]}")
    line = _one_line(first, 130)
  finally:
    if first.poll() is None:
      first.kill()
  saved = int(line.split()[1])
  assert saved >= 1 and line == (f"interrupted: {saved} of 100000 generations saved; rerun "
                                 f"the same command to resume")
  assert not os.path.exists(run / ".lock")
  # The rerun asks for fewer generations than the interrupted run did, but no fewer than it
  # saved: it continues and records what it did.
  _one_line(_script(*args, f"--config.generations={saved + 1}"), 0)
  with open(run / "results.json") as f:
    results = json.load(f)
  assert results["config"]["generations"] == saved + 1
  assert results["versions"]["named_config"] == "configs/fooling.py:mnist_direct"
  assert results["versions"]["command"][1:] == args + [f"--config.generations={saved + 1}"]
  with open(run / "config.json") as f:
    assert json.load(f)["generations"] == saved + 1
