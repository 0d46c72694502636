"""Runs the authors' Sparse-RS L0 attack (fra31/sparse-rs, vendored unmodified) on pixeljax's
imported CIFAR-10 networks, rebuilt in PyTorch (torch_nets.py), on the exact CIFAR-10 images.

    .venv/bin/python benchmarks/sparse_rs_peer.py --model cifar10_lenet_hyperparticle \
        --num_images 100 --seed 0 --k 1 --n_queries 10000 --out /tmp/srs_lenet_k1.json

What is the authors' and what is ours:
  * ``RSAttack`` from ``third_party/sparse_rs/rs_attacks.py`` runs as published, called the way
    their ``eval.py`` calls it: norm='L0', eps=k, n_restarts=1, loss='margin' (their code
    switches to 'ce' when targeted), resc_schedule=True, seed, and p_init = their
    ``--alpha_init`` (eval.py default 0.3; the README's L0 settings: 0.3 untargeted with 10k
    queries, 0.1 targeted with 100k; ``RSAttack``'s own constructor default is 0.8).
  * Their attack works on NCHW images in [0, 1]; ``predict`` gets x01, feeds the torch net
    ``round(255 * x01)`` (every point their L0 attack builds is an original pixel or a corner of
    the colour cube, so rounding only removes float error: the net sees the exact uint8 grid
    pixeljax's models see) and returns LOGITS. Their margin (logit_y - max_other logit) equals
    the same margin on log-probabilities, i.e. on pixeljax's ``log(predict(x))``.
  * Images: ``--image_ids``, or ``--num_images`` drawn as pixeljax draws them
    (``pixeljax.select_images``): correct = argmax of the model's probabilities
    == label over all 1,017 exact images, then ``np.random.default_rng(seed).choice(correct,
    size=min(n, len(correct)), replace=False)``.
  * Targeted: one random target per image, drawn with the authors' ``eval.py``
    ``random_target_classes`` (torch.randint after ``torch.manual_seed(seed)``), NOT pixeljax's
    all-(K-1)-targets rows. The targets are written to the JSON.
  * Batching: the authors attack a batch at once (eval.py: batches of up to 500). Within a
    batch all images share, each iteration, the same random positions in their lists of
    perturbed / unperturbed pixels (rs_attacks.py l.307-308), so an image's result depends on
    which images share its batch. ``--batch_size 0`` (default) is eval.py's way (one batch of up
    to 500, ``RSAttack(seed=seed)``); ``--batch_size 1`` makes every image an independent run
    whose RSAttack seed is ``SeedSequence([seed, image_id])`` (one image, one stream that
    depends on nothing else, as in pixeljax; with the same seed for every image, ``perturb``'s
    re-seeding would give all images the same initial pixels and colours).

Query counting (rs_attacks.py, L0 branch): the random initial point (k random pixels set to
random colour-cube corners) is evaluated and counted as query 1 (l.284-285); each later
candidate adds 1 for the images still unfooled (l.287, l.326-327), so at most ``n_queries``
per image, and an image fooled by the initial point reports 1. The clean-image forward passes
in ``perturb`` (l.903/908, l.916/918) and the final check (l.936) are not counted. ``perturb``
returns 0 for images it did not fool (l.899, l.945); this script writes ``n_queries`` for them
(as eval.py does for its 'correctly classified points' statistic) and keeps the raw value too.
"""
import argparse
import importlib.util
import json
import os
import platform
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
VENDOR = os.path.join(HERE, "third_party", "sparse_rs")
sys.path.insert(0, HERE)
sys.path.insert(0, VENDOR)  # rs_attacks.py does ``from utils import Logger``

import torch_nets  # noqa: E402
from rs_attacks import RSAttack  # noqa: E402

SPARSE_RS_COMMIT = "21d875969a1455e4d5b26dcf32c843e6262d1f9c"


