"""A resumable campaign of few-pixel attacks: image selection, chunks saved as they finish.

A campaign attacks many (image, target) rows in *chunks* -- groups of rows attacked in one
call of the batched runner and saved together to ``<folder>/chunk_NNNNN_<key>.npz`` before the
next starts, so a killed run restarts where it stopped. The folder is claimed by the
campaign's settings (``workdir.claim``; format: ``pixeljax.sparse.formats``): what is attacked,
the evaluator's ``Execution`` and the attack key derivation. A restart with other settings is
refused; a restart that leaves the execution to the engine gets the stored one, so its new
chunks are computed exactly as its old ones. Each chunk file name carries a key hashed from
the settings and from the image ids and targets of its rows, and the file stores them; a chunk
is reused only if all of them match. Every attack's randomness depends only on the seed, its
image id and its target, so a resumed run gives exactly the records of an uninterrupted one.
The code may change between starts (a fix, a new feature); each chunk stores the code version
that made it (``code``), and ``code_versions`` lists them, so a run made across commits says so.
So may the machine (a CPU run resumed on an accelerator: a model call's float bits depend on
its batch per device, so a near-tie can fall the other way); each chunk stores where it was
computed (``machine``) and ``machines`` lists them.
"""
import dataclasses
import json
import os
import time
import zlib
from typing import Callable, Mapping, Optional

import jax
import numpy as np

from pixeljax import door, sharding, workdir
from pixeljax.errors import UserError
from pixeljax.progress import Progress
from pixeljax.sparse import formats
from pixeljax.sparse import records as records_lib
from pixeljax.sparse.evaluator import evaluator_for
from pixeljax.sparse.problem import PixelAttackConfig
from pixeljax.sparse.records import AttackRecords
from pixeljax.sparse.runner import attack, make_method, targets_for_all


def select_images(model, images, labels, num_images: int, seed: int, mesh=None) -> np.ndarray:
  """Indices of ``num_images`` correctly classified images, drawn at random with ``seed``
  (all of them, in random order, if fewer are correct). ``model`` as ``attack`` takes it."""
  mesh = sharding.default_mesh() if mesh is None else mesh
  images = door.images_for(model, images)
  labels = door.labels_for(labels, len(images))
  if int(num_images) < 1:
    raise UserError(f"num_images must be >= 1, got {num_images}")
  probs = door.probabilities(evaluator_for(model, mesh=mesh).probabilities(images),
                             door.model_name(model), rows=len(images))
  correct = np.nonzero(probs.argmax(-1) == np.asarray(labels))[0]
  rng = np.random.default_rng(seed)
  return rng.choice(correct, size=min(num_images, len(correct)), replace=False)


def attack_rows(labels, num_classes: int, targeted: bool):
  """(row -> image index, target) of a campaign: one row per image untargeted, K - 1 rows
  (every other class) per image targeted."""
  if targeted:
    return targets_for_all(labels, num_classes)
  return np.arange(len(labels)), np.full(len(labels), -1, np.int32)


