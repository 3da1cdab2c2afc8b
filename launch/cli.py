"""What every launcher shares: a user's mistake as plain lines and an exit code, never a traceback.

    app.run(cli.exit_on_user_error(main), flags_parser=cli.parse_flags)

Exit codes (README, "When things go wrong"): 2 config or flags, 3 data, 4 workdir, 5 asset, 6
diverged, 7 disk full, 130 interrupted (`alignrec_jax.errors`).
"""

import errno
import os
import sys
from collections.abc import Callable
from typing import Any

from absl import flags

from alignrec_jax.errors import ConfigError, UserError

TRACEBACK_ENV = "ALIGNREC_TRACEBACK"
DISK_FULL_EXIT = 7


def exit_on_user_error(main: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
  """Wraps a launcher's main: the user's errors print as plain lines, never a traceback.

  A `UserError` prints its message and exits with its `exit_code`; a full disk exits 7, a
  second Ctrl-C 130, each saying what to do. Other exceptions are bugs and keep their
  traceback; ALIGNREC_TRACEBACK=1 shows one for the user's errors too (for bug reports).
  """

  def fail(message: str, code: int) -> None:
    if os.environ.get(TRACEBACK_ENV):
      raise  # the exception being handled, with its traceback
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)

  def wrapped(argv):
    try:
      return main(argv)
    except UserError as e:
      fail(str(e), e.exit_code)
    except KeyboardInterrupt:
      fail("interrupted; the last checkpoint is intact: run the same command again to resume", 130)
    except Exception as e:
      # orbax and tensorstore may wrap the system's error in their own types
      if getattr(e, "errno", None) != errno.ENOSPC and "No space left on device" not in str(e):
        raise
      where = getattr(e, "filename", None)
      fail(
        f"no space left on device{f' writing {where}' if where else ''}; the last "
        "checkpoint is intact: free some space and run the same command again to resume",
        DISK_FULL_EXIT,
      )

  return wrapped


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing for the launchers (`app.run(..., flags_parser=parse_flags)`): a bad
  flag prints one line and exits 2, as a bad config field does.

  absl reports most bad flags itself, but an override of a field the config does not have
  (`--config.foo=1`) escapes it as an AttributeError with a traceback.
  """

  def fail(message: str) -> None:
    print(f"error: {message} (--helpshort lists the flags)", file=sys.stderr, flush=True)
    sys.exit(ConfigError.exit_code)

  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(str(e))
  except (AttributeError, KeyError) as e:
    key = str(e).strip("\"'")
    named = [
      a.split("=")[0]
      for a in argv[1:]
      if a.startswith("--config.") and key in a.split("=")[0].split(".")
    ]
    fail(
      f"{named[0] if named else '--config.' + key}: the config has no field {key!r} "
      "(configs/default.py lists every field)"
    )
