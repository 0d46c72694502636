"""pixeljax: evolutionary attacks on image classifiers, as jit-compiled JAX programs.

Data flows one way: ``data.load`` -> ``models.load`` -> an attack (a method's pytree state,
``init`` / ``ask`` / ``tell``, vmapped over attacks) -> records -> ``metrics``. Nothing heavy
happens at import time: no weights, data or compilation until a function is called.

  pixeljax.sparse      the few-pixel attacks (problem, methods, evaluator, runner, campaign)
  pixeljax.fooling     fooling images (CPPN and direct encodings, gradient ascent, driver)
  pixeljax.evolution   generic engines: differential evolution, MAP-Elites
  pixeljax.metrics     the papers' numbers: metrics.one_pixel, metrics.fooling
  pixeljax.workdir     a run's folder: settings claimed first, atomic writes

Glossary (each name means one thing):
  attack       one (image, target) row searched for a fooling candidate; target -1: untargeted
  candidate    k pixels (x, y, colour...) written into an attack's image, as a vector
  query        one candidate scored by the model: what budgets (``max_queries``) and records'
               ``queries`` count
  model call   one batch the model runs; ``Execution.call_size`` queries each on CPU
  scores       what the model says about a batch of candidates (``Scores``: loss, fooled,
               reached, probs)
  reached      a candidate reaches the paper's stopping threshold (p_true < 5%, p_target > 50%)
  stop rule    when an attack ends: ``paper`` (threshold reached) or ``first_success``
  fooled       top-1 != true class (untargeted) or top-1 == target (targeted)
  success      the candidate an attack reports fools the full net
  evaluator    how candidates reach the model (``Evaluator``); its choice is the ``Execution``
               (call size, incremental, window, devices, segment), recorded, never attacked
  incremental  a candidate scored as the stem of its image plus a window per changed pixel
  window       the square of a map a changed pixel reaches; one-pixel candidates run the net's
               local prefix on it
  devices      a host's CPU devices the model calls are dealt to (``Execution.devices``)
  step         one ask / score / tell of a method (DE: one generation)
  segment      steps between the runner's compactions of finished attacks
  chunk        attacks saved together by a campaign, resumable

On a CPU, importing pixeljax splits the CPU into one JAX device per core (unless JAX's backend
has started, ``jax_num_cpu_devices`` or ``XLA_FLAGS`` already say how many, or
``PIXELJAX_CPU_DEVICES`` names a number): XLA:CPU runs a small model call on one core, and the
attacks deal such calls to the devices (``pixeljax.sparse.evaluator``).
"""
import os as _os

import jax as _jax

if _jax.config.jax_num_cpu_devices == -1:     # nobody chose: one device per core
  from pixeljax import sharding as _sharding
  _n = _os.environ.get("PIXELJAX_CPU_DEVICES")
  _sharding.split_cpu(int(_n) if _n else None)     # starts no backend
from pixeljax import (checkpoint, compilation, data, errors, evolution, fooling, metrics,
                      models, progress, sharding, sparse, workdir)
from pixeljax.checkpoint import CheckpointError
from pixeljax.data import Dataset
from pixeljax.errors import UserError
from pixeljax.evolution import Archive, DEConfig, DEState
from pixeljax.fooling import CPPN, DirectEncoding, Genome, GradientAscentConfig
from pixeljax.models import Classifier, ModelSpec
from pixeljax.sparse import (AttackRecords, Evaluator, Execution, PixelAttackConfig, attack,
                             colour_grid, evaluator_for, exhaustive_one_pixel, select_images)
from pixeljax.workdir import SettingsMismatch, Workdir


def _version() -> str:
  import importlib.metadata
  try:
    return importlib.metadata.version("pixeljax")
  except importlib.metadata.PackageNotFoundError:   # run from a checkout, not installed
    return "0+unknown"


__version__ = _version()
