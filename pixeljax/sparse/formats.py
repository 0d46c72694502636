"""Stored attack settings, format by format, and the explicit migration to the current one.

A campaign's chunk folder is claimed by its settings (``workdir.claim``) and its chunk files
are named by a hash of them, so a stored run resumes only if today's code rebuilds both.

**Format 1** (until 2026-12; no ``format`` key). ``settings.json`` held one ``attack`` dict
mixing what was attacked with how candidates were evaluated: ``eval_batch``, ``incremental``,
``local_window``, ``eval_devices`` (resolved values) and ``segment_iterations`` (None: the
method's default). Keys added over time are absent from older folders and mean the value all
work had then (``LEGACY_V1``). Chunk files are named by the hash of the stored dict without
the keys that hold their legacy value. Every attack's key was
``fold_in(key, image_id * 1000 + target + 1)`` (``attack_keys = "id_x1000"``).

**Format 2** (``"format": 2``, until 2026-12-06): ``attack`` is ``PixelAttackConfig`` (what
is attacked), ``execution`` the evaluator's ``Execution`` and ``attack_keys`` the key
derivation, each recorded apart; chunk files are named by the hash of the whole dict. Its
``execution`` has no ``strided_window`` (windows stopped at the first strided layer then).

**Format 3** (``"format": 3``, until 2026-12-07): format 2 with ``execution.strided_window``.

**Format 4** (``"format": 4``): format 3 with DE's ``attack.updating`` and
``attack.initialization`` (before: deferred, the paper's start -- ``ADDED_ATTACK``).

``migrate`` maps a stored dict of any format to today's (a resumed run then runs the stored
execution and key derivation, so its new chunks match its old ones bit for bit);
``chunk_basis`` is what a folder's chunk names hash (an older folder's: its stored dict);
``migrate_config`` does the same for an experiment's ``config.json``. Stored files are never
rewritten.
"""
import hashlib
import json
from typing import Any, Dict, Mapping, Optional

import numpy as np

from pixeljax.sparse.evaluator import SEGMENT
from pixeljax.workdir import to_jsonable

FORMAT = 4
# Attack settings added since format 3, with the value every earlier run had.
ADDED_ATTACK = {"updating": "deferred", "initialization": "paper"}
# Format 1's execution switches -> the ``Execution`` fields they became.
EXECUTION_V1 = {"eval_batch": "call_size", "incremental": "incremental",
                "local_window": "window", "eval_devices": "devices",
                "segment_iterations": "segment"}
# A format-1 folder lacking a switch was made before it existed, with this value: a model call
# held all of a step's candidates (eval_batch 0), on the full net, on one device.
LEGACY_V1 = {"eval_batch": 0, "incremental": False, "local_window": False, "eval_devices": 1}


def version(stored: Mapping) -> int:
  return int(stored.get("format", 1))


def migrate(stored: Mapping) -> Dict[str, Any]:
  """A chunk folder's stored settings as today's format."""
  stored = to_jsonable(stored)
  if version(stored) == FORMAT:
    return stored
  if version(stored) == 3:
    return dict(stored, format=FORMAT, attack={**ADDED_ATTACK, **stored["attack"]})
  if version(stored) == 2:
    return migrate(dict(stored, format=3,
                        execution={"strided_window": False, **stored["execution"]}))
  attack = dict(stored["attack"])
  execution = {}
  for old, new in EXECUTION_V1.items():
    execution[new] = attack.pop(old, LEGACY_V1.get(old))
  if execution["segment"] is None:
    execution["segment"] = SEGMENT[attack.get("method", "de")]
  rest = {k: v for k, v in stored.items() if k != "attack"}
  return migrate(dict(format=2, **rest, attack=attack, execution=execution,
                      attack_keys="id_x1000"))


def chunk_basis(settings: Mapping, stored: Optional[Mapping]) -> Dict[str, Any]:
  """What a chunk file name hashes: an older format's folder its stored dict, as it was
  hashed then (format 1: without its legacy-valued keys); today's folders today's settings."""
  if stored is not None and version(stored) in (2, 3):
    return to_jsonable(stored)
  if stored is not None and version(stored) == 1:
    out = to_jsonable(stored)
    attack = out.get("attack", {})
    for key, value in LEGACY_V1.items():
      if key in attack and attack[key] == value:
        del attack[key]
    return out
  return to_jsonable(settings)


def chunk_key(basis: Mapping, image_ids, targets) -> str:
  """A short hash of everything that determines a chunk's records."""
  h = hashlib.sha256(json.dumps(basis, sort_keys=True).encode())
  h.update(np.asarray(image_ids, np.int64).tobytes())
  h.update(np.asarray(targets, np.int64).tobytes())
  return h.hexdigest()[:16]


def migrate_config(stored: Mapping) -> Dict[str, Any]:
  """A one-pixel experiment's stored ``config.json`` as today's: format 1's execution
  switches leave ``attack`` (they are chosen by the engine, and recorded per chunk folder,
  where they are compared); attack settings added since take the value it ran with
  (``ADDED_ATTACK``); a config written before imported models (``model_preprocess``,
  ``model_softmax``, ...: ``models.files.config_settings``) named a zoo model, which has
  them unset."""
  from pixeljax.models import files
  stored = to_jsonable(stored)
  if "model" in stored:
    stored = {**files.config_defaults(), **stored}
  attack = stored.get("attack")
  if not isinstance(attack, dict):
    return stored
  attack = {k: v for k, v in {**ADDED_ATTACK, **attack}.items() if k not in EXECUTION_V1}
  return {**stored, "attack": attack}
