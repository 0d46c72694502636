r"""Fooling images (Nguyen, Yosinski & Clune): MAP-Elites with a direct or CPPN encoding, or
gradient ascent, against a zoo model.

  python experiments/fooling.py --model mnist_lenet_fooling --encoding direct \
      --generations 200 --population 400 --workdir runs/fooling_mnist_direct

Writes archive.npz (images, confidences, CPPN genomes), gallery.png, confidence.png and
results.json to --workdir; rerunning after an interruption resumes from the last chunk.
"""
import json

from absl import app, flags

from pixeljax import data, fooling, models

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "mnist_lenet_fooling", f"One of {models.names()}.")
flags.DEFINE_enum("encoding", "direct", list(fooling.ENCODINGS), "Encoding.")
flags.DEFINE_integer("generations", 200, "Generations (gradient: steps).")
flags.DEFINE_integer("population", 400, "Offspring per generation.")
flags.DEFINE_integer("chunk", 50, "Generations per compiled chunk (and save point).")
flags.DEFINE_float("crossover", 0.0, "SBX crossover rate (direct encoding).")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_string("workdir", "runs/fooling", "Output folder.")


def main(argv):
  del argv
  clf = models.load(FLAGS.model)
  names = data.CIFAR10_CLASSES if clf.spec.dataset == "cifar10" else (
      data.MNIST_CLASSES if clf.spec.dataset == "mnist" else None)
  res = fooling.fooling_experiment(clf, FLAGS.encoding, FLAGS.workdir,
                                   generations=FLAGS.generations, population=FLAGS.population,
                                   seed=FLAGS.seed, chunk=FLAGS.chunk,
                                   crossover_rate=FLAGS.crossover,
                                   class_names=list(names) if names else None)
  print(json.dumps({k: res[k] for k in ("model", "encoding", "classes_at_9999",
                                        "classes_at_99", "first_generation_all_9999",
                                        "seconds")}))
  print("confidence per class:", " ".join(f"{c:.6f}" for c in res["confidence"]))


if __name__ == "__main__":
  app.run(main)
