"""Compositional pattern-producing networks (CPPNs) with a fixed-capacity genome and a
jit-compiled, vmapped renderer -- the indirect encoding of Nguyen et al.'s fooling images.

A genome is a feed-forward network over at most ``4 + max_hidden + outputs`` nodes, stored as
masks and arrays so a whole population is one pytree with a leading axis:

  nodes 0..3                 inputs: x, y, distance from the centre, bias
  nodes 4..4+max_hidden-1    hidden slots, each on or off, one activation each
  last ``outputs`` nodes     outputs (sigmoid): 1 for grayscale, 3 = (H, L, S) for colour

A connection may only go from a lower to a higher node index, never into an input and never
out of an output, and only between nodes that are on; every mutation keeps those rules, so a
genome is always a valid feed-forward network and the node order is a topological order.
Weights live in [-10, 10]; activations: sine, sigmoid, Gaussian, identity.

The operators default to NEAT-style choices; the options ``weight_init="uniform"``,
``weight_mutation="polynomial"``, ``p_resample_activation`` and ``add_node="split"`` are the
original Sferes code's operators instead (``configs/fooling.py:mnist_cppn_original`` says
which lines of Evolving-AI-Lab/fooling each comes from, and what still differs).
"""
import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from pixeljax.errors import UserError

NUM_INPUTS = 4
ACTIVATIONS = ("sine", "sigmoid", "gaussian", "identity")
WEIGHT_LIMIT = 10.0
WEIGHT_INITS = ("normal", "uniform")
WEIGHT_MUTATIONS = ("gaussian", "polynomial")
ADD_NODES = ("new", "split")


@struct.dataclass
class Genome:
  node_on: jax.Array      # (N,) bool
  activation: jax.Array   # (N,) int32 index into ACTIVATIONS
  weight: jax.Array       # (N, N) float32, weight[src, dst]
  conn: jax.Array         # (N, N) bool, conn[src, dst]


def _apply_activation(index, x):
  return jnp.choose(index, [jnp.sin(x), jax.nn.sigmoid(x), jnp.exp(-x * x), x], mode="clip")


def _choose(key, mask):
  """A uniformly random True position of ``mask`` (flattened) and whether there was one."""
  scores = jnp.where(mask.ravel(), jax.random.uniform(key, (mask.size,)), -1.0)
  return jnp.argmax(scores), jnp.any(mask)


