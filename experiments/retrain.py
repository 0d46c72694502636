r"""The fooling paper's defence on MNIST: add evolved fooling images as class n+1, retrain,
evolve again, repeat, and report the fooling confidence per iteration.

  python experiments/retrain.py --model mnist_lenet_fooling \
      --train_data ../shared/data/mnist.npz --iterations 2 --workdir runs/retrain
"""
import json

from absl import app, flags

from pixeljax import data, fooling, models

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "mnist_lenet_fooling", "Starting net (its architecture is reused).")
flags.DEFINE_string("train_data", "../shared/data/mnist.npz", "Training data (.npz or name).")
flags.DEFINE_enum("encoding", "direct", ["direct", "cppn"], "Encoding.")
flags.DEFINE_integer("iterations", 2, "Retraining iterations.")
flags.DEFINE_integer("generations", 200, "Generations per evolution run.")
flags.DEFINE_integer("population", 400, "Offspring per generation.")
flags.DEFINE_integer("runs", 5, "Evolution runs (x classes images) per iteration.")
flags.DEFINE_integer("epochs", 2, "Training epochs per retraining.")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_string("workdir", "runs/retrain", "Output folder.")


def main(argv):
  del argv
  base = models.load(FLAGS.model)
  tr = data.load(FLAGS.train_data, "train")
  te = data.load(FLAGS.train_data, "test")
  res = fooling.retrain_experiment(base, tr.images, tr.labels, te.images, te.labels,
                                   FLAGS.workdir, iterations=FLAGS.iterations,
                                   encoding_name=FLAGS.encoding, generations=FLAGS.generations,
                                   population=FLAGS.population, runs_per_iteration=FLAGS.runs,
                                   epochs=FLAGS.epochs, seed=FLAGS.seed)
  for e in res["report"]:
    print(json.dumps(e))


if __name__ == "__main__":
  app.run(main)
