"""The launchers (launch/cli.py and what it wraps): a user's mistake is one plain line and an
exit code per kind, before anything is read or written; a bug keeps its traceback; a signal
stops a run after its epoch, and the same command resumes it.

Subprocesses only where the launcher's own behaviour is the point (exit codes, no traceback,
signals, a second process); everything else runs in-process on the tiny config."""

import errno
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import run_checks

from alignrec_jax import files
from alignrec_jax.errors import ConfigError, WorkdirError
from alignrec_jax.training import loop, stage2
from launch import cli


def test_exit_on_user_error(capsys):
  def main(argv):
    if argv == ["bad"]:
      raise ConfigError("config.train.batch_size: must be >= 1")
    if argv == ["bug"]:
      raise KeyError("a bug")
    return "done"

  wrapped = cli.exit_on_user_error(main)
  assert wrapped(["ok"]) == "done"
  with pytest.raises(SystemExit) as exit_info:
    wrapped(["bad"])
  assert exit_info.value.code == 2  # ConfigError.exit_code
  assert capsys.readouterr().err == "error: config.train.batch_size: must be >= 1\n"
  with pytest.raises(KeyError):  # not the user's fault: the traceback stays
    wrapped(["bug"])


def test_the_user_errors_map_to_exit_codes(capsys, monkeypatch):
  def main(error):
    def run(argv):
      raise error

    return cli.exit_on_user_error(run)

  cases = [
    (ConfigError("c"), 2),
    (WorkdirError("w"), 4),
    (loop.TrainingDiverged("d"), 6),
    (OSError(errno.ENOSPC, "No space left on device", "/x/metrics.jsonl"), 7),
    (KeyboardInterrupt(), 130),
  ]
  for error, code in cases:
    with pytest.raises(SystemExit) as info:
      main(error)([])
    assert info.value.code == code
  err = capsys.readouterr().err
  assert "no space left on device writing /x/metrics.jsonl" in err and "Traceback" not in err
  with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
    main(ZeroDivisionError())([])
  monkeypatch.setenv(cli.TRACEBACK_ENV, "1")
  with pytest.raises(ConfigError):  # ALIGNREC_TRACEBACK=1: the traceback, for bug reports
    main(ConfigError("c"))([])


@pytest.mark.slow
def test_bad_data_is_one_line_naming_the_file_and_line(tmp_path):
  folder = tmp_path / "data"
  folder.mkdir()
  (folder / "mine.inter").write_text("userID\titemID\trating\tx_label\n0\t1\t1\t0\n1\tx\t1\t1\n")
  result = run_checks.launch(
    "--config=configs/default.py",
    f"--workdir={tmp_path / 'run'}",
    "--config.data.name=mine",
    f"--config.data.path={folder}",
    check_code=3,
  )
  assert run_checks.last_line(result) == (
    f"error: {folder / 'mine.inter'}: line 3: column itemID: expected a non-negative "
    "integer, got 'x'"
  )
  assert not (tmp_path / "run").exists(), "a failed start leaves no run folder behind"


@pytest.mark.slow
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
  result = run_checks.launch(
    "--config=configs/default.py", f"--workdir={tmp_path}", flag, check_code=2
  )
  assert message in run_checks.last_line(result)
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
  result = run_checks.launch(f"--config={config_file}", f"--workdir={workdir}", check_code=2)
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
  config = run_checks.tiny_config()
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


@pytest.mark.slow
def test_a_second_run_on_a_busy_workdir_stops_at_once_naming_the_holder(tmp_path):
  with files.WorkdirLock(tmp_path):
    result = run_checks.launch("--config=configs/test.py", f"--workdir={tmp_path}", check_code=4)
  assert f"is in use by process {os.getpid()}" in run_checks.last_line(result)
  with files.WorkdirLock(tmp_path), files.WorkdirLock(tmp_path):  # nests within a process
    pass


@pytest.mark.slow
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
    cmd, cwd=run_checks.REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
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
  run_checks.launch(*cmd[3:], check_code=0)
  run_checks.assert_same_run(str(workdir), reference)