@dataclasses.dataclass(frozen=True)
class CPPN:
  """Genome operations for one capacity and output count (static: safe to close over in jit).

  Mutation probabilities follow NEAT-style defaults; each structural one is applied once per
  offspring, in the order remove node, remove connection, add node, add connection, change
  activation(s), perturb weights."""
  outputs: int = 1
  max_hidden: int = 24
  p_add_connection: float = 0.2
  p_remove_connection: float = 0.1
  p_add_node: float = 0.15
  p_remove_node: float = 0.05
  p_change_activation: float = 0.1    # one active hidden node redraws its activation
  p_perturb_weight: float = 0.25      # per connection
  weight_sigma: float = 1.0           # weight_mutation="gaussian": the step's deviation
  # New weights (initial, added connections, added nodes): "normal" N(0, 2^2) clipped to
  # [-10, 10]; "uniform" U[-10, 10] (Sferes: EvoFloat::random, mapped to [min, max]).
  weight_init: str = "normal"
  # Weight step: "gaussian" (weight_sigma) or "polynomial": Sferes' polynomial mutation
  # (evo_float.hpp), eta ``weight_eta``, on the weight's position in [-10, 10], then clipped.
  weight_mutation: str = "gaussian"
  weight_eta: float = 15.0
  # Per active hidden node, the chance it redraws its activation from the four (possibly the
  # same one again), as Sferes' Sampled::mutate; 0 leaves only p_change_activation's operator.
  p_resample_activation: float = 0.0
  # Add node: "new" switches on a free slot wired from a node below to a node above (the old
  # connections kept); "split" puts it on a connection s -> t, which becomes s -> h -> t with
  # both halves carrying its weight (Sferes' _add_neuron_on_conn).
  add_node: str = "new"
  # Score (and keep) images at whole pixel values, 255 x the output rounded down, as an image
  # file holds them and as the original scored its uchar images (Sferes'
  # phen_grayscale_image.hpp: trunc(|o| x 255)); False scores the float image, which a saved
  # PNG would not reproduce exactly.
  whole_pixels: bool = False

  def __post_init__(self):
    for name, known in (("weight_init", WEIGHT_INITS), ("weight_mutation", WEIGHT_MUTATIONS),
                        ("add_node", ADD_NODES)):
      if getattr(self, name) not in known:
        raise UserError(f"cppn: unknown {name} {getattr(self, name)!r}; known: "
                        f"{', '.join(known)}")
    # The traced operators run on any number (max_hidden -1 puts an output on the bias node:
    # every image white; a probability above 1 is always).
    checks = [(self.outputs >= 1, f"outputs must be >= 1, got {self.outputs}"),
              (self.max_hidden >= 0, f"max_hidden must be >= 0, got {self.max_hidden}"),
              (self.weight_sigma > 0, f"weight_sigma must be > 0, got {self.weight_sigma}"),
              (self.weight_eta >= 0, f"weight_eta must be >= 0, got {self.weight_eta}"),
              (isinstance(self.whole_pixels, bool),
               f"whole_pixels must be True or False, got {self.whole_pixels!r}")]
    checks += [(0 <= getattr(self, f.name) <= 1,
                f"{f.name} must be in [0, 1], got {getattr(self, f.name)}")
               for f in dataclasses.fields(self) if f.name.startswith("p_")]
    for ok, message in checks:
      if not ok:
        raise UserError(f"cppn: {message}")

  @property
  def num_nodes(self) -> int:
    return NUM_INPUTS + self.max_hidden + self.outputs

  def _structure(self):
    n = self.num_nodes
    idx = jnp.arange(n)
    is_input = idx < NUM_INPUTS
    is_output = idx >= n - self.outputs
    is_hidden = ~is_input & ~is_output
    allowed = (idx[:, None] < idx[None, :]) & ~is_input[None, :] & ~is_output[:, None]
    return is_input, is_hidden, is_output, allowed

  # --- genomes ----------------------------------------------------------------------------
  def init(self, key, n: int) -> Genome:
    """``n`` minimal genomes: every input wired to every output, no hidden node (as NEAT)."""
    return jax.vmap(self._init_one)(jax.random.split(key, n))

  def _init_one(self, key) -> Genome:
    is_input, _, is_output, _ = self._structure()
    k1, k2 = jax.random.split(key)
    nn_ = self.num_nodes
    conn = is_input[:, None] & is_output[None, :]
    weight = jnp.where(conn, self._new_weights(k1, (nn_, nn_)), 0.0)
    activation = jnp.where(is_output, 1, jax.random.randint(k2, (nn_,), 0, len(ACTIVATIONS)))
    return Genome(node_on=is_input | is_output, activation=activation.astype(jnp.int32),
                  weight=weight, conn=conn)

  def is_valid(self, g: Genome) -> jax.Array:
    """The invariants of a single genome (used by tests and as a guard)."""
    is_input, _, is_output, allowed = self._structure()
    on_ok = jnp.all(g.node_on[is_input]) & jnp.all(g.node_on[is_output])
    conn_ok = ~jnp.any(g.conn & ~(allowed & g.node_on[:, None] & g.node_on[None, :]))
    w_ok = jnp.all(jnp.abs(g.weight) <= WEIGHT_LIMIT)
    act_ok = jnp.all((g.activation >= 0) & (g.activation < len(ACTIVATIONS)))
    out_act = jnp.all(g.activation[is_output] == 1)
    return on_ok & conn_ok & w_ok & act_ok & out_act

  def _new_weights(self, key, shape):
    if self.weight_init == "uniform":
      return jax.random.uniform(key, shape, minval=-WEIGHT_LIMIT, maxval=WEIGHT_LIMIT)
    return jnp.clip(2.0 * jax.random.normal(key, shape), -WEIGHT_LIMIT, WEIGHT_LIMIT)

  # --- mutation ---------------------------------------------------------------------------
  def mutate(self, key, genomes: Genome, generation=None, partners=None) -> Genome:
    """Mutates a population (leading axis); every operator keeps genomes valid."""
    del generation, partners
    return jax.vmap(self._mutate_one)(jax.random.split(key, _leading(genomes)), genomes)

  def _mutate_one(self, key, g: Genome) -> Genome:
    ks = jax.random.split(key, 12)
    coin = lambda k, p: jax.random.uniform(k) < p
    g = _maybe(coin(ks[0], self.p_remove_node), self._remove_node(ks[1], g), g)
    g = _maybe(coin(ks[2], self.p_remove_connection), self._remove_connection(ks[3], g), g)
    add_node = self._split_connection if self.add_node == "split" else self._add_node
    g = _maybe(coin(ks[4], self.p_add_node), add_node(ks[5], g), g)
    g = _maybe(coin(ks[6], self.p_add_connection), self._add_connection(ks[7], g), g)
    g = _maybe(coin(ks[8], self.p_change_activation), self._change_activation(ks[9], g), g)
    if self.p_resample_activation > 0:
      g = self._resample_activations(ks[11], g)
    return self._perturb_weights(ks[10], g)

  def _add_connection(self, key, g):
    _, _, _, allowed = self._structure()
    k1, k2 = jax.random.split(key)
    free = allowed & ~g.conn & g.node_on[:, None] & g.node_on[None, :]
    pos, ok = _choose(k1, free)
    w = self._new_weights(k2, ())
    conn = g.conn.ravel().at[pos].set(g.conn.ravel()[pos] | ok).reshape(g.conn.shape)
    weight = g.weight.ravel().at[pos].set(jnp.where(ok, w, g.weight.ravel()[pos]))
    return g.replace(conn=conn, weight=weight.reshape(g.weight.shape))

  def _remove_connection(self, key, g):
    pos, ok = _choose(key, g.conn)
    conn = g.conn.ravel().at[pos].set(g.conn.ravel()[pos] & ~ok).reshape(g.conn.shape)
    return g.replace(conn=conn, weight=jnp.where(conn, g.weight, 0.0))

  def _add_node(self, key, g):
    """Switches on a free hidden slot h, wired from an active node below it and to an active
    node above it (an output always exists above, an input below)."""
    _, is_hidden, _, _ = self._structure()
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    h, ok = _choose(k1, is_hidden & ~g.node_on)
    idx = jnp.arange(self.num_nodes)
    src, _ = _choose(k2, g.node_on & (idx < h))
    dst, _ = _choose(k3, g.node_on & (idx > h) & (idx >= NUM_INPUTS))
    w = self._new_weights(k4, (2,))
    node_on = g.node_on.at[h].set(True)
    conn = g.conn.at[src, h].set(True).at[h, dst].set(True)
    weight = g.weight.at[src, h].set(w[0]).at[h, dst].set(w[1])
    act = g.activation.at[h].set(jax.random.randint(k5, (), 0, len(ACTIVATIONS)))
    new = Genome(node_on=node_on, activation=act.astype(jnp.int32), weight=weight, conn=conn)
    return _maybe(ok, new, g)

  def _split_connection(self, key, g):
    """Sferes' add-neuron: a connection s -> t, drawn from those with a free hidden slot h
    between them (s < h < t keeps the node order topological), becomes s -> h -> t, both
    halves with its weight; h gets a random activation."""
    _, is_hidden, _, _ = self._structure()
    k1, k2, k3 = jax.random.split(key, 3)
    n = self.num_nodes
    free = is_hidden & ~g.node_on
    before = jnp.cumsum(free) - free                   # free slots below each index
    pos, ok = _choose(k1, g.conn & (before[None, :] - before[:, None] > 0))
    s, t = pos // n, pos % n
    idx = jnp.arange(n)
    h, _ = _choose(k2, free & (idx > s) & (idx < t))
    w = g.weight[s, t]
    new = Genome(node_on=g.node_on.at[h].set(True),
                 activation=g.activation.at[h].set(
                     jax.random.randint(k3, (), 0, len(ACTIVATIONS)).astype(jnp.int32)),
                 weight=g.weight.at[s, t].set(0.0).at[s, h].set(w).at[h, t].set(w),
                 conn=g.conn.at[s, t].set(False).at[s, h].set(True).at[h, t].set(True))
    return _maybe(ok, new, g)

  def _remove_node(self, key, g):
    _, is_hidden, _, _ = self._structure()
    h, ok = _choose(key, is_hidden & g.node_on)
    node_on = g.node_on.at[h].set(g.node_on[h] & ~ok)
    conn = g.conn & node_on[:, None] & node_on[None, :]
    return g.replace(node_on=node_on, conn=conn, weight=jnp.where(conn, g.weight, 0.0))

  def _change_activation(self, key, g):
    _, is_hidden, _, _ = self._structure()
    k1, k2 = jax.random.split(key)
    h, ok = _choose(k1, is_hidden & g.node_on)
    new = jax.random.randint(k2, (), 0, len(ACTIVATIONS)).astype(jnp.int32)
    return g.replace(activation=g.activation.at[h].set(jnp.where(ok, new, g.activation[h])))

  def _resample_activations(self, key, g):
    _, is_hidden, _, _ = self._structure()
    k1, k2 = jax.random.split(key)
    hit = (is_hidden & g.node_on &
           (jax.random.uniform(k1, g.activation.shape) < self.p_resample_activation))
    new = jax.random.randint(k2, g.activation.shape, 0, len(ACTIVATIONS)).astype(jnp.int32)
    return g.replace(activation=jnp.where(hit, new, g.activation))

  def _perturb_weights(self, key, g):
    k1, k2 = jax.random.split(key)
    hit = g.conn & (jax.random.uniform(k1, g.weight.shape) < self.p_perturb_weight)
    if self.weight_mutation == "polynomial":
      noise = 2.0 * WEIGHT_LIMIT * polynomial_step(k2, g.weight.shape, self.weight_eta)
    else:
      noise = self.weight_sigma * jax.random.normal(k2, g.weight.shape)
    weight = jnp.clip(jnp.where(hit, g.weight + noise, g.weight), -WEIGHT_LIMIT, WEIGHT_LIMIT)
    return g.replace(weight=weight)

  # --- rendering --------------------------------------------------------------------------
  def render_one(self, g: Genome, height: int, width: int) -> jax.Array:
    """One genome drawn at (height, width): pixels in [0, 255], (H, W, 1 or 3)."""
    ys, xs = jnp.meshgrid(jnp.linspace(-1, 1, height), jnp.linspace(-1, 1, width),
                          indexing="ij")
    d = jnp.sqrt(xs ** 2 + ys ** 2)
    inputs = jnp.stack([xs, ys, d, jnp.ones_like(xs)], -1).reshape(-1, NUM_INPUTS)
    n = self.num_nodes
    values = jnp.zeros((inputs.shape[0], n)).at[:, :NUM_INPUTS].set(inputs)
    w_eff = jnp.where(g.conn, g.weight, 0.0)

    def body(i, values):
      # float32 on GPUs too (not TF32), so an image renders the same on every backend
      pre = jnp.dot(values, w_eff[:, i], precision=jax.lax.Precision.HIGHEST)
      return values.at[:, i].set(jnp.where(g.node_on[i],
                                           _apply_activation(g.activation[i], pre), 0.0))

    values = jax.lax.fori_loop(NUM_INPUTS, n, body, values)
    out = values[:, n - self.outputs:].reshape(height, width, self.outputs)
    if self.outputs == 3:
      out = hls_to_rgb(out[..., 0], out[..., 1], out[..., 2])
    image = 255.0 * jnp.clip(out, 0.0, 1.0)
    return jnp.floor(image) if self.whole_pixels else image

  def render(self, genomes: Genome, height: int, width: int) -> jax.Array:
    """A population drawn in one call: (P, H, W, C)."""
    return jax.vmap(lambda g: self.render_one(g, height, width))(genomes)


