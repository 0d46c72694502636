"""A run's folder: its settings written first, a mismatched restart refused, atomic writes.

Every piece of resumable work (attack chunks, a MAP-Elites archive, a training state) lives
in a folder that is *claimed* by the settings that made it: ``claim`` writes them to
``settings.json`` the first time and, on every later start, compares them with the settings
asked for now. A difference raises ``SettingsMismatch`` naming each differing setting, so a
resumed run can never reuse work done under other settings and label it with the new ones.

``Workdir.open`` does the same for an experiment's ``--workdir`` (its whole configuration in
``config.json``) and, when asked (``new_run=True``), starts a fresh sibling folder instead of
refusing. Settings under the top-level key ``runtime`` (attacks per call, sharding, ...) are
recorded but not compared: they change how fast work is done, never its result.

All files are written through a temporary file and a rename, so a killed run never leaves a
half-written file behind.
"""
import hashlib
import io
import json
import os
import tempfile
from typing import Any, Dict, Mapping

import numpy as np

from pixeljax.errors import UserError

CONFIG_FILE = "config.json"
SETTINGS_FILE = "settings.json"
INPUTS_FILE = "inputs.json"
UNCOMPARED = ("runtime",)
# Settings added after work was already stored, with the value that earlier work was made
# with: a stored claim without the key compares as if it held that value -- or as the new
# claim's None, i.e. "resolve it when the run starts" (a run's config.json): the resolved
# value is what each chunk folder's claim then compares. (So an older run resumes where its
# defaults resolve as they did then, and otherwise needs that value asked for explicitly,
# e.g. --config.attack.incremental=False.)
# Before eval_batch existed, a call evaluated all its candidates in one model call: 0.
# Before local_window existed, no attack ran its net on windows: False.
# Before eval_devices existed, no run dealt its model calls to several devices: 1.
LEGACY = {"attack.incremental": False, "attack.eval_batch": 0, "attack.local_window": False,
          "attack.eval_devices": 1}


class SettingsMismatch(UserError):
  """Work in a folder was done under other settings than the ones asked for now."""