def _authors_eval_module():
  """The vendored eval.py as a module (its main code is under ``if __name__ == '__main__'``)."""
  spec = importlib.util.spec_from_file_location("sparse_rs_eval", os.path.join(VENDOR, "eval.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


class Predict01:
  """The authors' ``predict``: NCHW in [0, 1] -> logits of a [0, 255] torch net.

  Also counts forward passes and images, to audit their query counter."""

  def __init__(self, model):
    self.model = model
    self.calls = 0
    self.images = 0

  def __call__(self, x01):
    self.calls += 1
    self.images += int(x01.shape[0])
    with torch.no_grad():
      x = torch.round(x01 * 255.0).contiguous(memory_format=torch.channels_last)
      return self.model(x)


def select_images(probs, labels, num_images, seed):
  """pixeljax.select_images, on precomputed probabilities."""
  correct = np.nonzero(probs.argmax(-1) == np.asarray(labels))[0]
  rng = np.random.default_rng(seed)
  return rng.choice(correct, size=min(num_images, len(correct)), replace=False)


def per_image_seed(seed, image_id):
  """RSAttack seed of one image attacked alone (--batch_size 1): depends on (seed, image id)
  only, as pixeljax's per-attack randomness does. < 2**32 for their np.random.seed call."""
  return int(np.random.SeedSequence([seed, int(image_id)]).generate_state(1)[0])


def changed_pixels(x_uint8_nhwc, adv01_nchw):
  """[[row, col, r, g, b], ...] of the pixels where adv differs from the clean image."""
  adv = torch.round(adv01_nchw * 255.0).permute(1, 2, 0).to(torch.int64).numpy()
  diff = np.any(adv != x_uint8_nhwc.astype(np.int64), axis=-1)
  return [[int(r), int(c), *map(int, adv[r, c])] for r, c in zip(*np.nonzero(diff))]


def main(argv=None):
  ap = argparse.ArgumentParser(
      description="Authors' Sparse-RS (L0) on pixeljax's CIFAR-10 nets, in PyTorch.",
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  ap.add_argument("--model", default="cifar10_lenet_hyperparticle", choices=torch_nets.MODELS)
  ap.add_argument("--image_ids", default="", help="comma list of indices into the 1,017 "
                  "exact images (overrides --num_images)")
  ap.add_argument("--num_images", type=int, default=10,
                  help="correctly classified images drawn with --seed, as pixeljax draws them")
  ap.add_argument("--seed", type=int, default=0,
                  help="image draw, target draw and RSAttack(seed=...)")
  ap.add_argument("--k", type=int, default=1, help="eps: number of pixels perturbed")
  ap.add_argument("--n_queries", type=int, default=10000)
  ap.add_argument("--p_init", type=float, default=0.3,
                  help="RSAttack p_init (= eval.py --alpha_init, default 0.3; class default 0.8)")
  ap.add_argument("--loss", default="margin", choices=("margin", "ce"),
                  help="untargeted loss (targeted always uses 'ce' in their code)")
  ap.add_argument("--targeted", action="store_true",
                  help="one random target class per image (authors' eval.py draw)")
  ap.add_argument("--batch_size", type=int, default=0,
                  help="images per perturb() call; 0: all in one batch of <=500 as eval.py")
  ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads; 0: default")
  ap.add_argument("--verbose", action="store_true", help="their per-iteration log lines")
  ap.add_argument("--data", default=torch_nets.DATA_PATH)
  ap.add_argument("--out", default="", help="JSON results path")
  args = ap.parse_args(argv)

  if args.threads > 0:
    torch.set_num_threads(args.threads)
  x_all, y_all = torch_nets.load_cifar10_exact(args.data)
  model = torch_nets.load(args.model)
  probs_all = torch_nets.probs(model, x_all)
  pred_all = probs_all.argmax(-1)
  accuracy = float((pred_all == y_all).mean())

  if args.image_ids:
    ids = np.array([int(s) for s in args.image_ids.split(",") if s.strip()], np.int64)
    wrong = [int(i) for i in ids if pred_all[i] != y_all[i]]
    if wrong:
      print(f"warning: images {wrong} are misclassified by {args.model}; their attack skips "
            f"them (success counts them as already fooled)", file=sys.stderr)
  else:
    ids = select_images(probs_all, y_all, args.num_images, args.seed)

  x = torch_nets.to_nchw(x_all[ids]) / 255.0            # [0, 1] NCHW, as their attack expects
  y = torch.from_numpy(y_all[ids])
  targets = None
  if args.targeted:
    torch.manual_seed(args.seed)
    targets = _authors_eval_module().random_target_classes(y, 10)
  y_attack = targets if args.targeted else y

  predict = Predict01(model)
  bs = min(len(ids), 500) if args.batch_size <= 0 else args.batch_size
  qr = torch.zeros(len(ids))
  adv = x.clone()
  t0 = time.perf_counter()
  attack_seeds = np.full(len(ids), args.seed, np.int64)
  if bs == 1:
    # perturb() re-seeds torch/numpy with its seed on every call: one image per call with one
    # seed would give every image the same random stream (same initial pixels and colours).
    attack_seeds = np.array([per_image_seed(args.seed, i) for i in ids], np.int64)
  for start in range(0, len(ids), bs):
    sl = slice(start, start + bs)
    attack = RSAttack(predict, norm="L0", eps=args.k, verbose=args.verbose,
                      n_queries=args.n_queries, p_init=args.p_init, n_restarts=1,
                      seed=int(attack_seeds[start]), loss=args.loss, targeted=args.targeted,
                      resc_schedule=True, log_path=None)
    qr_b, adv_b = attack.perturb(x[sl].contiguous(), y_attack[sl])
    qr[sl] = qr_b.cpu().float()
    adv[sl] = adv_b.cpu()
  wall = time.perf_counter() - t0
  audit = dict(forward_calls=predict.calls, images_forwarded=predict.images)

  # Independent check of every result with our model, and of the L0 budget.
  with torch.no_grad():
    out = predict(adv).argmax(-1)
  ok = (out == y_attack) if args.targeted else (out != y)
  rows = []
  for i, image_id in enumerate(ids):
    pix = changed_pixels(x_all[image_id], adv[i])
    assert len(pix) <= args.k, (image_id, pix)
    success = bool(ok[i])
    rows.append(dict(
        image_id=int(image_id), label=int(y_all[image_id]),
        target=int(targets[i]) if args.targeted else None,
        success=success,
        queries=int(qr[i]) if success else args.n_queries,
        queries_returned=int(qr[i]),
        attack_seed=int(attack_seeds[i]),
        adversarial_class=int(out[i]),
        pixels=pix if success else []))
  succ = [r for r in rows if r["success"]]
  q = np.array([r["queries"] for r in succ], np.float64)
  n = len(rows)
  summary = dict(
      success_rate=len(succ) / n if n else float("nan"),
      successes=len(succ), images=n,
      mean_queries_successes=float(q.mean()) if len(q) else None,
      median_queries_successes=float(np.median(q)) if len(q) else None,
      # eval.py prints torch.median: the LOWER middle value for an even count.
      median_queries_successes_torch=float(torch.median(torch.from_numpy(q))) if len(q) else None,
      wall_seconds=wall, seconds_per_image=wall / n if n else None)
  result = dict(
      peer="fra31/sparse-rs RSAttack (L0), vendored unmodified",
      sparse_rs_commit=SPARSE_RS_COMMIT,
      model=args.model, model_accuracy_1017=accuracy,
      settings=dict(k=args.k, n_queries=args.n_queries, p_init=args.p_init,
                    loss="ce" if args.targeted else args.loss, targeted=args.targeted,
                    target_selection="random per image, authors' eval.py random_target_classes"
                    if args.targeted else None,
                    n_restarts=1, resc_schedule=True, seed=args.seed, batch_size=bs,
                    attack_seed="per image: SeedSequence([seed, image_id])" if bs == 1
                    else "seed (every batch)",
                    image_selection="--image_ids" if args.image_ids else
                    "default_rng(seed).choice(correct, n, replace=False)"),
      summary=summary,
      audit=audit,
      environment=dict(torch=torch.__version__, threads=torch.get_num_threads(),
                       interop_threads=torch.get_num_interop_threads(),
                       python=platform.python_version(), machine=platform.machine(),
                       device="cpu"),
      per_image=rows)

  print(f"{args.model} k={args.k} n_queries={args.n_queries} targeted={args.targeted} "
        f"images={n}: success {len(succ)}/{n} ({summary['success_rate']:.1%}), "
        f"queries of successes mean {summary['mean_queries_successes']} median "
        f"{summary['median_queries_successes']}; {wall:.2f} s ({wall / max(n, 1):.3f} s/image), "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
  for r in rows:
    print(f"  image {r['image_id']:4d} label {r['label']}"
          + (f" target {r['target']}" if args.targeted else "")
          + f": {'fooled -> ' + str(r['adversarial_class']) if r['success'] else 'not fooled'}"
          f", queries {r['queries']}" + (f", pixels {r['pixels']}" if r["success"] else ""))
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
      json.dump(result, f, indent=1)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
