"""pixeljax: evolutionary attacks on image classifiers, as jit-compiled JAX programs.

Data flows one way: ``data.load`` -> ``models.load`` -> an engine (pytree state,
``init``/``step``/``run``) -> records -> ``metrics``. Nothing heavy happens at import time:
no weights, data or compilation until a function is called.

  pixeljax.sparse      the few-pixel attacks (problem, batched runner, exhaustive, campaign)
  pixeljax.fooling     fooling images (CPPN and direct encodings, gradient ascent, driver)
  pixeljax.evolution   generic engines: differential evolution, MAP-Elites
  pixeljax.metrics     the papers' numbers: metrics.one_pixel, metrics.fooling
  pixeljax.workdir     a run's folder: settings claimed first, atomic writes
"""
from pixeljax import (checkpoint, compilation, data, errors, evolution, fooling, metrics,
                      models, progress, sharding, sparse, workdir)
from pixeljax.checkpoint import CheckpointError
from pixeljax.data import Dataset
from pixeljax.errors import UserError
from pixeljax.evolution import Archive, DEConfig, DEState
from pixeljax.fooling import CPPN, DirectEncoding, Genome, GradientAscentConfig
from pixeljax.models import Classifier, ModelSpec
from pixeljax.sparse import (AttackRecords, PixelAttackConfig, attack, colour_grid,
                             exhaustive_one_pixel)
from pixeljax.workdir import SettingsMismatch, Workdir

__version__ = "0.1.0"
