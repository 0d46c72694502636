r"""Fooling images (Nguyen, Yosinski & Clune): one config per published run.

  python experiments/fooling.py --workdir runs/fooling_mnist_direct     # the default
  python experiments/fooling.py --config=configs/fooling.py:mnist_cppn --workdir runs/x
  python experiments/fooling.py --config=configs/fooling.py:mnist_cppn \
      --config.generations=2000 --workdir runs/y
  python experiments/fooling.py --config=configs/fooling.py:mnist_cppn_original \
      --workdir runs/fooling_mnist_cppn_original

Named settings (``:name``) are the runs in ``results/fooling/``; the default is the paper's
MNIST direct-encoding run; ``mnist_cppn_original`` is the MNIST CPPN run with the settings of
the paper's own code (``ORIGINAL_MNIST_CPPN`` below). Encoding, evolution and gradient-ascent
defaults come from the library's dataclasses (written once, there); only the paper's choices
are set here.
"""
import dataclasses

from ml_collections import ConfigDict

from pixeljax.fooling import driver, gradient_ascent

# name -> (model, encoding, generations); the gradient run's length is gradient.steps.
NAMED = {
    "mnist_direct": ("mnist_lenet_fooling", "direct", 400),
    "mnist_cppn": ("mnist_lenet_fooling", "cppn", 1500),
    "mnist_cppn_original": ("mnist_lenet_fooling", "cppn", 1001),
    "mnist_gradient": ("mnist_lenet_fooling", "gradient", None),
    "cifar_lenet_direct": ("cifar10_lenet_hyperparticle", "direct", 2000),
    "cifar_lenet_cppn": ("cifar10_lenet_hyperparticle", "cppn", 2000),
    "cifar_resnet32_direct": ("cifar10_resnet32_hyperparticle", "direct", 600),
    "cifar_resnet32_cppn": ("cifar10_resnet32_hyperparticle", "cppn", 600),
}
DEFAULT = "mnist_direct"
# mnist_direct is pixeljax's direct encoding at its defaults (400 offspring, 400 generations,
# no crossover, float pixels; the paper's halving of the mutation rate every 1,000
# generations never acts in 400). The original's direct program
# (dl_map_elites_images_mnist_direct_encoding.cpp) ran 200 offspring for 1,010 generations
# with SBX crossover (rate 0.5, eta 10; Deb's bounded form there, a simpler one here), a
# constant mutation rate 0.1, and whole pixel values: not reproduced as a named run.

