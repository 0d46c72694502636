"""The target zoo. ``get``/``names`` describe models; ``load`` gives weights-ready ones;
``from_keras`` / ``from_torch`` / ``from_jax`` wrap models held in memory, ``from_file`` / ``from_factory``
ones named by a file or a function, and ``load_model`` anything ``--config.model`` names."""
from pixeljax.models.registry import (Classifier, ModelSpec, PixelClassifier, check_images,
                                      checkpoint_dir, get, load, names, register)
from pixeljax.models.stem import Factored, factor
from pixeljax.models.adapters import ImportedModel, from_jax, from_keras, from_torch
from pixeljax.models.files import from_factory, from_file, load_model
