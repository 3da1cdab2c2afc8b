"""Recall by item popularity: how often each popularity bucket's held-out items are retrieved.

The paper's long-tail analysis asks whether a model's gains come from popular or rare items.
Items are split into `num_buckets` buckets of (nearly) equal size by training count, rarest
first (ties by lower item id, so the split is deterministic); a bucket's recall@k is the share
of the held-out (user, item) pairs whose item is in the bucket that appear in the user's top k
(training items excluded from the ranking, as in the evaluation). Computed on the host with
NumPy from the top-k lists a run gives (`serving.TrainedRun.top_k`).
"""

from __future__ import annotations

import numpy as np

from alignrec_jax.data import Dataset


def popularity_buckets(dataset: Dataset, num_buckets: int = 5) -> np.ndarray:
  """[I] int32: each item's bucket, 0 (rarest) to num_buckets - 1 (most popular).

  Sorted by training count ascending, ties by lower item id, and cut into `num_buckets` runs of
  sizes differing by at most one (`np.array_split`).
  """
  if not 1 <= num_buckets <= dataset.num_items:
    raise ValueError(f"num_buckets must be in 1..{dataset.num_items}, got {num_buckets}")
  counts = np.bincount(np.asarray(dataset.train.items), minlength=dataset.num_items)
  order = np.lexsort((np.arange(dataset.num_items), counts))  # count, then id
  buckets = np.empty(dataset.num_items, np.int32)
  for b, items in enumerate(np.array_split(order, num_buckets)):
    buckets[items] = b
  return buckets


def recall_by_bucket(
  top_items: np.ndarray,
  users: np.ndarray,
  heldout_users: np.ndarray,
  heldout_items: np.ndarray,
  buckets: np.ndarray,
) -> dict[str, np.ndarray]:
  """Per bucket: held-out pairs, those retrieved, and their ratio (NaN for an empty bucket).

  Args:
    top_items: [n, k] each listed user's top-k items (-1 for none).
    users: [n] the users whose lists these are (distinct).
    heldout_users, heldout_items: the held-out pairs; pairs of users not in `users` are ignored.
    buckets: [I] each item's bucket (`popularity_buckets`).
  """
  num_buckets = int(buckets.max()) + 1
  row_of = np.full(int(max(users.max(initial=-1), heldout_users.max(initial=-1))) + 1, -1)
  row_of[users] = np.arange(len(users))
  rows = row_of[heldout_users]
  listed = rows >= 0
  rows, items = rows[listed], heldout_items[listed]
  hit = (top_items[rows] == items[:, None]).any(axis=1)
  pairs = np.bincount(buckets[items], minlength=num_buckets)
  hits = np.bincount(buckets[items], weights=hit, minlength=num_buckets).astype(np.int64)
  with np.errstate(invalid="ignore", divide="ignore"):
    recall = np.where(pairs > 0, hits / np.maximum(pairs, 1), np.nan)
  return {"pairs": pairs, "hits": hits, "recall": recall}
