"""The target zoo. ``get``/``names`` describe models; ``load`` gives weights-ready ones."""
from pixeljax.models.registry import (Classifier, ModelSpec, PixelClassifier, check_images,
                                      checkpoint_dir, get, load, names, register)
from pixeljax.models.stem import Factored, factor
from pixeljax.models.adapters import ImportedModel, from_keras, from_torch
