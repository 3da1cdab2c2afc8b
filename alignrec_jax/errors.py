"""The errors a user can cause and fix: each message names the file, field or flag at fault.

This is the package's bottom module (every layer may raise these), so that, for example, the
text encoder and the data loaders share one `DataError`. The launchers print a `UserError` as
plain lines and exit with status 1, without a traceback.
"""


class UserError(Exception):
  """A mistake in the input, the config, the flags or the workdir, not a bug in this package."""


class DataError(UserError, ValueError):
  """Bad input data: the message names the file, the line or column, and what was expected."""


class AssetError(UserError, RuntimeError):
  """A downloaded asset (a wheel from PyPI, model files) is missing or broken; says how to fix."""


class ConfigError(UserError, ValueError):
  """A config field is unknown, missing or out of range; the message names the field."""


class WorkdirError(UserError, RuntimeError):
  """The workdir holds something this run cannot continue from (e.g. another format version)."""


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
