"""A run's folder: held by one run at a time, claimed by its settings, atomic writes.

Resumable work (attack chunks, a MAP-Elites archive, a training state) lives in a folder
*claimed* by the settings that made it: ``claim`` creates ``settings.json`` atomically (of two
claims at once one wins) and on every later start compares it with the settings asked for
now, raising ``SettingsMismatch`` with each difference, so a resume never labels work done
under other settings with the new ones. ``Workdir.open`` does the same for an experiment's
``--workdir`` (``config.json``) while holding an exclusive lock on the folder for the whole
run: a second start is refused with the holder's pid and command, and a refused start changes
nothing. Settings under ``runtime`` are recorded, not compared: they change how fast work is
done, never its result. Files are written through a temporary file and a rename, so a killed
run or a full disk never leaves half a file behind.
"""
import errno
import fcntl
import functools
import hashlib
import io
import json
import os
import shlex
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import numpy as np

from pixeljax.errors import UserError

CONFIG_FILE = "config.json"
SETTINGS_FILE = "settings.json"
INPUTS_FILE = "inputs.json"
LOCK_FILE = ".lock"
UNCOMPARED = ("runtime",)
# Maps settings as stored by older code (read from disk) to the current format.
Migrate = Optional[Callable[[Dict[str, Any]], Dict[str, Any]]]


class SettingsMismatch(UserError):
  """Work in a folder was done under other settings than the ones asked for now."""


def _reason(e: OSError) -> str:
  return e.strerror or str(e) or type(e).__name__


def atomic_write(path: str, data: bytes) -> None:
  """Writes ``data`` via a temporary file in the same folder and a rename. A write that fails
  (disk full, read-only folder) is a one-line ``UserError`` that says the old file is kept."""
  _write(path, data, exclusive=False)


def _write(path: str, data: bytes, exclusive: bool) -> bool:
  """``atomic_write``, or with ``exclusive`` a creation in one step (False if ``path``
  exists): the temporary file is hard-linked into place, so of two creators at once exactly
  one wins and no reader sees half a file (without hard links: a check and a rename)."""
  directory = os.path.dirname(os.path.abspath(path))
  tmp = None
  try:
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.chmod(tmp, 0o644)
    if exclusive:
      try:
        os.link(tmp, path)
        return True
      except FileExistsError:
        return False
      except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
          raise
        if os.path.exists(path):
          return False
    os.replace(tmp, path)
    tmp = None
    return True
  except OSError as e:
    kept = "its previous version is kept" if os.path.exists(path) else "nothing was written"
    raise UserError(f"cannot write {path} ({_reason(e)}); {kept}") from None
  finally:
    if tmp is not None:
      try:
        os.remove(tmp)
      except OSError:
        pass


