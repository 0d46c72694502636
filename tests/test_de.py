import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pixeljax.evolution import de
from pixeljax.evolution.sampling import distinct


def _distinct_indices(key, popsize, count):     # as DE draws its members' partners
  return distinct(key, popsize, count, exclude=jnp.arange(popsize)[:, None])


def test_distinct_indices_are_distinct_and_exclude_self():
  r = np.asarray(_distinct_indices(jax.random.PRNGKey(0), 7, 3))
  assert r.shape == (7, 3)
  for i, row in enumerate(r):
    assert len(set(row.tolist()) | {i}) == 4
    assert row.min() >= 0 and row.max() < 7


def test_distinct_indices_are_uniform():
  r = np.asarray(jax.vmap(lambda k: _distinct_indices(k, 5, 2))(
      jax.random.split(jax.random.PRNGKey(1), 4000)))
  counts = np.bincount(r[:, 0, 0], minlength=5)  # row 0: choices among 1..4
  assert counts[0] == 0
  np.testing.assert_allclose(counts[1:] / counts.sum(), 0.25, atol=0.03)


@pytest.mark.parametrize("config", [de.DEConfig.paper(), de.DEConfig.scipy_best1bin(),
                                    de.DEConfig.scipy_best1bin(recombination=0.7),
                                    de.DEConfig.paper(updating="immediate"),
                                    de.DEConfig.scipy_best1bin(updating="immediate")])
def test_de_minimises_a_shifted_sphere(config):
  target = jnp.array([1.0, -2.0, 0.5])
  fit = lambda pop: jnp.sum((pop - target) ** 2, -1)
  lo, hi = -jnp.full(3, 5.), jnp.full(3, 5.)
  pop = jax.random.uniform(jax.random.PRNGKey(0), (40, 3), minval=-5, maxval=5)
  state = de.init(jax.random.PRNGKey(1), pop, fit, config)
  start = float(state.best_fitness)
  state = jax.jit(lambda s: de.run(s, fit, config, lo, hi, 150))(state)
  assert float(state.best_fitness) < 1e-3 < start
  assert int(state.generation) == 150 and int(state.member) == 0
  chex.assert_trees_all_close(state.best_member, target, atol=0.05)


def test_fitness_never_gets_worse_and_bounds_hold():
  config = de.DEConfig.paper()
  fit = lambda pop: jnp.sum(jnp.sin(3 * pop) + pop ** 2, -1)
  lo, hi = jnp.zeros(2), jnp.ones(2)
  state = de.init(jax.random.PRNGKey(0), jax.random.uniform(jax.random.PRNGKey(2), (10, 2)),
                  fit, config)
  for _ in range(20):
    new = de.step(state, fit, config, lo, hi)
    assert np.all(np.asarray(new.fitness) <= np.asarray(state.fitness))
    assert np.all((np.asarray(new.population) >= 0) & (np.asarray(new.population) <= 1))
    state = new


def test_early_stop_freezes_a_finished_problem_under_vmap():
  config = de.DEConfig.paper(stop_fitness=0.5)
  fit_for = lambda scale: (lambda pop: scale * (1.0 + jnp.sum(pop ** 2, -1)))
  lo, hi = -jnp.ones(2), jnp.ones(2)

  def one(key, scale):
    pop = jax.random.uniform(key, (12, 2), minval=-1, maxval=1)
    s = de.init(key, pop, fit_for(scale), config)
    return de.run(s, fit_for(scale), config, lo, hi, 50)

  # scale 0 is solved at initialisation; scale 1e6 never reaches the stop fitness
  out = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(0), 2), jnp.array([0., 1e6]))
  assert bool(out.done[0]) and int(out.generation[0]) == 0
  assert int(out.generation[1]) == 50


def test_unknown_strategy():
  with pytest.raises(ValueError, match="unknown DE strategy"):
    de.DEConfig(strategy="rand2bin")


def test_immediate_updating_promotes_a_better_trial_at_once():
  """SciPy's immediate mode: a member's improvement is the best before the next member's trial
  is built (deferred DE sees it only in the next generation), and the generation counts once
  every member has been visited."""
  config = de.DEConfig.scipy_best1bin(updating="immediate")
  fit = lambda pop: jnp.sum(pop ** 2, -1)
  lo, hi = -jnp.ones(2), jnp.ones(2)
  pop = jnp.array([[.9, .9], [.8, .8], [.7, .7], [.6, .6], [.95, .95]])
  state = de.init(jax.random.PRNGKey(0), pop, fit, config)
  seen_best = []
  for i in range(5):
    assert int(state.member) == i and int(state.generation) == 0
    trial, state = de.ask_member(state, config, lo, hi)
    f = jnp.where(i == 1, 0.0, 10.0)             # only member 1's trial improves (to 0)
    trial = jnp.where(i == 1, jnp.zeros(2), trial)
    state = de.tell_member(state, trial, f, config)
    seen_best.append(float(state.best_fitness))
  assert seen_best[0] == pytest.approx(.72) and seen_best[1:] == [0.0] * 4
  np.testing.assert_array_equal(state.best_member, [0., 0.])
  np.testing.assert_array_equal(state.population[1], [0., 0.])
  np.testing.assert_allclose(np.delete(state.population, 1, 0), np.delete(pop, 1, 0))
  assert int(state.generation) == 1 and int(state.member) == 0
  # F is drawn once per generation, in best1bin's dither range
  assert 0.5 <= float(state.scale) < 1.0


def test_unknown_updating():
  with pytest.raises(ValueError, match="unknown DE updating"):
    de.DEConfig(updating="lazy")


def test_immediate_updating_a_tie_in_the_best_slot_moves_the_best():
  """SciPy keeps the best at index 0, so a trial tying it there replaces it as the best (the
  base vector of best1bin from then on); a tie elsewhere does not."""
  config = de.DEConfig.scipy_best1bin(updating="immediate")
  pop = jnp.array([[.5, .5], [.1, .1], [.9, .9], [.7, .7]])
  fit = lambda p: jnp.sum(p ** 2, -1)
  lo, hi = -jnp.ones(2), jnp.ones(2)
  state = de.init(jax.random.PRNGKey(0), pop, fit, config)      # best: member 1 (0.02)
  _, state = de.ask_member(state, config, lo, hi)                 # member 0 ties the best
  state = de.tell_member(state, jnp.array([.1, -.1]), state.best_fitness, config)
  np.testing.assert_array_equal(state.best_member, pop[1])
  _, state = de.ask_member(state, config, lo, hi)                 # member 1: the best's slot
  state = de.tell_member(state, jnp.array([-.1, .1]), state.best_fitness, config)
  np.testing.assert_array_equal(state.best_member, jnp.array([-.1, .1]))
