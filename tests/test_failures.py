"""When things go wrong: every user mistake is one plain line and an exit code, every fault
leaves a run that resumes bit-identical.

Subprocesses only where the launcher's own behaviour is the point (exit codes, no traceback,
signals, a second process); everything else runs in-process on the tiny config.
"""

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from alignrec_jax import files
from alignrec_jax.errors import WorkdirError
from alignrec_jax.experiments import runs
from alignrec_jax.training import checkpoint, loop, record, reporting, stage2
from configs import test as test_config
from launch import cli

REPO = pathlib.Path(__file__).resolve().parents[1]


def _launch(*flags, module="launch.train", check_code=None, **kwargs):
  result = subprocess.run(
    [sys.executable, "-m", module, *flags], cwd=REPO, capture_output=True, text=True, **kwargs
  )
  if check_code is not None:
    assert result.returncode == check_code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
  return result


def _last_line(result) -> str:
  return result.stderr.strip().splitlines()[-1]


def _config(max_epochs=3, **train):
  config = test_config.get_config()
  config.train.max_epochs = max_epochs
  config.train.update(train)
  return config


def _params(workdir) -> tuple[int, dict]:
  """(epoch, params as NumPy) of the newest checkpoint in WORKDIR/checkpoints."""
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  epoch = manager.latest_step()
  manager.close()
  state = ocp.StandardCheckpointer().restore(
    os.path.join(workdir, "checkpoints", str(epoch), "state")
  )
  return epoch, jax.tree.map(np.asarray, state["params"])


def _assert_same_run(a, b):
  """Bit-identical parameters and metrics (times aside), each epoch recorded exactly once."""
  epoch_a, params_a = _params(a)
  epoch_b, params_b = _params(b)
  assert epoch_a == epoch_b
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)

  def records(workdir):
    return [
      {k: v for k, v in r.items() if not k.endswith("_seconds")}
      for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl")))
    ]

  assert records(a) == records(b)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted 3-epoch run, the one every interrupted run must end equal to."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  stage2.train_and_evaluate(_config(), workdir)
  return workdir


# ----------------------------------------------------------------------------- launchers


def test_bad_data_is_one_line_naming_the_file_and_line(tmp_path):
  folder = tmp_path / "data"
  folder.mkdir()
  (folder / "mine.inter").write_text("userID\titemID\trating\tx_label\n0\t1\t1\t0\n1\tx\t1\t1\n")
  result = _launch(
    "--config=configs/default.py",
    f"--workdir={tmp_path / 'run'}",
    "--config.data.name=mine",
    f"--config.data.path={folder}",
    check_code=3,
  )
  assert _last_line(result) == (
    f"error: {folder / 'mine.inter'}: line 3: column itemID: expected a non-negative "
    "integer, got 'x'"
  )
  assert not (tmp_path / "run").exists(), "a failed start leaves no run folder behind"


@pytest.mark.parametrize(
  "flag, message",
  [
    ("--config.optim.lr=-1", "config.optim.lr: expected a number > 0, got -1.0"),
    ("--config.train.batch_size=0", "config.train.batch_size: expected an integer >= 1, got 0"),
    ("--config.model.name=lightgnc", "config.model.name: unknown model 'lightgnc'"),
    ("--config.foo=1", "--config.foo: the config has no field 'foo'"),
    ("--config.optim.lr=abc", "could not convert string to float: 'abc'"),
  ],
)
def test_bad_config_is_one_line_naming_the_field(tmp_path, flag, message):
  result = _launch("--config=configs/default.py", f"--workdir={tmp_path}", flag, check_code=2)
  assert message in _last_line(result)
  assert not os.listdir(tmp_path), "nothing is read or written for a bad config"


def test_a_misspelt_field_in_a_config_file_is_one_line_before_any_data_is_read(tmp_path):
  """A config file builds its groups unlocked, so a typo there adds a field: refused as a field
  nothing reads, exit 2, with nothing read or written."""
  config_file = tmp_path / "mine.py"
  config_file.write_text(
    "from configs import test\n\n\ndef get_config():\n"
    "  config = test.get_config()\n"
    "  config.model.alignrec.loss.cl_wieght = 0.1\n"
    "  return config\n"
  )
  workdir = tmp_path / "run"
  result = _launch(f"--config={config_file}", f"--workdir={workdir}", check_code=2)
  assert result.stderr.strip().splitlines() == [
    "error: config.model.alignrec.loss: unknown field(s) cl_wieght (its fields are cl_weight, "
    "l2_weight, sim_weight, temperature, uia_weight)"
  ]
  assert not workdir.exists()


def _mmrec_folder(folder: pathlib.Path, inter: str, features: dict) -> None:
  folder.mkdir()
  (folder / "mine.inter").write_text(inter)
  for name, array in features.items():
    np.save(folder / name, array)