def to_jsonable(obj: Any) -> Any:
  """Tuples, numpy scalars and arrays, ConfigDicts -> plain JSON values."""
  if hasattr(obj, "to_dict"):
    obj = obj.to_dict()
  if isinstance(obj, Mapping):
    return {str(k): to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_jsonable(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  if isinstance(obj, np.generic):
    return obj.item()
  return obj


def write_json(path: str, obj: Any) -> None:
  atomic_write(path, (json.dumps(to_jsonable(obj), indent=1) + "\n").encode())


def read_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise UserError(f"{path} is corrupt ({e}); remove it or use another folder") from None
  except OSError as e:    # missing, a folder, unreadable
    raise UserError(f"cannot read {path} ({_reason(e)})") from None


def write_npz(path: str, compressed: bool = False, **arrays) -> None:
  buf = io.BytesIO()
  (np.savez_compressed if compressed else np.savez)(buf, **arrays)
  atomic_write(path, buf.getvalue())


def read_npz(path: str) -> Dict[str, np.ndarray]:
  try:
    with np.load(path) as d:
      return {k: d[k] for k in d.files}
  except Exception as e:  # zipfile / pickle errors of a truncated or foreign file
    raise UserError(f"{path} is corrupt or not an .npz file ({e}); remove it to redo "
                    f"that part of the run") from None


def save_figure(path: str, fig) -> None:
  """Saves a matplotlib figure atomically as PNG and closes it."""
  import matplotlib.pyplot as plt
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110)
  plt.close(fig)
  atomic_write(path, buf.getvalue())


def _flatten(d: Any, prefix: str = "") -> Dict[str, Any]:
  if isinstance(d, Mapping):
    out = {}
    for k, v in d.items():
      out.update(_flatten(v, f"{prefix}{k}."))
    return out if out or not prefix else {prefix[:-1]: {}}
  return {prefix[:-1]: d}


_MISSING = object()    # a setting one side of ``differences`` lacks


def _extends(key: str, extendable: Sequence[str]) -> bool:
  """Whether dotted ``key`` is, or lies under, one of the ``extendable`` settings."""
  return any(key == e or key.startswith(e + ".") for e in extendable)


def differences(old: Mapping, new: Mapping, skip=()) -> Dict[str, tuple]:
  """{dotted.key: (old, new)} for every setting that differs (``skip``: top-level keys)."""
  a = _flatten({k: v for k, v in to_jsonable(old).items() if k not in skip})
  b = _flatten({k: v for k, v in to_jsonable(new).items() if k not in skip})
  return {k: (a.get(k, _MISSING), b.get(k, _MISSING)) for k in sorted(set(a) | set(b))
          if a.get(k, _MISSING) != b.get(k, _MISSING)}


def describe(diff: Dict[str, tuple]) -> str:
  show = lambda v: "(unset)" if not isinstance(v, (str, int, float, bool, list, dict,
                                                   type(None))) else json.dumps(v)
  return "; ".join(f"{k}: {show(a)} -> {show(b)}" for k, (a, b) in diff.items())


def _read_settings(path: str, migrate: Migrate = None) -> Dict[str, Any]:
  """A stored settings file, in the current format (``migrate``); not rewritten."""
  stored = read_json(path)
  if not isinstance(stored, dict):
    raise UserError(f"{path} is corrupt (not a JSON object); remove it or use another folder")
  return to_jsonable(migrate(stored)) if migrate is not None else stored


def claim(folder: str, settings: Mapping, filename: str = SETTINGS_FILE,
          migrate: Migrate = None) -> bool:
  """Makes ``folder`` the home of work done under ``settings``.

  Creates ``folder/filename`` holding ``settings`` if absent (atomically: of two claims at
  once one wins) and returns False; returns True if the folder holds work with equal settings
  (a resume); raises ``SettingsMismatch`` naming each difference otherwise. ``migrate`` maps
  the stored settings to the current format before they are compared (the file is kept)."""
  path = os.path.join(folder, filename)
  settings = to_jsonable(settings)
  if _write(path, (json.dumps(settings, indent=1) + "\n").encode(), True):
    return False
  diff = differences(_read_settings(path, migrate), settings, skip=UNCOMPARED)
  if diff:
    raise SettingsMismatch(f"{folder} holds work made with other settings ({describe(diff)})")
  return True


def check_no_orphan_work(folder: str, names, filename: str = SETTINGS_FILE) -> None:
  """Refuses a folder holding saved work (files ``names``) but no settings file (removed, as
  a corrupt one's message invites): ``claim`` would make it a fresh folder and ignore that
  work but leave it there, and a later start, finding the new settings, would resume it as
  theirs. Call before ``claim``."""
  if os.path.exists(os.path.join(folder, filename)):
    return
  found = [n for n in names if os.path.exists(os.path.join(folder, n))]
  if found:
    raise UserError(f"{folder} holds {', '.join(found)} but no {filename}: the settings that "
                    f"work was made with are unknown; remove the folder (or those files) to "
                    f"start over")


def file_sha256(path: str) -> str:
  """The SHA-256 of a file's bytes: how outputs name the exact files they were made from."""
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def arrays_sha256(*arrays) -> str:
  """A SHA-256 of arrays' dtypes, shapes and values (little-endian bytes, so the same on every
  platform): how ``bind``'s inputs name data that settings name only by file or id."""
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a, np.asarray(a).dtype.newbyteorder("<"))
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def bind(folder: str, inputs: Mapping, filename: str = INPUTS_FILE) -> None:
  """Binds the work in ``folder`` to ``inputs``: what settings name only by reference (a
  model's weights, by SHA-256: retraining into the same checkpoint keeps the name, so without
  this a resume would label the old weights' chunks as the new ones'). Recorded on the first
  start; other inputs raise ``SettingsMismatch``; an input first recorded by a later version
  (e.g. the images' hash) is added by the start that resumes (nothing older can be checked).
  In a multi-process run every process compares (so all stop on a mismatch, none waits in a
  collective for the one that did) and process 0 writes."""
  path = os.path.join(folder, filename)
  inputs = to_jsonable(inputs)
  if os.path.exists(path):
    stored = read_json(path)
    diff = differences(stored, {k: v for k, v in inputs.items() if k in stored})
    if diff:
      raise SettingsMismatch(f"{folder} holds work computed from other inputs "
                             f"({describe(diff)}); use another folder")
    if set(inputs) - set(stored) and _writes():
      write_json(path, {**stored, **inputs})
    return
  if _writes():
    write_json(path, inputs)


