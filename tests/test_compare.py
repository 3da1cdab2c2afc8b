"""The comparison command end to end on the tiny synthetic config."""

import json
import pathlib
import subprocess
import sys

import pytest

from alignrec_jax.errors import ConfigError
from alignrec_jax.experiments import compare

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_models_are_picked_in_the_reports_order_and_unknown_ones_named():
  assert [e.key for e in compare.pick(["alignrec", "bpr"])] == ["bpr", "alignrec"]
  assert {e.model for e in compare.pick(None)} == {
    "bpr",
    "vbpr",
    "lightgcn",
    "freedom",
    "bm3",
    "mgcn",
    "alignrec",
  }
  with pytest.raises(ConfigError, match="unknown 'sasrec'"):
    compare.pick(["bpr", "sasrec"])


@pytest.mark.slow
def test_compare_end_to_end_writes_the_report(tmp_path):
  cmd = [
    sys.executable,
    "-m",
    "launch.compare",
    "--config=configs/test.py",
    f"--workdir={tmp_path}",
    "--models=bpr,freedom,alignrec",
    "--model_configs=freedom=configs/test.py",
    "--seeds=1",
    "--parallel=2",
    "--config.train.max_epochs=2",
    f"--config.data.cache_dir={tmp_path / 'data'}",
    "--ablations=full",
  ]
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
  result = json.loads((tmp_path / "compare.json").read_text())
  assert [m["key"] for m in result["models"]] == ["bpr", "freedom", "alignrec"]
  assert [m["config_file"] for m in result["models"]] == ["dataset", "own", "dataset"]
  for m in result["models"]:
    assert [r["seed"] for r in m["runs"]] == [1]
    assert all(len(r["epochs"]) == r["summary"]["epochs_run"] for r in m["runs"])
  # The baselines get MMRec's trainer on the dataset config; a model's own config is kept.
  bpr_dir = tmp_path / "runs" / "bpr"
  assert [p.name for p in bpr_dir.iterdir()] == [
    "model.name=bpr,optim.lr_decay=1.0,data.normalize_features=False"
  ]
  assert (tmp_path / "runs" / "freedom" / "model.name=freedom" / "seed_1").is_dir()
  assert (tmp_path / "stage1" / "stage1_feat.npy").is_file()
  report = (tmp_path / "report.md").read_text()
  assert report in out.stdout
  for label in ("BPR-MF", "FREEDOM", "AlignRec (stage-1 features)"):
    assert report.count(f"| {label} |") == 4  # metrics, breakdowns, popularity, time
  assert report.count("**") >= 2 * 5  # each metric column has a bold best
  for png in ("valid_recall_by_epoch.png", "valid_recall_by_time.png", "recall_by_popularity.png"):
    assert (tmp_path / png).stat().st_size > 0
    assert f"]({png})" in report
  # The ablation: its full model is the comparison's AlignRec run, read back, not trained again.
  assert "## Ablation (AlignRec)" in report and "| AlignRec |" in report
  rows = {row["key"]: row for row in result_with_ablation(tmp_path)["rows"]}
  (alignrec,) = [m for m in result["models"] if m["key"] == "alignrec"]
  assert rows["full"]["runs"][0]["test"] == alignrec["runs"][0]["summary"]["test"]
  assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["alignrec", "bpr", "freedom"]


def result_with_ablation(workdir):
  return json.loads((workdir / "compare.json").read_text())["ablation"]


def test_a_model_config_for_a_model_not_compared_is_a_plain_error(tmp_path):
  cmd = [
    sys.executable,
    "-m",
    "launch.compare",
    "--config=configs/test.py",
    f"--workdir={tmp_path}",
    "--models=bpr",
    "--model_configs=bm3=configs/test.py",
  ]
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  assert out.returncode != 0
  assert "model_configs: bm3 not among the models compared" in out.stderr
  assert "Traceback" not in out.stderr
