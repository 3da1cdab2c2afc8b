"""Runs trained together under jax.vmap (through the one training loop) equal the same runs
trained one at a time, and write the same records."""

import json
import pathlib
import subprocess
import sys

import pytest

from alignrec_jax.errors import ConfigError
from alignrec_jax.experiments import sweep
from alignrec_jax.training import ensemble, stage2
from configs import test as test_config

REPO = pathlib.Path(__file__).resolve().parents[1]
METRICS = ("recall@20", "ndcg@20", "recall@10")


@pytest.mark.slow
def test_vmapped_members_equal_their_runs_one_at_a_time(tmp_path):
  config = test_config.get_config()
  config.data.cache_dir = str(tmp_path / "data")
  config.train.max_epochs = 6
  config.train.patience = 1  # members stop at different epochs: the masking is exercised
  members = ensemble.member_configs(config, [5, 6, 5], [1e-3, 5e-3, 2e-2])
  together = ensemble.train_members(members, [str(tmp_path / f"member_{m}") for m in range(3)])
  stops = set()
  for m, single in enumerate(members):
    alone = stage2.train_and_evaluate(single, str(tmp_path / f"run_{m}"))
    assert together[m]["identity"] == alone["identity"] and together[m]["vmapped"]
    lines = [json.loads(x) for x in open(tmp_path / f"member_{m}" / "metrics.jsonl")]
    assert [x["epoch"] for x in lines] == list(range(alone["epochs_run"]))
    assert together[m]["best_epoch"] == alone["best_epoch"], m
    assert together[m]["epochs_run"] == alone["epochs_run"], m
    for split in ("valid", "test", "valid_short", "test_short"):
      for metric in METRICS:
        assert together[m][split][metric] == pytest.approx(alone[split][metric], abs=1e-6), (
          m,
          split,
          metric,
        )
    stops.add(alone["epochs_run"])
  assert len(stops) > 1  # the members did stop at different epochs


@pytest.mark.slow
def test_vmapped_sweep_writes_each_runs_summary_and_refuses_other_fields(tmp_path):
  cmd = [
    sys.executable,
    "-m",
    "launch.sweep",
    "--config=configs/test.py",
    f"--workdir={tmp_path}",
    "--inputs=raw",
    "--grid=optim.lr=1e-3,5e-3",
    "--seeds=1,2",
    "--vmap",
    "--config.train.max_epochs=2",
    f"--config.data.cache_dir={tmp_path / 'data'}",
  ]
  subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
  result = json.loads((tmp_path / "sweep.json").read_text())
  assert result["table"]["raw"]["seeds"] == [1, 2]
  summary = json.loads((tmp_path / "runs/raw/optim.lr=5e-3/seed_2/summary.json").read_text())
  assert summary["vmapped"] and summary["config"]["optim"]["lr"] == 5e-3
  assert summary["identity"]["config"]["optim.lr"] == 5e-3
  # Every run is then read back as any finished run is.
  config = test_config.get_config()
  config.train.max_epochs = 2
  config.data.cache_dir = str(tmp_path / "data")
  runs = sweep.make_runs(
    {"raw": result["inputs"]["raw"]}, sweep.parse_grid(["optim.lr=1e-3,5e-3"]), [1, 2]
  )
  assert sweep.train_runs_vmapped(runs, config, str(tmp_path / "runs")) == {
    run: json.loads(
      (tmp_path / "runs" / "raw" / run.setting / f"seed_{run.seed}" / "summary.json").read_text()
    )
    for run in runs
  }
  other = sweep.make_runs(
    {"raw": ["a.npy"]}, sweep.parse_grid(["model.alignrec.loss.cl_weight=0.1"]), [1]
  )
  with pytest.raises(ConfigError, match="differ in seed and optim.lr only"):
    sweep.train_runs_vmapped(other, config, str(tmp_path / "runs"))


@pytest.mark.slow
def test_a_member_that_diverges_stops_alone(tmp_path):
  config = test_config.get_config()
  config.data.cache_dir = str(tmp_path / "data")
  config.train.max_epochs = 2
  members = ensemble.member_configs(config, [5, 5], [1e-3, 1e30])
  fine, exploding = ensemble.train_members(members, [str(tmp_path / "a"), str(tmp_path / "b")])
  assert exploding["diverged_at"] == 0 and "valid" not in exploding
  assert not (tmp_path / "b" / "summary.json").exists()  # nothing to report
  assert fine["epochs_run"] == 2 and "diverged_at" not in fine
  assert (tmp_path / "a" / "summary.json").exists()


def test_a_pruned_graph_model_is_refused(tmp_path):
  config = test_config.get_config()
  config.model.name = "freedom"
  with pytest.raises(ConfigError, match="not vmapped yet"):
    ensemble.train_members([config], [str(tmp_path)])
  other = test_config.get_config()
  other.model.alignrec.loss.cl_weight = 0.5
  with pytest.raises(ConfigError, match="differ in seed and optim.lr only"):
    ensemble.train_members([test_config.get_config(), other], [str(tmp_path)] * 2)
