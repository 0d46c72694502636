r"""Where a training step's time goes: each convolution of All-CNN-C or VGG16, forward and
backward, in XLA:CPU and in PyTorch (oneDNN), at the training batch.

    .venv/bin/python benchmarks/conv_profile.py --batch 128 --out runs/peers/conv_profile.json
    .venv/bin/python benchmarks/conv_profile.py --net vgg16 --batch 128 --repeats 2

For every conv layer of ``pixeljax.models.allcnn.AllCNNC`` (or ``vgg.VGG16``; ``--net``)
(its input shape at the batch, features, kernel, stride, padding) the JAX worker times ``jit`` of the forward convolution, of
its gradient w.r.t. the input and of its gradient w.r.t. the kernel (``jax.vjp``), and the
torch worker the forward ``conv2d`` and its ``backward`` (both gradients), channels_last,
``torch.no_grad`` off. Best of ``--repeats``; each framework in its own process, one after the
other. The table shows per layer ms and the ratio; the sum over layers against the whole
training step (``benchmarks/train_peers.py``) says how much of the gap convolutions explain.
Each worker also times one matrix product the size of the costliest layer's im2col product
((N*H*W) x (k*k*C_in) x C_out): what each framework's GEMM reaches on this CPU bounds what any
rewrite of a convolution as matrix products could gain.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Each net's convolutions on 32x32x3: (in_hw, in_ch, out_ch, kernel, stride, padding).
NETS = {
    "allcnn": [(32, 3, 96, 3, 1, "SAME"), (32, 96, 96, 3, 1, "SAME"),
               (32, 96, 96, 3, 2, "SAME"), (16, 96, 192, 3, 1, "SAME"),
               (16, 192, 192, 3, 1, "SAME"), (16, 192, 192, 3, 2, "SAME"),
               (8, 192, 192, 3, 1, "VALID"), (6, 192, 192, 1, 1, "VALID"),
               (6, 192, 10, 1, 1, "VALID")],
    "vgg16": [(32, 3, 64, 3, 1, "SAME"), (32, 64, 64, 3, 1, "SAME"),
              (16, 64, 128, 3, 1, "SAME"), (16, 128, 128, 3, 1, "SAME"),
              (8, 128, 256, 3, 1, "SAME")] + [(8, 256, 256, 3, 1, "SAME")] * 2
             + [(4, 256, 512, 3, 1, "SAME")] + [(4, 512, 512, 3, 1, "SAME")] * 2
             + [(2, 512, 512, 3, 1, "SAME")] * 3,
}


def _best(fn, repeats):
  fn()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best * 1e3


def worker_jax(args):
  import jax
  import jax.numpy as jnp
  from pixeljax.models import layers
  rows = []
  for hw, ci, co, k, s, pad in NETS[args.net]:
    x = jax.random.normal(jax.random.PRNGKey(0), (args.batch, hw, hw, ci))
    w = jax.random.normal(jax.random.PRNGKey(1), (k, k, ci, co)) * 0.05
    conv = lambda x, w: layers.conv_general_dilated(
        x, w, (s, s), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = conv(x, w)
    fwd = jax.jit(conv)
    dx = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0])
    dw = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])
    g = jnp.ones_like(y)
    rows.append(dict(forward_ms=_best(lambda: fwd(x, w).block_until_ready(), args.repeats),
                     grad_input_ms=_best(lambda: dx(x, w, g).block_until_ready(), args.repeats),
                     grad_kernel_ms=_best(lambda: dw(x, w, g).block_until_ready(),
                                          args.repeats)))
  m, kk, n = _gemm_shape(args)
  a = jax.random.normal(jax.random.PRNGKey(2), (m, kk))
  b = jax.random.normal(jax.random.PRNGKey(3), (kk, n))
  mm = jax.jit(jnp.matmul)
  return dict(rows=rows, gemm_ms=_best(lambda: mm(a, b).block_until_ready(), args.repeats),
              jax=jax.__version__, xla_flags=os.environ.get("XLA_FLAGS", ""))


def worker_torch(args):
  import torch
  rows = []
  for hw, ci, co, k, s, pad in NETS[args.net]:
    x = torch.randn(args.batch, ci, hw, hw).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    conv = torch.nn.Conv2d(ci, co, k, s, padding=(k // 2 if pad == "SAME" else 0),
                           bias=False).to(memory_format=torch.channels_last)
    y = conv(x)
    g = torch.ones_like(y)

    def fwd():
      with torch.no_grad():
        conv(x)

    def bwd():
      x.grad, conv.weight.grad = None, None
      conv(x).backward(g)
    rows.append(dict(forward_ms=_best(fwd, args.repeats),
                     forward_backward_ms=_best(bwd, args.repeats)))
  m, kk, n = _gemm_shape(args)
  a, b = torch.randn(m, kk), torch.randn(kk, n)
  with torch.no_grad():
    gemm = _best(lambda: torch.mm(a, b), args.repeats)
  return dict(rows=rows, gemm_ms=gemm, torch=torch.__version__,
              threads=torch.get_num_threads())


def _flops(args, layer):
  """Multiply-adds x 2 of one layer's forward convolution at the batch."""
  hw, ci, co, k, s, pad = layer
  out = -(-hw // s) if pad == "SAME" else (hw - k) // s + 1
  return 2 * args.batch * out * out * co * k * k * ci


def _gemm_shape(args):
  hw, ci, co, k, s, pad = max(NETS[args.net], key=lambda l: _flops(args, l))
  out = -(-hw // s) if pad == "SAME" else (hw - k) // s + 1
  return args.batch * out * out, k * k * ci, co


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--net", choices=tuple(NETS), default="allcnn")
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--out", default=os.path.join(ROOT, "runs", "peers", "conv_profile.json"))
  p.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
  p.add_argument("--worker_out", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.worker:
    out = (worker_jax if args.worker == "jax" else worker_torch)(args)
    with open(args.worker_out, "w") as f:
      json.dump(out, f)
    return 0
  res = {}
  with tempfile.TemporaryDirectory() as tmp:
    for w in ("jax", "torch"):
      path = os.path.join(tmp, w + ".json")
      env = dict(os.environ, JAX_PLATFORMS="cpu", PIXELJAX_CACHE_DIR="",
                 PYTHONPATH=os.pathsep.join(x for x in (ROOT, os.environ.get("PYTHONPATH"))
                                            if x))
      subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", w, "--worker_out",
                      path, "--net", args.net, "--batch", str(args.batch),
                      "--repeats", str(args.repeats)],
                     check=True, env=env, cwd=ROOT)
      with open(path) as f:
        res[w] = json.load(f)
  lines = [f"{'layer (hw, in, out, k, stride, pad)':<36} {'jax fwd':>8} {'torch fwd':>9} "
           f"{'jax fwd+bwd':>11} {'torch fwd+bwd':>13} {'ratio':>6}"]
  tot = dict(jf=0., tf=0., jb=0., tb=0.)
  for layer, j, t in zip(NETS[args.net], res["jax"]["rows"], res["torch"]["rows"]):
    jb = j["forward_ms"] + j["grad_input_ms"] + j["grad_kernel_ms"]
    tot["jf"] += j["forward_ms"]; tot["tf"] += t["forward_ms"]
    tot["jb"] += jb; tot["tb"] += t["forward_backward_ms"]
    lines.append(f"{str(layer):<36} {j['forward_ms']:>8.1f} {t['forward_ms']:>9.1f} "
                 f"{jb:>11.1f} {t['forward_backward_ms']:>13.1f} "
                 f"{jb / t['forward_backward_ms']:>6.2f}")
  lines.append(f"{'all convolutions (ms)':<36} {tot['jf']:>8.1f} {tot['tf']:>9.1f} "
               f"{tot['jb']:>11.1f} {tot['tb']:>13.1f} {tot['jb'] / tot['tb']:>6.2f}")
  m, kk, n = _gemm_shape(args)
  top = max(range(len(NETS[args.net])), key=lambda i: _flops(args, NETS[args.net][i]))
  conv = lambda w: _flops(args, NETS[args.net][top]) / res[w]["rows"][top]["forward_ms"] / 1e6
  gemm = lambda w: 2 * m * kk * n / res[w]["gemm_ms"] / 1e6
  lines.append(f"GFLOP/s, costliest layer {NETS[args.net][top]} forward: jax {conv('jax'):.0f}, "
               f"torch {conv('torch'):.0f}; a {m}x{kk}x{n} matrix product: jax "
               f"{gemm('jax'):.0f}, torch {gemm('torch'):.0f}")
  table = "\n".join(lines)
  print(table)
  sys.path.insert(0, ROOT)
  from pixeljax.workdir import write_json
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  write_json(args.out, dict(settings=vars(args), layers=NETS[args.net], results=res, table=table,
                            loadavg=os.getloadavg()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
