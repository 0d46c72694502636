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
import jax.numpy as jnp
import numpy as np

from pixeljax.errors import UserError
from pixeljax.workdir import atomic_write


class CheckpointError(UserError):
  """A checkpoint is missing, corrupt, or does not fit the model it is loaded into."""


STORE_DTYPES = ("float32", "bfloat16", "int8")
# An int8-stored array: its integers and one float32 scale per output channel (last axis).
_INT8, _SCALE = "int8_values", "int8_scale"


def _floating(a) -> bool:
  return jnp.issubdtype(a.dtype, jnp.floating)   # bfloat16 too (numpy's test says no)


def _int8(a: np.ndarray):
  """A kernel (ndim >= 2) as symmetric int8 per output channel (its last axis: HWIO and
  (in, out) kernels), ``a ~ q * scale``; other arrays (biases, batch-norm statistics: a tiny
  share of a net) stay as they are."""
  if a.ndim < 2 or a.size == 0 or not _floating(a):
    return a
  a = a.astype(np.float32)
  if not np.all(np.isfinite(a)):
    raise CheckpointError(f"int8 storage needs finite weights; a {a.shape} kernel holds NaN or "
                          f"infinity")
  top = np.max(np.abs(a.reshape(-1, a.shape[-1])), axis=0)
  scale = np.where(top > 0, top / 127.0, 1.0).astype(np.float32)
  q = np.clip(np.rint(a / scale), -127, 127).astype(np.int8)
  return {_INT8: q, _SCALE: scale}


def _from_int8(state, template):
  """``state`` with its int8-stored arrays back in float32: wherever the model (``template``)
  has an array and the file the two-key dict ``_int8`` writes."""
  if isinstance(template, dict):
    if not isinstance(state, dict):
      return state
    return {k: _from_int8(state[k], template[k]) if k in template else state[k] for k in state}
  if isinstance(state, dict) and set(state) == {_INT8, _SCALE}:
    return np.asarray(state[_INT8], np.float32) * np.asarray(state[_SCALE], np.float32)
  return state


def _encode(variables, dtype: Optional[str]) -> bytes:
  tree = jax.tree_util.tree_map(np.asarray, variables)
  if dtype == "int8":
    tree = jax.tree_util.tree_map(_int8, tree)
  elif dtype not in (None, "float32"):
    tree = jax.tree_util.tree_map(lambda a: a.astype(dtype) if _floating(a) else a, tree)
  return flax.serialization.msgpack_serialize(flax.serialization.to_state_dict(tree))


def _decode(data: bytes, stored_dtype: Optional[str], template: Any, path: str):
  try:
    state = flax.serialization.msgpack_restore(data)
  except Exception as e:  # msgpack raises several types for garbage
    raise CheckpointError(f"checkpoint {path} is corrupt: {e}") from e
  template_state = flax.serialization.to_state_dict(template)
  if stored_dtype == "int8":
    state = _from_int8(state, template_state)
  _check_structure(state, template_state, path)
  restored = flax.serialization.from_state_dict(template, state)
  return jax.tree_util.tree_map(lambda t, a: np.asarray(a).astype(np.asarray(t).dtype),
                                template, restored)


def as_stored(variables: Any, dtype: Optional[str] = None) -> Any:
  """``variables`` as ``load`` returns them after ``save(..., dtype=dtype)``: the net a
  checkpoint holds, to measure before it is written."""
  _check_dtype(dtype)
  return _decode(_encode(variables, dtype), dtype, variables, "(in memory)")


def _check_dtype(dtype):
  if dtype not in (None,) + STORE_DTYPES:
    raise UserError(f"checkpoint dtype must be one of {', '.join(STORE_DTYPES)}, got {dtype!r}")


def save(prefix: str, variables: Any, metadata: Optional[dict] = None,
         dtype: Optional[str] = None) -> str:
  """Writes ``prefix.msgpack`` and ``prefix.json``; returns the msgpack path.

  ``dtype`` keeps big nets small: ``"bfloat16"`` casts floating arrays before writing (half
  the bytes), ``"int8"`` stores kernels as int8 with a float32 scale per output channel (a
  quarter; the rest float32). ``load`` returns the template's dtype. The stored values are the
  net from then on: measure a checkpoint's accuracy on what ``load`` returns.
  """
  _check_dtype(dtype)
  data = _encode(variables, dtype)
  meta = dict(metadata or {})
  meta["sha256"] = hashlib.sha256(data).hexdigest()
  meta["stored_dtype"] = dtype or "float32"
  meta["num_params"] = int(sum(np.size(a) for a in jax.tree_util.tree_leaves(
      variables.get("params", variables) if isinstance(variables, dict) else variables)))
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
  return _decode(data, meta.get("stored_dtype"), template, path), meta


def _check_structure(state, template, path, where=""):
  if isinstance(template, dict):
    if not isinstance(state, dict) or set(state) != set(template):
      got = sorted(state) if isinstance(state, dict) else type(state).__name__
      raise CheckpointError(
          f"checkpoint {path} does not match the model at '{where or '/'}': expected keys "
          f"{sorted(template)}, found {got}")
    for k in template:
      _check_structure(state[k], template[k], path, f"{where}/{k}")
  elif isinstance(state, dict):
    raise CheckpointError(
        f"checkpoint {path} does not match the model at '{where}': the file has a dict (keys "
        f"{sorted(state)}) where the model has an array"
        + (" (int8-stored, but its metadata does not say stored_dtype int8)"
           if set(state) == {_INT8, _SCALE} else ""))
  else:
    if np.shape(state) != np.shape(template):
      raise CheckpointError(
          f"checkpoint {path} does not match the model at '{where}': shape "
          f"{np.shape(state)} in the file, {np.shape(template)} in the model")
