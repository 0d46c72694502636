"""pixeljax: evolutionary attacks on image classifiers, as jit-compiled JAX programs.

Data flows one way: ``data.load`` -> ``models.load`` -> an engine (pytree state,
``init``/``step``/``run``) -> records -> ``metrics``. Nothing heavy happens at import time:
no weights, data or compilation until a function is called.
"""
from pixeljax import (campaign, checkpoint, cppn, data, de, direct_encoding, fooling,
                      gradient_ascent, map_elites, metrics, models, pixel_attack, sharding)
from pixeljax.checkpoint import CheckpointError
from pixeljax.cppn import CPPN, Genome
from pixeljax.data import Dataset
from pixeljax.de import DEConfig, DEState
from pixeljax.direct_encoding import DirectEncoding
from pixeljax.gradient_ascent import GradientAscentConfig
from pixeljax.map_elites import Archive
from pixeljax.models import Classifier, ModelSpec
from pixeljax.pixel_attack import (AttackRecords, PixelAttackConfig, attack, colour_grid,
                                   exhaustive_one_pixel)

__version__ = "0.1.0"
