"""Files the package writes: atomic writes, and the workdir lock.

Every file another process (or a later run) may read is written through `atomic_write`: to a
temporary name in the same folder, then renamed, so a reader sees the old file or the complete
new one, never a half-written one, whatever kills the writer. A run holds `WorkdirLock` on its
workdir while it writes there, so two runs never write into one workdir.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO

from alignrec_jax.errors import WorkdirError


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
  """A binary file to write `path` through: it appears at `path`, complete, when the block ends.

  The data goes to a temporary file in the same folder that is renamed over `path` once the
  block has finished; if the block raises, the temporary file is removed and `path` is left as
  it was.
  """
  path = pathlib.Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      yield f
    os.chmod(tmp, 0o644)  # mkstemp makes it private; caches and data folders may be shared
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def atomic_write(
  path: str | os.PathLike[str], content: bytes | str | Callable[[BinaryIO], object]
) -> pathlib.Path:
  """Writes `content` (bytes, UTF-8 text, or a function writing to a binary file) to `path`
  atomically (`atomic_open`)."""
  with atomic_open(path) as f:
    if callable(content):
      content(f)
    else:
      f.write(content.encode("utf-8") if isinstance(content, str) else content)
  return pathlib.Path(path)


class WorkdirLock:
  """An exclusive lock on a workdir, held while a run writes to it.

  An advisory `fcntl.flock` on WORKDIR/.lock: the system releases it when the holding process
  ends, however it ends, so a killed run leaves no stale lock. The file records the holder
  (process id, command, start time) for the message a second run gets. Within one process the
  lock nests (stage 1 holds its folder's lock around the training loop, which takes it too).

      with WorkdirLock(workdir):
        ...  # train
  """

  FILE = ".lock"
  _held: dict[pathlib.Path, int] = {}  # this process's locks: path -> nesting depth

  def __init__(self, workdir: str | os.PathLike[str]):
    self.path = pathlib.Path(workdir).resolve() / self.FILE
    self._fd: int | None = None

  def __enter__(self) -> WorkdirLock:
    if self.path in self._held:
      self._held[self.path] += 1
      return self
    self.path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.read(fd, 4096).decode("utf-8", errors="replace")
      os.close(fd)
      try:
        who = json.loads(holder)
        said = f"process {who['pid']} ({' '.join(who['argv'])[:200]}, since {who['since']})"
      except (ValueError, KeyError, TypeError):
        said = "another process"
      raise WorkdirError(
        f"{self.path.parent} is in use by {said}: wait for it to end, or use another --workdir"
      ) from None
    os.ftruncate(fd, 0)
    holder = {"pid": os.getpid(), "argv": sys.argv, "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.write(fd, json.dumps(holder).encode("utf-8"))
    self._fd = fd
    self._held[self.path] = 1
    return self

  def __exit__(self, *exc) -> None:
    self._held[self.path] -= 1
    if self._fd is not None:  # the outermost holder unlocks
      del self._held[self.path]
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None
