"""CornerSearch (Croce & Hein, ICCV 2019), L0 in pixel space, for a fixed number k of pixels.

Stage 1 -- the one-pixel corner sweep: every position x every corner of the colour cube
(H * W * 2^C changes, 8,192 on CIFAR-10), evaluated in blocks. Each change is scored per
class c by how far it brings class c towards the top, log p_true - log p_c (targeted: the
target's margin), and the ``top_candidates`` (N) best changes of every class are kept. Padding of the last
sweep block is evaluated but neither counted as queries nor ranked.
Stage 2 -- sampling: each step takes the ordering of one class in turn, most promising first
(untargeted: the true class's column holds the overall margin, as in the authors' code, and
leads; the authors go through the classes in index order with 1,000 samples each and no
budget) and draws
``proposals_per_step`` k-pixel combinations from its top N, the rank r of each pixel drawn
with P(r) decreasing linearly (the authors' N - floor(sqrt(U[0, N^2))) - 1). The sweep alone
is exhaustive for k = 1, so then there is no second stage.
"""
import dataclasses
import jax
import jax.numpy as jnp
from flax import struct

from pixeljax.sparse import method
from pixeljax.sparse.problem import corners


@struct.dataclass
class State:
  top: jax.Array          # (K, N) indices of the best one-pixel changes per class ordering
  top_score: jax.Array    # (K, N) their scores (lower: more promising)
  key: jax.Array
  tracker: method.Tracker


@dataclasses.dataclass(frozen=True)
class CornerSearch(method.Method):
  num_classes: int = 10

  @property
  def changes(self) -> int:
    h, w, c = self.image_shape
    return h * w * 2 ** c

  @property
  def sweep_steps(self) -> int:
    return -(-self.changes // self.config.proposals)

  @property
  def queries_per_step(self) -> int:
    return self.config.proposals

  @property
  def first_queries(self) -> int:
    return min(self.config.proposals, self.changes)

  @property
  def max_iterations(self) -> int:
    if self.config.pixels == 1:
      return self.sweep_steps - 1
    return -(-self.config.budget // self.config.proposals) - 1

  def change(self, index):
    """One-pixel change ``index`` (position-major, corner-minor, as the authors order them)
    -> (x, y, colour) of length 2 + C."""
    h, w, c = self.image_shape
    cube = corners(c)
    pos, corner = index // 2 ** c, index % 2 ** c
    return jnp.concatenate([jnp.stack([pos % w, pos // w]).astype(jnp.float32), cube[corner]])

  def _sweep_block(self, block: int):
    """The block's one-pixel changes as k-pixel candidates (the one pixel written k times)
    and whether each is a real change (the last block is padded)."""
    idx = block * self.config.proposals + jnp.arange(self.config.proposals)
    valid = idx < self.changes
    idx = jnp.minimum(idx, self.changes - 1)
    one = jax.vmap(self.change)(idx)
    return jnp.tile(one, (1, self.config.pixels)), idx, valid

  def _scores(self, ev, label, target):
    """(B, K) per-class scores of one-pixel changes, lower = more promising."""
    logp = jnp.log(jnp.maximum(ev.probs, jnp.finfo(ev.probs.dtype).tiny))
    k = logp.shape[-1]
    if self.config.targeted:
      others = jnp.max(jnp.where(jnp.arange(k) == target, -jnp.inf, logp), -1)
      return jnp.broadcast_to((others - logp[:, target])[:, None], logp.shape)
    others = jnp.max(jnp.where(jnp.arange(k) == label, -jnp.inf, logp), -1)
    scores = logp[:, label][:, None] - logp
    return scores.at[:, label].set(logp[:, label] - others)

  def _merge(self, state_top, state_score, idx, scores, valid):
    n = self.config.top_candidates
    scores = jnp.where(valid[:, None], scores, jnp.inf).T              # (K, B)
    all_scores = jnp.concatenate([state_score, scores], 1)
    all_idx = jnp.concatenate([state_top, jnp.broadcast_to(idx, scores.shape)], 1)
    neg, pos = jax.lax.top_k(-all_scores, n)
    return jnp.take_along_axis(all_idx, pos, 1), -neg

  def first(self, key, problem=None):
    return self._sweep_block(0)[0]

  def begin(self, key, cands, scores, problem: method.Problem) -> State:
    _, idx, valid = self._sweep_block(0)
    scores = _mask(scores, valid)
    n, k = self.config.top_candidates, self.num_classes
    top, score = self._merge(jnp.zeros((k, n), jnp.int32), jnp.full((k, n), jnp.inf), idx,
                             self._scores(scores, problem.label, problem.target), valid)
    tracker = method.start(self.config, cands, scores, jnp.argmin(scores.loss),
                           spent=jnp.sum(valid))
    return State(top=top, top_score=score, key=key, tracker=tracker)

  def ask(self, state: State, problem=None):
    cfg = self.config
    block = state.tracker.iteration + 1
    in_sweep = block < self.sweep_steps
    key, k_rank, k_noise = jax.random.split(state.key, 3)
    sweep_cands, idx, valid = self._sweep_block(jnp.minimum(block, self.sweep_steps - 1))
    # Stage 2: rank r in [0, N) with P(r) decreasing linearly, for every pixel of every
    # proposal, from one class's ordering in turn.
    n = cfg.top_candidates
    u = jax.random.randint(k_rank, (cfg.proposals, cfg.pixels), 0, n * n)
    root = jnp.floor(jnp.sqrt(u.astype(jnp.float32))).astype(jnp.int32)
    root = root - (root * root > u)            # exact integer square root for any N
    rank = n - root - 1
    # Orderings in turn, most promising first: by the best score each one holds (the true
    # class's column, the overall margin, comes first; then the classes the sweep brought
    # closest to the top). With a 10k budget only a few orderings get a turn on CIFAR-10.
    turn = jnp.argsort(state.top_score[:, 0])
    column = turn[(block - self.sweep_steps) % self.num_classes]
    chosen = state.top[column][jnp.clip(rank, 0, n - 1)]                 # (B, k)
    sample_cands = jax.vmap(jax.vmap(self.change))(chosen).reshape(cfg.proposals, -1)
    cands = jnp.where(in_sweep, sweep_cands, sample_cands)
    return cands, (state.replace(key=key), idx, valid, in_sweep)

  def tell(self, pending, cands, scores, problem: method.Problem) -> State:
    cfg = self.config
    state, idx, valid, in_sweep = pending
    scores = _mask(scores, jnp.where(in_sweep, valid, True))
    top, score = jax.lax.cond(
        in_sweep,
        lambda: self._merge(state.top, state.top_score, idx,
                            self._scores(scores, problem.label, problem.target), valid),
        lambda: (state.top, state.top_score))
    b = jnp.argmin(scores.loss)
    better = scores.loss[b] < state.tracker.best_loss
    tracker = method.update(cfg, state.tracker, cands, scores, replace=better, best=cands[b],
                            best_loss=scores.loss[b], best_probs=scores.probs[b],
                            best_reached=scores.reached[b],
                            spent=jnp.where(in_sweep, jnp.sum(valid), cfg.proposals))
    return State(top=top, top_score=score, key=state.key, tracker=tracker)


def _mask(ev, valid):
  """Padding candidates of the sweep's last block neither fool nor win."""
  return ev.replace(loss=jnp.where(valid, ev.loss, jnp.inf), fooled=ev.fooled & valid,
                    reached=ev.reached & valid)
