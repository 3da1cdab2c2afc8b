"""Tests of alignrec_jax.evaluation (ranking and its index) against MMRec's metric definitions."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from alignrec_jax.data.dataset import Dataset, Interactions
from alignrec_jax.evaluation.index import EvalData, make_eval_data
from alignrec_jax.evaluation.ranking import (
  METHODS,
  ScoreChunk,
  _dot_scores,
  _evaluate_sums,
  evaluate,
  evaluate_members,
  evaluate_scores,
)

Pairs = list[tuple[int, int]]


def _interactions(pairs: Pairs) -> Interactions:
  array = np.asarray(pairs, np.int32).reshape(-1, 2)
  return Interactions(array[:, 0].copy(), array[:, 1].copy())


def _dataset(num_users: int, num_items: int, train: Pairs, valid: Pairs, test: Pairs) -> Dataset:
  return Dataset(
    "tiny", num_users, num_items, _interactions(train), _interactions(valid), _interactions(test)
  )


def _metrics_numpy(
  scores: np.ndarray, train: set[int], relevant: set[int], counted: set[int], k: int
) -> tuple[float, float, float, float]:
  """MMRec definitions for one user, with plain loops.

  Args:
    scores: [num_items] the user's scores.
    train: the user's training items (masked out of the ranking).
    relevant: items whose hits count (held-out items, or held-out tail items).
    counted: n = len(counted) normalizes recall, NDCG and MAP.
    k: cutoff.

  Returns:
    (recall, ndcg, precision, map) at k.
  """
  ranking = sorted((i for i in range(len(scores)) if i not in train), key=lambda i: (-scores[i], i))
  n = len(counted)
  hits, dcg, ap = 0, 0.0, 0.0
  for p, item in enumerate(ranking[:k], start=1):
    if item in relevant:
      hits += 1
      dcg += 1.0 / math.log2(p + 1)
      ap += hits / p
  idcg = sum(1.0 / math.log2(p + 1) for p in range(1, min(n, k) + 1))
  return hits / n, dcg / idcg, hits / k, ap / min(n, k)


def _evaluate_numpy(
  user_emb: np.ndarray,
  item_emb: np.ndarray,
  dataset: Dataset,
  ks: tuple[int, ...],
  head_fraction: float,
) -> dict[str, dict[str, float]]:
  """A direct, loop-based implementation of the protocol, to compare against."""

  def by_user(split: Interactions) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for u, i in zip(split.users.tolist(), split.items.tolist(), strict=True):
      out.setdefault(u, set()).add(i)
    return out

  train = by_user(dataset.train)
  counts = np.bincount(dataset.train.items, minlength=dataset.num_items)
  popular = sorted(range(dataset.num_items), key=lambda i: (-counts[i], i))
  head = set(popular[: int(round(head_fraction * dataset.num_items))])
  scores = np.asarray(user_emb, np.float64) @ np.asarray(item_emb, np.float64).T
  results = {}
  for name in ("valid", "test"):
    held = by_user(dataset.split(name))
    sums: dict[str, float] = {}
    num_users = num_tail_users = 0
    for u in sorted(held):
      if u not in train:
        continue
      tail = {i for i in held[u] if i not in head}
      num_users += 1
      num_tail_users += bool(tail)
      for prefix, relevant in (("", held[u]), ("tail_", tail)):
        if not relevant:
          continue
        for k in ks:
          values = _metrics_numpy(scores[u], train[u], relevant, relevant, k)
          for metric, value in zip(("recall", "ndcg", "precision", "map"), values, strict=True):
            key = f"{prefix}{metric}@{k}"
            sums[key] = sums.get(key, 0.0) + value
    out = {}
    for prefix, count in (("", num_users), ("tail_", num_tail_users)):
      for metric in ("recall", "ndcg", "precision", "map"):
        for k in ks:
          key = f"{prefix}{metric}@{k}"
          out[key] = sums.get(key, 0.0) / max(count, 1)
    out["num_users"], out["num_tail_users"] = num_users, num_tail_users
    results[name] = out
  return results


def _random_dataset(rng: np.random.Generator, num_users: int, num_items: int) -> Dataset:
  """Random pairs: users without training data, duplicates, a pair in two splits all occur."""
  splits: dict[str, Pairs] = {"train": [], "valid": [], "test": []}
  for u in range(num_users):
    for name, high in (("train", 12), ("valid", 4), ("test", 5)):
      if name == "train" and u % 10 == 3:
        continue  # held-out rows without a training row: must be ignored
      for item in rng.integers(0, num_items, rng.integers(0, high)):
        splits[name].append((u, int(item)))
  return _dataset(num_users, num_items, splits["train"], splits["valid"], splits["test"])


@pytest.mark.parametrize("method", METHODS)
def test_matches_numpy_reference(method: str) -> None:
  rng = np.random.default_rng(0)
  num_users, num_items, ks = 53, 40, (1, 5, 10, 40)
  dataset = _random_dataset(rng, num_users, num_items)
  # Small integers: exact float32 scores with many ties, so tie-breaking is exercised too.
  user_emb = rng.integers(-2, 3, (num_users, 6)).astype(np.float32)
  item_emb = rng.integers(-2, 3, (num_items, 6)).astype(np.float32)
  data = make_eval_data(dataset, chunk_size=16, head_fraction=0.3)
  assert data.num_chunks > 2 and data.num_eval_users % data.chunk_size != 0

  got = evaluate(user_emb, item_emb, data, ks=ks, method=method)
  want = _evaluate_numpy(user_emb, item_emb, dataset, ks, 0.3)
  for split in ("valid", "test"):
    assert set(got[split]) == set(want[split])
    assert got[split]["num_users"] == want[split]["num_users"] > 0
    assert got[split]["num_tail_users"] == want[split]["num_tail_users"] > 0
    for key, value in want[split].items():
      assert got[split][key] == pytest.approx(value, abs=1e-5), (split, key)


@pytest.mark.parametrize("method", METHODS)
def test_members_each_match_the_numpy_reference(method: str) -> None:
  rng = np.random.default_rng(2)
  num_users, num_items, ks, members = 41, 30, (1, 5, 30), 3
  dataset = _random_dataset(rng, num_users, num_items)
  user_emb = rng.integers(-2, 3, (members, num_users, 5)).astype(np.float32)
  item_emb = rng.integers(-2, 3, (members, num_items, 5)).astype(np.float32)
  data = make_eval_data(dataset, chunk_size=16, head_fraction=0.3)
  got = evaluate_members(user_emb, item_emb, data, ks=ks, method=method)
  assert len(got) == members
  for m in range(members):
    want = _evaluate_numpy(user_emb[m], item_emb[m], dataset, ks, 0.3)
    for split in ("valid", "test"):
      assert set(got[m][split]) == set(want[split])
      for key, value in want[split].items():
        assert got[m][split][key] == pytest.approx(value, abs=1e-5), (m, split, key)
  with pytest.raises(ValueError, match="members on the leading axis"):
    evaluate_members(user_emb[0], item_emb[0], data, ks=ks, method=method)


def test_methods_agree_on_real_valued_scores() -> None:
  rng = np.random.default_rng(1)
  dataset = _random_dataset(rng, 60, 45)
  user_emb = rng.normal(size=(60, 8)).astype(np.float32)
  item_emb = rng.normal(size=(45, 8)).astype(np.float32)
  data = jax.device_put(make_eval_data(dataset, chunk_size=8))
  a, b = (evaluate(user_emb, item_emb, data, ks=(3, 20), method=m) for m in METHODS)
  assert a == b
  want = _evaluate_numpy(user_emb, item_emb, dataset, (3, 20), 0.2)
  for key, value in want["test"].items():
    assert a["test"][key] == pytest.approx(value, abs=1e-5), key


def _hand_case() -> tuple[Dataset, np.ndarray, np.ndarray]:
  """Six items with 1-d scores 5, 4, 4, 3, 2, 1 (items 0..5) for every user."""
  item_emb = np.array([[5.0], [4.0], [4.0], [3.0], [2.0], [1.0]], np.float32)
  user_emb = np.ones((6, 1), np.float32)
  dataset = _dataset(
    num_users=6,
    num_items=6,
    # User 0: its best item (0) is a training item, masked. User 3: training only.
    train=[(0, 0), (1, 3), (2, 0), (3, 1)],
    # User 1's validation item 0 has the top score; user 4 has no training row: ignored.
    valid=[(0, 2), (1, 0), (2, 4), (4, 1)],
    # User 0 has 3 test items, more than K = 2; user 2 has none (not averaged for test).
    test=[(0, 1), (0, 3), (0, 5), (1, 1), (4, 2)],
  )
  return dataset, user_emb, item_emb


@pytest.mark.parametrize("method", METHODS)
def test_hand_computed(method: str) -> None:
  dataset, user_emb, item_emb = _hand_case()
  data = make_eval_data(dataset, chunk_size=2)
  got = evaluate(user_emb, item_emb, data, ks=(1, 2, 5), method=method)
  valid, test = got["valid"], got["test"]
  log2_3 = math.log2(3)

  # Rankings. User 0 (item 0 masked): 1, 2, 3, 4, 5 -- items 1 and 2 tie at 4, the lower id first.
  # User 1 (item 3 masked): 0, 1, 2, 4, 5 -- its validation item 0 stays above test item 1.
  # User 2 (item 0 masked): 1, 2, 3, 4, 5.
  assert test["num_users"] == 2  # users 0 and 1; user 2 has no test item, user 4 no training
  assert valid["num_users"] == 3  # users 0, 1, 2

  # Test, user 0: held-out {1, 3, 5} at positions 1, 3, 5; user 1: {1} at position 2.
  assert test["recall@1"] == pytest.approx((1 / 3 + 0) / 2)  # masked item 0 would take p1
  assert test["recall@2"] == pytest.approx((1 / 3 + 1) / 2)
  assert test["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
  # User 0, K = 2 < n = 3: IDCG over 2 positions, MAP divides by min(3, 2) = 2.
  ndcg0_k2 = 1 / (1 + 1 / log2_3)
  assert test["ndcg@2"] == pytest.approx((ndcg0_k2 + 1 / log2_3) / 2)
  assert test["map@2"] == pytest.approx((1 / 2 + (1 / 2) / 1) / 2)
  # User 0, K = 5: hits at 1, 3, 5 of n = 3.
  ndcg0_k5 = (1 + 1 / 2 + 1 / math.log2(6)) / (1 + 1 / log2_3 + 1 / 2)
  map0_k5 = (1 + 2 / 3 + 3 / 5) / 3
  assert test["recall@5"] == pytest.approx((1 + 1) / 2)
  assert test["ndcg@5"] == pytest.approx((ndcg0_k5 + 1 / log2_3) / 2)
  assert test["precision@5"] == pytest.approx((3 / 5 + 1 / 5) / 2)
  assert test["map@5"] == pytest.approx((map0_k5 + 1 / 2) / 2)

  # Valid: user 0 {2} at position 2 (behind the tied item 1: lower id first), user 1 {0} at 1,
  # user 2 {4} at 4.
  assert valid["recall@1"] == pytest.approx((0 + 1 + 0) / 3)
  assert valid["recall@2"] == pytest.approx((1 + 1 + 0) / 3)
  assert valid["ndcg@5"] == pytest.approx((1 / log2_3 + 1 + 1 / math.log2(5)) / 3)
  assert valid["map@5"] == pytest.approx((1 / 2 + 1 + 1 / 4) / 3)
  assert valid["precision@5"] == pytest.approx(1 / 5)


def test_tied_scores_rank_lower_id_first() -> None:
  # All scores equal: the ranking is item 0, 1, 2, 3.
  dataset = _dataset(2, 4, train=[(0, 0), (1, 3)], valid=[(0, 1), (1, 2)], test=[(0, 3)])
  user_emb, item_emb = np.ones((2, 2), np.float32), np.ones((4, 2), np.float32)
  for method in METHODS:
    got = evaluate(user_emb, item_emb, make_eval_data(dataset), ks=(1, 2), method=method)
    # User 0 ranks 1, 2, 3; user 1 ranks 0, 1, 2.
    assert got["valid"]["recall@1"] == pytest.approx(0.5)  # user 0 hit at 1, user 1 at 3
    assert got["valid"]["ndcg@2"] == pytest.approx(0.5)
    assert got["test"]["recall@2"] == 0.0 and got["test"]["recall@1"] == 0.0


def test_signed_zeros_and_subnormals_tie() -> None:
  # Scores -0.0, +0.0, a subnormal, -0.0, its negative: all equal to 0, ranked by id.
  item_emb = np.array([[-0.0], [0.0], [1e-45], [-0.0], [-1e-45], [-1.0]], np.float32)
  user_emb = np.ones((1, 1), np.float32)
  dataset = _dataset(1, 6, train=[(0, 5)], valid=[(0, 0)], test=[(0, 4)])
  for method in METHODS:
    got = evaluate(user_emb, item_emb, make_eval_data(dataset), ks=(1, 5), method=method)
    assert got["valid"]["recall@1"] == 1.0, method
    assert got["test"]["ndcg@5"] == pytest.approx(1 / math.log2(6)), method


def test_long_tail() -> None:
  # Training counts: item 0: 3, items 1 and 2: 2, item 4: 1, item 3: 0. head_fraction 0.4 gives
  # round(2.0) = 2 head items: 0 and 1 (item 2 ties with 1 and loses on id). Tail: 2, 3, 4.
  dataset = _dataset(
    num_users=4,
    num_items=5,
    train=[(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0), (3, 4)],
    valid=[(1, 3)],
    test=[(0, 3), (0, 4), (2, 1), (2, 3), (3, 0)],
  )
  user_emb = np.ones((4, 1), np.float32)
  item_emb = np.array([[5.0], [4.0], [3.0], [2.0], [1.0]], np.float32)
  data = make_eval_data(dataset, chunk_size=3, head_fraction=0.4)
  assert data.num_head_items == 2
  np.testing.assert_array_equal(data.is_tail, [False, False, True, True, True])
  for method in METHODS:
    got = evaluate(user_emb, item_emb, data, ks=(1, 3), method=method)
    test = got["test"]
    # User 0 ranks 3, 4 (both tail, n_tail 2); user 2 ranks 1, 2, 3, 4 (tail item 3 at position
    # 3, n_tail 1; the head hit at 1 does not count); user 3 has no tail item: not averaged.
    assert (test["num_users"], test["num_tail_users"]) == (3, 2)
    assert test["tail_recall@1"] == pytest.approx((1 / 2 + 0) / 2)
    assert test["tail_recall@3"] == pytest.approx((1 + 1) / 2)
    assert test["tail_ndcg@3"] == pytest.approx((1 + 1 / 2) / 2)
    assert test["tail_precision@3"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert test["tail_map@3"] == pytest.approx((1 + 1 / 3) / 2)
    assert test["tail_ndcg@1"] == pytest.approx((1 + 0) / 2)
    # All items: user 0 hit at 1 of 2, user 2 hit at 1 of 2, user 3 hit at 1 of 1.
    assert test["recall@1"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)
    assert test["ndcg@3"] == pytest.approx((1 + (1 + 1 / 2) / (1 + 1 / math.log2(3)) + 1) / 3)
    assert test["map@3"] == pytest.approx((1 + (1 + 2 / 3) / 2 + 1) / 3)
    assert (got["valid"]["num_users"], got["valid"]["num_tail_users"]) == (1, 1)
    assert got["valid"]["tail_recall@1"] == pytest.approx(1.0)


def test_index_is_linear_in_interactions() -> None:
  rng = np.random.default_rng(2)
  num_users, num_items, num_pairs = 3000, 2000, 9000
  users = rng.integers(0, num_users, num_pairs)
  items = rng.integers(0, num_items, num_pairs)
  labels = rng.choice(3, num_pairs, p=[0.8, 0.1, 0.1])
  dataset = _dataset(
    num_users,
    num_items,
    *(list(zip(users[labels == x], items[labels == x], strict=True)) for x in range(3)),
  )
  data = make_eval_data(dataset, chunk_size=256)
  arrays = [leaf for leaf in jax.tree.leaves(data) if isinstance(leaf, np.ndarray)]
  assert len(arrays) == len(jax.tree.leaves(data))
  total = sum(a.size for a in arrays)
  # Every array is O(interactions + users + items); nothing is num_users x num_items (6M).
  assert total < 12 * (num_pairs + num_users + num_items), total
  assert max(a.size for a in arrays) < 2 * (num_pairs + num_users + num_items)


def test_compiles_once_per_shape() -> None:
  dataset, user_emb, item_emb = _hand_case()
  data = make_eval_data(dataset, chunk_size=2)
  before = _evaluate_sums._cache_size()
  evaluate(user_emb, item_emb, data, ks=(1, 2, 5), method="count")
  evaluate(user_emb * 2, item_emb + 1, jax.device_put(data), ks=(5, 2, 1), method="count")
  assert _evaluate_sums._cache_size() - before <= 1


def test_rejects_bad_arguments() -> None:
  dataset, user_emb, item_emb = _hand_case()
  data = make_eval_data(dataset)
  with pytest.raises(ValueError, match="ks"):
    evaluate(user_emb, item_emb, data, ks=(7,))
  with pytest.raises(ValueError, match="method"):
    evaluate(user_emb, item_emb, data, ks=(1,), method="sort")
  with pytest.raises(ValueError, match="embeddings"):
    evaluate(user_emb[:3], item_emb, data, ks=(1,))
  with pytest.raises(ValueError, match="item ids"):
    make_eval_data(_dataset(2, 3, train=[(0, 1)], valid=[(0, 3)], test=[]))
  assert isinstance(data, EvalData)


def _dot_plus_shifted_history(params, chunk: ScoreChunk) -> jax.Array:
  """u.v plus weight[i] on item (i + 1) % num_items for each of the row's training items i."""
  user_emb, item_emb, weight = params
  num_items = item_emb.shape[0]
  scores = user_emb[chunk.users] @ item_emb.T
  shifted = (chunk.train_items + 1) % num_items
  return scores.at[chunk.train_rows, shifted].add(weight[chunk.train_items], mode="drop")


