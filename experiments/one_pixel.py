r"""One-pixel / few-pixel attack of Su, Vargas & Sakurai on a zoo model.

  python experiments/one_pixel.py --model cifar10_lenet_hyperparticle \
      --data ../shared/data/cifar10_test_exact1017.npz --pixels 1,3,5 --num_images 500 \
      --workdir runs/lenet_untargeted

Writes results.json (settings, versions, metrics), records_*.npz (one row per attack) and
figures to --workdir; finished chunks live in --workdir/chunks, so rerunning the same command
after an interruption resumes. Multi-host: pass --distributed on every host.
"""
import json

from absl import app, flags

from pixeljax import campaign, data, models, sharding

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "cifar10_lenet_hyperparticle", f"One of {models.names()}.")
flags.DEFINE_string("data", "cifar10_samples", "Data set name or .npz path (pixeljax.data).")
flags.DEFINE_string("split", "test", "Split.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir (for tfds data sets).")
flags.DEFINE_list("pixels", ["1", "3", "5"], "Pixel counts to attack with.")
flags.DEFINE_bool("targeted", False, "Targeted: every image towards each other class.")
flags.DEFINE_integer("num_images", 500, "Correctly classified images to attack (paper: 500).")
flags.DEFINE_integer("popsize", 400, "DE population (paper: 400).")
flags.DEFINE_integer("generations", 100, "DE generations (paper: 100).")
flags.DEFINE_enum("strategy", "rand1", ["rand1", "best1bin"], "DE strategy.")
flags.DEFINE_enum("objective", "probability", ["probability", "success_first"],
                  "Fitness: the paper's probability, or success_first (any fooling candidate "
                  "ranks first).")
flags.DEFINE_float("stop_probability", None, "Early stop threshold (default 0.05 / 0.5).")
flags.DEFINE_integer("seed", 0, "Seed (image draw and DE).")
flags.DEFINE_integer("chunk_size", None, "Attacks per call (default: fit device memory).")
flags.DEFINE_bool("exhaustive", False, "Also run the exhaustive one-pixel baseline.")
flags.DEFINE_list("exhaustive_levels", ["0", "255"],
                  "Channel values of the exhaustive baseline's colours (0,255: the 8 cube "
                  "corners; 0,128,255: 27 colours).")
flags.DEFINE_bool("shard", True, "Shard attacks over all devices.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host).")
flags.DEFINE_string("workdir", "runs/one_pixel", "Output folder.")


def main(argv):
  del argv
  if FLAGS.distributed:
    sharding.initialize()
  classifier = models.load(FLAGS.model)
  dataset = data.load(FLAGS.data, FLAGS.split, data_dir=FLAGS.data_dir)
  mesh = sharding.attack_mesh() if FLAGS.shard else None
  results = campaign.one_pixel_experiment(
      classifier, dataset, [int(p) for p in FLAGS.pixels], FLAGS.workdir,
      targeted=FLAGS.targeted, num_images=FLAGS.num_images, popsize=FLAGS.popsize,
      generations=FLAGS.generations, strategy=FLAGS.strategy, objective=FLAGS.objective,
      seed=FLAGS.seed,
      stop_probability=FLAGS.stop_probability, chunk_size=FLAGS.chunk_size,
      exhaustive=FLAGS.exhaustive,
      exhaustive_levels=[float(v) for v in FLAGS.exhaustive_levels], mesh=mesh)
  table = {k: {m: v[m] for m in ("success_rate", "confidence", "queries_per_attack")}
           for k, v in results["metrics"].items()}
  print(json.dumps(table, indent=1))
  if "exhaustive_one_pixel" in results:
    print(json.dumps({"exhaustive_one_pixel": results["exhaustive_one_pixel"]}))
  print(f"results in {FLAGS.workdir}/results.json")


if __name__ == "__main__":
  app.run(main)
