"""Building blocks shared by the model families: preprocessing inside the model.

Every pixeljax classifier takes raw pixels in [0, 255] (NHWC float32) so that the attacks can
work in pixel space without knowing how a network was trained. Each family's own input
normalisation therefore lives in the module, as ``(x * scale - mean) / std``.
"""
import contextlib
import functools
import threading
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# XLA:CPU vectorises a convolution over its output channels in groups of 8 float32 lanes
# (AVX2); a layer with fewer (the CIFAR LeNet's 3 -> 6 first conv) runs far below speed.
# Measured on this project's 2-core CPU (benchmarks/xla_cpu_options.py, docs/history.md;
# batch 400, that 5x5 conv): 33.7 ms as is, 16.7 ms with its output channels padded to 8, and
# the LeNet's outputs stay bit-identical (each output channel is computed on its own). Padding
# counts above 8 too (the MNIST LeNet's 20 and 50 to 24 and 56) changed its outputs by ~1e-9
# (XLA picks another loop order), and padding the input channels (3 -> 8: 14.2 ms) changes the
# float sums by ~1e-6: neither is done, so every port keeps its exact numbers.
CPU_CHANNEL_MULTIPLE = 8


# XLA:CPU's convolution collapses on tiny outputs with many channels: VGG16's 512 -> 512 3x3
# layers on CIFAR's last 2x2 feature maps took 1,508 ms forward (and as long for the input
# gradient) at batch 128, 9 of the net's 11.7 s training step; as one matrix product per
# kernel tap, 14 ms (1x1 outputs: 42 -> 5 ms; 256 channels at 2x2: 102 -> 5 ms). At 3x3 outputs
# the gain is small (44 -> 33 ms) and at 4x4 XLA is faster, so only convolutions whose output
# has at most this many pixels are rewritten. The sums change by ~1e-5 (another order); no
# shipped net has such a layer (VGG16 and AlexNet ship untrained), so every port keeps its
# numbers. (benchmarks/conv_profile.py --net vgg16)
CPU_TAPS_MAX_OUTPUT_PIXELS = 4

_NHWC = ("NHWC", "HWIO", "NHWC")
_plain = threading.local()


@contextlib.contextmanager
def forward_mode_convolutions():
  """Within this block (at trace time) the zoo's convolutions are plain
  ``lax.conv_general_dilated``: same forward numbers, and forward-mode autodiff (``jax.jvp``)
  works, which the CPU kernel gradient's ``custom_vjp`` forbids. For probing a net's linear
  parts (``pixeljax.models.stem``), not for training."""
  before = getattr(_plain, "on", False)
  _plain.on = True
  try:
    yield
  finally:
    _plain.on = before


def _conv_nhwc(x, w, strides, padding):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_cpu(x, w, strides, padding):
  """An NHWC / HWIO convolution whose kernel gradient is a sum of matrix products.

  XLA:CPU computes a kernel gradient as a convolution of the input with the output gradient,
  with the batch as the contracted dimension -- its slowest case: 2,098 ms for All-CNN-C's
  96 -> 96 3x3 layer at batch 128 (PyTorch's whole forward + backward of that layer: 419 ms;
  ``benchmarks/conv_profile.py``). Written as one (C_in x N*H*W) @ (N*H*W x C_out) product
  per kernel tap, on strided views of the padded input, it runs 1.5-4x faster; the values
  agree to ~1e-6 (another summation order). The forward pass and the input gradient are
  XLA's own, unchanged."""
  return _conv_nhwc(x, w, strides, padding)


def _conv_cpu_fwd(x, w, strides, padding):
  return _conv_nhwc(x, w, strides, padding), (x, w)


def _tap_views(x, kernel_shape, strides, padding):
  """For each kernel tap (i, j), row-major: the (N, H_out, W_out, C_in) strided view of the
  padded input that the tap multiplies."""
  kh, kw = kernel_shape
  n, h, wd, ci = x.shape
  pads = lax.padtype_to_pads((h, wd), (kh, kw), strides, padding) \
      if isinstance(padding, str) else padding
  xp = jnp.pad(x, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
  sh, sw = strides
  ho = (xp.shape[1] - kh) // sh + 1
  wo = (xp.shape[2] - kw) // sw + 1
  return [lax.slice(xp, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, ci),
                    (1, sh, sw, 1)) for i in range(kh) for j in range(kw)]


def _conv_taps(x, w, strides, padding):
  """The convolution as a sum of one matrix product per kernel tap (see
  ``CPU_TAPS_MAX_OUTPUT_PIXELS``); its gradients, by autodiff, are matrix products too."""
  views = _tap_views(x, w.shape[:2], strides, padding)
  taps = w.reshape((-1,) + w.shape[2:])
  return sum(jnp.einsum("nhwc,cd->nhwd", v, taps[t]) for t, v in enumerate(views))


