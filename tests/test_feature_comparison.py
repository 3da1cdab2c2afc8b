"""The raw-versus-stage-1 comparison end to end on a tiny synthetic dataset."""

import json
import os

import numpy as np
import pytest

from alignrec_jax.data import content
from alignrec_jax.errors import ConfigError, WorkdirError
from alignrec_jax.experiments import feature_comparison, inputs
from alignrec_jax.training import stage1, stage2, stage2_setup
from configs import test as test_config


@pytest.mark.slow
def test_compare_runs_all_three_checks_and_reuses_its_runs(tmp_path, monkeypatch):
  config = test_config.get_config()
  config.train.max_epochs = 1
  monkeypatch.chdir(tmp_path)
  workdir = "run"  # relative, as users type it: feature paths must not resolve in the data folder
  root = tmp_path / workdir
  folder = stage2_setup.dataset_folder(config.data, workdir)
  num_items = stage2_setup.load_dataset(config.data, workdir).num_items
  features = stage1.run_stage1(
    config.stage1, folder, workdir, num_items=num_items, seed=config.seed
  )
  results = feature_comparison.compare(config, workdir, missing=["image"])
  assert set(results["item_knn"]) == {"raw", "stage1"}
  assert set(results["stage2_test"]) == {
    "raw",
    "stage1",
    "raw_missing_image",
    "stage1_missing_image",
  }
  assert set(results["short_history_test"]) == set(results["stage2_test"])
  assert json.loads((root / feature_comparison.RESULT_FILE).read_text()) == results

  # The degraded raw image file has exactly the missing items zeroed.
  missing = content.missing_items(num_items, 0.5, config.seed)
  image = np.load(os.path.join(folder, "image_feat.npy"))
  degraded = np.load(root / "feature_quality" / "missing_image_image_feat.npy")
  np.testing.assert_array_equal(degraded[missing], 0.0)
  kept = np.setdiff1d(np.arange(num_items), missing)
  np.testing.assert_array_equal(degraded[kept], image[kept])
  # Stage 1 with the image absent for those items changes exactly those items' features.
  intact = np.load(features)
  encoded = np.load(root / "feature_quality" / f"missing_image_{stage1.FEATURE_FILE}")
  assert not np.allclose(encoded[missing], intact[missing])
  np.testing.assert_allclose(encoded[kept], intact[kept], rtol=1e-5, atol=1e-6)

  table = feature_comparison.format_table(results)
  assert "(a) item-kNN" in table and "image missing for 50%" in table and "(c)" in table

  # A second call reuses every finished stage-2 run.
  def no_training(*args, **kwargs):
    raise AssertionError("a finished run was trained again")

  monkeypatch.setattr(stage2, "train_and_evaluate", no_training)
  assert feature_comparison.compare(config, workdir, missing=["image"]) == results


def test_modalities_must_pair_up_with_feature_files():
  config = test_config.get_config()
  config.data.features = ("image_feat.npy",)
  with pytest.raises(ConfigError, match="pair up one to one"):
    inputs.paired_modalities(config)
  assert inputs.paired_modalities(test_config.get_config()) == [
    ("image_feat.npy", "image"),
    ("text_feat.npy", "text"),
  ]


def test_compare_needs_a_finished_stage1(tmp_path):
  with pytest.raises(WorkdirError, match="run launch.pipeline"):
    feature_comparison.compare(test_config.get_config(), str(tmp_path))