GOOD_INTER = "userID\titemID\trating\tx_label\n" + "".join(
  f"{u}\t{i}\t1\t{x}\n" for u in range(4) for i, x in ((0, 0), (1, 0), (2, 1), (3, 2))
)
BAD_DATA = {
  "a bad id": (
    "userID\titemID\trating\tx_label\n0\t1\t1\t0\n1\t-1\t1\t1\n",
    {},
    "mine.inter: line 3: column itemID",
  ),
  "a missing column": (
    "userID\titemID\tx_label\n0\t1\t0\n",
    {},
    "mine.inter: line 1 (header): missing column(s) rating",
  ),
  "a duplicate pair": (
    GOOD_INTER + "0\t1\t1\t2\n",
    {},
    "mine.inter: lines 3 and 18: duplicate (userID, itemID) pair",
  ),
  "a NaN feature": (
    GOOD_INTER,
    {"f.npy": np.where(np.eye(4, 3) > 0, np.nan, 1.0)},
    "f.npy: row 0 (itemID 0), column 0: expected finite values",
  ),
  "too few feature rows": (
    GOOD_INTER,
    {"f.npy": np.ones((3, 2), np.float32)},
    "item 3 has no feature row",
  ),
  "a missing feature file": (GOOD_INTER, {}, "f.npy: file not found"),
  "an integer feature file": (
    GOOD_INTER,
    {"f.npy": np.ones((4, 2), np.int64)},
    "f.npy: expected a floating-point array",
  ),
}


@pytest.mark.parametrize("case", BAD_DATA)
def test_every_kind_of_bad_data_is_exit_3_naming_the_file(tmp_path, capsys, case):
  inter, features, message = BAD_DATA[case]
  _mmrec_folder(tmp_path / "data", inter, features)
  config = _config()
  config.data.name, config.data.path = "mine", str(tmp_path / "data")
  config.data.features = ("f.npy",)
  main = cli.exit_on_user_error(
    lambda argv: stage2.train_and_evaluate(config, str(tmp_path / "run"))
  )
  with pytest.raises(SystemExit) as info:
    main([])
  assert info.value.code == 3
  err = capsys.readouterr().err
  assert message in err and err.count("\n") == 1 and "Traceback" not in err
  assert not (tmp_path / "run").exists()


def test_a_second_run_on_a_busy_workdir_stops_at_once_naming_the_holder(tmp_path):
  with files.WorkdirLock(tmp_path):
    result = _launch("--config=configs/test.py", f"--workdir={tmp_path}", check_code=4)
  assert f"is in use by process {os.getpid()}" in _last_line(result)
  with files.WorkdirLock(tmp_path), files.WorkdirLock(tmp_path):  # nests within a process
    pass


def test_sigint_stops_after_the_epoch_and_the_rerun_resumes(tmp_path, reference):
  workdir = tmp_path / "run"
  cmd = [
    sys.executable,
    "-m",
    "launch.train",
    "--config=configs/test.py",
    f"--workdir={workdir}",
  ]
  proc = subprocess.Popen(
    cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
  )
  deadline = time.time() + 120
  while time.time() < deadline and not (workdir / "metrics.jsonl").exists():
    time.sleep(0.02)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  if proc.returncode == 0:
    pytest.skip("the run ended before the signal arrived")
  assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
  assert "run the same command again to resume" in err.strip().splitlines()[-1]
  _launch(*cmd[3:], check_code=0)
  _assert_same_run(str(workdir), reference)


def test_a_corrupt_newest_checkpoint_falls_back_quietly(tmp_path, reference):
  """The newest checkpoint damaged: moved aside with a warning, the older one resumed; no
  orbax noise on the console, and the run ends as an uninterrupted one."""
  workdir = tmp_path / "run"
  stage2.train_and_evaluate(_config(max_epochs=2), str(workdir))  # checkpoints 0 and 1
  damaged = workdir / "checkpoints" / "1" / "state"
  for path in damaged.rglob("*"):
    if path.is_file() and path.stat().st_size > 100:
      path.write_bytes(path.read_bytes()[:20])  # cut short, as a full disk leaves it
  result = _launch(
    "--config=configs/test.py",
    f"--workdir={workdir}",
    check_code=0,
  )
  assert "the checkpoint of epoch 1" in result.stderr and "cannot be read" in result.stderr
  assert "sys.meta_path" not in result.stderr and "asyncio" not in result.stderr
  assert len(list((workdir / "checkpoints.unreadable").iterdir())) == 1
  _assert_same_run(str(workdir), reference)


# ----------------------------------------------------------------------------- resume safety


