"""Converters from the peers' plain weight arrays (Keras, PyTorch, Caffe) to Flax variables.

Each converter takes the dict of arrays in ``../shared/weights/<name>.npz`` and returns
``{"params": ..., "batch_stats": ...}`` for the matching pixeljax module (the ``backbone`` of a
``PixelClassifier``). Run once by ``experiments/import_weights.py``; loading a shipped
checkpoint never needs these.
"""
from typing import Dict

import numpy as np


def _nest(flat: Dict[str, np.ndarray]) -> dict:
  out = {}
  for path, v in flat.items():
    node = out
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = np.asarray(v, np.float32)
  return out


def _wrap(params: dict, stats: dict) -> dict:
  variables = {"params": {"backbone": _nest(params)}}
  if stats:
    variables["batch_stats"] = {"backbone": _nest(stats)}
  return variables


def from_keras(arrays: Dict[str, np.ndarray]) -> dict:
  """Keras ``layer/kernel:0`` arrays (already HWIO and (in, out), Flax's layout)."""
  rename = {"kernel": "kernel", "bias": "bias", "gamma": "scale", "beta": "bias"}
  params, stats = {}, {}
  for key, v in arrays.items():
    layer, var = key.split("/")
    var = var.split(":")[0]
    if var == "moving_mean":
      stats[f"{layer}/mean"] = v
    elif var == "moving_variance":
      stats[f"{layer}/var"] = v
    else:
      params[f"{layer}/{rename[var]}"] = v
  return _wrap(params, stats)


def from_torch_cifar_resnet(arrays: Dict[str, np.ndarray]) -> dict:
  """akamaster PyTorch state dict: conv OIHW -> HWIO, linear (out, in) -> (in, out)."""
  params, stats = {}, {}
  for key, v in arrays.items():
    if key.endswith("num_batches_tracked"):
      continue
    *mod, var = key.split(".")
    if mod[0].startswith("layer"):            # layer1.0.conv1 -> layer1_0/conv1
      mod = [f"{mod[0]}_{mod[1]}"] + mod[2:]
    name = "/".join(mod)
    if "conv" in mod[-1] and var == "weight":
      params[f"{name}/kernel"] = np.transpose(v, (2, 3, 1, 0))
    elif mod[-1] == "linear":
      params[f"{name}/{'kernel' if var == 'weight' else 'bias'}"] = v.T if var == "weight" else v
    elif var == "weight":
      params[f"{name}/scale"] = v
    elif var == "bias":
      params[f"{name}/bias"] = v
    elif var == "running_mean":
      stats[f"{name}/mean"] = v
    elif var == "running_var":
      stats[f"{name}/var"] = v
    else:
      raise ValueError(f"unexpected PyTorch key {key!r}")
  return _wrap(params, stats)


def from_caffe_lenet(arrays: Dict[str, np.ndarray]) -> dict:
  """Caffe LeNet: conv OIHW -> HWIO; ip1 reads a CHW-flattened map, Flax flattens HWC."""
  c, h, w = 50, 4, 4
  ip1 = arrays["ip1_w"].reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(c * h * w, -1)
  params = {
      "conv1/kernel": arrays["conv1_w"].transpose(2, 3, 1, 0), "conv1/bias": arrays["conv1_b"],
      "conv2/kernel": arrays["conv2_w"].transpose(2, 3, 1, 0), "conv2/bias": arrays["conv2_b"],
      "ip1/kernel": ip1, "ip1/bias": arrays["ip1_b"],
      "ip2/kernel": arrays["ip2_w"].T, "ip2/bias": arrays["ip2_b"],
  }
  return _wrap(params, {})


CONVERTERS = {
    "cifar10_lenet_hyperparticle": from_keras,
    "cifar10_resnet32_hyperparticle": from_keras,
    "cifar10_resnet20_akamaster": from_torch_cifar_resnet,
    "cifar10_resnet32_akamaster": from_torch_cifar_resnet,
    "mnist_lenet_fooling": from_caffe_lenet,
}
