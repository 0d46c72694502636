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


STORE_DTYPES = ("float32", "bfloat16", "int8", "int4")
# A quantized kernel is stored as its integers and one float32 scale per output channel (last
# axis), under these two keys per dtype; int4 packs two values per byte along that axis.
_LEVELS = {"int8": 127, "int4": 7}
_KEYS = {d: (f"{d}_values", f"{d}_scale") for d in _LEVELS}


def _floating(a) -> bool:
  return jnp.issubdtype(a.dtype, jnp.floating)   # bfloat16 too (numpy's test says no)


def _quantize(a: np.ndarray, dtype: str):
  """A kernel (ndim >= 2) as symmetric integers per output channel (its last axis: HWIO and
  (in, out) kernels), ``a ~ q * scale`` with ``|q| <= 127`` (int8) or ``7`` (int4, packed two
  to a byte); other arrays (biases, batch-norm statistics: a tiny share of a net) stay as
  they are."""
  if a.ndim < 2 or a.size == 0 or not _floating(a):
    return a
  a = a.astype(np.float32)
  if not np.all(np.isfinite(a)):
    raise CheckpointError(f"{dtype} storage needs finite weights; a {a.shape} kernel holds "
                          f"NaN or infinity")
  levels = _LEVELS[dtype]
  top = np.max(np.abs(a.reshape(-1, a.shape[-1])), axis=0)
  scale = np.where(top > 0, top / levels, 1.0).astype(np.float32)
  q = np.clip(np.rint(a / scale), -levels, levels).astype(np.int8)
  values, scales = _KEYS[dtype]
  return {values: _pack4(q) if dtype == "int4" else q, scales: scale}


def _pack4(q: np.ndarray) -> np.ndarray:
  """Signed 4-bit values (..., n) as uint8 (..., ceil(n / 2)): even channels in the low
  nibble, odd ones in the high (a zero pads an odd n)."""
  if q.shape[-1] % 2:
    q = np.concatenate([q, np.zeros(q.shape[:-1] + (1,), q.dtype)], axis=-1)
  nibbles = q.astype(np.uint8) & 0xF
  return nibbles[..., 0::2] | (nibbles[..., 1::2] << 4)


def _unpack4(packed: np.ndarray, n: int) -> np.ndarray:
  """``_pack4``'s inverse: the first ``n`` signed values along the last axis, as int8."""
  packed = np.asarray(packed, np.uint8)
  nibbles = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(packed.shape[:-1] + (-1,))
  signed = nibbles.astype(np.int8)
  return np.where(signed > 7, signed - 16, signed)[..., :n]


def _dequantize(state, template, dtype: str):
  """``state`` with its ``dtype``-stored arrays back in float32: wherever the model
  (``template``) has an array and the file the two-key dict ``_quantize`` writes."""
  if isinstance(template, dict):
    if not isinstance(state, dict):
      return state
    return {k: _dequantize(state[k], template[k], dtype) if k in template else state[k]
            for k in state}
  values, scales = _KEYS[dtype]
  if isinstance(state, dict) and set(state) == {values, scales}:
    scale = np.asarray(state[scales], np.float32)
    q = state[values]
    if dtype == "int4":
      q = _unpack4(q, scale.shape[-1])
    return np.asarray(q, np.float32) * scale
  return state


def _encode(variables, dtype: Optional[str]) -> bytes:
  tree = jax.tree_util.tree_map(np.asarray, variables)
  if dtype in _LEVELS:
    tree = jax.tree_util.tree_map(lambda a: _quantize(a, dtype), tree)
  elif dtype not in (None, "float32"):
    tree = jax.tree_util.tree_map(lambda a: a.astype(dtype) if _floating(a) else a, tree)
  return flax.serialization.msgpack_serialize(flax.serialization.to_state_dict(tree))


def _decode(data: bytes, stored_dtype: Optional[str], template: Any, path: str):
  try:
    state = flax.serialization.msgpack_restore(data)
  except Exception as e:  # msgpack raises several types for garbage
    raise CheckpointError(f"checkpoint {path} is corrupt: {e}") from e
  template_state = flax.serialization.to_state_dict(template)
  if stored_dtype in _LEVELS:
    state = _dequantize(state, template_state, stored_dtype)
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
  quarter; the rest float32), ``"int4"`` as 4-bit integers (levels -7..7) packed two to a
  byte (an eighth). ``load`` returns the template's dtype. The stored values are the
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
  try:
    os.replace(prefix + PENDING, prefix + ".json")
  except FileNotFoundError:     # a reader in between finished this save (the new weights)
    if read_metadata(prefix).get("sha256") != meta["sha256"]:
      raise
  return prefix + ".msgpack"


PENDING = ".json.pending"


def _finish_interrupted_save(prefix: str) -> None:
  """A save killed after writing the msgpack leaves ``.json.pending`` (the new metadata); if
  its SHA-256 is the msgpack's, the save is finished here. Otherwise the msgpack is still the
  old one: the pending file belongs to a save killed earlier or to one still writing (another
  process), which a reader cannot tell apart, so it is left alone (the next save replaces
  it); the old pair stays whole."""
  pending = prefix + PENDING
  if not os.path.exists(pending):
    return
  try:
    with open(pending) as f:
      sha = json.load(f).get("sha256")
    with open(prefix + ".msgpack", "rb") as f:
      matches = hashlib.sha256(f.read()).hexdigest() == sha
  except (OSError, ValueError, AttributeError):   # JSON and UTF-8 errors are ValueErrors
    matches = False
  if matches:
    try:
      os.replace(pending, prefix + ".json")
    except OSError:   # finished by the writer meanwhile, or a read-only folder
      pass


def read_metadata(prefix: str) -> dict:
  _finish_interrupted_save(prefix)
  path = prefix + ".json"
  if not os.path.exists(path):
    raise CheckpointError(f"checkpoint metadata {path} does not exist")
  try:
    with open(path, encoding="utf-8") as f:
      meta = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CheckpointError(f"checkpoint metadata {path} is corrupt: {e}") from None
  if not isinstance(meta, dict):
    raise CheckpointError(f"checkpoint metadata {path} is corrupt: a JSON "
                          f"{type(meta).__name__}, not an object")
  return meta


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
        + "".join(f" ({d}-stored, but its metadata does not say stored_dtype {d})"
                  for d, keys in _KEYS.items() if set(state) == set(keys)))
  else:
    if np.shape(state) != np.shape(template):
      raise CheckpointError(
          f"checkpoint {path} does not match the model at '{where}': shape "
          f"{np.shape(state)} in the file, {np.shape(template)} in the model")
