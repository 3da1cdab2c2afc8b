"""Ctrl-C and SIGTERM stop a run at its next safe point: after the running epoch, checkpointed.

A compiled epoch cannot be interrupted (Python's signal handlers run once it returns), so the
first signal only asks the loop to stop; the loop saves a checkpoint after the epoch and raises
`Interrupted`, which the launchers turn into a one-line message and exit status 130. A second
signal stops at once (KeyboardInterrupt); the last checkpoint is intact either way.
"""

from __future__ import annotations

import signal
import sys
import threading

from alignrec_jax.errors import UserError


class Interrupted(UserError):
  """The run stopped at a safe point on request; rerunning the same command resumes it."""

  exit_code = 130


class StopRequests:
  """Catches SIGINT and SIGTERM while active (a context manager); `requested` names the first.

  Handlers can only be installed from the main thread; elsewhere this does nothing.
  """

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self, stage: str):
    self.stage = stage
    self.requested: str | None = None
    self._previous = {}

  def _handle(self, signum, frame) -> None:
    del frame
    if self.requested is not None:  # a second signal: stop now
      self._restore()
      raise KeyboardInterrupt
    self.requested = signal.Signals(signum).name
    print(
      f"{self.stage}: {self.requested} received; stopping after this epoch, with a "
      "checkpoint (send it again to stop at once)",
      file=sys.stderr,
      flush=True,
    )

  def __enter__(self) -> StopRequests:
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
    return self

  def _restore(self) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}

  def __exit__(self, *exc) -> None:
    self._restore()
