"""The scale suite's random data (benchmarks/scale_data.py) and its growth-exponent fit."""

import numpy as np
import pytest

from alignrec_jax.data.dataset import mmrec_split_sizes
from alignrec_jax.data.mmrec import load_mmrec
from benchmarks import bench_scale, scale_data
from configs import default


def test_baby_shape_has_the_catalogue_and_the_split_rule():
  dataset = scale_data.make_shape("baby")
  users, items, interactions = scale_data.PRESETS["baby"]
  assert (dataset.num_users, dataset.num_items) == (users, items)
  all_users = np.concatenate([dataset.split(s).users for s in ("train", "valid", "test")])
  all_items = np.concatenate([dataset.split(s).items for s in ("train", "valid", "test")])
  assert abs(len(all_users) - interactions) < 0.02 * interactions
  # Distinct items per user; every user has at least 5; every item is in training.
  keys = all_users.astype(np.int64) * items + all_items
  assert len(np.unique(keys)) == len(keys)
  counts = np.bincount(all_users, minlength=users)
  assert counts.min() >= 5
  assert len(np.unique(dataset.train.items)) == items
  # MMRec's split sizes per user.
  train_n, valid_n, test_n = mmrec_split_sizes(counts)
  assert np.array_equal(np.bincount(dataset.train.users, minlength=users), train_n)
  assert np.array_equal(np.bincount(dataset.valid.users, minlength=users), valid_n)
  assert np.array_equal(np.bincount(dataset.test.users, minlength=users), test_n)
  assert dataset.features["feat"].shape == (items, scale_data.FEATURE_DIM)
  # Power-law popularity: the most drawn item is far above the mean.
  assert np.bincount(all_items).max() > 20 * len(all_items) / items


def test_prepared_folder_loads_and_is_reused(tmp_path):
  config = default.get_config()
  scale_data.use_shape(config, "baby", str(tmp_path))
  folder = tmp_path / "shape_baby"
  assert config.data.path == str(folder) and config.data.synthetic_feature_dim == 0
  loaded = load_mmrec(str(folder), feature_files=config.data.features)
  assert loaded.num_items == scale_data.PRESETS["baby"][1]
  written = (folder / "shape-baby.inter").stat().st_mtime_ns
  scale_data.use_shape(config, "baby", str(tmp_path))  # the meta says complete: not rewritten
  assert (folder / "shape-baby.inter").stat().st_mtime_ns == written


def test_growth_exponent_recovers_a_power_law():
  pairs = [1e5, 2e5, 1.3e6]
  assert bench_scale.growth_exponent(pairs, [3e-6 * p**1.7 for p in pairs]) == pytest.approx(1.7)
