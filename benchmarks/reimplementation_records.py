"""The Keras reimplementation's own attack records, as the published table was computed, per
attack, in one small JSON that ``experiments/reproduce.py`` sets beside its cells.

    git clone https://github.com/Hyperparticle/one-pixel-attack-keras /tmp/hp
    .venv/bin/python benchmarks/reimplementation_records.py \
        --untargeted /tmp/hp/networks/results/untargeted_results.pkl \
        --targeted /tmp/hp/networks/results/targeted_results.pkl \
        --out results/reimplementation/published_records.json

Their ``attack.py`` pickles one row per attack: model, pixels, image id (of the 10,000 CIFAR-10
test images), true class, predicted class, success, ... -- not the target. ``attack_all``
visits, per image sample in order, the targets 0..9 without the true class, so each run of 9
rows of one image is one image's targets in that order; the target is rebuilt from it.
What the records show (commit 8261f97): the untargeted cells are 100 images drawn with
replacement (98-100 distinct); the **targeted cells are 10 images x 9 targets = 90 attacks**
(their README says 100 samples), and ``success`` is ``predicted != true`` there too.

The pickles are unpickled (they hold numpy scalars and arrays): read only files you trust.
"""
import argparse
import json
import pickle

import numpy as np

# Their model names -> the zoo's ports of the same weights.
NETS = {"lecun_net": "cifar10_lenet_hyperparticle", "resnet": "cifar10_resnet32_hyperparticle"}
SOURCE = ("Hyperparticle/one-pixel-attack-keras, networks/results/{mode}_results.pkl "
          "(commit 8261f97)")


def rows_of(records, targeted: bool):
  """{(zoo net, pixels): [[image, true, target (-1), predicted, success], ...]} in their
  order."""
  out = {}
  for name, net in NETS.items():
    for k in sorted({int(r[1]) for r in records if r[0] == name}):
      rows = [r for r in records if r[0] == name and int(r[1]) == k]
      cells = []
      for start in range(0, len(rows), 9 if targeted else 1):
        block = rows[start:start + (9 if targeted else 1)]
        true = int(block[0][3])
        if targeted:
          targets = [t for t in range(10) if t != true]
          if len(block) != 9 or len({int(r[2]) for r in block}) != 1:
            raise ValueError(f"{name} {k}px: rows {start}.. are not one image's 9 targets")
        else:
          targets = [-1]
        for r, t in zip(block, targets):
          if int(r[3]) != true:
            raise ValueError(f"{name} {k}px: a block mixes true classes")
          cells.append([int(r[2]), true, t, int(r[4]), bool(r[5])])
      out[(net, k)] = cells
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--untargeted", required=True)
  p.add_argument("--targeted", required=True)
  p.add_argument("--out", required=True)
  a = p.parse_args()
  out = dict(source=SOURCE, columns=["image", "true", "target", "predicted", "success"],
             cells=[])
  for mode, path in (("untargeted", a.untargeted), ("targeted", a.targeted)):
    with open(path, "rb") as f:
      records = pickle.load(f)
    for (net, k), cells in rows_of(records, mode == "targeted").items():
      success = np.mean([c[4] for c in cells])
      out["cells"].append(dict(model=net, mode=mode, pixels=k, attacks=len(cells),
                               images=len({c[0] for c in cells}), success=float(success),
                               rows=cells))
      print(f"{net} {mode} {k}px: {len(cells)} attacks on {out['cells'][-1]['images']} "
            f"images, success {success:.1%}")
  with open(a.out, "w") as f:
    json.dump(out, f, separators=(",", ":"))
    f.write("\n")


if __name__ == "__main__":
  main()
