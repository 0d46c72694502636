"""The peer benchmark's PyTorch workers: torchattacks' ``OnePixel`` (``torchattacks``) and the
torch net's bare forward (``forward_torch``), plus the counting net the SciPy worker shares.
Each worker runs in its own process; none imports JAX."""
import time

import numpy as np

from benchmarks.peers.common import (DIMS, PIXELS, TORCHATTACKS_SKIP, per_image_seed, rates,
                                     summarize, timed_repeats, torch_env, torch_setup)


def counting_net(torch, model, scale):
  """A torch module around ``model`` that counts every image the net sees and notes the first
  query whose output is misclassified (``label`` set per image by ``reset``); its input is
  multiplied by ``scale`` first."""

  class Counting(torch.nn.Module):

    def __init__(self):
      super().__init__()
      self.net = model
      self.scale = float(scale)
      self.reset(-1)

    def reset(self, label):
      self.label = int(label)
      self.images = 0
      self.calls = 0
      self.single_calls = 0
      self.first_fooled = -1

    def forward(self, x):
      n = int(x.shape[0])
      if self.scale != 1.0:
        x = x * self.scale
      out = self.net(x.contiguous(memory_format=torch.channels_last))
      if self.first_fooled < 0 and self.label >= 0:
        bad = torch.nonzero(out.argmax(-1) != self.label)
        if len(bad):
          self.first_fooled = self.images + int(bad[0, 0]) + 1
      self.images += n
      self.calls += 1
      self.single_calls += int(n == 1)
      return out

  return Counting()


def torch_model(args):
  """(the PyTorch rebuild of ``args.model`` on ``args.device``, the torch_nets module)."""
  from benchmarks import torch_nets
  model = torch_nets.load(args.model)
  if args.device != "cpu":
    model = model.to(args.device)
  return model, torch_nets


def sync(torch, device):
  if device != "cpu":
    torch.cuda.synchronize()


def worker_torchattacks(args):
  """``torchattacks.OnePixel`` one image per call, as its API is used."""
  if args.rule != "first_success":
    raise SystemExit(f"error: {TORCHATTACKS_SKIP}")
  torch = torch_setup(args)
  import torchattacks
  model, torch_nets = torch_model(args)
  x_all, y_all = torch_nets.load_cifar10_exact(args.data)
  ids = np.asarray(args.ids, np.int64)
  net = counting_net(torch, model, 255.0).to(args.device)   # [0, 1] in -> [0, 255] net
  inf_batch = args.ta_inf_batch or args.popsize
  atk = torchattacks.OnePixel(net, pixels=PIXELS, steps=args.generations, popsize=args.popsize,
                              inf_batch=inf_batch)
  popmul = max(1, int(args.popsize / DIMS))
  print(f"[torchattacks {args.rule}] {len(ids)} images one at a time: OnePixel(pixels=1, "
        f"steps={args.generations}, popsize={args.popsize} -> {popmul * DIMS} members, "
        f"inf_batch={inf_batch})", flush=True)
  rows, total = [], 0.0
  for image_id in ids:
    label = int(y_all[image_id])
    x01 = (torch_nets.to_nchw(x_all[image_id:image_id + 1]) / 255.0).contiguous().to(args.device)
    y = torch.tensor([label], device=args.device)
    np.random.seed(per_image_seed(args.seed, image_id))   # its DE draws from np.random
    net.reset(label)
    sync(torch, args.device)
    t0 = time.perf_counter()
    adv = atk(x01, y)
    sync(torch, args.device)
    dt = time.perf_counter() - t0
    total += dt
    counted = dict(images=net.images, calls=net.calls, checks=net.single_calls,
                   first=net.first_fooled)
    net.reset(-1)
    with torch.inference_mode():
      p = torch.softmax(model((adv * 255.0).contiguous(memory_format=torch.channels_last)),
                        -1)[0]
      p_round = torch.softmax(model(torch.round(adv * 255.0).contiguous(
          memory_format=torch.channels_last)), -1)[0]
    diff = torch.nonzero((adv[0] != x01[0]).any(0))
    pix = None
    if len(diff):
      rr, cc = (int(v) for v in diff[0])
      pix = dict(row=rr, col=cc, rgb=[float(v) * 255.0 for v in adv[0, :, rr, cc]])
    gens = counted["checks"]   # its callback: one 1-image forward per generation
    rows.append(dict(
        image_id=int(image_id), label=label, success=bool(int(p.argmax()) != label),
        success_uint8_rounded=bool(int(p_round.argmax()) != label),
        adversarial_class=int(p.argmax()), p_true=float(p[label]),
        queries=counted["images"], forwards=counted["images"],
        check_queries=counted["checks"], forward_calls=counted["calls"],
        first_fooled_query=counted["first"], generations=gens, seconds=dt,
        changed_pixels=int(len(diff)), pixel=pix))
    print(f"  image {int(image_id):4d}: {'fooled' if rows[-1]['success'] else 'not fooled'}, "
          f"{counted['images']} queries, {gens} generations, {dt:.2f} s", flush=True)
  summary = summarize(rows, total)
  summary["successes_uint8_rounded"] = sum(r["success_uint8_rounded"] for r in rows)
  return dict(settings=dict(torchattacks=torchattacks.__version__, pixels=PIXELS,
                            steps=args.generations, popsize=args.popsize, inf_batch=inf_batch,
                            effective_population=popmul * DIMS, init="random",
                            strategy="best1bin, F~U(0.5,1), recombination 1",
                            rng="np.random.seed(SeedSequence([seed, image_id]))",
                            stop="after each generation: best member misclassified "
                                 "(+1 query per generation)",
                            max_queries=popmul * DIMS + args.generations * (popmul * DIMS + 1)),
              summary=summary, per_image=rows,
              environment=dict(torch_env(torch), device=args.device))


def worker_forward_torch(args):
  """The torch net under ``inference_mode`` at batch = popsize, and in calls of 50."""
  torch = torch_setup(args)
  model, _ = torch_model(args)
  b = args.popsize
  g = torch.Generator().manual_seed(0)
  x = (torch.rand((b, 3, 32, 32), generator=g) * 255.0).to(args.device).contiguous(
      memory_format=torch.channels_last)

  def go():
    with torch.inference_mode():
      model(x)
    sync(torch, args.device)
  times = timed_repeats(go, args.forward_seconds)
  out = dict(batch=b, what="torch net under inference_mode, float32 NCHW channels_last",
             **rates(b, times), environment=dict(torch_env(torch), device=args.device))
  # The same images in calls of 50 (pixeljax's dealt calls' size), for the best of both.
  small = 50

  def go_small():
    with torch.inference_mode():
      for i in range(0, b, small):
        model(x[i:i + small])
    sync(torch, args.device)
  times = timed_repeats(go_small, args.forward_seconds)
  out["calls_of_50"] = dict(call=small, **rates(b, times))
  return out