# The MNIST CPPN run of the paper's own code, github.com/Evolving-AI-Lab/fooling (commit
# 66f097d), sferes/exp/images/dl_map_elites_images_mnist.cpp ("mnist.cpp") and the Sferes
# modules it builds on. What pixeljax cannot (or does not) do the same way is listed after.
ORIGINAL_MNIST_CPPN = dict(
    # mnist.cpp:85 pop::size = 200 and map_elite.hpp:189-214: size/2 pairs, two children
    # each, so 200 offspring per generation; mnist.cpp:83 init_size = 200 random genomes first
    # (pixeljax's initial population is `population` too); mnist.cpp:87 nb_gen = 1001 epochs
    # after the random population (sferes/ea/ea.hpp:157-165), as `generations` counts here.
    population=200,
    segment=77,                      # 1001 = 13 x 77: one compiled program, 13 save points
    cppn=dict(
        # mnist.cpp:55-59, read by gen_dnn_ff.hpp:83-99 (DnnFF::mutate), once per offspring.
        p_add_connection=0.5,        # m_rate_add_conn
        p_remove_connection=0.3,     # m_rate_del_conn
        p_add_node=0.5,              # m_rate_add_neuron: gen_dnn.hpp:311-327 splits an edge
        add_node="split",
        p_remove_node=0.2,           # m_rate_del_neuron (gen_dnn.hpp:329-342)
        # m_rate_change_conn = 0.5 (mnist.cpp:57) is read only by Dnn::_change_conns
        # (gen_dnn.hpp:390-416), which the CPPN's DnnFF hides with its own (gen_dnn_ff.hpp:
        # 125-129: weights only): the original never rewires a connection. Nothing to set.
        # Weights: phen::Parameters<EvoFloat<1, Params>> (mnist.cpp:179) in [-10, 10]
        # (mnist.cpp:104-106, phen/parameters.hpp:61); drawn uniform (evo_float.hpp:103-105,
        # gen_dnn.hpp:252-262 for the initial 4 -> 1 net, gen_dnn_ff.hpp:158-159 for new ones);
        # each mutated with probability 0.1 (mnist.cpp:71, evo_float.hpp:84-89) by polynomial
        # mutation, eta 15 (mnist.cpp:67,75; evo_float.hpp:127-141), then clipped.
        weight_init="uniform",
        p_perturb_weight=0.1,
        weight_mutation="polynomial",
        weight_eta=15.0,
        # Activations {sine, sigmoid, Gaussian, linear} (mnist.cpp:114), each node's redrawn
        # with probability 0.1 (mnist.cpp:115; sferes/gen/sampled.hpp:73-77, unordered:
        # uniform over the four, the same one possible).
        p_change_activation=0.0,
        p_resample_activation=0.1,
        # Unbounded in the original; a fixed capacity here (add-node does nothing when full).
        # Twice the default 24, which a 300-generation trial's elites neared (18 at most);
        # rendering then costs about 3x as much per generation.
        max_hidden=48,
        # phen_grayscale_image.hpp:104-108,166-176: the image is a uchar one, trunc(|o| x 255),
        # and that is what Caffe scores (fit_map_deep_learning.hpp): whole pixel values.
        whole_pixels=True,
    ),
)
# Set in the original but never used by its CPPN runs, so with nothing to map to:
#  - SBX crossover, rate 0.5, eta 10 (mnist.cpp:69,73,77): MapElite::epoch calls
#    p1->cross(p2) (map_elite.hpp:194), which for this genome is DnnFF::cross
#    (gen_dnn_ff.hpp:101-113): the two parents copied, in random order; EvoFloat's SBX is
#    never reached. Likewise Params::cppn::evo_float (mnist.cpp:119-127: eta_m 15, eta_c 15,
#    the unused activation parameter) and sampled::cross_rate 0.25 (mnist.cpp:116).
#  - keep_rate, coeff (mnist.cpp:95-98): RankSimple's, not MAP-Elites'.
# What still differs (pixeljax's genome and renderer, kept as they are):
#  - order of operators: Sferes mutates weights, then activations, then adds/removes
#    connections and nodes (gen_dnn_ff.hpp:85-98); pixeljax changes the structure first and
#    perturbs weights last, so a new connection may be perturbed in the offspring that made it.
#  - add connection: Sferes draws a source, then a target that is not its predecessor
#    (gen_dnn_ff.hpp:133-161; a parallel duplicate is possible); pixeljax draws uniformly
#    from the missing connections from a lower to a higher node index.
#  - split: pixeljax splits only a connection with a free hidden slot between its ends (in
#    node order), Sferes any connection.
#  - the output node: Sferes draws its activation too and renders |output| x 255
#    (phen_grayscale_image.hpp:104-108,166-176); pixeljax's output is a sigmoid, 255 x it.
#  - activations (af_cppn.hpp:99-110): Sferes' sigmoid is 2/(1+e^-x) - 1 and its linear is
#    clip(x, -3, 3)/3; pixeljax's are the logistic 1/(1+e^-x) and the identity.
#  - inputs: Sferes feeds x and y as pixel indices 0..27 (phen_grayscale_image.hpp:149-150),
#    the distance from the centre on the [-1, 1] grid and a bias of 1; pixeljax x, y in [-1, 1].
NAMED_SETTINGS = {"mnist_cppn_original": ORIGINAL_MNIST_CPPN}


def get_config(arg=None):
  name = arg or DEFAULT
  if name not in NAMED:
    raise ValueError(f"unknown fooling config {name!r}; known: {', '.join(NAMED)}")
  model, encoding, generations = NAMED[name]
  c = ConfigDict()
  c.name = name
  c.model = model                   # the net to fool (a zoo name)
  c.encoding = encoding             # "direct" or "cppn" (MAP-Elites), or "gradient"
  # MAP-Elites: population, generations, segment (generations per compiled call and save
  # point) and seed, at their library defaults unless the run says otherwise.
  c.update(dataclasses.asdict(driver.EvolutionConfig()))
  if generations is not None:
    c.generations = generations
  c.direct = ConfigDict(driver.encoding_defaults("direct"))
  c.cppn = ConfigDict(driver.encoding_defaults("cppn"))
  c.gradient = ConfigDict(dataclasses.asdict(gradient_ascent.GradientAscentConfig()))
  if encoding == "gradient":
    c.gradient.steps = 1500
  c.update_from_flattened_dict(_flatten(NAMED_SETTINGS.get(name, {})))
  # never change a result: progress shown (bar or log lines), seconds between lines
  c.runtime = ConfigDict(dict(progress=True, progress_interval=5.0))
  return c


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out