def atomic_write(path: str, data: bytes) -> None:
  """Writes ``data`` via a temporary file in the same folder and a rename."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


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
  except json.JSONDecodeError as e:
    raise UserError(f"{path} is corrupt ({e}); remove it or use another folder") from None


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


def differences(old: Mapping, new: Mapping, skip=()) -> Dict[str, tuple]:
  """{dotted.key: (old, new)} for every setting that differs (``skip``: top-level keys);
  ``old`` lacking a ``LEGACY`` key (next to its siblings) counts as holding its legacy value,
  or None where ``new`` leaves it to be resolved (None)."""
  a = _flatten({k: v for k, v in to_jsonable(old).items() if k not in skip})
  b = _flatten({k: v for k, v in to_jsonable(new).items() if k not in skip})
  for k, v in LEGACY.items():
    if k not in a and k.split(".")[0] not in skip and any(x.startswith(k.rsplit(".", 1)[0] + ".")
                                                          for x in a):
      a[k] = None if k in b and b[k] is None else v
  missing = object()
  return {k: (a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b))
          if a.get(k, missing) != b.get(k, missing)}


def without_legacy(settings: Mapping) -> Dict[str, Any]:
  """``settings`` without the ``LEGACY`` keys that hold their legacy value: what work made
  before those settings existed was keyed by (chunk file names hash this)."""
  out = to_jsonable(settings)       # fresh dicts: safe to edit
  for key, value in LEGACY.items():
    *path, last = key.split(".")
    d = out
    for p in path:
      d = d.get(p) if isinstance(d, dict) else None
    if isinstance(d, dict) and last in d and d[last] == value:
      del d[last]
  return out


def describe(diff: Dict[str, tuple]) -> str:
  show = lambda v: "(unset)" if not isinstance(v, (str, int, float, bool, list, dict,
                                                   type(None))) else json.dumps(v)
  return "; ".join(f"{k}: {show(a)} -> {show(b)}" for k, (a, b) in diff.items())


def claim(folder: str, settings: Mapping, filename: str = SETTINGS_FILE) -> bool:
  """Makes ``folder`` the home of work done under ``settings``.

  Writes ``settings`` to ``folder/filename`` if absent and returns False; returns True if the
  folder already holds work with equal settings (a resume); raises ``SettingsMismatch``
  naming every differing setting otherwise."""
  path = os.path.join(folder, filename)
  settings = to_jsonable(settings)
  if os.path.exists(path):
    diff = differences(read_json(path), settings, skip=UNCOMPARED)
    if diff:
      raise SettingsMismatch(f"{folder} holds work made with other settings ({describe(diff)})")
    return True
  write_json(path, settings)
  return False


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
  """Binds the work in ``folder`` to ``inputs``: what it is computed from that its settings
  name only by reference (a model's weights, by the checkpoint's SHA-256). Settings say
  ``model=mnist_lenet``; retraining into the same checkpoint keeps the name, so without this a
  resume would label the old weights' chunks as the new ones'. Recorded on the first start;
  a start with other inputs raises ``SettingsMismatch``. A folder from before inputs were
  recorded is bound to the ones it resumes with (nothing older can be checked); likewise an
  input recorded only since (e.g. the images' hash) is added by the start that resumes."""
  path = os.path.join(folder, filename)
  inputs = to_jsonable(inputs)
  if os.path.exists(path):
    stored = read_json(path)
    diff = differences(stored, {k: v for k, v in inputs.items() if k in stored})
    if diff:
      raise SettingsMismatch(f"{folder} holds work computed from other inputs "
                             f"({describe(diff)}); use another folder")
    if set(inputs) - set(stored):
      write_json(path, {**stored, **inputs})
    return
  write_json(path, inputs)


class Workdir:
  """An experiment's output folder, claimed by its whole configuration.

  ``Workdir.open(path, config)`` writes ``config.json`` first (or checks it on a restart);
  the experiment then writes everything through ``file``, ``write_json``, ``write_npz`` and
  ``save_figure``, which are atomic."""

  def __init__(self, path: str, config: Mapping, resumed: bool):
    self.path = path
    self.config = to_jsonable(config)
    self.resumed = resumed

  @classmethod
  def open(cls, path: str, config: Mapping, new_run: bool = False,
           log=None) -> "Workdir":
    """Claims ``path`` for ``config``; on a mismatch refuses, or with ``new_run`` uses the
    first free ``path-2``, ``path-3``, ... (logging which settings differed)."""
    if not path:
      raise UserError("--workdir must name a folder")
    candidate, n = path, 1
    while True:
      try:
        try:
          resumed = claim(candidate, config, CONFIG_FILE)
        except SettingsMismatch:
          if not _holds_only_config(candidate):
            raise
          # A start that stopped before doing any work (e.g. at a bad model name) leaves only
          # its config behind: nothing can be mislabelled, so the new settings take its place.
          os.remove(os.path.join(candidate, CONFIG_FILE))
          resumed = claim(candidate, config, CONFIG_FILE)
        if candidate != path and log:
          log(f"starting a new run in {candidate}")
        return cls(candidate, config, resumed)
      except SettingsMismatch as e:
        if not new_run:
          raise SettingsMismatch(f"{e}; pass --new_run to start a new run beside it, or "
                                 f"choose another --workdir") from None
        if candidate == path and log:
          log(f"{e}")
        n += 1
        candidate = f"{path}-{n}"

  def file(self, *parts: str) -> str:
    """The path of a file (or folder) inside the run's folder."""
    return os.path.join(self.path, *parts)

  def write_json(self, name: str, obj: Any) -> str:
    if is_writer():
      write_json(self.file(name), obj)
    return self.file(name)

  def write_text(self, name: str, text: str) -> str:
    if is_writer():
      atomic_write(self.file(name), text.encode())
    return self.file(name)

  def write_npz(self, name: str, compressed: bool = False, **arrays) -> str:
    if is_writer():
      write_npz(self.file(name), compressed, **arrays)
    return self.file(name)

  def save_figure(self, name: str, fig) -> str:
    if is_writer():
      save_figure(self.file(name), fig)
    else:
      import matplotlib.pyplot as plt
      plt.close(fig)
    return self.file(name)


def is_writer() -> bool:
  """In a multi-process run every process computes the same results; process 0 writes them."""
  import jax
  return jax.process_index() == 0


def _holds_only_config(folder: str) -> bool:
  if not os.path.isdir(folder):
    return False
  return [f for f in os.listdir(folder) if not f.startswith(".tmp-")] == [CONFIG_FILE]


def versions() -> Dict[str, Any]:
  """Library versions and devices, written beside results (not compared on resume)."""
  import importlib.metadata as md
  import jax
  out = {}
  for pkg in ("pixeljax", "jax", "jaxlib", "flax", "numpy"):
    try:
      out[pkg] = md.version(pkg)
    except md.PackageNotFoundError:
      pass
  out["backend"] = jax.default_backend()
  out["devices"] = jax.device_count()
  out["processes"] = jax.process_count()
  out["xla_flags"] = os.environ.get("XLA_FLAGS", "")   # some change the float results
  # The nets pin HIGHEST (PixelClassifier.logits); other products follow this global default.
  out["matmul_precision"] = jax.config.jax_default_matmul_precision
  return out
