r"""Benchmark: attack throughput vs the bare forward pass, and scaling with images per call.

  python experiments/benchmark.py --model cifar10_lenet_hyperparticle --batch 100 \
      --sizes 1,10,100 --workdir runs/benchmark

Prints a table and writes benchmark.json: model evaluations per second of the attack and of
jit(model) on the same batch (images x population), their ratio, and time per image for each
number of images per call.
"""
import os

from absl import flags
import jax

from pixeljax import benchmark, cli, data, models, workdir

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["cifar10_lenet_hyperparticle", "cifar10_resnet32_hyperparticle"],
                  "Models to benchmark.")
flags.DEFINE_string("data", "cifar10_samples", "Images to attack.")
flags.DEFINE_integer("batch", 20, "Images per call for the attack-vs-forward ratio.")
flags.DEFINE_list("sizes", ["1", "10", "100"], "Images per call for the scaling table.")
flags.DEFINE_integer("popsize", 400, "Population.")
flags.DEFINE_integer("generations", 5, "Generations timed per call.")
flags.DEFINE_integer("pixels", 1, "Pixels.")
flags.DEFINE_string("workdir", "runs/benchmark", "Where benchmark.json goes.")


def main(argv):
  del argv
  out = dict(backend=jax.default_backend(), devices=[str(d) for d in jax.devices()],
             popsize=FLAGS.popsize, generations=FLAGS.generations, results={})
  for name in FLAGS.models:
    clf = models.load(name)
    ds = data.load(FLAGS.data)
    ratio = benchmark.attack_vs_forward(clf.predict, ds.images[:FLAGS.batch],
                                        ds.labels[:FLAGS.batch], FLAGS.pixels, FLAGS.popsize,
                                        FLAGS.generations)
    scaling = []
    for n in map(int, FLAGS.sizes):
      r = benchmark.attack_rate(clf.predict, ds.images[:n], ds.labels[:n], FLAGS.pixels,
                                FLAGS.popsize, FLAGS.generations, repeats=1)
      scaling.append(dict(images_per_call=n, **r))
    out["results"][name] = dict(ratio=ratio, scaling=scaling)
    print(f"\n{name} ({jax.default_backend()}, population {FLAGS.popsize}, "
          f"{FLAGS.generations} generations timed)")
    print(f"  forward pass  {ratio['forward_evals_per_second']:>12,.0f} evals/s "
          f"(batch {ratio['images_per_call'] * FLAGS.popsize})")
    print(f"  attack        {ratio['attack_evals_per_second']:>12,.0f} evals/s "
          f"({ratio['images_per_call']} images per call)")
    print(f"  ratio         {ratio['ratio']:>12.3f}")
    print(f"  {'images/call':>11} {'evals/s':>12} {'s/image':>10} {'vs 1 image':>10}")
    base = scaling[0]["seconds_per_image"]
    for s in scaling:
      print(f"  {s['images_per_call']:>11} {s['evals_per_second']:>12,.0f} "
            f"{s['seconds_per_image']:>10.4f} {base / s['seconds_per_image']:>9.1f}x")
  workdir.write_json(os.path.join(FLAGS.workdir, "benchmark.json"), out)
  print(f"\nwrote {FLAGS.workdir}/benchmark.json")


if __name__ == "__main__":
  cli.run(main)
