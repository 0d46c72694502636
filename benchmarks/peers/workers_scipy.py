"""The peer benchmark's SciPy worker: ``scipy.optimize.differential_evolution`` per image on
the PyTorch rebuild, called as Hyperparticle's Keras reimplementation calls it (see the
package docstring). Runs in its own process; does not import JAX."""
import inspect
import time

import numpy as np

from benchmarks.peers.common import PIXELS, THRESHOLD, summarize, torch_env, torch_setup
from benchmarks.peers.workers_torch import counting_net, sync, torch_model


class ScipyObjective:
  """SciPy DE's vectorized objective for one image, with the rule checked on every candidate.

  Candidates (row, col, r, g, b) in [0, 32) x [0, 32) x [0, 256)^3 are truncated to integers
  (Hyperparticle's ``astype(int)``) and written into the uint8 image."""

  def __init__(self, torch, net, image_hwc, label, rule, device):
    self.torch, self.net, self.label, self.rule, self.device = torch, net, int(label), rule, device
    self.base = torch.from_numpy(np.asarray(image_hwc, np.float32)).to(device)   # (H, W, C)
    self.h, self.w, _ = image_hwc.shape
    self.queries = 0
    self.skipped = 0
    self.met = False
    self.first_fooled = -1
    self.best = None           # (loss, candidate, probs) lowest p_true so far
    self.stop_pick = None      # (loss, candidate, probs) the candidate reported at the stop

  def decode(self, cands):
    c = np.floor(cands)
    row = np.clip(c[:, 0], 0, self.h - 1).astype(np.int64)
    col = np.clip(c[:, 1], 0, self.w - 1).astype(np.int64)
    rgb = np.clip(c[:, 2:5], 0, 255).astype(np.float32)
    return row, col, rgb

  def probs(self, cands):
    torch = self.torch
    row, col, rgb = self.decode(cands)
    s = len(cands)
    x = self.base.unsqueeze(0).repeat(s, 1, 1, 1)                    # (S, H, W, C)
    x[torch.arange(s), torch.from_numpy(row), torch.from_numpy(col)] = (
        torch.from_numpy(rgb).to(self.device))
    with torch.inference_mode():
      z = self.net(x.permute(0, 3, 1, 2))                            # NCHW, channels_last
      return torch.softmax(z, -1).cpu().numpy().astype(np.float64)

  def __call__(self, x):
    cands = np.atleast_2d(np.asarray(x).T)                           # vectorized: x is (D, S)
    if self.met:
      # The rule was met by the initial population; SciPy asks for one more generation before
      # it calls the callback. Those candidates are not sent to the model.
      self.skipped += len(cands)
      return np.full(len(cands), np.inf)
    p = self.probs(cands)
    loss = p[:, self.label]
    fooled = p.argmax(-1) != self.label
    if self.first_fooled < 0 and fooled.any():
      self.first_fooled = self.queries + int(np.argmax(fooled)) + 1
    self.queries += len(cands)
    i = int(np.argmin(loss))
    if self.best is None or loss[i] < self.best[0]:
      self.best = (float(loss[i]), cands[i].copy(), p[i])
    hit = (loss < THRESHOLD) if self.rule == "paper" else fooled
    if hit.any() and not self.met:
      self.met = True
      j = int(np.argmin(np.where(hit, loss, np.inf)))   # paper: = the batch's best
      self.stop_pick = (float(loss[j]), cands[j].copy(), p[j])
    return loss

  def callback(self, *args, **kwargs):   # SciPy's legacy (xk, convergence) or new form
    return bool(self.met)


def worker_scipy(args):
  import scipy
  from scipy.optimize import differential_evolution
  torch = torch_setup(args)
  model, torch_nets = torch_model(args)
  net = counting_net(torch, model, 1.0).to(args.device)
  x_all, y_all = torch_nets.load_cifar10_exact(args.data)
  ids = np.asarray(args.ids, np.int64)
  h, w = x_all.shape[1:3]
  bounds = [(0, h), (0, w), (0, 256), (0, 256), (0, 256)] * PIXELS
  popmul = max(1, args.popsize // len(bounds))
  rng_kw = "rng" if "rng" in inspect.signature(differential_evolution).parameters else "seed"
  print(f"[scipy {args.rule}] {len(ids)} images one at a time: differential_evolution("
        f"popsize={popmul} -> {popmul * len(bounds)} members, maxiter={args.generations}, "
        f"recombination=1, atol=-1, polish=False, vectorized, deferred)", flush=True)
  rows, total = [], 0.0
  for image_id in ids:
    label = int(y_all[image_id])
    obj = ScipyObjective(torch, net, x_all[image_id], label, args.rule, args.device)
    net.reset(label)
    rng = np.random.default_rng([int(args.seed), int(image_id)])
    sync(torch, args.device)
    t0 = time.perf_counter()
    res = differential_evolution(obj, bounds, maxiter=args.generations, popsize=popmul,
                                 recombination=1, atol=-1, callback=obj.callback, polish=False,
                                 updating="deferred", vectorized=True, **{rng_kw: rng})
    sync(torch, args.device)
    dt = time.perf_counter() - t0
    total += dt
    counted = dict(images=net.images, first=net.first_fooled)
    net.reset(-1)
    assert counted["images"] == obj.queries, (counted, obj.queries)
    loss, cand, _ = obj.stop_pick if obj.stop_pick is not None else obj.best
    # independent check of the reported candidate, outside the counter
    row, col, rgb = obj.decode(cand[None])
    img = np.array(x_all[image_id])
    img[row[0], col[0]] = rgb[0].astype(np.uint8)
    with torch.inference_mode():
      z = model(torch_nets.to_nchw(img[None]).to(args.device).contiguous(
          memory_format=torch.channels_last))
      p = torch.softmax(z, -1)[0].cpu().numpy()
    gens = (obj.queries - popmul * len(bounds)) // (popmul * len(bounds))   # after the init
    rows.append(dict(
        image_id=int(image_id), label=label, success=bool(int(p.argmax()) != label),
        adversarial_class=int(p.argmax()), p_true=float(p[label]),
        queries=counted["images"], forwards=counted["images"],
        skipped_candidates=obj.skipped, scipy_nfev=int(res.nfev), scipy_nit=int(res.nit),
        scipy_message=str(res.message),
        first_fooled_query=counted["first"], generations=gens, seconds=dt,
        pixel=dict(row=int(row[0]), col=int(col[0]), rgb=[float(v) for v in rgb[0]])))
    print(f"  image {int(image_id):4d}: {'fooled' if rows[-1]['success'] else 'not fooled'}, "
          f"{counted['images']} queries, {res.nit} generations, {dt:.2f} s", flush=True)
  return dict(settings=dict(scipy=scipy.__version__, bounds=bounds, popsize=popmul,
                            effective_population=popmul * len(bounds),
                            maxiter=args.generations, recombination=1, atol=-1, polish=False,
                            strategy="best1bin (default), F~U(0.5,1) (default)",
                            init="latinhypercube (default)", updating="deferred",
                            vectorized=True, rng=f"default_rng([seed, image_id]) via {rng_kw}=",
                            stop="rule checked on every scored candidate; callback ends the run"),
              summary=summarize(rows, total), per_image=rows,
              environment=dict(torch_env(torch), device=args.device))