@pytest.mark.parametrize("method", METHODS)
def test_evaluate_scores_with_history_scorer(method: str) -> None:
  rng = np.random.default_rng(3)
  num_users, num_items, ks = 41, 30, (1, 5, 30)
  dataset = _random_dataset(rng, num_users, num_items)
  # Small integers: exact float32 scores with ties.
  user_emb = rng.integers(-2, 3, (num_users, 4)).astype(np.float32)
  item_emb = rng.integers(-2, 3, (num_items, 4)).astype(np.float32)
  weight = rng.integers(0, 4, num_items).astype(np.float32)
  data = make_eval_data(dataset, chunk_size=8)
  got = evaluate_scores(
    _dot_plus_shifted_history, (user_emb, item_emb, weight), data, ks=ks, method=method
  )
  # Dense reference; an identity item table turns the score matrix into "embeddings".
  scores = user_emb.astype(np.float64) @ item_emb.T
  for u, i in set(zip(dataset.train.users.tolist(), dataset.train.items.tolist(), strict=True)):
    scores[u, (i + 1) % num_items] += weight[i]
  want = _evaluate_numpy(scores, np.eye(num_items), dataset, ks, 0.2)
  for split in ("valid", "test"):
    assert got[split]["num_users"] == want[split]["num_users"] > 0
    for key, value in want[split].items():
      assert got[split][key] == pytest.approx(value, abs=1e-6), (split, key)
  # The dot-product scorer through evaluate_scores is evaluate itself.
  assert evaluate_scores(_dot_scores, (user_emb, item_emb), data, ks=ks, method=method) == (
    evaluate(user_emb, item_emb, data, ks=ks, method=method)
  )


def test_evaluate_scores_rejects_wrong_shape() -> None:
  dataset, user_emb, item_emb = _hand_case()
  with pytest.raises(ValueError, match="score_fn returned shape"):
    evaluate_scores(lambda p, c: p[c.users], user_emb, make_eval_data(dataset), ks=(1,))