class Killed(BaseException):
  """Stands in for SIGKILL: nothing after it runs (the loop's `finally` aside)."""


def _killed_after(original, epoch_of):
  def wrapper(*args, **kwargs):
    out = original(*args, **kwargs)
    if epoch_of(*args) == 1:
      raise Killed
    return out

  return wrapper


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
      stage2.train_and_evaluate(_config(), str(tmp_path))
  stage2.train_and_evaluate(_config(), str(tmp_path))
  _assert_same_run(str(tmp_path), reference)


def test_a_cut_last_metrics_line_is_dropped_with_a_warning(tmp_path, reference, caplog):
  workdir = tmp_path
  stage2.train_and_evaluate(_config(max_epochs=2), str(workdir))
  with open(workdir / "metrics.jsonl", "a") as f:
    f.write('{"epoch": 2, "loss": 0.6')  # a disk filled up mid-line
  stage2.train_and_evaluate(_config(), str(workdir))
  assert "is cut short" in caplog.text
  _assert_same_run(str(workdir), reference)
  (workdir / "metrics.jsonl").write_text('{"epoch": 0}\n{"epo\n{"epoch": 1}\n')
  with pytest.raises(Exception, match=r"metrics.jsonl: line 2 is not a JSON record"):
    reporting.MetricsLog(str(workdir / "metrics.jsonl"), resume_from_epoch=1)


def test_a_changed_config_stops_the_resume_naming_the_fields(tmp_path, reference, caplog):
  workdir = str(tmp_path)

  def config(max_epochs, cache):
    config = _config(max_epochs=max_epochs)
    config.data.cache_dir = os.path.join(workdir, cache, "data")
    return config

  first = config(2, "first")
  with first.model.unlocked():
    del first.model["bm3"]  # as if written before BM3 was added
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
  # (changed, or missing from the saved config as when a model is added later) are no change.
  same = config(3, "moved")
  same.train.checkpoint_every = 5
  same.model.lightgcn.embed_dim = 7
  os.rename(os.path.join(workdir, "first"), os.path.join(workdir, "moved"))
  stage2.train_and_evaluate(same, workdir)
  _, reference_params = _params(reference)
  _, params = _params(workdir)
  jax.tree.map(np.testing.assert_array_equal, params, reference_params)
  # --allow_config_change goes on, saying what changed.
  longer = config(4, "moved")
  longer.optim.lr = 5e-4
  stage2.train_and_evaluate(longer, workdir, allow_config_change=True)
  assert "resuming with changed settings: optim.lr: 0.001 -> 0.0005" in caplog.text


def test_a_model_of_another_size_is_refused_not_taken_for_damage(tmp_path):
  workdir = str(tmp_path)
  stage2.train_and_evaluate(_config(max_epochs=1), workdir)
  bigger = _config(max_epochs=2)
  bigger.model.alignrec.embed_dim = 32
  with pytest.raises(WorkdirError, match="arrays of other shapes"):
    stage2.train_and_evaluate(bigger, workdir, allow_config_change=True)
  assert not os.path.exists(os.path.join(workdir, "checkpoints.unreadable"))


def test_a_nan_at_the_first_epoch_says_no_checkpoint_exists(tmp_path):
  exploding = _config(max_epochs=1)
  exploding.optim.lr = 1e30
  with pytest.raises(loop.TrainingDiverged, match="epoch 0 .*no checkpoint was written before"):
    stage2.train_and_evaluate(exploding, str(tmp_path))


def test_a_full_disk_is_one_line_and_the_run_resumes(tmp_path, monkeypatch, capsys, reference):
  workdir = str(tmp_path)
  real = checkpoint.Checkpointer.save

  def full(self, epoch, state, meta):
    if epoch == 1:
      raise OSError(errno.ENOSPC, "No space left on device", self.directory)
    real(self, epoch, state, meta)

  monkeypatch.setattr(checkpoint.Checkpointer, "save", full)
  main = cli.exit_on_user_error(lambda argv: stage2.train_and_evaluate(_config(), workdir))
  with pytest.raises(SystemExit) as info:
    main([])
  assert info.value.code == cli.DISK_FULL_EXIT
  assert "no space left on device" in capsys.readouterr().err
  monkeypatch.setattr(checkpoint.Checkpointer, "save", real)
  stage2.train_and_evaluate(_config(), workdir)
  _assert_same_run(workdir, reference)


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


def test_a_summary_of_an_older_format_is_refused_in_one_line(tmp_path):
  (tmp_path / record.SUMMARY_FILE).write_text(json.dumps({"config": {}, "epochs_run": 1}))
  with pytest.raises(WorkdirError, match="workdir format 1 .*use a new --workdir") as info:
    runs.finished(_config(), str(tmp_path))
  assert "\n" not in str(info.value)
