"""pixeljax: evolutionary attacks on image classifiers, as jit-compiled JAX programs.

Data flows one way: ``data.load`` -> ``models.load`` -> an attack engine (pytree state,
``init``/``step``/``run``) -> ``metrics``. Nothing heavy happens at import time.
"""
from pixeljax import checkpoint, data, models
from pixeljax.data import Dataset
from pixeljax.models import Classifier, ModelSpec

__version__ = "0.1.0"
