"""The sweep's grid, selection on validation and aggregation over seeds; the launcher end to end."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from alignrec_jax.experiments import sweep
from benchmarks import collect_sweep
from configs import test as test_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_parse_grid_is_the_product_in_order():
  grid = sweep.parse_grid(["optim.lr=1e-3,5e-4", "model.alignrec.loss.cl_weight=0.01,0.1"])
  assert grid == [
    (("optim.lr", "1e-3"), ("model.alignrec.loss.cl_weight", "0.01")),
    (("optim.lr", "1e-3"), ("model.alignrec.loss.cl_weight", "0.1")),
    (("optim.lr", "5e-4"), ("model.alignrec.loss.cl_weight", "0.01")),
    (("optim.lr", "5e-4"), ("model.alignrec.loss.cl_weight", "0.1")),
  ]
  assert sweep.parse_grid([]) == [()]
  with pytest.raises(ValueError, match="FIELD=V1,V2"):
    sweep.parse_grid(["optim.lr"])


def test_runs_have_distinct_folders_and_configs():
  runs = sweep.make_runs(
    {"raw": ["/d/a.npy", "/d/b.npy"], "stage1": ["/w/s.npy"]},
    sweep.parse_grid(["optim.lr=1e-3,5e-4", "model.alignrec.trainable_features=false"]),
    [1, 2],
  )
  assert len(runs) == 8 and len({r.workdir("/root") for r in runs}) == 8
  assert [r.input_name for r in runs[:4]] == ["raw"] * 4  # an input's runs go together
  assert runs[0].workdir("/root") == (
    "/root/raw/optim.lr=1e-3,model.alignrec.trainable_features=false/seed_1"
  )
  base = test_config.get_config()
  config = runs[0].config(base)
  assert (config.seed, config.data.features, config.optim.lr) == (1, ("/d/a.npy", "/d/b.npy"), 1e-3)
  assert config.model.alignrec.trainable_features is False
  assert base.optim.lr == 1e-3 and base.model.alignrec.trainable_features  # base unchanged
  assert runs[2].config(base).optim.lr == 5e-4


def _summary(valid, test):
  return {
    "valid": {"recall@20": valid, "ndcg@20": valid / 2},
    "test": {"recall@20": test, "ndcg@20": test / 2},
  }


def test_selection_on_validation_then_mean_and_std_over_seeds():
  runs = sweep.make_runs({"raw": ["a"], "text": ["b"]}, sweep.parse_grid(["optim.lr=1,2"]), [7, 8])
  by = {(r.input_name, r.overrides[0][1], r.seed): r for r in runs}
  summaries = {
    by["raw", "1", 7]: _summary(0.30, 0.10),
    by["raw", "2", 7]: _summary(0.40, 0.20),
    by["raw", "1", 8]: _summary(0.50, 0.30),
    by["raw", "2", 8]: _summary(0.50, 0.90),  # tie
    by["text", "1", 7]: _summary(0.10, 0.10),  # text seed 7 unfinished: not selected
  }
  chosen = sweep.select(runs, summaries)
  assert set(chosen) == {"raw"}
  assert chosen["raw"][7] is by["raw", "2", 7]
  assert chosen["raw"][8] is by["raw", "1", 8]  # ties go to the first setting of the grid
  rows = sweep.table(chosen, summaries)
  mean, std = rows["raw"]["test/recall@20"]
  np.testing.assert_allclose([mean, std], [np.mean([0.2, 0.3]), np.std([0.2, 0.3])])
  assert rows["raw"]["settings"] == ["optim.lr=2", "optim.lr=1"]
  assert "raw" in sweep.format_table(rows)


def test_run_records_flatten_every_finished_run(tmp_path):
  def write(input_name, setting, seed, summary):
    folder = tmp_path / input_name / setting / f"seed_{seed}"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(summary))

  full = {
    "best_epoch": 12,
    "epochs_run": 43,
    **_summary(0.4, 0.3),
    "valid_short": {"recall@20": 0.2, "ndcg@20": 0.1},
    "test_short": {"recall@20": 0.25, "ndcg@20": 0.125},
  }
  write("raw", "optim.lr=1e-3", 1000, full)
  write("raw", "optim.lr=1e-3", 999, {"best_epoch": 0, "epochs_run": 31, **_summary(0.1, 0.2)})
  (tmp_path / "raw" / "optim.lr=5e-4" / "seed_999").mkdir(parents=True)  # unfinished: no summary
  records = collect_sweep.run_records(str(tmp_path), "ml100k")
  assert [r["seed"] for r in records] == [999, 1000]  # sorted numerically, unfinished left out
  assert records[1] == {
    "dataset": "ml100k",
    "input": "raw",
    "setting": "optim.lr=1e-3",
    "seed": 1000,
    "best_epoch": 12,
    "epochs_run": 43,
    "valid/recall@20": 0.4,
    "valid/ndcg@20": 0.2,
    "test/recall@20": 0.3,
    "test/ndcg@20": 0.15,
    "valid_short/recall@20": 0.2,
    "valid_short/ndcg@20": 0.1,
    "test_short/recall@20": 0.25,
    "test_short/ndcg@20": 0.125,
  }
  assert "valid_short/recall@20" not in records[0]  # a missing split is not filled in


@pytest.mark.slow
def test_sweep_launcher_end_to_end(tmp_path):
  cmd = [
    sys.executable,
    "-m",
    "launch.sweep",
    "--config=configs/test.py",
    f"--workdir={tmp_path}",
    "--inputs=image,raw",
    "--grid=optim.lr=1e-3",
    "--seeds=3",
    "--parallel=2",
    "--config.train.max_epochs=2",
    f"--config.data.cache_dir={tmp_path / 'data'}",
  ]
  first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
  result = json.loads((tmp_path / "sweep.json").read_text())
  assert set(result["table"]) == {"image", "raw"}
  assert result["inputs"]["image"][0].endswith("image_feat.npy")
  assert len(result["inputs"]["raw"]) == 2
  assert "image" in first.stdout and "raw" in first.stdout
  records = collect_sweep.run_records(str(tmp_path / "runs"), "synthetic")
  assert [(r["input"], r["seed"]) for r in records] == [("image", 3), ("raw", 3)]
  again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
  assert "2 finished already, 0 to go" in again.stderr