def _writes() -> bool:
  """This process writes the run's files: a single-process run, or process 0 of several
  (asked without starting a backend: jax may not even be imported)."""
  jax = sys.modules.get("jax")
  return jax is None or not jax.distributed.is_initialized() or is_writer()


class _Lock:
  """An exclusive ``flock`` on ``folder/.lock`` (naming its holder's pid and command), which
  the kernel drops when the process ends, however it ends: a killed run leaves no stale lock.
  Shared within a process (counted); the last ``release`` removes the file."""
  held: Dict[str, "_Lock"] = {}

  def __init__(self, key: str, path: str, fd: int):
    self.key, self.path, self.fd, self.count = key, path, fd, 1

  @classmethod
  def acquire(cls, folder: str) -> "_Lock":
    key = os.path.realpath(folder)
    if key in cls.held:
      cls.held[key].count += 1
      return cls.held[key]
    if os.path.exists(folder) and not os.path.isdir(folder):
      raise UserError(f"--workdir {folder} is a file, not a folder; choose another --workdir")
    path = os.path.join(folder, LOCK_FILE)
    while True:
      try:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
      except OSError as e:
        raise UserError(f"cannot write in --workdir {folder} ({_reason(e)}); fix its "
                        f"permissions or choose another --workdir") from None
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # A holder that let go meanwhile removed the file we opened: then lock the new one.
        same = os.path.exists(path) and os.path.samestat(os.fstat(fd), os.stat(path))
      except OSError as e:
        holder = _holder(fd) if isinstance(e, BlockingIOError) else None
        os.close(fd)
        if holder is None:
          raise UserError(f"cannot lock {path} ({_reason(e)})") from None
        raise UserError(f"{folder} is in use by another run ({holder}); wait for it to end "
                        f"or choose another --workdir") from None
      if same:
        break
      os.close(fd)
    try:   # the holder's name is a courtesy: the lock holds without it
      os.ftruncate(fd, 0)
      os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": shlex.join(sys.argv)}).encode(),
                0)
    except OSError:
      pass
    cls.held[key] = lock = cls(key, os.path.abspath(path), fd)   # the same after a chdir
    return lock

  def release(self) -> None:
    self.count -= 1
    if self.count > 0 or self.fd is None:
      return
    self.held.pop(self.key, None)
    try:
      os.unlink(self.path)      # while still locked: a waiter re-checks the file it locked
    except OSError:
      pass
    os.close(self.fd)
    self.fd = None


def _holder(fd: int) -> str:
  """'pid N: command' of the lock's holder (written just after it takes the lock)."""
  for _ in range(20):
    try:
      info = json.loads(os.pread(fd, 65536, 0) or b"null")
      return f"pid {int(info['pid'])}: {info['command']}"
    except (ValueError, TypeError, KeyError, OSError):
      time.sleep(0.05)
  return "a process that did not name itself"


def _work_in(folder: str):
  """What the folder holds besides its lock and the temporary files of interrupted writes
  (nothing if it does not exist yet: a multi-process run's other processes take no lock, so
  they may look before process 0 has made it)."""
  if not os.path.isdir(folder):
    return []
  return sorted(f for f in os.listdir(folder) if f != LOCK_FILE and not f.startswith(".tmp-"))


