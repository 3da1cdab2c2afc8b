"""Tests of the built-in synthetic dataset: determinism, split rule, learnability, round trip."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from alignrec_jax.data import combine_features, load_mmrec
from alignrec_jax.data.dataset import mmrec_split_sizes
from alignrec_jax.data.prepare.synthetic import (
  META_FILE,
  make_synthetic,
  make_synthetic_with_truth,
  prepare_synthetic,
  write_mmrec,
)

SMALL = dict(num_users=300, num_items=200, mean_user_interactions=12.0, seed=5)


@pytest.fixture(scope="module")
def default_data():
  start = time.perf_counter()
  dataset, truth = make_synthetic_with_truth()
  return dataset, truth, time.perf_counter() - start


def _all_rows(ds):
  users = np.concatenate([ds.train.users, ds.valid.users, ds.test.users])
  items = np.concatenate([ds.train.items, ds.valid.items, ds.test.items])
  return users, items


def _recall_at(scores: np.ndarray, ds, k: int = 20) -> float:
  """Mean test Recall@k over users with test items, training items masked (MMRec protocol)."""
  scores = scores.astype(np.float64, copy=True)
  scores[ds.train.users, ds.train.items] = -np.inf
  top = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # the order within the top k is irrelevant
  relevant = np.zeros(scores.shape, dtype=bool)
  relevant[ds.test.users, ds.test.items] = True
  hits = np.take_along_axis(relevant, top, axis=1).sum(axis=1)
  n_test = relevant.sum(axis=1)
  return float(np.mean(hits[n_test > 0] / n_test[n_test > 0]))


def test_default_size_and_speed(default_data):
  ds, _, seconds = default_data
  assert (ds.num_users, ds.num_items) == (2000, 1000)
  n = sum(len(ds.split(s)) for s in ("train", "valid", "test"))
  assert 25 * 2000 < n < 35 * 2000
  assert [(k, v.shape, v.dtype) for k, v in ds.features.items()] == [
    ("image_feat", (1000, 256), np.float32),
    ("text_feat", (1000, 128), np.float32),
  ]
  # About 0.4 s alone; the bound is loose because the test machine's cores are shared.
  assert seconds < 4.0


def test_deterministic():
  a, b, c = make_synthetic(**SMALL), make_synthetic(**SMALL), make_synthetic(**{**SMALL, "seed": 6})
  for split in ("train", "valid", "test"):
    np.testing.assert_array_equal(a.split(split).users, b.split(split).users)
    np.testing.assert_array_equal(a.split(split).items, b.split(split).items)
  for k in a.features:
    np.testing.assert_array_equal(a.features[k], b.features[k])
  assert not np.array_equal(a.train.items, c.train.items)


def test_split_rule_distinct_pairs_and_coverage(default_data):
  ds, _, _ = default_data
  users, items = _all_rows(ds)
  assert len(np.unique(users.astype(np.int64) * ds.num_items + items)) == len(users)
  n = np.bincount(users, minlength=ds.num_users)
  assert n.min() >= 5 and n.max() > 3 * n.mean()  # heavy-tailed activity
  train, valid, test = mmrec_split_sizes(n)
  np.testing.assert_array_equal(np.bincount(ds.train.users, minlength=ds.num_users), train)
  np.testing.assert_array_equal(np.bincount(ds.valid.users, minlength=ds.num_users), valid)
  np.testing.assert_array_equal(np.bincount(ds.test.users, minlength=ds.num_users), test)
  assert np.bincount(ds.train.items, minlength=ds.num_items).min() >= 1


def test_mmrec_split_sizes_match_the_notebook_formula():
  n = np.arange(3, 200)
  train, valid, test = mmrec_split_sizes(n)
  for k, tr, va, te in zip(n, train, valid, test, strict=True):
    if k < 10:
      assert (tr, va, te) == (k - 2, 1, 1)
    else:
      assert (va, te) == (int(0.2 * k) // 2, int(0.2 * k) - int(0.2 * k) // 2)
      assert tr == k - va - te


def test_every_item_gets_training_even_when_sparse():
  # Few, short users and a steep popularity curve: as drawn, 44 of the 300 items have no
  # training row and 25 of those none at all; both kinds must be fixed without breaking the split.
  ds, _ = make_synthetic_with_truth(
    num_users=100, num_items=300, mean_user_interactions=9.0, popularity_exponent=2.0, seed=1
  )
  assert np.bincount(ds.train.items, minlength=300).min() >= 1
  users, items = _all_rows(ds)
  assert len(np.unique(users.astype(np.int64) * 300 + items)) == len(users)
  n = np.bincount(users, minlength=100)
  for split, size in zip(("train", "valid", "test"), mmrec_split_sizes(n), strict=True):
    np.testing.assert_array_equal(np.bincount(ds.split(split).users, minlength=100), size)


def test_learnable(default_data):
  ds, truth, _ = default_data
  oracle = _recall_at(np.log(truth.choice_probabilities(np.arange(ds.num_users))), ds)
  counts = np.bincount(ds.train.items, minlength=ds.num_items).astype(np.float64)
  popularity = _recall_at(np.broadcast_to(counts, (ds.num_users, ds.num_items)), ds)
  rng = np.random.default_rng(0)
  random = _recall_at(rng.random((ds.num_users, ds.num_items)), ds)
  # Content alone: score items by feature similarity to the user's training items.
  feats, _ = combine_features(ds.features)
  train = np.zeros((ds.num_users, ds.num_items), dtype=np.float32)
  train[ds.train.users, ds.train.items] = 1.0
  content = _recall_at(train @ feats @ feats.T, ds)
  # Measured at the defaults: oracle ~0.39, content ~0.31, popularity ~0.085, random ~0.02.
  assert random < 0.04
  assert oracle > 10 * random and oracle > 3 * popularity
  assert content > 5 * random and content < oracle


def test_write_and_load_round_trip(tmp_path):
  ds = make_synthetic(**SMALL, name="small")
  write_mmrec(ds, str(tmp_path / "out"))
  names = sorted(p.name for p in (tmp_path / "out").iterdir())
  assert names == ["image_feat.npy", "small.inter", "text_feat.npy"]  # no temp files left
  with open(tmp_path / "out" / "small.inter") as f:
    assert f.readline() == "userID\titemID\trating\tx_label\n"
  back = load_mmrec(str(tmp_path / "out"), feature_files=["image_feat.npy", "text_feat.npy"])
  assert (back.name, back.num_users, back.num_items) == ("small", ds.num_users, ds.num_items)
  for split in ("train", "valid", "test"):
    np.testing.assert_array_equal(back.split(split).users, ds.split(split).users)
    np.testing.assert_array_equal(back.split(split).items, ds.split(split).items)
  assert list(back.features) == list(ds.features)
  for k in ds.features:
    np.testing.assert_array_equal(back.features[k], ds.features[k])


def test_write_keeps_split_order_when_not_grouped_by_user(tmp_path):
  ds = make_synthetic(**SMALL)
  shuffled = type(ds.train)(ds.train.users[::-1].copy(), ds.train.items[::-1].copy())
  ds2 = type(ds)(ds.name, ds.num_users, ds.num_items, shuffled, ds.valid, ds.test, {})
  write_mmrec(ds2, str(tmp_path), inter_name="x.inter")
  back = load_mmrec(str(tmp_path))
  np.testing.assert_array_equal(back.train.items, shuffled.items)
  np.testing.assert_array_equal(back.test.items, ds.test.items)


def test_prepare_synthetic_caches_and_regenerates(tmp_path):
  folder = str(tmp_path / "syn")
  assert prepare_synthetic(folder, **SMALL) == folder
  meta_path = tmp_path / "syn" / META_FILE
  meta = json.loads(meta_path.read_text())
  assert meta["kwargs"]["seed"] == 5 and meta["kwargs"]["num_items"] == 200
  stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "syn").iterdir()}

  # Same arguments (defaults spelled out or not): nothing is rewritten.
  prepare_synthetic(folder, **SMALL, min_user_interactions=5)
  assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "syn").iterdir()} == stamps

  # Different arguments: regenerated, and the previous generation's files are gone.
  prepare_synthetic(folder, **SMALL, name="other", modality_dims=(("audio_feat", 16),))
  names = sorted(p.name for p in (tmp_path / "syn").iterdir())
  assert names == sorted(["audio_feat.npy", META_FILE, "other.inter"])
  ds = load_mmrec(folder, feature_files=json.loads(meta_path.read_text())["feature_files"])
  assert ds.name == "other" and list(ds.features) == ["audio_feat"]

  # A missing data file triggers regeneration too.
  (tmp_path / "syn" / "audio_feat.npy").unlink()
  prepare_synthetic(folder, **SMALL, name="other", modality_dims=(("audio_feat", 16),))
  assert (tmp_path / "syn" / "audio_feat.npy").is_file()

  with pytest.raises(TypeError):
    prepare_synthetic(folder, no_such_argument=1)