def _conv_cpu_bwd(strides, padding, res, g):
  x, w = res
  dx = jax.vjp(lambda v: _conv_nhwc(v, w, strides, padding), x)[1](g)[0]
  views = _tap_views(x, w.shape[:2], strides, padding)
  dw = jnp.stack([jnp.einsum("nhwc,nhwd->cd", v, g) for v in views]).reshape(w.shape)
  return dx, dw.astype(w.dtype)


_conv_cpu.defvjp(_conv_cpu_fwd, _conv_cpu_bwd)


def _plain_nhwc(dn, lhs_dilation, rhs_dilation, feature_group_count, kwargs) -> bool:
  """Whether a call is the plain 2-D NHWC / HWIO convolution ``_conv_cpu`` handles."""
  ones = lambda d: d is None or all(int(v) == 1 for v in d)
  return (len(dn.lhs_spec) == 4 and tuple(dn.lhs_spec) == (0, 3, 1, 2)
          and tuple(dn.rhs_spec) == (3, 2, 0, 1) and tuple(dn.out_spec) == (0, 3, 1, 2)
          and ones(lhs_dilation) and ones(rhs_dilation) and feature_group_count == 1
          and all(v is None for v in kwargs.values()))


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         **kwargs):
  """``lax.conv_general_dilated``, faster on CPU with the same forward numbers: a kernel with
  fewer than ``CPU_CHANNEL_MULTIPLE`` output channels is zero-padded to that many and the
  extra outputs are sliced off (about 2x faster; see above), and the kernel gradient is taken
  as matrix products (``_conv_cpu``). Other backends call lax directly."""
  dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  if (jax.default_backend() == "cpu"
      and _plain_nhwc(dn, lhs_dilation, rhs_dilation, feature_group_count, kwargs)):
    pad = padding if isinstance(padding, str) else tuple(tuple(int(v) for v in p)
                                                         for p in padding)
    strides = tuple(int(v) for v in window_strides)
    kh, kw = rhs.shape[:2]
    pads = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), strides, pad) \
        if isinstance(pad, str) else pad
    ho = (lhs.shape[1] + sum(pads[0]) - kh) // strides[0] + 1
    wo = (lhs.shape[2] + sum(pads[1]) - kw) // strides[1] + 1
    small = ho * wo <= CPU_TAPS_MAX_OUTPUT_PIXELS
    big = _conv_nhwc if getattr(_plain, "on", False) else _conv_cpu
    conv = lambda x, w: (_conv_taps if small else big)(x, w, strides, pad)
  else:
    conv = functools.partial(lax.conv_general_dilated, window_strides=window_strides,
                             padding=padding, lhs_dilation=lhs_dilation,
                             rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                             feature_group_count=feature_group_count, **kwargs)
  out_dim, out_feature = dn.rhs_spec[0], dn.out_spec[1]
  features = rhs.shape[out_dim]
  extra = CPU_CHANNEL_MULTIPLE - features
  if jax.default_backend() != "cpu" or feature_group_count != 1 or extra <= 0:
    return conv(lhs, rhs)
  widths = [(0, 0)] * rhs.ndim
  widths[out_dim] = (0, extra)
  out = conv(lhs, jnp.pad(rhs, widths))
  return lax.slice_in_dim(out, 0, features, axis=out_feature)


# Every convolution of the zoo: flax's, with the CPU channel padding (same parameters, names
# and initialisers as nn.Conv).
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)


class Normalize(nn.Module):
  """``(x * scale - mean) / std`` per channel; no parameters."""
  scale: float = 1.0
  mean: Sequence[float] = (0.0,)
  std: Sequence[float] = (1.0,)

  def __call__(self, x):
    mean = jnp.asarray(self.mean, jnp.float32)
    std = jnp.asarray(self.std, jnp.float32)
    return (x * self.scale - mean) / std


# The preprocessing of each source, named once.
KERAS_CIFAR = dict(scale=1.0, mean=(125.307, 122.95, 113.865),
                   std=(62.9932, 62.0887, 66.7048))
TORCH_IMAGENET = dict(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
CAFFE_MNIST = dict(scale=1 / 256, mean=(0.0,), std=(1.0,))
# Ours, for the nets trained in pixeljax: per-channel CIFAR-10 training-set statistics.
CIFAR_STANDARD = dict(scale=1 / 255, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
MNIST_STANDARD = dict(scale=1 / 255, mean=(0.1307,), std=(0.3081,))
IMAGENET_STANDARD = TORCH_IMAGENET
