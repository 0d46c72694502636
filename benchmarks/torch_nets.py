"""PyTorch rebuilds of pixeljax's imported CIFAR-10 classifiers, for peer comparisons.

The same weights as pixeljax (``/work/shared/weights/<name>.npz``), the same images, so a
PyTorch attack library (torchattacks, the authors' Sparse-RS, ...) can attack exactly the
networks pixeljax attacks.

Every model takes NCHW float pixels in [0, 255] (like pixeljax's models, which take NHWC
[0, 255]), does its own preprocessing and returns LOGITS (pixeljax's ``predict`` returns
probabilities; ``log_softmax`` of these logits equals the log of pixeljax's probabilities, so
any difference of two classes' scores -- e.g. Sparse-RS's margin loss -- is the same whether
computed on logits or on log-probabilities).

    model = load("cifar10_resnet20_akamaster")         # eval mode, channels_last
    p = probs(model, x_test_uint8_nhwc)                 # (N, 10) numpy softmax

Models:
  cifar10_lenet_hyperparticle   Keras LeNet (HWIO kernels, dense (in, out), flatten in HWC order)
  cifar10_resnet20_akamaster    akamaster ResNet-20, option-A shortcut (PyTorch state dict)
  cifar10_resnet32_akamaster    akamaster ResNet-32, option-A shortcut (PyTorch state dict)
"""
import os
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

WEIGHTS_DIR = os.environ.get("PIXELJAX_SHARED_WEIGHTS", "/work/shared/weights")
DATA_PATH = os.environ.get("PIXELJAX_CIFAR10_EXACT",
                           "/work/shared/data/cifar10_test_exact1017.npz")

# Preprocessing of the original frameworks, on pixels in [0, 255] (see the weights README).
KERAS_CIFAR_MEAN = (125.307, 122.95, 113.865)
KERAS_CIFAR_STD = (62.9932, 62.0887, 66.7048)
TORCH_IMAGENET_MEAN = (0.485, 0.456, 0.406)
TORCH_IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
  """(x * scale - mean) / std per channel, on NCHW input."""

  def __init__(self, mean, std, scale: float = 1.0):
    super().__init__()
    self.scale = float(scale)
    self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
    self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

  def forward(self, x):
    if self.scale != 1.0:
      x = x * self.scale
    return (x - self.mean) / self.std


# --------------------------------------------------------------------------- LeNet (Keras)

class KerasLeNet(nn.Module):
  """Hyperparticle/one-pixel-attack-keras LeNet: conv6@5 relu, pool2, conv16@5 relu, pool2,
  flatten (HWC), dense 120 relu, dense 84 relu, dense 10 (logits; Keras applies softmax)."""

  def __init__(self):
    super().__init__()
    self.prep = Normalize(KERAS_CIFAR_MEAN, KERAS_CIFAR_STD)
    self.conv1 = nn.Conv2d(3, 6, 5)
    self.conv2 = nn.Conv2d(6, 16, 5)
    self.fc1 = nn.Linear(400, 120)
    self.fc2 = nn.Linear(120, 84)
    self.fc3 = nn.Linear(84, 10)

  def forward(self, x):
    x = self.prep(x)
    x = F.max_pool2d(F.relu(self.conv1(x)), 2)
    x = F.max_pool2d(F.relu(self.conv2(x)), 2)
    # Keras flattens the NHWC map: (h, w, c) order, not PyTorch's (c, h, w).
    x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
    x = F.relu(self.fc1(x))
    x = F.relu(self.fc2(x))
    return self.fc3(x)

  def load_keras(self, w):
    """Loads the Keras arrays: conv kernels HWIO -> OIHW, dense (in, out) -> (out, in)."""
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    sd = {
        "conv1.weight": t(w["conv2d_1/kernel:0"].transpose(3, 2, 0, 1)),
        "conv1.bias": t(w["conv2d_1/bias:0"]),
        "conv2.weight": t(w["conv2d_2/kernel:0"].transpose(3, 2, 0, 1)),
        "conv2.bias": t(w["conv2d_2/bias:0"]),
        "fc1.weight": t(w["dense_1/kernel:0"].T),
        "fc1.bias": t(w["dense_1/bias:0"]),
        "fc2.weight": t(w["dense_2/kernel:0"].T),
        "fc2.bias": t(w["dense_2/bias:0"]),
        "fc3.weight": t(w["dense_3/kernel:0"].T),
        "fc3.bias": t(w["dense_3/bias:0"]),
    }
    sd.update({k: v for k, v in self.state_dict().items() if k.startswith("prep.")})
    self.load_state_dict(sd, strict=True)
    return self


