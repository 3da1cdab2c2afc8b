"""The training loop on stage 2's tiny runs: resume, replay, divergence, the summary."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from alignrec_jax.training import loop, record, stage2
from alignrec_jax.training.checkpoint import Checkpointer
from configs import test as test_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _params_of_last_checkpoint(workdir):
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
  epoch = checkpointer.latest_epoch()
  # Restore without a target gives plain nested dicts of arrays: enough to compare bit for bit.
  import orbax.checkpoint as ocp

  path = os.path.join(workdir, "checkpoints", str(epoch), "state")
  state = ocp.StandardCheckpointer().restore(path)
  checkpointer.close()
  return epoch, state["params"]


def _assert_trees_equal(a, b):
  flat_a, tree_a = jax.tree.flatten(a)
  flat_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b
  for x, y in zip(flat_a, flat_b, strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _config(**train):
  config = test_config.get_config()
  config.train.update(train)
  return config


def test_resumed_run_ends_bit_identical(tmp_path):
  config = _config(max_epochs=4)
  full = stage2.train_and_evaluate(config, str(tmp_path / "full"))
  half = _config(max_epochs=2)
  stage2.train_and_evaluate(half, str(tmp_path / "resumed"))
  resumed = stage2.train_and_evaluate(config, str(tmp_path / "resumed"))
  epoch_a, params_a = _params_of_last_checkpoint(str(tmp_path / "full"))
  epoch_b, params_b = _params_of_last_checkpoint(str(tmp_path / "resumed"))
  assert epoch_a == epoch_b == 3
  _assert_trees_equal(params_a, params_b)
  assert full["test"] == resumed["test"]
  lines = [json.loads(x) for x in open(tmp_path / "resumed" / "metrics.jsonl")]
  assert [x["epoch"] for x in lines] == [0, 1, 2, 3]


def test_sparse_checkpoints_replay_the_epochs_after_them(tmp_path):
  import shutil

  config = _config(max_epochs=5, checkpoint_every=3)
  summary = stage2.train_and_evaluate(config, str(tmp_path))
  checkpoints = sorted(int(p) for p in os.listdir(tmp_path / "checkpoints") if p.isdigit())
  assert checkpoints == [2, 4]  # every 3rd epoch, and the last
  _, params = _params_of_last_checkpoint(str(tmp_path))
  shutil.rmtree(tmp_path / "checkpoints" / "4")  # killed during epoch 4: epochs 3, 4 are redone
  again = stage2.train_and_evaluate(config, str(tmp_path))
  _, replayed = _params_of_last_checkpoint(str(tmp_path))
  _assert_trees_equal(params, replayed)
  assert again["test"] == summary["test"]
  lines = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
  assert [x["epoch"] for x in lines] == [0, 1, 2, 3, 4]


def test_divergence_stops_naming_the_epoch_and_keeps_the_last_good_checkpoint(tmp_path):
  stage2.train_and_evaluate(_config(max_epochs=1), str(tmp_path))
  _, good = _params_of_last_checkpoint(str(tmp_path))
  exploding = _config(max_epochs=3)
  exploding.optim.lr = 1e30
  with pytest.raises(loop.TrainingDiverged, match="epoch 1"):
    stage2.train_and_evaluate(exploding, str(tmp_path), allow_config_change=True)
  epoch, kept = _params_of_last_checkpoint(str(tmp_path))
  assert epoch == 0
  _assert_trees_equal(good, kept)


def test_early_stopping_state_survives_a_resume(tmp_path):
  config = _config(max_epochs=50, patience=1)
  config.optim.lr = 1e-6
  summary = stage2.train_and_evaluate(config, str(tmp_path))
  assert summary["epochs_run"] < 50, "a tiny learning rate must stall and stop early"
  again = stage2.train_and_evaluate(config, str(tmp_path))
  assert again["best_epoch"] == summary["best_epoch"]
  assert again["test"] == summary["test"]


def test_killed_launcher_resumes_to_the_same_parameters(tmp_path):
  """SIGKILL the real launcher at an arbitrary moment after its first checkpoint."""
  flags = [
    "--config.train.max_epochs=5",
  ]
  cmd = [sys.executable, "-m", "launch.train", "--config=configs/test.py", *flags]
  killed = tmp_path / "killed"
  proc = subprocess.Popen(
    [*cmd, f"--workdir={killed}"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  deadline = time.time() + 120
  while time.time() < deadline and not (killed / "checkpoints" / "1").exists():
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  for workdir in (killed, tmp_path / "clean"):
    subprocess.run(
      [*cmd, f"--workdir={workdir}"],
      cwd=REPO,
      check=True,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
    )
  epoch_a, params_a = _params_of_last_checkpoint(str(killed))
  epoch_b, params_b = _params_of_last_checkpoint(str(tmp_path / "clean"))
  assert epoch_a == epoch_b == 4
  _assert_trees_equal(params_a, params_b)


def test_summary_exists_only_for_a_finished_run(tmp_path, monkeypatch):
  stage2.train_and_evaluate(_config(max_epochs=1), str(tmp_path))
  first = record.read_summary(str(tmp_path))
  assert first["epochs_run"] == 1 and first["config"]["train"]["max_epochs"] == 1

  # Resumed for more epochs, the run is unfinished until it ends: killed during epoch 1, it
  # leaves no summary (the stale one is gone before training goes on).
  def killed_epoch(self, progress=None):
    def epoch(state, data, key):
      assert not (tmp_path / "summary.json").exists()
      raise KeyboardInterrupt

    return epoch

  with monkeypatch.context() as patch:
    patch.setattr(stage2.Recommender, "make_train_epoch", killed_epoch)
    with pytest.raises(KeyboardInterrupt):
      stage2.train_and_evaluate(_config(max_epochs=2), str(tmp_path))
  assert record.read_summary(str(tmp_path)) is None
  summary = stage2.train_and_evaluate(_config(max_epochs=2), str(tmp_path))
  assert record.read_summary(str(tmp_path)) == json.loads(json.dumps(summary))
  assert summary["epochs_run"] == 2
  assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_a_workdir_of_an_older_format_is_refused_in_one_line(tmp_path):
  """A checkpoint written before the current format: one plain line, exit status 1."""
  import orbax.checkpoint as ocp

  manager = ocp.CheckpointManager(
    str(tmp_path / "checkpoints"), options=ocp.CheckpointManagerOptions(create=True)
  )
  manager.save(
    0,
    args=ocp.args.Composite(
      state=ocp.args.StandardSave({"x": np.zeros(2)}), meta=ocp.args.JsonSave({"epoch": 0})
    ),
  )
  manager.wait_until_finished()
  manager.close()
  flags = [
    "--config.train.max_epochs=1",
  ]
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "launch.train",
      "--config=configs/test.py",
      f"--workdir={tmp_path}",
      *flags,
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
  )
  assert result.returncode == 4  # WorkdirError.exit_code
  assert "Traceback" not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "format 1" in last and "new --workdir" in last
