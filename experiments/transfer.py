r"""Do net A's fooling images fool net B?

  python experiments/transfer.py --archive runs/fooling_mnist_direct/archive.npz \
      --model_b mnist_lenet --workdir runs/transfer
"""
import json
import os

from absl import app, flags
import numpy as np

from pixeljax import fooling, models, plots

FLAGS = flags.FLAGS
flags.DEFINE_string("archive", None, "archive.npz written by experiments/fooling.py.")
flags.DEFINE_string("model_b", "mnist_lenet", "Net to score the images on.")
flags.DEFINE_string("workdir", "runs/transfer", "Output folder.")
flags.mark_flag_as_required("archive")


def main(argv):
  del argv
  os.makedirs(FLAGS.workdir, exist_ok=True)
  with np.load(FLAGS.archive) as a:
    images, probs_a = a["images"], a["probs"]
  with open(os.path.join(os.path.dirname(FLAGS.archive), "results.json")) as f:
    source = json.load(f)
  res = fooling.transfer(images, probs_a, models.load(FLAGS.model_b))
  res.update(model_a=source["model"], encoding=source["encoding"], model_b=FLAGS.model_b)
  k = len(images)
  plots.curves(os.path.join(FLAGS.workdir, "transfer.png"), np.arange(k),
               {f"A: {res['model_a']}": res["confidence_a"],
                f"B: {res['model_b']}": res["confidence_b"]},
               "class", "confidence for the class", f"transfer ({res['encoding']})")
  with open(os.path.join(FLAGS.workdir, "transfer.json"), "w") as f:
    json.dump(res, f, indent=1)
  print(json.dumps({k_: res[k_] for k_ in ("model_a", "model_b", "encoding",
                                           "mean_confidence_b", "b_agrees_top1")}))


if __name__ == "__main__":
  app.run(main)
