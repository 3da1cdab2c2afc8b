"""Content-only item-kNN (evaluation/item_knn.py) and the short-history cohort (evaluation/
index.py) against plain NumPy forms."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

# The loop-based MMRec metrics of the evaluate tests: one reference for every metric test.
from test_ranking import _dataset, _evaluate_numpy, _random_dataset

from alignrec_jax.data.dataset import Dataset
from alignrec_jax.evaluation import (
  ScoreChunk,
  evaluate,
  make_eval_data,
  restrict_heldout,
  shortest_history_users,
)
from alignrec_jax.evaluation.item_knn import evaluate_item_knn, item_knn, item_knn_scores


def _binary_features(rng: np.random.Generator, num_items: int) -> np.ndarray:
  """Rows with exactly four ones in 8 columns, a few duplicated, one all zero.

  Normalised entries are 0.5 and cosines multiples of 0.25, so every cosine and every sum of them
  is exact in float32 and float64 alike: JAX and NumPy agree to the bit, with many exact ties
  (duplicate rows, equal overlaps, the zero row's cosine 0 with everything).
  """
  feats = np.zeros((num_items, 8), np.float32)
  for i in range(num_items):
    feats[i, rng.choice(8, 4, replace=False)] = 1.0
  feats[5] = feats[2]
  feats[9] = feats[2]
  feats[7] = 0.0
  return feats


def _knn_numpy(features: np.ndarray, k: int) -> np.ndarray:
  """Dense S: row i keeps its k most cosine-similar other items (ties: lower id), raw cosines."""
  x = np.asarray(features, np.float64)
  x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  cos = x @ x.T
  ids = np.arange(len(x))
  dense = np.zeros_like(cos)
  for i in ids:
    others = ids[ids != i]
    top = others[np.lexsort((others, -cos[i, others]))][:k]
    dense[i, top] = cos[i, top]
  return dense


def _history_numpy(dataset: Dataset) -> np.ndarray:
  """[num_users, num_items] 0/1 matrix of distinct training pairs."""
  history = np.zeros((dataset.num_users, dataset.num_items))
  history[dataset.train.users, dataset.train.items] = 1.0
  return history


def _dense(neighbours: np.ndarray, weights: np.ndarray) -> np.ndarray:
  dense = np.zeros((len(neighbours), len(neighbours)))
  np.put_along_axis(dense, neighbours.astype(np.int64), weights, axis=1)
  return dense


# ----------------------------------------------------------------------------- item-kNN


def test_item_knn_matches_numpy_with_ties() -> None:
  rng = np.random.default_rng(0)
  features = _binary_features(rng, 30)
  neighbours, weights = item_knn(features, k=4, block_size=8)  # several blocks, the last padded
  assert neighbours.shape == weights.shape == (30, 4)
  assert neighbours.dtype == np.int32 and weights.dtype == np.float32
  assert np.all(neighbours != np.arange(30)[:, None])  # self is never a neighbour
  assert np.all(np.diff(neighbours, axis=1) > 0)  # ascending, distinct
  want = _knn_numpy(features, 4)
  # Same neighbour sets (ties resolved to lower ids) and the same exact cosines.
  np.testing.assert_array_equal(_dense(neighbours, weights) != 0, want != 0)
  np.testing.assert_array_equal(_dense(neighbours, weights), want)
  # Row 7 is zero: cosine 0 with everything, so its neighbours are the lowest other ids.
  np.testing.assert_array_equal(neighbours[7], [0, 1, 2, 3])
  np.testing.assert_array_equal(weights[7], 0.0)


def test_item_knn_raw_cosines_on_real_valued_features() -> None:
  rng = np.random.default_rng(1)
  features = rng.normal(size=(25, 6)).astype(np.float32) * rng.uniform(0.1, 50, (25, 1))
  neighbours, weights = item_knn(features, k=3)
  want = _knn_numpy(features, 3)
  np.testing.assert_allclose(_dense(neighbours, weights), want, atol=1e-6)
  # Negative cosines are kept as they are (no clipping, no normalisation).
  neighbours, weights = item_knn(np.array([[1, 0], [-1, 0], [0, -1]], np.float32), k=2)
  np.testing.assert_array_equal(neighbours[0], [1, 2])
  np.testing.assert_allclose(weights[0], [-1, 0], atol=1e-7)


def test_item_knn_scores_match_history_times_s() -> None:
  rng = np.random.default_rng(2)
  dataset = _random_dataset(rng, 20, 30)
  neighbours, weights = item_knn(_binary_features(rng, 30), k=5)
  # One chunk holding every user; the distinct training pairs, then one past-the-end entry
  # (row = chunk size) that must be dropped, as EvalData pads its windows.
  keys = np.unique(dataset.train.users.astype(np.int64) * 30 + dataset.train.items)
  rows = np.append(keys // 30, 20).astype(np.int32)
  items = np.append(keys % 30, 3).astype(np.int32)
  chunk = ScoreChunk(jnp.arange(20, dtype=jnp.int32), jnp.asarray(rows), jnp.asarray(items))
  got = np.asarray(item_knn_scores((jnp.asarray(neighbours), jnp.asarray(weights)), chunk))
  want = _history_numpy(dataset) @ _dense(neighbours, weights)
  np.testing.assert_array_equal(got, want)  # multiples of 0.25: exact


def test_evaluate_item_knn_matches_numpy() -> None:
  rng = np.random.default_rng(3)
  num_users, num_items, ks = 47, 30, (1, 5, 10, 30)
  dataset = _random_dataset(rng, num_users, num_items)
  features = _binary_features(rng, num_items)
  # The default ranking method here ("count" on CPU); the hand case below takes "top_k".
  got = evaluate_item_knn(dataset, features, k=4, ks=ks, chunk_size=8, head_fraction=0.3)
  # Reference: dense history times dense S, ranked by the evaluate tests' loop-based metrics
  # (an identity item table turns a score matrix into "embeddings").
  scores = _history_numpy(dataset) @ _knn_numpy(features, 4)
  want = _evaluate_numpy(scores, np.eye(num_items), dataset, ks, 0.3)
  trained = set(dataset.train.users.tolist())
  for split in ("valid", "test"):
    # Some evaluated user has no held-out item in this split and must not be averaged.
    assert trained - set(dataset.split(split).users.tolist())
    assert got[split]["num_users"] == want[split]["num_users"] > 0
    assert got[split]["num_tail_users"] == want[split]["num_tail_users"] > 0
    assert set(got[split]) == set(want[split])
    for key, value in want[split].items():
      assert got[split][key] == pytest.approx(value, abs=1e-6), (split, key)


def test_evaluate_item_knn_hand_computed() -> None:
  # Items 0 and 1 are duplicates, 2 is orthogonal to them, 3 lies halfway (cosine 1/sqrt(2) to
  # each of 0, 1 and 2: a three-way tie, broken by lower id).
  features = np.array([[1, 0], [1, 0], [0, 1], [1, 1]], np.float32)
  neighbours, weights = item_knn(features, k=2)
  c = 1 / math.sqrt(2)
  np.testing.assert_array_equal(neighbours, [[1, 3], [0, 3], [0, 3], [0, 1]])
  np.testing.assert_allclose(weights, [[1, c], [1, c], [0, c], [c, c]], rtol=1e-6)

  dataset = _dataset(
    num_users=4,
    num_items=4,
    train=[(0, 2), (1, 0), (1, 2), (2, 3)],
    valid=[(0, 0), (1, 1), (3, 0)],  # user 3 has no training row: ignored
    test=[(0, 1), (2, 1)],  # user 1 has no test item: not averaged for test
  )
  # Scores (training items masked): user 0 {0: 0, 1: 0, 3: c} ranks 3, 0, 1;
  # user 1 {1: 1, 3: 2c} ranks 3, 1; user 2 {0: c, 1: c, 2: 0} ranks 0, 1, 2.
  got = evaluate_item_knn(dataset, features, k=2, ks=(1, 2, 3), chunk_size=2, method="top_k")
  valid, test = got["valid"], got["test"]
  assert (valid["num_users"], test["num_users"]) == (2, 2)
  # Valid: user 0 item 0 at position 2, user 1 item 1 at position 2.
  assert valid["recall@1"] == 0.0
  assert valid["recall@2"] == pytest.approx(1.0)
  assert valid["ndcg@2"] == pytest.approx(1 / math.log2(3))
  assert valid["map@2"] == pytest.approx(0.5)
  assert valid["precision@2"] == pytest.approx(0.5)
  # Test: user 0 item 1 at position 3, user 2 item 1 at position 2 (behind the tied item 0).
  assert test["recall@2"] == pytest.approx(0.5)
  assert test["recall@3"] == pytest.approx(1.0)
  assert test["ndcg@3"] == pytest.approx((1 / 2 + 1 / math.log2(3)) / 2)
  assert test["map@3"] == pytest.approx((1 / 3 + 1 / 2) / 2)


def test_evaluate_item_knn_rejects_bad_features() -> None:
  dataset = _dataset(2, 4, train=[(0, 1), (1, 2)], valid=[(0, 0)], test=[(1, 3)])
  features = np.eye(4, dtype=np.float32)
  with pytest.raises(ValueError, match="3 rows but the dataset has 4 items"):
    evaluate_item_knn(dataset, features[:3], k=1, ks=(1,))
  with pytest.raises(ValueError, match="2-D"):
    evaluate_item_knn(dataset, features[0], k=1, ks=(1,))
  with pytest.raises(ValueError, match="NaN"):
    evaluate_item_knn(dataset, np.where(features == 1, np.nan, 0), k=1, ks=(1,))
  with pytest.raises(ValueError, match="k=4"):
    evaluate_item_knn(dataset, features, k=4, ks=(1,))


# ----------------------------------------------------------------------------- short histories


def test_shortest_history_users_order_and_ties() -> None:
  # Training counts: user 0: 3, users 1, 3, 5: 1, user 2: 0 (held-out only), user 4: 2.
  dataset = _dataset(
    num_users=6,
    num_items=4,
    train=[(0, 0), (0, 1), (0, 2), (5, 1), (3, 0), (1, 3), (4, 0), (4, 3)],
    valid=[(2, 1)],
    test=[],
  )
  np.testing.assert_array_equal(shortest_history_users(dataset, 1.0), [1, 3, 5, 4, 0])
  np.testing.assert_array_equal(shortest_history_users(dataset, 0.4), [1, 3])  # round(2.0)
  np.testing.assert_array_equal(shortest_history_users(dataset, 0.5), [1, 3])  # round(2.5) = 2
  np.testing.assert_array_equal(shortest_history_users(dataset, 0.1), [1])  # at least one
  assert shortest_history_users(dataset).dtype == np.int32


def test_shortest_history_users_matches_sorting() -> None:
  rng = np.random.default_rng(4)
  dataset = _random_dataset(rng, 80, 30)
  counts = np.bincount(dataset.train.users, minlength=80)
  trained = [u for u in range(80) if counts[u] > 0]
  ranked = sorted(trained, key=lambda u: (counts[u], u))
  for fraction in (0.05, 0.2, 0.33, 1.0):
    want = ranked[: max(1, round(fraction * len(trained)))]
    assert shortest_history_users(dataset, fraction).tolist() == want


def test_shortest_history_users_rejects_bad_arguments() -> None:
  dataset = _dataset(2, 2, train=[(0, 1)], valid=[], test=[])
  for fraction in (0.0, -0.1, 1.5, float("nan")):
    with pytest.raises(ValueError, match="fraction"):
      shortest_history_users(dataset, fraction)
  with pytest.raises(ValueError, match="no user"):
    shortest_history_users(_dataset(2, 2, train=[], valid=[(0, 1)], test=[]))
  with pytest.raises(ValueError, match="user ids"):
    shortest_history_users(_dataset(2, 2, train=[(2, 1)], valid=[], test=[]))


def test_restrict_heldout_then_evaluate_matches_numpy_subset() -> None:
  rng = np.random.default_rng(5)
  num_users, num_items, ks = 60, 35, (1, 5, 20)
  dataset = _random_dataset(rng, num_users, num_items)
  users = shortest_history_users(dataset, 0.3)
  restricted = restrict_heldout(dataset, users)

  # Training, sizes and the head / tail split are unchanged; held-out rows only of `users`.
  assert restricted.train is dataset.train
  assert (restricted.num_users, restricted.num_items) == (num_users, num_items)
  chosen = set(users.tolist())
  for name in ("valid", "test"):
    split = dataset.split(name)
    want = [
      (u, i) for u, i in zip(split.users.tolist(), split.items.tolist(), strict=True) if u in chosen
    ]
    got = restricted.split(name)
    assert list(zip(got.users.tolist(), got.items.tolist(), strict=True)) == want
  full, sub = make_eval_data(dataset, chunk_size=8), make_eval_data(restricted, chunk_size=8)
  np.testing.assert_array_equal(full.is_tail, sub.is_tail)

  # Small integers: exact scores with ties.
  user_emb = rng.integers(-2, 3, (num_users, 5)).astype(np.float32)
  item_emb = rng.integers(-2, 3, (num_items, 5)).astype(np.float32)
  got = evaluate(user_emb, item_emb, sub, ks=ks)
  # The reference: the subset's held-out pairs, filtered independently, and the loop metrics.
  subset = _dataset(
    num_users,
    num_items,
    list(zip(dataset.train.users.tolist(), dataset.train.items.tolist(), strict=True)),
    *(
      [(u, i) for u, i in zip(s.users.tolist(), s.items.tolist(), strict=True) if u in chosen]
      for s in (dataset.valid, dataset.test)
    ),
  )
  want = _evaluate_numpy(user_emb, item_emb, subset, ks, 0.2)
  for split in ("valid", "test"):
    assert 0 < got[split]["num_users"] == want[split]["num_users"] <= len(users)
    for key, value in want[split].items():
      assert got[split][key] == pytest.approx(value, abs=1e-6), (split, key)


def test_restrict_heldout_rejects_bad_users() -> None:
  dataset = _dataset(3, 2, train=[(0, 1)], valid=[(1, 0)], test=[(2, 1)])
  with pytest.raises(ValueError, match=r"user ids must be in \[0, 3\)"):
    restrict_heldout(dataset, [0, 3])
  with pytest.raises(ValueError, match="user ids"):
    restrict_heldout(dataset, [-1])
  with pytest.raises(ValueError, match="1-D"):
    restrict_heldout(dataset, [[0, 1]])
  with pytest.raises(TypeError, match="integer"):
    restrict_heldout(dataset, [0.0])
  empty = restrict_heldout(dataset, [])
  assert len(empty.valid) == len(empty.test) == 0 and len(empty.train) == 1
