"""Save and load model variables with their metadata: ``<name>.msgpack`` + ``<name>.json``.

Variables are serialised with ``flax.serialization`` (msgpack); the JSON holds what a
researcher needs to trust a checkpoint (architecture, data set, preprocessing, measured
accuracy, source, licence) and a SHA-256 of the msgpack bytes so that a truncated or
corrupted file is named as such instead of failing deep inside msgpack.

The two files change together: ``save`` writes the new metadata to ``<name>.json.pending``
first, then the msgpack, then renames the pending file over the JSON (each write atomic). A
kill between the last two steps leaves the new weights beside the old JSON; the pending file's
SHA-256 matches them, so reading the checkpoint finishes the save instead of calling it
corrupt.
"""
import hashlib
import json
import os
from typing import Any, Optional, Tuple

import flax.serialization
import jax
import numpy as np

from pixeljax.errors import UserError
from pixeljax.workdir import atomic_write


class CheckpointError(UserError):
  """A checkpoint is missing, corrupt, or does not fit the model it is loaded into."""


def save(prefix: str, variables: Any, metadata: Optional[dict] = None,
         dtype: Optional[str] = None) -> str:
  """Writes ``prefix.msgpack`` and ``prefix.json``; returns the msgpack path.

  ``dtype`` (e.g. ``"bfloat16"``) casts floating arrays before writing, to keep big nets small;
  ``load`` casts them back to the template's dtype.
  """
  tree = jax.tree_util.tree_map(np.asarray, variables)
  if dtype is not None:
    tree = jax.tree_util.tree_map(
        lambda a: a.astype(dtype) if np.issubdtype(a.dtype, np.floating) else a, tree)
  data = flax.serialization.msgpack_serialize(flax.serialization.to_state_dict(tree))
  meta = dict(metadata or {})
  meta["sha256"] = hashlib.sha256(data).hexdigest()
  meta["stored_dtype"] = dtype or "float32"
  meta["num_params"] = int(sum(np.size(a) for a in jax.tree_util.tree_leaves(
      tree.get("params", tree) if isinstance(tree, dict) else tree)))
  atomic_write(prefix + PENDING, json.dumps(meta, indent=1, sort_keys=True).encode())
  atomic_write(prefix + ".msgpack", data)
  os.replace(prefix + PENDING, prefix + ".json")
  return prefix + ".msgpack"


PENDING = ".json.pending"


def _finish_interrupted_save(prefix: str) -> None:
  """A save killed after writing the msgpack leaves ``.json.pending`` (the new metadata); if
  its SHA-256 is the msgpack's, the save is finished. Otherwise the pending file belongs to a
  save killed earlier (the msgpack is still the old one) and is dropped."""
  pending = prefix + PENDING
  if not os.path.exists(pending):
    return
  try:
    with open(pending) as f:
      sha = json.load(f).get("sha256")
    with open(prefix + ".msgpack", "rb") as f:
      matches = hashlib.sha256(f.read()).hexdigest() == sha
  except (OSError, json.JSONDecodeError, AttributeError):
    matches = False
  try:
    if matches:
      os.replace(pending, prefix + ".json")
    else:
      os.remove(pending)
  except OSError:   # a read-only folder: leave it; load reports what it finds
    pass


def read_metadata(prefix: str) -> dict:
  _finish_interrupted_save(prefix)
  path = prefix + ".json"
  if not os.path.exists(path):
    raise CheckpointError(f"checkpoint metadata {path} does not exist")
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise CheckpointError(f"checkpoint metadata {path} is corrupt: {e}") from e


def load(prefix: str, template: Any) -> Tuple[Any, dict]:
  """Restores variables shaped like ``template``; returns ``(variables, metadata)``.

  Raises ``CheckpointError`` naming the problem: missing file, checksum mismatch (corrupt),
  unreadable bytes, or a tree/shape that does not match the template (wrong model).
  """
  path = prefix + ".msgpack"
  if not os.path.exists(path):
    raise CheckpointError(f"checkpoint {path} does not exist")
  meta = read_metadata(prefix)
  with open(path, "rb") as f:
    data = f.read()
  if "sha256" in meta and hashlib.sha256(data).hexdigest() != meta["sha256"]:
    raise CheckpointError(f"checkpoint {path} is corrupt: its SHA-256 does not match "
                          f"the one recorded in {prefix}.json")
  try:
    state = flax.serialization.msgpack_restore(data)
  except Exception as e:  # msgpack raises several types for garbage
    raise CheckpointError(f"checkpoint {path} is corrupt: {e}") from e
  _check_structure(state, flax.serialization.to_state_dict(template), path)
  restored = flax.serialization.from_state_dict(template, state)
  restored = jax.tree_util.tree_map(lambda t, a: np.asarray(a).astype(np.asarray(t).dtype),
                                    template, restored)
  return restored, meta


def _check_structure(state, template, path, where=""):
  if isinstance(template, dict):
    if not isinstance(state, dict) or set(state) != set(template):
      got = sorted(state) if isinstance(state, dict) else type(state).__name__
      raise CheckpointError(
          f"checkpoint {path} does not match the model at '{where or '/'}': expected keys "
          f"{sorted(template)}, found {got}")
    for k in template:
      _check_structure(state[k], template[k], path, f"{where}/{k}")
  else:
    if np.shape(state) != np.shape(template):
      raise CheckpointError(
          f"checkpoint {path} does not match the model at '{where}': shape "
          f"{np.shape(state)} in the file, {np.shape(template)} in the model")