# ------------------------------------------------------------- ResNet (akamaster, PyTorch)

class _ShortcutA(nn.Module):
  """Option A: x[:, :, ::2, ::2], channels zero-padded by planes//4 on each side."""

  def __init__(self, planes):
    super().__init__()
    self.pad = planes // 4

  def forward(self, x):
    return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0.0)


class BasicBlock(nn.Module):

  def __init__(self, in_planes, planes, stride=1):
    super().__init__()
    self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes, eps=1e-5)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
    self.shortcut = (_ShortcutA(planes) if stride != 1 or in_planes != planes
                     else nn.Identity())

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
  """akamaster/pytorch_resnet_cifar10 ResNet-(6n+2), input [0, 255] NCHW, returns logits."""

  def __init__(self, depth=20, num_classes=10):
    super().__init__()
    if (depth - 2) % 6:
      raise ValueError(f"depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    self.prep = Normalize(TORCH_IMAGENET_MEAN, TORCH_IMAGENET_STD, scale=1.0 / 255.0)
    self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(16, eps=1e-5)
    in_planes = 16
    for stage, planes in enumerate((16, 32, 64)):
      blocks = []
      for i in range(n):
        stride = 2 if (stage > 0 and i == 0) else 1
        blocks.append(BasicBlock(in_planes, planes, stride))
        in_planes = planes
      setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
    self.linear = nn.Linear(64, num_classes)

  def forward(self, x):
    x = self.prep(x)
    x = F.relu(self.bn1(self.conv1(x)))
    x = self.layer3(self.layer2(self.layer1(x)))
    x = x.mean(dim=(2, 3))
    return self.linear(x)

  def load_torch(self, w):
    sd = {k: torch.from_numpy(np.asarray(w[k], dtype=np.float32)) for k in w.files}
    own = self.state_dict()
    for k, v in own.items():
      if k.startswith("prep.") or k.endswith("num_batches_tracked"):
        sd[k] = v
    missing = set(own) - set(sd)
    extra = set(sd) - set(own)
    if missing or extra:
      raise ValueError(f"state dict mismatch: missing {sorted(missing)}, extra {sorted(extra)}")
    self.load_state_dict(sd, strict=True)
    return self


# --------------------------------------------------------------------------------- API

MODELS = ("cifar10_lenet_hyperparticle", "cifar10_resnet20_akamaster",
          "cifar10_resnet32_akamaster")


def load(name: str, weights_dir: Optional[str] = None,
         channels_last: bool = True) -> nn.Module:
  """The named model with its shared weights, in eval mode (gradients off)."""
  path = os.path.join(weights_dir or WEIGHTS_DIR, f"{name}.npz")
  w = np.load(path)
  if name == "cifar10_lenet_hyperparticle":
    model = KerasLeNet().load_keras(w)
  elif name in ("cifar10_resnet20_akamaster", "cifar10_resnet32_akamaster"):
    model = CifarResNet(depth=int(name[len("cifar10_resnet"):].split("_")[0])).load_torch(w)
  else:
    raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
  model.eval()
  for p in model.parameters():
    p.requires_grad_(False)
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
  return model


def to_nchw(images_nhwc) -> torch.Tensor:
  """uint8/float NHWC numpy -> float32 NCHW tensor in [0, 255], channels_last memory."""
  x = torch.from_numpy(np.asarray(images_nhwc)).float()        # (N, H, W, C), contiguous
  return x.permute(0, 3, 1, 2)                                  # NCHW view = channels_last


def logits(model: nn.Module, images_nhwc, batch_size: int = 1024) -> np.ndarray:
  """Logits of ``model`` on NHWC pixel images in [0, 255] (numpy in, numpy out)."""
  x = to_nchw(images_nhwc)
  out = []
  with torch.inference_mode():
    for i in range(0, x.shape[0], batch_size):
      out.append(model(x[i:i + batch_size].contiguous(memory_format=torch.channels_last)))
  return torch.cat(out).numpy()


def probs(model: nn.Module, images_uint8_nhwc, batch_size: int = 1024) -> np.ndarray:
  """Softmax probabilities (N, classes) as numpy, like pixeljax's ``predict``."""
  z = torch.from_numpy(logits(model, images_uint8_nhwc, batch_size))
  return torch.softmax(z, dim=-1).numpy()


def load_cifar10_exact(path: Optional[str] = None):
  """(x_test uint8 (1017, 32, 32, 3) NHWC, y_test int64) of the exact CIFAR-10 file."""
  d = np.load(path or DATA_PATH)
  return d["x_test"], d["y_test"].astype(np.int64)