class Workdir:
  """An experiment's output folder, held by this run and claimed by its whole configuration.

  ``Workdir.open(path, config)`` locks the folder and writes ``config.json`` first (or checks
  it on a restart); the experiment then writes everything through ``file``, ``write_json``,
  ``write_npz`` and ``save_figure``, which are atomic. ``finish`` records the settings of a
  completed run where they changed (see ``open``); ``close`` lets the folder go."""

  def __init__(self, path: str, config: Mapping, resumed: bool, lock: Optional[_Lock] = None,
               pending: bool = False, extended: Optional[Dict[str, Any]] = None):
    self.path, self.config, self.resumed, self._lock = path, to_jsonable(config), resumed, lock
    self.pending = pending            # config.json is written when the run completes
    self._extended = extended or {}   # {dotted key: new value} to record then

  @classmethod
  def open(cls, path: str, config: Mapping, new_run: bool = False, log=None,
           migrate: Migrate = None, extendable: Sequence[str] = ()) -> "Workdir":
    """Locks ``path`` and claims it for ``config``; on a mismatch refuses, or with ``new_run``
    uses the first free ``path-2``, ``path-3``, ... (logging which settings differed).

    ``migrate`` maps the stored config.json to the current format before it is compared.
    ``extendable`` names (dotted) settings, each with all settings under it, that the
    experiment checks against its stored work itself (fooling's ``generations``: more extends
    the run, fewer than it holds is refused); config.json takes their new values when the run
    completes (``finish``). A folder holding
    only a config.json of other settings (a start that stopped before any work) takes the new
    one. A folder holding work but no config.json resumes: the work's own settings files
    decide, and config.json is written only when the run completes, so that a start they
    refuse leaves the folder as it was."""
    if not path:
      raise UserError("--workdir must name a folder")
    candidate, n = path, 1
    while True:
      # Process 0 of a multi-process run locks and writes; asked without starting a backend
      # (a refused start must not take memory on a GPU that the holder of the folder uses).
      writer = _writes()
      lock = _Lock.acquire(candidate) if writer else None
      try:
        wd = cls._claim(candidate, config, lock, writer, migrate, tuple(extendable), log)
      except BaseException as e:
        if lock:
          lock.release()
        if not isinstance(e, SettingsMismatch):
          raise
        if not new_run:
          raise SettingsMismatch(f"{e}; pass --new_run to start a new run beside it, or "
                                 f"choose another --workdir") from None
        if candidate == path and log:
          log(f"{e}")
        n += 1
        candidate = f"{path}-{n}"
        continue
      if candidate != path and log and not wd.resumed:
        log(f"starting a new run in {candidate}")
      return wd

  @classmethod
  def _claim(cls, folder, config, lock, writer, migrate, extendable, log) -> "Workdir":
    """``open``'s comparison, made while holding the folder's lock."""
    config = to_jsonable(config)
    path = os.path.join(folder, CONFIG_FILE)
    if not os.path.exists(path):
      if _work_in(folder):
        if log:
          log(f"{folder} holds work but no {CONFIG_FILE}: its own settings files are checked, "
              f"and {CONFIG_FILE} is written when the run completes")
        return cls(folder, config, True, lock, pending=True)
      if writer:
        write_json(path, config)
      return cls(folder, config, False, lock)
    try:
      stored = _read_settings(path, migrate)
    except UserError as e:   # corrupt: refused (or a new run beside it) with a way out
      raise SettingsMismatch(str(e).replace("remove it or use another folder", (
          f"to resume the run remove that file (the run's own settings files are then "
          f"checked, and {CONFIG_FILE} is written again when it completes)"))) from None
    diff = differences(stored, config, skip=UNCOMPARED)
    extended = {k: b for k, (a, b) in diff.items() if _extends(k, extendable)}
    diff = {k: v for k, v in diff.items() if not _extends(k, extendable)}
    if not diff:
      return cls(folder, config, True, lock, extended=extended)
    if _work_in(folder) != [CONFIG_FILE]:
      raise SettingsMismatch(f"{folder} holds work made with other settings ({describe(diff)})")
    if writer:   # only a config, from a start that did no work: nothing can be mislabelled
      write_json(path, config)
    return cls(folder, config, False, lock)

  def finish(self) -> None:
    """The run completed: config.json now names the settings of the folder's work (written if
    it was missing, updated where ``extendable`` settings changed; otherwise left as it is)."""
    if self._lock is None or not (self.pending or self._extended):
      return
    stored = self.config if self.pending else read_json(self.file(CONFIG_FILE))
    # Settings the new config no longer has first (removed, with parents left empty), then
    # the new values: a setting that became a value where it held others is then just set.
    for key in [k for k, v in self._extended.items() if v is _MISSING]:
      *parents, last = key.split(".")
      chain = [stored]
      for p in parents:
        chain.append(chain[-1].get(p) if isinstance(chain[-1], dict) else None)
      if isinstance(chain[-1], dict):
        chain[-1].pop(last, None)
      for parent, p in zip(reversed(chain[:-1]), reversed(parents)):
        if isinstance(parent, dict) and parent.get(p) == {}:
          del parent[p]
    for key, value in self._extended.items():
      if value is not _MISSING:
        *parents, last = key.split(".")
        parent = stored
        for p in parents:
          if not isinstance(parent.get(p), dict):
            parent[p] = {}
          parent = parent[p]
        parent[last] = value
    write_json(self.file(CONFIG_FILE), stored)
    self.pending, self._extended = False, {}

  def close(self) -> None:
    """Lets the folder go (once; also when the object is dropped or the process exits)."""
    lock, self._lock = getattr(self, "_lock", None), None
    if lock is not None:
      lock.release()

  def __del__(self):
    try:
      self.close()
    except Exception:   # at interpreter shutdown
      pass

  def file(self, *parts: str) -> str:
    """The path of a file (or folder) inside the run's folder."""
    return os.path.join(self.path, *parts)

  def _put(self, save, name: str, *args, **kwargs) -> str:
    if is_writer():
      save(self.file(name), *args, **kwargs)
    return self.file(name)

  def write_json(self, name: str, obj: Any) -> str:
    return self._put(write_json, name, obj)

  def write_text(self, name: str, text: str) -> str:
    return self._put(atomic_write, name, text.encode())

  def write_npz(self, name: str, compressed: bool = False, **arrays) -> str:
    return self._put(write_npz, name, compressed, **arrays)

  def save_figure(self, name: str, fig) -> str:
    if not is_writer():
      import matplotlib.pyplot as plt
      plt.close(fig)
    return self._put(save_figure, name, fig)


