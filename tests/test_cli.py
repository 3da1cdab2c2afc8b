"""The launchers' shared behaviour (launch/cli.py): a user's mistake is one plain line and an
exit code per kind; a bug keeps its traceback."""

import errno

import pytest

from alignrec_jax.errors import ConfigError, WorkdirError
from alignrec_jax.training import loop
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
