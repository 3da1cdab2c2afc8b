"""The hyper-parameter search: its space, samplers, pruning and choice on validation."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from alignrec_jax.errors import ConfigError
from alignrec_jax.experiments import search
from configs import test as test_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_space_entries_parse_and_bad_ones_name_themselves():
  lr, cl, layers = search.parse_space(
    [
      "optim.lr=loguniform:1e-4:1e-2",
      "model.alignrec.loss.cl_weight=choice:0.01,0.1",
      "a.b=int:1:3",
    ]
  )
  assert (lr.kind, lr.values) == ("loguniform", ("1e-4", "1e-2"))
  assert cl.values == ("0.01", "0.1")
  rng = np.random.default_rng(0)
  draws = [float(lr.sample(rng)) for _ in range(200)]
  assert 1e-4 <= min(draws) and max(draws) <= 1e-2 and min(draws) < 1e-3 < max(draws)
  assert {layers.sample(rng) for _ in range(100)} == {"1", "2", "3"}
  for entry, message in (
    ("optim.lr", "expected FIELD=KIND:SPEC"),
    ("optim.lr=normal:0:1", "expected FIELD=KIND:SPEC"),
    ("optim.lr=uniform:1", "two numbers"),
    ("optim.lr=loguniform:0:1", "LOW > 0"),
    ("optim.lr=uniform:2:1", "LOW < HIGH"),
  ):
    with pytest.raises(ConfigError, match=message):
      search.parse_space([entry])
  with pytest.raises(ConfigError, match="appears twice"):
    search.parse_space(["a=choice:1", "a=choice:2"])


def _fake_train_runs(log):
  """runs.train_runs without training: a trial's validation Recall@20 is its lr x 100 (higher
  is better), the same at every epoch; epochs_run is the budget."""

  def train_runs(runs_list, base, root, *, parallel=1):
    log.append((base.train.max_epochs, [r.setting for r in runs_list]))
    out = {}
    for run in runs_list:
      value = float(dict(run.overrides)["optim.lr"]) * 100
      out[run] = {
        "valid": {"recall@20": value},
        "test": {"recall@20": value / 2, "ndcg@20": value / 4},
        "epochs_run": base.train.max_epochs,
      }
    return out

  return train_runs


def test_grid_search_prunes_below_median_trials_at_rungs_and_chooses_on_validation(
  tmp_path, monkeypatch
):
  log = []
  monkeypatch.setattr(search, "train_runs", _fake_train_runs(log))
  config = test_config.get_config()
  config.train.max_epochs = 50
  result = search.run_search(
    config,
    str(tmp_path),
    ["optim.lr=choice:0.001,0.004,0.002,0.003"],
    sampler="grid",
    rungs=[10, 20, 99],  # 99 is past max_epochs: ignored
    prune_after=2,
    parallel=2,
  )
  # Wave 1 (0.001, 0.004): 2 values at rung 10, median 0.25: 0.001 pruned; 0.004 goes on.
  # Wave 2 (0.002, 0.003): rung 10 holds 4 values, median 0.25: 0.002 pruned, 0.003 goes on
  # (rung 20 then holds 0.4 and 0.3, median 0.35: 0.003 pruned there).
  assert result["rungs"] == [10, 20]
  assert [(r["setting"]["optim.lr"], r["pruned_at"]) for r in result["trials"]] == [
    ("0.001", 10),
    ("0.004", None),
    ("0.002", 10),
    ("0.003", 20),
  ]
  assert log == [
    (10, ["optim.lr=0.001", "optim.lr=0.004"]),
    (20, ["optim.lr=0.004"]),
    (50, ["optim.lr=0.004"]),
    (10, ["optim.lr=0.002", "optim.lr=0.003"]),
    (20, ["optim.lr=0.003"]),
  ]
  assert result["best"]["setting"] == {"optim.lr": "0.004"}
  assert result["best"]["test"] == {"recall@20": 0.2, "ndcg@20": 0.1}
  assert json.loads((tmp_path / "search.json").read_text())["best"] == result["best"]
  text = search.format_result(result)
  assert "pruned at epoch 10" in text and "chosen: optim.lr=0.004" in text


def test_random_and_tpe_samplers_propose_in_range_and_the_best_on_validation_wins(
  tmp_path, monkeypatch
):
  monkeypatch.setattr(search, "train_runs", _fake_train_runs([]))
  config = test_config.get_config()
  for sampler in ("random", "tpe"):
    result = search.run_search(
      config,
      str(tmp_path / sampler),
      ["optim.lr=loguniform:1e-4:1e-2", "model.alignrec.loss.cl_weight=choice:0.01,0.1"],
      sampler=sampler,
      trials=16,
      parallel=4,
      seed=3,
    )
    lrs = [float(r["setting"]["optim.lr"]) for r in result["trials"]]
    assert len(lrs) == 16 and all(1e-4 <= v <= 1e-2 for v in lrs)
    assert result["best"]["valid"]["recall@20"] == max(v * 100 for v in lrs)
  with pytest.raises(ConfigError, match="grid sampler takes choice dimensions only"):
    search.run_search(config, str(tmp_path / "g"), ["optim.lr=uniform:0:1"], sampler="grid")


@pytest.mark.slow
def test_search_launcher_end_to_end(tmp_path):
  cmd = [
    sys.executable,
    "-m",
    "launch.search",
    "--config=configs/test.py",
    f"--workdir={tmp_path}",
    "--space=model.alignrec.loss.cl_weight=choice:0.01,0.1",
    "--sampler=grid",
    "--parallel=2",
    "--config.train.max_epochs=2",
    f"--config.data.cache_dir={tmp_path / 'data'}",
  ]
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
  result = json.loads((tmp_path / "search.json").read_text())
  assert [r["setting"] for r in result["trials"]] == [
    {"model.alignrec.loss.cl_weight": "0.01"},
    {"model.alignrec.loss.cl_weight": "0.1"},
  ]
  assert all(r["epochs_run"] == 2 for r in result["trials"])
  assert "chosen: model.alignrec.loss.cl_weight=" in out.stdout
  assert (tmp_path / "runs" / "search" / "model.alignrec.loss.cl_weight=0.1" / "seed_999").is_dir()


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_setting_is_never_trained_twice(tmp_path, monkeypatch, sampler):
  log = []
  monkeypatch.setattr(search, "train_runs", _fake_train_runs(log))
  result = search.run_search(
    test_config.get_config(),
    str(tmp_path),
    ["optim.lr=choice:0.001,0.002"],
    sampler=sampler,
    trials=8,
    parallel=3,
  )
  trained = [s for _, settings in log for s in settings]
  assert sorted(trained) == ["optim.lr=0.001", "optim.lr=0.002"]
  assert len(result["trials"]) == 2