def is_writer() -> bool:
  """In a multi-process run every process computes the same results; process 0 writes them."""
  import jax
  return jax.process_index() == 0


def save_on_writer(save: Callable[[], Any]) -> None:
  """Runs ``save`` on the writing process and, in a multi-process run, tells every process
  whether it worked: a save that fails on process 0 (a full disk) stops them all, process 0
  with its own error and the others with one line, rather than leaving the others waiting in
  their next collective (or exiting 0 after the last)."""
  import jax
  error = None
  if is_writer():
    try:
      save()
    except BaseException as e:  # re-raised below (Ctrl-C too), once every process knows
      error = e
  ok = error is None
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    ok = bool(np.min(multihost_utils.process_allgather(np.asarray(int(ok), np.int32))))
  if error is not None:
    raise error
  if not ok:
    raise UserError("process 0 could not save the run's work (its message says why); "
                    "every process stops")


def tally_code_versions(codes, unit: str, counts=None) -> list:
  """The code versions (``cli.code_version()`` dicts; None: made before parts recorded one)
  that made a run's parts, in the order they first appear, each with how many ``unit`` it
  made (``counts``: per part, else one each): ``[{commit, dirty, version, <unit>: n}]``,
  unrecorded ones as ``{"commit": None, "unrecorded": True}``. A run resumed across commits
  says so, rather than naming its last."""
  seen = {}
  for code, n in zip(codes, counts if counts is not None else [1] * len(codes)):
    text = json.dumps(dict(code), sort_keys=True) if code is not None else None
    seen[text] = seen.get(text, 0) + int(n)
  return [dict(json.loads(t) if t else dict(commit=None, unrecorded=True), **{unit: n})
          for t, n in seen.items()]


def versions() -> Dict[str, Any]:
  """Library versions, devices, the code's version and the command that ran, written beside
  results (not compared on resume): ``pixeljax.cli.versions``."""
  from pixeljax import cli
  return cli.versions()
