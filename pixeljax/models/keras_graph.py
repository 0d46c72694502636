"""A Flax module that runs a Keras functional/Sequential graph, layer by layer.

The Hyperparticle networks were defined in Keras; rather than transcribe their graphs by hand
(and risk a wrong skip connection), pixeljax reads the layer list of the original
``keras_config.json`` -- stripped to the fields that change the numbers -- and evaluates it.
Parameter names are the Keras layer names, so imported weights map one to one.
"""
import json
import os
from typing import Any, Tuple

import flax.linen as nn
import jax.numpy as jnp

from pixeljax.models import layers

_HERE = os.path.dirname(os.path.abspath(__file__))
GRAPH_DIR = os.path.join(_HERE, "keras_graphs")

_KEEP = ("filters", "kernel_size", "strides", "padding", "activation", "epsilon",
         "pool_size", "units", "use_bias", "rate")
_SUPPORTED = {"InputLayer", "Conv2D", "BatchNormalization", "Activation", "Add", "Dense",
              "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "Flatten",
              "Dropout"}


def strip_keras_config(config: dict) -> list:
  """Reduces a Keras ``model.get_config()`` dict to ``[(name, class, inbound, cfg)]``."""
  layers = config["config"]
  if isinstance(layers, dict):
    layers = layers["layers"]
  out, prev = [], None
  for layer in layers:
    cls = layer["class_name"]
    if cls not in _SUPPORTED:
      raise ValueError(f"Keras layer type {cls!r} is not supported by KerasGraph")
    cfg = {k: v for k, v in layer["config"].items() if k in _KEEP}
    name = layer.get("name", layer["config"]["name"])
    if "inbound_nodes" in layer:   # functional model
      inbound = [n[0] for node in layer["inbound_nodes"] for n in node]
    else:                          # Sequential: each layer feeds the next
      inbound = [prev] if prev else ["input"]
    out.append([name, cls, inbound, cfg])
    prev = name
  return out


def load_graph(name: str) -> Tuple[Tuple[Any, ...], ...]:
  """Loads a stripped graph shipped in ``models/keras_graphs/<name>.json`` as nested tuples."""
  with open(os.path.join(GRAPH_DIR, name + ".json")) as f:
    layers = json.load(f)
  return tuple((n, c, tuple(i), tuple(sorted((k, _freeze(v)) for k, v in cfg.items())))
               for n, c, i, cfg in layers)


def _freeze(v):
  return tuple(v) if isinstance(v, list) else v


def _activation(name, x):
  if name in (None, "linear"):
    return x
  if name == "relu":
    return nn.relu(x)
  if name == "softmax":   # the classifier wrapper applies softmax itself: keep logits
    return x
  raise ValueError(f"Keras activation {name!r} is not supported")


class KerasGraph(nn.Module):
  """Evaluates a stripped Keras graph (see ``strip_keras_config``); returns logits."""
  layers: Tuple[Tuple[Any, ...], ...]

  @nn.compact
  def __call__(self, x, train: bool = False):
    values = {}
    last = None
    for name, cls, inbound, cfg in self.layers:
      cfg = dict(cfg)
      ins = [values[i] if i in values else x for i in inbound]
      h = ins[0] if ins else x
      if cls == "InputLayer":
        y = x
      elif cls == "Conv2D":
        y = layers.Conv(cfg["filters"], tuple(cfg["kernel_size"]), tuple(cfg["strides"]),
                    padding=cfg["padding"].upper(), use_bias=cfg.get("use_bias", True),
                    name=name)(h)
        y = _activation(cfg.get("activation"), y)
      elif cls == "BatchNormalization":
        y = nn.BatchNorm(use_running_average=not train, momentum=0.99,
                         epsilon=cfg["epsilon"], name=name)(h)
      elif cls == "Activation":
        y = _activation(cfg["activation"], h)
      elif cls == "Add":
        y = sum(ins[1:], ins[0])
      elif cls == "Dense":
        y = nn.Dense(cfg["units"], use_bias=cfg.get("use_bias", True), name=name)(h)
        y = _activation(cfg.get("activation"), y)
      elif cls in ("MaxPooling2D", "AveragePooling2D"):
        pool = nn.max_pool if cls == "MaxPooling2D" else nn.avg_pool
        y = pool(h, tuple(cfg["pool_size"]), tuple(cfg["strides"] or cfg["pool_size"]),
                 padding=cfg["padding"].upper())
      elif cls == "GlobalAveragePooling2D":
        y = jnp.mean(h, axis=(1, 2))
      elif cls == "Flatten":
        y = h.reshape(h.shape[0], -1)
      elif cls == "Dropout":
        y = nn.Dropout(cfg["rate"], deterministic=not train)(h)
      values[name] = y
      last = y
    return last
