"""Recall by item popularity bucket against a hand-worked example."""

import numpy as np
import pytest

from alignrec_jax.data import Dataset, Interactions
from alignrec_jax.evaluation.popularity import popularity_buckets, recall_by_bucket


def _pairs(users, items):
  return Interactions(np.asarray(users, np.int32), np.asarray(items, np.int32))


def _dataset(train_items):
  empty = _pairs([], [])
  train = _pairs(np.zeros(len(train_items)), train_items)
  return Dataset(name="toy", num_users=1, num_items=5, train=train, valid=empty, test=empty)


def test_buckets_sort_by_training_count_then_item_id():
  # Training counts: item 0: 3, 1: 0, 2: 1, 3: 1, 4: 2 -> order 1, 2, 3, 4, 0.
  dataset = _dataset([0, 0, 0, 2, 3, 4, 4])
  np.testing.assert_array_equal(popularity_buckets(dataset, 5), [4, 0, 1, 2, 3])
  # Two buckets: array_split gives the 3 rarest (1, 2, 3) then (4, 0).
  np.testing.assert_array_equal(popularity_buckets(dataset, 2), [1, 0, 0, 0, 1])
  with pytest.raises(ValueError, match="num_buckets"):
    popularity_buckets(dataset, 6)


def test_recall_by_bucket_counts_held_out_pairs_found_in_the_top_k():
  buckets = np.array([1, 0, 0, 0, 1])
  users = np.array([3, 7])
  top = np.array([[1, 4], [2, -1]])  # user 3's top 2: items 1, 4; user 7's: item 2
  # Held-out: (3,1) hit b0, (3,0) miss b1, (3,4) hit b1, (7,3) miss b0, (7,2) hit b0,
  # (9,1) ignored (user 9 not listed).
  out = recall_by_bucket(
    top, users, np.array([3, 3, 3, 7, 7, 9]), np.array([1, 0, 4, 3, 2, 1]), buckets
  )
  np.testing.assert_array_equal(out["pairs"], [3, 2])
  np.testing.assert_array_equal(out["hits"], [2, 1])
  np.testing.assert_allclose(out["recall"], [2 / 3, 1 / 2])
  empty = recall_by_bucket(top, users, np.array([3]), np.array([1]), np.array([0, 0, 0, 0, 1]))
  assert empty["recall"][0] == 1.0 and np.isnan(empty["recall"][1])
