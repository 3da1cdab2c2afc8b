"""The errors a user can cause and fix: each message names the file, field or flag at fault.

This is the package's bottom module (every layer may raise these), so that, for example, the
text encoder and the data loaders share one `DataError`. The launchers print a `UserError` as
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

from collections.abc import Callable, Mapping
from typing import Any


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


def check_value(
  config: Mapping[str, Any], field: str, ok: Callable[[Any], bool], expected: str, *, path: str
) -> None:
  """Raises ConfigError unless `ok(config[field])`, naming the field and what it must be.

  Args:
    config: a config group.
    field: the field's name in it.
    ok: the test; a TypeError or ValueError it raises counts as a failure (e.g. "a" > 0).
    expected: what the value must be, e.g. "an integer >= 1".
    path: the group's place in the config, e.g. "config.train".
  """
  value = config[field]
  try:
    good = bool(ok(value))
  except (TypeError, ValueError):
    good = False
  if not good:
    raise ConfigError(f"{path}.{field}: expected {expected}, got {value!r}")


def is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
  return isinstance(value, int | float) and not isinstance(value, bool)


# (test, what it expects) pairs for `check_value`.
Rule = tuple[Callable[[Any], bool], str]
POSITIVE_INT: Rule = (lambda v: is_int(v) and v >= 1, "an integer >= 1")
NONNEGATIVE_INT: Rule = (lambda v: is_int(v) and v >= 0, "an integer >= 0")
POSITIVE: Rule = (lambda v: is_number(v) and v > 0, "a number > 0")
NONNEGATIVE: Rule = (lambda v: is_number(v) and v >= 0, "a number >= 0")
OPEN_FRACTION: Rule = (lambda v: is_number(v) and 0 < v < 1, "a number in (0, 1)")
BOOL: Rule = (lambda v: isinstance(v, bool), "True or False")


def check_values(config: Mapping[str, Any], rules: Mapping[str, Rule], *, path: str) -> None:
  """`check_value` of every field of `rules` (field -> rule) in the group `config`."""
  for field, (ok, expected) in rules.items():
    check_value(config, field, ok, expected, path=path)


def check_fields(section, expected, *, path: str) -> None:
  """Raises ConfigError unless the config group `section` holds exactly the fields `expected`.

  Config files build their dicts unlocked, so a misspelled field there would otherwise become a
  new field that nothing reads (the command line already refuses unknown fields).

  Args:
    section: a ConfigDict (or any mapping) group.
    expected: the field names its reader reads.
    path: the group's place in the config, e.g. "config.model.alignrec.loss", for the message.
  """
  have, want = set(section.keys()), set(expected)
  unknown, missing = sorted(have - want), sorted(want - have)
  if unknown or missing:
    parts = []
    if unknown:
      parts.append(f"unknown field(s) {', '.join(unknown)}")
    if missing:
      parts.append(f"missing field(s) {', '.join(missing)}")
    raise ConfigError(f"{path}: {'; '.join(parts)} (its fields are {', '.join(sorted(want))})")
