"""The on-device negative sampler: exact exclusion, uniformity, determinism."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignrec_jax.data import Interactions
from alignrec_jax.errors import DataError
from alignrec_jax.sampling import NegativeSampler


def _train(rng, num_users=40, num_items=30, n=500):
  keys = np.unique(rng.integers(0, num_users * num_items, n))
  return Interactions(
    users=(keys // num_items).astype(np.int32), items=(keys % num_items).astype(np.int32)
  )


def test_contains_is_exact_membership():
  rng = np.random.default_rng(0)
  train = _train(rng)
  sampler = NegativeSampler.from_interactions(train, num_users=40)
  users, items = np.meshgrid(np.arange(40), np.arange(31), indexing="ij")  # item 30: unseen
  got = np.asarray(sampler.contains(jnp.asarray(users.ravel()), jnp.asarray(items.ravel())))
  truth = set(zip(train.users.tolist(), train.items.tolist(), strict=True))
  expected = [(u, i) in truth for u, i in zip(users.ravel(), items.ravel(), strict=True)]
  np.testing.assert_array_equal(got, expected)


def test_negatives_exclude_training_items_and_come_from_the_training_pool():
  rng = np.random.default_rng(1)
  train = _train(rng)
  sampler = NegativeSampler.from_interactions(train, num_users=40)
  users = jnp.asarray(rng.integers(0, 40, 4096), jnp.int32)
  negs = np.asarray(jax.jit(sampler.sample)(jax.random.key(0), users))
  truth = set(zip(train.users.tolist(), train.items.tolist(), strict=True))
  assert not any((int(u), int(i)) in truth for u, i in zip(np.asarray(users), negs, strict=True))
  assert set(negs.tolist()) <= set(np.unique(train.items).tolist())


def test_negatives_are_uniform_over_the_allowed_items():
  # User 0 has items 0..5 of a pool of 10 (items 6..9 seen by user 1): allowed {6, 7, 8, 9}.
  train = Interactions(
    users=np.array([0] * 6 + [1] * 4, np.int32),
    items=np.array(list(range(6)) + [6, 7, 8, 9], np.int32),
  )
  sampler = NegativeSampler.from_interactions(train, num_users=2)
  negs = np.asarray(sampler.sample(jax.random.key(3), jnp.zeros(40000, jnp.int32)))
  counts = np.bincount(negs, minlength=10)
  assert counts[:6].sum() == 0
  # Chi-square with 3 degrees of freedom; 16.3 is the 0.999 quantile.
  expected = 10000
  assert ((counts[6:] - expected) ** 2 / expected).sum() < 16.3


def test_same_key_same_negatives():
  rng = np.random.default_rng(2)
  sampler = NegativeSampler.from_interactions(_train(rng), num_users=40)
  users = jnp.asarray(rng.integers(0, 40, 256), jnp.int32)
  a = sampler.sample(jax.random.key(7), users)
  b = sampler.sample(jax.random.key(7), users)
  np.testing.assert_array_equal(a, b)


def test_user_with_every_item_is_an_error():
  train = Interactions(users=np.array([0, 0, 1], np.int32), items=np.array([0, 1, 0], np.int32))
  with pytest.raises(DataError, match="user 0 has interacted with all 2"):
    NegativeSampler.from_interactions(train, num_users=2)


def test_degree_sensitive_edges_draw_without_replacement_in_proportion_to_the_weights():
  """FREEDOM's pruning: P(edge first drawn) is 1 / sqrt(d_u d_i), normalised (torch.multinomial);
  a draw never repeats an edge."""
  from alignrec_jax.sampling import degree_sensitive_edges

  users = jnp.array([0, 0, 0, 1, 2, 2], jnp.int32)
  items = jnp.array([0, 1, 2, 0, 0, 3], jnp.int32)
  # degrees: users 3, 1, 2; items 3, 1, 1, 1 -> each edge's d_u, d_i
  weights = 1 / np.sqrt(np.array([3, 3, 3, 1, 2, 2]) * np.array([3, 1, 1, 3, 3, 1]))
  draw = jax.jit(
    jax.vmap(
      lambda key: degree_sensitive_edges(key, users, items, num_users=3, num_items=4, keep=1)
    )
  )
  first_users, first_items = draw(jax.random.split(jax.random.key(0), 40_000))
  edge = np.asarray(first_users[:, 0]) * 4 + np.asarray(first_items[:, 0])
  frequency = np.array([np.mean(edge == u * 4 + i) for u, i in zip(users, items, strict=True)])
  np.testing.assert_allclose(frequency, weights / weights.sum(), atol=0.01)
  kept_users, kept_items = degree_sensitive_edges(
    jax.random.key(1), users, items, num_users=3, num_items=4, keep=4
  )
  pairs = set(zip(np.asarray(kept_users).tolist(), np.asarray(kept_items).tolist(), strict=True))
  assert len(pairs) == 4 and pairs <= set(zip(users.tolist(), items.tolist(), strict=True))
