"""Attack records: one row per attack (image x target), numpy arrays, saved as ``.npz``.

Records are what every method of the batched runner returns and what the metrics read; they
carry the image id and target of every row, so a file of records says which attacks it holds.
"""
from typing import Sequence

import jax
import numpy as np
from flax import struct

from pixeljax import workdir


@struct.dataclass
class AttackRecords:
  """One row per attack (numpy arrays after ``attack``)."""
  image_id: np.ndarray            # (A,) caller's id of the image
  true_class: np.ndarray          # (A,)
  target_class: np.ndarray        # (A,) -1 when untargeted
  adversarial_class: np.ndarray   # (A,) top-1 of the perturbed image
  success: np.ndarray             # (A,) bool
  probs: np.ndarray               # (A, K) probabilities of the perturbed image
  prior_probs: np.ndarray         # (A, K) probabilities of the clean image
  pixels: np.ndarray              # (A, k, 2 + C) decoded (x, y, colour...)
  queries: np.ndarray             # (A,) candidates scored by the model (queries)
  success_query: np.ndarray       # (A,) query at which a candidate first fooled; -1: never
  #   (set whenever ``success``: in the rare near-tie where only the full net's final check says
  #   the reported candidate fools, the attack's last query, an upper bound)
  iterations: np.ndarray          # (A,) steps after initialisation (DE: generations;
  #                                 with immediate updating: trials, popsize a generation)

  def __len__(self) -> int:
    return len(self.image_id)

  @property
  def already_misclassified(self) -> np.ndarray:
    """Per attack: the net misclassified the clean image (``prior_probs``), so there was
    nothing to fool; the metrics leave these attacks out and count them."""
    prior = np.asarray(self.prior_probs)
    if not len(prior):
      return np.zeros(0, bool)
    return prior.argmax(-1) != np.asarray(self.true_class)

  def as_dict(self) -> dict:
    return {name: getattr(self, name) for name in self.__dataclass_fields__}


FIELDS = tuple(AttackRecords.__dataclass_fields__)


def save(path: str, records: AttackRecords, **extra) -> None:
  """Atomic ``.npz`` with every field (and ``extra`` arrays, e.g. a chunk's key)."""
  workdir.write_npz(path, **records.as_dict(), **extra)


def load(path: str) -> AttackRecords:
  d = workdir.read_npz(path)
  missing = [f for f in FIELDS if f not in d]
  if missing:
    raise workdir.UserError(f"{path} is not a records file (missing {', '.join(missing)})")
  return AttackRecords(**{f: d[f] for f in FIELDS})


def concat(parts: Sequence[AttackRecords]) -> AttackRecords:
  return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *parts)
