"""The ablation command: its variants, the cold-user cohort and the table, end to end."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from alignrec_jax.data import Dataset, Interactions
from alignrec_jax.errors import ConfigError
from alignrec_jax.experiments import ablation
from configs import test as test_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def _pairs(users, items):
  return Interactions(np.asarray(users, np.int32), np.asarray(items, np.int32))


def test_sparse_users_are_those_with_one_to_below_training_interactions():
  # user 0: 5 training rows, 1: 3, 2: none (not evaluated), 3: 1, 4: 4.
  counts = {0: 5, 1: 3, 3: 1, 4: 4}
  users = [u for u, c in counts.items() for _ in range(c)]
  items = [i for c in counts.values() for i in range(c)]
  empty = _pairs([], [])
  dataset = Dataset(
    name="toy", num_users=5, num_items=5, train=_pairs(users, items), valid=empty, test=empty
  )
  np.testing.assert_array_equal(ablation.sparse_users(dataset, 4), [1, 3])
  np.testing.assert_array_equal(ablation.sparse_users(dataset, 5), [1, 3, 4])
  assert ablation.sparse_users(dataset, 1).size == 0


def test_variants_flip_the_feature_setting_and_reject_unknown_keys():
  config = test_config.get_config()
  keys = [v.key for v in ablation.pick(config, None)]
  assert keys == ["full", "no_cca", "no_uia", "no_sim", "frozen", "raw"]
  config.model.alignrec.trainable_features = False
  flipped = ablation.pick(config, ["fine_tuned"])[0]
  assert flipped.overrides == (("model.alignrec.trainable_features", "True"),)
  with pytest.raises(ConfigError, match="unknown 'no_such'"):
    ablation.pick(config, ["full", "no_such"])
  config.model.name = "lightgcn"
  with pytest.raises(ConfigError, match="takes AlignRec apart"):
    ablation.pick(config, None)


def _result(rows, *, sparse_users=0):
  return {
    "seeds": [1, 2],
    "sparse_below": 4,
    "sparse_users": sparse_users,
    "short_history_fraction": 0.2,
    "rows": rows,
  }


def _run(seed, value):
  split = {f"{m}@{k}": value for m in ("recall", "ndcg") for k in (10, 20)}
  return {
    "seed": seed,
    "valid": split,
    "test": split,
    "test_short": split,
    "sparse": {"test": split},
  }


def test_the_table_bolds_each_columns_best_mean_and_names_the_cohorts():
  rows = [
    {"label": "AlignRec", "runs": [_run(1, 0.2), _run(2, 0.4)]},
    {"label": "w/o UIA", "runs": [_run(1, 0.1), _run(2, 0.1)]},
  ]
  text = ablation.format_markdown(_result(rows, sparse_users=12))
  assert "| AlignRec | **0.3000±0.1000** |" in text
  assert "| w/o UIA | 0.1000±0.0000 |" in text
  assert "the 20% of users with the shortest training histories" in text
  assert (
    "the 12 users with fewer than 4 training interactions (the authors' cold-user rule)" in text
  )
  empty = ablation.format_markdown(_result(rows))
  assert "fewer than 4" not in empty.split("\n\n")[-2]
  assert "the authors' cold-user cohort is empty" in empty


@pytest.mark.slow
def test_ablation_end_to_end_and_the_cohort_of_everyone_is_the_run_itself(tmp_path):
  # With the cohort "fewer than a million interactions" every evaluated user is in it, so its
  # metrics, computed afresh from the best checkpoint, are the run's own test metrics.
  cmd = [
    sys.executable,
    "-m",
    "launch.ablate",
    "--config=configs/test.py",
    f"--workdir={tmp_path}",
    "--variants=full,raw",
    "--seeds=5",
    "--sparse_below=1000000",
    f"--config.data.cache_dir={tmp_path / 'data'}",
  ]
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
  result = json.loads((tmp_path / "ablation.json").read_text())
  assert [r["key"] for r in result["rows"]] == ["full", "raw"]
  assert result["sparse_users"] == 120
  for row in result["rows"]:
    (run,) = row["runs"]
    for metric, value in run["test"].items():
      assert run["sparse"]["test"][metric] == pytest.approx(value, abs=1e-6), (row["key"], metric)
  assert (tmp_path / "runs" / "stage1" / "default" / "seed_5").is_dir()
  assert (tmp_path / "runs" / "raw" / "default" / "seed_5").is_dir()
  assert "| w/o stage 1 (raw features) |" in out.stdout
  assert (tmp_path / "ablation.md").read_text() in out.stdout
  # Run again: everything is read back.
  again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
  assert "2 finished already, 0 to go" in again.stderr
  assert json.loads((tmp_path / "ablation.json").read_text()) == result
