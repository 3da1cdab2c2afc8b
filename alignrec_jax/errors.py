"""The errors a user can cause and fix: each message names the file, field or flag at fault.

This is the package's bottom module (every layer may raise these), so that, for example, the
text encoder and the data loaders share one `DataError`; config fields are checked in
`schema.py`. The launchers print a `UserError` as
plain lines, without a traceback, and exit with its `exit_code` (README: "When things go
wrong"):

  2  ConfigError       a config field or flag is unknown, missing or out of range
  3  DataError         an input file is malformed (the message names file, line, column)
  4  WorkdirError      the workdir is in use, of another format, or holds a run of other settings
  5  AssetError        a download (a wheel, model weights) or an optional package is missing
  6  TrainingDiverged  the loss became NaN or Inf (training/loop.py)
  7  (disk full)       no space left on device while writing
  130 Interrupted      stopped by Ctrl-C or SIGTERM at a safe point (training/loop.py)
"""

from __future__ import annotations


class UserError(Exception):
  """A mistake in the input, the config, the flags or the workdir, not a bug in this package."""

  exit_code = 1


class DataError(UserError, ValueError):
  """Bad input data: the message names the file, the line or column, and what was expected."""

  exit_code = 3


class AssetError(UserError, RuntimeError):
  """A download (a wheel from PyPI, model files) or an optional package is missing or broken;
  the message says how to fix it."""

  exit_code = 5


class ConfigError(UserError, ValueError):
  """A config field is unknown, missing or out of range; the message names the field."""

  exit_code = 2


class WorkdirError(UserError, RuntimeError):
  """The workdir holds something this run cannot continue from, or another run is using it."""

  exit_code = 4