def polynomial_step(key, shape, eta: float):
  """Steps of Sferes' polynomial mutation (evo_float.hpp, Deb 2001 p. 124) as a fraction of
  the range, in (-1, 1): (2u)^(1/(eta+1)) - 1 for u < 1/2, else 1 - (2(1-u))^(1/(eta+1)).
  Unlike ``direct.polynomial_mutation`` (Deb's bounded form) it ignores the bounds: the
  caller clips, as Sferes does."""
  u = jax.random.uniform(key, shape)
  power = 1.0 / (eta + 1.0)
  return jnp.where(u < 0.5, (2.0 * u) ** power - 1.0, 1.0 - (2.0 * (1.0 - u)) ** power)


def hls_to_rgb(h, l, s):
  """Vectorised ``colorsys.hls_to_rgb`` (all in [0, 1])."""
  m2 = jnp.where(l <= 0.5, l * (1.0 + s), l + s - l * s)
  m1 = 2.0 * l - m2

  def v(hue):
    hue = jnp.mod(hue, 1.0)
    return jnp.where(hue < 1 / 6, m1 + (m2 - m1) * hue * 6.0,
                     jnp.where(hue < 0.5, m2,
                               jnp.where(hue < 2 / 3, m1 + (m2 - m1) * (2 / 3 - hue) * 6.0, m1)))
  rgb = jnp.stack([v(h + 1 / 3), v(h), v(h - 1 / 3)], -1)
  return jnp.where((s == 0.0)[..., None], l[..., None], rgb)


def _maybe(flag, new, old):
  return jax.tree_util.tree_map(lambda a, b: jnp.where(flag, a, b), new, old)


def _leading(tree) -> int:
  return jax.tree_util.tree_leaves(tree)[0].shape[0]
