"""The training loop on stage 2's tiny runs: a run killed anywhere resumes bit-identical, a
changed identity stops the resume, divergence keeps the last good checkpoint, and only a
finished run has a summary."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import run_checks

from alignrec_jax.errors import WorkdirError
from alignrec_jax.training import checkpoint, loop, record, reporting, stage2


@pytest.mark.slow
def test_resumed_run_ends_bit_identical(tmp_path):
  config = run_checks.tiny_config(max_epochs=4)
  full = stage2.train_and_evaluate(config, str(tmp_path / "full"))
  half = run_checks.tiny_config(max_epochs=2)
  stage2.train_and_evaluate(half, str(tmp_path / "resumed"))
  resumed = stage2.train_and_evaluate(config, str(tmp_path / "resumed"))
  epoch_a, params_a = run_checks.params(str(tmp_path / "full"))
  epoch_b, params_b = run_checks.params(str(tmp_path / "resumed"))
  assert epoch_a == epoch_b == 3
  run_checks.assert_same_params(params_a, params_b)
  assert full["test"] == resumed["test"]
  lines = [json.loads(x) for x in open(tmp_path / "resumed" / "metrics.jsonl")]
  assert [x["epoch"] for x in lines] == [0, 1, 2, 3]


@pytest.mark.slow
def test_sparse_checkpoints_replay_the_epochs_after_them(tmp_path):
  import shutil

  config = run_checks.tiny_config(max_epochs=5, checkpoint_every=3)
  summary = stage2.train_and_evaluate(config, str(tmp_path))
  checkpoints = sorted(int(p) for p in os.listdir(tmp_path / "checkpoints") if p.isdigit())
  assert checkpoints == [2, 4]  # every 3rd epoch, and the last
  _, params = run_checks.params(str(tmp_path))
  shutil.rmtree(tmp_path / "checkpoints" / "4")  # killed during epoch 4: epochs 3, 4 are redone
  again = stage2.train_and_evaluate(config, str(tmp_path))
  _, replayed = run_checks.params(str(tmp_path))
  run_checks.assert_same_params(params, replayed)
  assert again["test"] == summary["test"]
  lines = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
  assert [x["epoch"] for x in lines] == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_divergence_stops_naming_the_epoch_and_keeps_the_last_good_checkpoint(tmp_path):
  stage2.train_and_evaluate(run_checks.tiny_config(max_epochs=1), str(tmp_path))
  _, good = run_checks.params(str(tmp_path))
  exploding = run_checks.tiny_config(max_epochs=3)
  exploding.optim.lr = 1e30
  with pytest.raises(loop.TrainingDiverged, match="epoch 1"):
    stage2.train_and_evaluate(exploding, str(tmp_path), allow_config_change=True)
  epoch, kept = run_checks.params(str(tmp_path))
  assert epoch == 0
  run_checks.assert_same_params(good, kept)


@pytest.mark.slow
def test_early_stopping_state_survives_a_resume(tmp_path):
  config = run_checks.tiny_config(max_epochs=50, patience=1)
  config.optim.lr = 1e-6
  summary = stage2.train_and_evaluate(config, str(tmp_path))
  assert summary["epochs_run"] < 50, "a tiny learning rate must stall and stop early"
  again = stage2.train_and_evaluate(config, str(tmp_path))
  assert again["best_epoch"] == summary["best_epoch"]
  assert again["test"] == summary["test"]


@pytest.mark.slow
def test_killed_launcher_resumes_to_the_same_parameters(tmp_path):
  """SIGKILL the real launcher at an arbitrary moment after its first checkpoint."""
  flags = [
    "--config.train.max_epochs=5",
  ]
  cmd = [sys.executable, "-m", "launch.train", "--config=configs/test.py", *flags]
  killed = tmp_path / "killed"
  proc = subprocess.Popen(
    [*cmd, f"--workdir={killed}"],
    cwd=run_checks.REPO,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 120
  while time.time() < deadline and not (killed / "checkpoints" / "1").exists():
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  for workdir in (killed, tmp_path / "clean"):
    subprocess.run(
      [*cmd, f"--workdir={workdir}"],
      cwd=run_checks.REPO,
      check=True,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
    )
  epoch_a, params_a = run_checks.params(str(killed))
  epoch_b, params_b = run_checks.params(str(tmp_path / "clean"))
  assert epoch_a == epoch_b == 4
  run_checks.assert_same_params(params_a, params_b)


@pytest.mark.slow
def test_summary_exists_only_for_a_finished_run(tmp_path, monkeypatch):
  stage2.train_and_evaluate(run_checks.tiny_config(max_epochs=1), str(tmp_path))
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
      stage2.train_and_evaluate(run_checks.tiny_config(max_epochs=2), str(tmp_path))
  assert record.read_summary(str(tmp_path)) is None
  summary = stage2.train_and_evaluate(run_checks.tiny_config(max_epochs=2), str(tmp_path))
  assert record.read_summary(str(tmp_path)) == json.loads(json.dumps(summary))
  assert summary["epochs_run"] == 2
  assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


@pytest.mark.slow
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
    cwd=run_checks.REPO,
    capture_output=True,
    text=True,
  )
  assert result.returncode == 4  # WorkdirError.exit_code
  assert "Traceback" not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "format 1" in last and "new --workdir" in last


class Killed(BaseException):
  """Stands in for SIGKILL: nothing after it runs (the loop's `finally` aside)."""


def _killed_after(original, epoch_of):
  def wrapper(*args, **kwargs):
    out = original(*args, **kwargs)
    if epoch_of(*args) == 1:
      raise Killed
    return out

  return wrapper


@pytest.mark.slow
@pytest.mark.parametrize("where", ["in the epoch", "after the record", "after the checkpoint"])
def test_a_kill_anywhere_in_the_loop_resumes_bit_identical(tmp_path, monkeypatch, reference, where):
  """Killed in epoch 1: before its record, between record and checkpoint, or after both."""
  with monkeypatch.context() as patch:
    if where == "in the epoch":
      make = stage2.Recommender.make_train_epoch

      def make_killed(self, progress=None):
        epoch, calls = make(self, progress), []

        def run(state, data, key):
          calls.append(key)
          if len(calls) == 2:
            raise Killed
          return epoch(state, data, key)

        return run

      patch.setattr(stage2.Recommender, "make_train_epoch", make_killed)
    elif where == "after the record":
      patch.setattr(
        reporting.MetricsLog,
        "write",
        _killed_after(reporting.MetricsLog.write, lambda log, record: record["epoch"]),
      )
    else:
      patch.setattr(
        checkpoint.Checkpointer,
        "save",
        _killed_after(checkpoint.Checkpointer.save, lambda checkpointer, epoch, *rest: epoch),
      )
    with pytest.raises(Killed):
      stage2.train_and_evaluate(run_checks.tiny_config(), str(tmp_path))
  stage2.train_and_evaluate(run_checks.tiny_config(), str(tmp_path))
  run_checks.assert_same_run(str(tmp_path), reference)


@pytest.mark.slow
def test_a_cut_last_metrics_line_is_dropped_with_a_warning(tmp_path, reference, caplog):
  workdir = tmp_path
  stage2.train_and_evaluate(run_checks.tiny_config(max_epochs=2), str(workdir))
  with open(workdir / "metrics.jsonl", "a") as f:
    f.write('{"epoch": 2, "loss": 0.6')  # a disk filled up mid-line
  stage2.train_and_evaluate(run_checks.tiny_config(), str(workdir))
  assert "is cut short" in caplog.text
  run_checks.assert_same_run(str(workdir), reference)
  (workdir / "metrics.jsonl").write_text('{"epoch": 0}\n{"epo\n{"epoch": 1}\n')
  with pytest.raises(Exception, match=r"metrics.jsonl: line 2 is not a JSON record"):
    reporting.MetricsLog(str(workdir / "metrics.jsonl"), resume_from_epoch=1)


@pytest.mark.slow
def test_a_changed_config_stops_the_resume_naming_the_fields(tmp_path, reference, caplog):
  workdir = str(tmp_path)

  def config(max_epochs, cache):
    config = run_checks.tiny_config(max_epochs=max_epochs)
    config.data.cache_dir = os.path.join(workdir, cache, "data")
    return config

  first = config(2, "first")
  with first.model.unlocked():
    del first.model["bm3"]  # another model's group, left out
  stage2.train_and_evaluate(first, workdir)
  changed = config(3, "first")
  changed.optim.lr = 5e-4
  changed.model.alignrec.loss.cl_weight = 0.1
  changed.parallel.shard_tables = True  # unlike the other parallel fields: the state's shapes
  with pytest.raises(
    WorkdirError,
    match=r"model\.alignrec\.loss\.cl_weight: 0\.01 -> 0\.1; "
    r"optim\.lr: 0\.001 -> 0\.0005; parallel\.shard_tables: False -> True",
  ):
    stage2.train_and_evaluate(changed, workdir)
  # A longer run, another checkpoint cadence, a moved data folder and another model's group
  # (changed, or left out of the first run's config) are no change of identity.
  same = config(3, "moved")
  same.train.checkpoint_every = 5
  same.model.lightgcn.embed_dim = 7
  os.rename(os.path.join(workdir, "first"), os.path.join(workdir, "moved"))
  stage2.train_and_evaluate(same, workdir)
  _, reference_params = run_checks.params(reference)
  _, params = run_checks.params(workdir)
  jax.tree.map(np.testing.assert_array_equal, params, reference_params)
  # --allow_config_change goes on, saying what changed.
  longer = config(4, "moved")
  longer.optim.lr = 5e-4
  stage2.train_and_evaluate(longer, workdir, allow_config_change=True)
  assert "resuming with changed settings: optim.lr: 0.001 -> 0.0005" in caplog.text


@pytest.mark.slow
def test_a_nan_at_the_first_epoch_says_no_checkpoint_exists(tmp_path):
  exploding = run_checks.tiny_config(max_epochs=1)
  exploding.optim.lr = 1e30
  with pytest.raises(loop.TrainingDiverged, match="epoch 0 .*no checkpoint was written before"):
    stage2.train_and_evaluate(exploding, str(tmp_path))


def test_a_growing_loss_is_warned_about(caplog):
  tracker = loop._Tracker(run=None, stopping=None, label="stage 2")
  loop._warn_on_growth(tracker, 0, 0.5)
  assert tracker.first_loss == (0, 0.5)
  loop._warn_on_growth(tracker, 1, 400.0)
  assert "grew" not in caplog.text
  loop._warn_on_growth(tracker, 2, 600.0)
  assert "the loss grew from 0.5 (epoch 0) to 600 (epoch 2)" in caplog.text
  loop._warn_on_growth(tracker, 3, 1e9)
  assert caplog.text.count("grew") == 1  # once
