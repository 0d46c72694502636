r"""The exhaustive one-pixel sweep through the library, against the code of another commit.

  git worktree add --detach /tmp/pixeljax_221b35c 221b35c      # the code before the redesign
  .venv/bin/python benchmarks/sweep_versions.py --old_root /tmp/pixeljax_221b35c \
      --images 4,16 --out results/library/sweep_versions.json

For each image count, one process per code version, one after the other (old, then this
checkout), each sweeping every pixel x the 8 cube corners of the first N of ``IMAGES``
(correctly classified exact CIFAR-10 test images of ResNet-20) twice: cold (compilation and
the fast paths' checks included) and warm. The old code is called as its README showed it
(``exhaustive_one_pixel(clf.factored, ...)``; its ``clf.predict`` ran at the same speed), this
checkout as ``exhaustive_one_pixel(models.load(...), ...)``. Prints queries/s and the ratios,
checks both found the same fooling changes per image, and writes one JSON.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = "../shared/data/cifar10_test_exact1017.npz"
MODEL = "cifar10_resnet20_akamaster"
IMAGES = [396, 468, 867, 634, 3, 10, 12, 21, 25, 31, 70, 77, 85, 90, 91, 96]


def worker(root: str, kind: str, n: int) -> dict:
  sys.path.insert(0, root)
  os.chdir(root)
  import numpy as np
  from pixeljax import data, models
  from pixeljax.sparse.exhaustive import exhaustive_one_pixel
  clf = models.load(MODEL)
  ds = data.load(DATA, "test")
  ids = np.array(IMAGES[:n])
  model = clf if kind == "new" else clf.factored
  seconds = []
  for _ in range(2):                       # cold, then warm
    t0 = time.perf_counter()
    out = exhaustive_one_pixel(model, ds.images[ids], ds.labels[ids])
    seconds.append(time.perf_counter() - t0)
  queries = int(np.sum(out["queries"]))
  return dict(images=ids.tolist(), queries=queries, cold_seconds=seconds[0],
              warm_seconds=seconds[1], cold_queries_per_second=queries / seconds[0],
              warm_queries_per_second=queries / seconds[1],
              fooling_changes=np.asarray(out["num_fooling_changes"]).tolist(),
              load=os.getloadavg())


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--old_root", required=True, help="a checkout of the older commit")
  ap.add_argument("--images", default="4,16", help="image counts, comma-separated")
  ap.add_argument("--out", default=None)
  ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args.worker:
    root, kind, n = args.worker
    print(json.dumps(worker(root, kind, int(n))))
    return
  rows = []
  for n in [int(v) for v in args.images.split(",")]:
    row = dict(images=n)
    for kind, root in (("old", os.path.abspath(args.old_root)), ("new", ROOT)):
      done = subprocess.run([sys.executable, os.path.abspath(__file__), "--old_root",
                             args.old_root, "--worker", root, kind, str(n)], check=True,
                            capture_output=True, text=True, cwd=ROOT)
      row[kind] = json.loads(done.stdout.strip().splitlines()[-1])
    row["same_fooling_changes"] = row["old"]["fooling_changes"] == row["new"]["fooling_changes"]
    for when in ("cold", "warm"):
      key = f"{when}_queries_per_second"
      row[f"{when}_ratio"] = row["new"][key] / row["old"][key]
      print(f"{n} images x 8,192, {when}: old {row['old'][key]:,.0f} queries/s, new "
            f"{row['new'][key]:,.0f} ({row[f'{when}_ratio']:.2f}x); same fooling changes: "
            f"{row['same_fooling_changes']}", flush=True)
    rows.append(row)
  if args.out:
    sys.path.insert(0, ROOT)
    from pixeljax.workdir import versions, write_json
    commit = subprocess.run(["git", "-C", args.old_root, "rev-parse", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    write_json(args.out, dict(rows=rows, model=MODEL, old_commit=commit, versions=versions()))


if __name__ == "__main__":
  main()