def chunk_size(predict, image_shape, rows: int, popsize: int,
               attacks_per_call: Optional[int] = None, mesh=None) -> int:
  """Attacks per chunk (= per runner call): ``attacks_per_call``, or as many as fit in device
  memory, evened out so that all chunks have (nearly) equal size -- their calls then share
  one batch shape and one set of compiled programs (100 rows at 95 per call: 50 + 50, not
  95 + 5) -- and a multiple of the mesh's devices. Measured from memory, it is what fits on
  one device times the devices the attacks are sharded over, and the smallest any process
  measured (every process must cut the same chunks)."""
  devices = sharding.mesh_modes(mesh)["devices"]
  if attacks_per_call is None:
    attacks_per_call = sharding.smallest_on_every_process(
        sharding.attacks_per_call(predict, image_shape, popsize) * devices)
  attacks_per_call = int(np.ceil(attacks_per_call / devices) * devices)
  chunks = max(1, -(-rows // attacks_per_call))
  size = max(1, -(-rows // chunks))
  size = int(np.ceil(size / devices) * devices)
  return size


def stored_settings(folder: str) -> Optional[dict]:
  """The settings a chunk folder was claimed with, as stored (any format), or None."""
  path = os.path.join(folder, workdir.SETTINGS_FILE)
  return workdir.read_json(path) if os.path.exists(path) else None


def run(model, images, labels, image_ids, config: PixelAttackConfig, seed: int,
        folder: str, num_classes: int, *, identity: Optional[Mapping] = None,
        inputs: Optional[Mapping] = None, attacks_per_call: Optional[int] = None, mesh=None,
        execution: Optional[Mapping] = None, desc: str = "attack", progress: bool = True,
        log: Callable[[str], None] = None,
        on_saved: Optional[Callable[[int, int], None]] = None,
        code: Optional[Mapping] = None) -> AttackRecords:
  """Attacks the given images (all K-1 targets of each when ``config.targeted``), chunk by
  chunk, saving each chunk in ``folder``; returns the records of the whole campaign (the
  settings that made them: ``stored_settings(folder)``).

  ``identity`` names what the caller attacks (model, data set); it joins the settings that
  claim ``folder``, so chunks made against another model are never reused. ``inputs`` (e.g.
  the weights' SHA-256) binds the folder to the exact inputs behind those names
  (``workdir.bind``): a resume against retrained weights of the same model is refused.
  ``execution``: ``Execution`` fields to insist on (else the stored run's, else the engine's
  choice). ``on_saved(attacks saved, attacks in all)``: called as chunks are saved. ``code``:
  the code version attacking now (e.g. ``cli.code_version()``), stored in each chunk this call
  saves (``code_versions``)."""
  images, labels, image_ids = map(np.asarray, (images, labels, image_ids))
  mesh = sharding.default_mesh() if mesh is None else mesh
  try:
    stored, unreadable = stored_settings(folder), None
  except UserError as e:      # corrupt: every process must see that too before it says so
    stored, unreadable = None, e
  # (a constant for the corrupt file: its path may differ between processes' mounts)
  check_shared_folder(folder, stored if unreadable is None else {"unreadable": True})
  if unreadable is not None:
    raise unreadable
  before = formats.migrate(stored) if stored else {}
  insist = {**before.get("execution", {}),
            **{k: v for k, v in (execution or {}).items() if v is not None}}
  ev = evaluator_for(model, config.pixels, config.segment_kind, mesh, insist)
  keys = before.get("attack_keys", "per_attack")
  rows, targets = attack_rows(labels, num_classes, config.targeted)
  settings = dict(format=formats.FORMAT, **(identity or {}), attack=dataclasses.asdict(config),
                  execution=dataclasses.asdict(ev.execution), attack_keys=keys, seed=seed,
                  num_classes=num_classes)
  sharding.check_same_on_every_process(
      [settings, inputs, attacks_per_call, workdir.arrays_sha256(images, labels, image_ids)],
      "what they attack (settings, inputs, attacks per call, images, labels or image ids)")
  workdir.claim(folder, settings, migrate=formats.migrate)
  if inputs:
    workdir.bind(folder, inputs)
  basis = formats.chunk_basis(settings, stored)
  first = _first_chunk_rows(folder)
  if first:    # a resumed run keeps its chunk boundaries, however they were sized
    attacks_per_call = first
  else:
    attacks_per_call = chunk_size(ev.full, images.shape[1:], len(rows), config.popsize,
                                  attacks_per_call, mesh)
  key = jax.random.PRNGKey(seed)
  starts = range(0, len(rows), attacks_per_call)
  paths, done_parts = [], {}
  for c, start in enumerate(starts):
    sl = slice(start, start + attacks_per_call)
    k = formats.chunk_key(basis, image_ids[rows[sl]], targets[sl])
    path = os.path.join(folder, f"chunk_{c:05d}_{k}.npz")
    paths.append((sl, path))
    if os.path.exists(path):
      rec = records_lib.load(path)
      if not (np.array_equal(rec.image_id, image_ids[rows[sl]]) and
              np.array_equal(rec.target_class, targets[sl])):
        raise workdir.UserError(f"{path} holds other attacks than its name says; remove it")
      done_parts[c] = rec

  limit = make_method(config, images.shape[1:], num_classes).max_iterations
  gens = max(limit, 1)
  total = len(rows) * gens
  loaded = sum(len(r) for r in done_parts.values())
  bar = Progress(total, desc, initial=loaded * gens, enabled=progress)
  early = lambda rec: int(np.sum(np.asarray(rec.iterations) < limit))
  state = dict(attacks=loaded, queries=0,
               successes=sum(int(np.sum(r.success)) for r in done_parts.values()),
               stopped=sum(early(r) for r in done_parts.values()))

  def report(p=None):
    """``p``: the runner's progress within the chunk being attacked. Counters are the whole
    campaign's (finished chunks plus this one); queries/s counts this start's queries."""
    queries = state["queries"] + (p["queries"] if p else 0)
    stats = {"attacks done": f"{state['attacks'] + (p['finished'] if p else 0)}/{len(rows)}",
             "stopped early": state["stopped"] + (p["stopped"] if p else 0)}
    if state["attacks"]:
      # As the final line and success_rate count it: the returned candidate fools.
      stats["success"] = f"{100 * state['successes'] / state['attacks']:.1f}%"
    stats["queries/s"] = queries / max(1e-9, time.time() - bar.start)
    bar.update(state["attacks"] * gens + (p["work"] if p else 0), stats)

  try:
    if loaded:
      log and log(f"[{desc}] {loaded} attacks loaded from finished chunks in {folder}")
      if on_saved is not None:
        on_saved(loaded, len(rows))
    parts = []
    for c, (sl, path) in enumerate(paths):
      if c in done_parts:
        parts.append(done_parts[c])
        continue
      r = rows[sl]
      t0 = time.time()
      rec = attack(ev, images[r], labels[r], key, config, targets=targets[sl],
                   image_ids=image_ids[r], num_classes=num_classes, mesh=mesh,
                   attacks_per_call=attacks_per_call, progress=report, attack_keys=keys)
      seconds = np.float64(time.time() - t0)
      workdir.save_on_writer(lambda: records_lib.save(path, rec, seconds=seconds,
                                                      **part_stamp(code, mesh)))
      parts.append(rec)
      state["attacks"] += len(rec)
      state["successes"] += int(np.sum(rec.success))
      state["queries"] += int(np.sum(rec.queries))
      state["stopped"] += early(rec)
      report()
      if on_saved is not None:
        on_saved(state["attacks"], len(rows))
  finally:
    bar.close()
  return records_lib.concat(parts) if parts else None


def check_shared_folder(folder: str, stored: Optional[dict] = None) -> None:
  """In a multi-process run, process 0 writes a run's saved parts (chunks, the bound's parts)
  and every process reads them back on a resume: all must see the same folder. On disks that
  are not shared, process 0 would skip work the others redo, and their collectives would stop
  matching (a hang, or mixed results). Every process compares a hash of the ``stored``
  settings and the ``.npz`` names it sees; all raise the same one line, before any work,
  where they differ. Call it before anything in ``folder`` is written."""
  if jax.process_count() < 2:
    return
  from jax.experimental import multihost_utils
  names = sorted(n for n in os.listdir(folder) if n.endswith(".npz")) if os.path.isdir(
      folder) else []
  seen = zlib.crc32(json.dumps([stored, names], sort_keys=True).encode()) & 0x7FFFFFFF
  views = np.asarray(multihost_utils.process_allgather(
      np.asarray([seen, len(names)], np.int32))).reshape(-1, 2)
  if len(set(views[:, 0].tolist())) > 1:
    raise UserError(f"the processes see different work in {folder} (saved parts per process: "
                    f"{views[:, 1].tolist()}): a multi-process run needs its workdir on a disk "
                    f"every process shares")


def _first_chunk_rows(folder: str) -> Optional[int]:
  """Rows in the folder's first chunk (the largest: every chunk but the last has its size),
  or None if it has none yet."""
  if not os.path.isdir(folder):
    return None
  names = sorted(n for n in os.listdir(folder) if n.startswith("chunk_00000_") and
                 n.endswith(".npz"))
  if not names:
    return None
  return len(records_lib.load(os.path.join(folder, names[0])))


def attack_seconds(folder: str) -> Optional[float]:
  """Wall seconds the runner spent on the chunks saved in ``folder``, whichever start of the
  run made them (compile time included); None if a chunk predates this record."""
  total = 0.0
  for name in sorted(os.listdir(folder)):
    if name.startswith("chunk_") and name.endswith(".npz"):
      with np.load(os.path.join(folder, name)) as d:   # reads only this one entry
        if "seconds" not in d.files:
          return None
        total += float(d["seconds"])
  return total


def machine(mesh=None) -> dict:
  """Where a part of a run was computed, beyond its settings: backend, device kind, devices
  and processes, and how many devices its attacks were sharded over. Not a setting (a run
  may move from a CPU to an accelerator between starts), but a model call's float bits depend
  on its batch per device, so a run resumed elsewhere says so (``machines``)."""
  return dict(backend=jax.default_backend(), device_kind=jax.local_devices()[0].device_kind,
              devices=jax.device_count(), processes=jax.process_count(),
              attack_devices=sharding.mesh_modes(mesh)["devices"])


def part_stamp(code: Optional[Mapping], mesh=None) -> dict:
  """The entries a saved part of a run carries about what made it: ``code`` (the code
  version; none when ``code`` is None) and ``machine`` (``machine(mesh)``)."""
  stamp = dict(machine=np.asarray(json.dumps(machine(mesh), sort_keys=True)))
  if code is not None:
    stamp["code"] = np.asarray(json.dumps(dict(code), sort_keys=True))
  return stamp


def _stamps(folder: str, prefix: str, entry: str) -> list:
  out = []
  for name in sorted(os.listdir(folder)):
    if name.startswith(prefix) and name.endswith(".npz"):
      with np.load(os.path.join(folder, name)) as d:   # reads only this one entry
        out.append(json.loads(str(d[entry])) if entry in d.files else None)
  return out


def code_versions(folder: str, prefix: str = "chunk_") -> list:
  """The code versions that made the ``prefix*.npz`` parts saved in ``folder`` (a campaign's
  chunks by default), in the order they first appear, each with how many parts it made:
  ``[{commit, dirty, version, chunks}]``; parts saved without a version (before they stored
  it, or without ``code``) count under ``{"commit": None, "unrecorded": True}``."""
  return workdir.tally_code_versions(_stamps(folder, prefix, "code"), "chunks")


def machines(folder: str, prefix: str = "chunk_") -> list:
  """The machines (``machine``) the ``prefix*.npz`` parts in ``folder`` were computed on, as
  ``code_versions`` counts code: ``[{backend, device_kind, ..., chunks}]``; parts saved
  before they recorded it count under ``{"unrecorded": True}``."""
  return [{k: v for k, v in m.items() if k != "commit"} if m.get("unrecorded") else m
          for m in workdir.tally_code_versions(_stamps(folder, prefix, "machine"), "chunks")]
