"""Files the package writes or fetches: atomic writes, the workdir lock, the download cache,
wheels from PyPI.

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
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from typing import BinaryIO

from alignrec_jax.errors import AssetError, WorkdirError

CACHE_ENV = "ALIGNREC_CACHE"


def cache_dir(name: str) -> pathlib.Path:
  """`$ALIGNREC_CACHE/name` when the variable is set, else `~/.cache/alignrec_jax/name`."""
  root = os.environ.get(CACHE_ENV)
  base = pathlib.Path(root).expanduser() if root else pathlib.Path.home() / ".cache/alignrec_jax"
  return base / name


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


def pip_command(dest: str | os.PathLike[str], requirement: str) -> list[str]:
  """The pip command that downloads one wheel (no dependencies, nothing built) into `dest`."""
  return [
    sys.executable,
    "-m",
    "pip",
    "download",
    "--no-deps",
    "--only-binary=:all:",
    "--disable-pip-version-check",
    "-d",
    os.fspath(dest),
    requirement,
  ]


def download_wheel(
  requirement: str, directory: str | os.PathLike[str], *, hint: str
) -> pathlib.Path:
  """Downloads the wheel of `requirement` (e.g. "recbole==1.2.1") with pip into `directory`.

  pip writes into a private folder inside `directory` and the wheel is renamed into place, so a
  killed download never leaves a truncated wheel that a later call would trust.

  Args:
    requirement: a pinned requirement.
    directory: where the wheel ends up (created if missing).
    hint: what the wheel is for, added to the error message.

  Raises:
    AssetError: pip failed or did not produce exactly one wheel; the message gives the command.
  """
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  shown = " ".join(pip_command(directory, requirement))
  advice = f"{hint}; download it with `{shown}` (network access to PyPI is needed)"
  with tempfile.TemporaryDirectory(dir=directory, prefix=".download-") as tmp:
    command = pip_command(tmp, requirement)
    try:
      result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as e:
      raise AssetError(f"could not run pip ({e}); {advice}") from e
    wheels = sorted(pathlib.Path(tmp).glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
      said = (result.stderr or result.stdout).strip()[-2000:]
      raise AssetError(
        f"downloading the {requirement} wheel failed (pip exit status "
        f"{result.returncode}, {len(wheels)} wheel(s) found); {advice}\n"
        f"pip said:\n{said}"
      )
    target = directory / wheels[0].name
    os.replace(wheels[0], target)
  return target


def wheel_member(archive: zipfile.ZipFile, wheel: pathlib.Path, filename: str) -> str:
  """The one member of the wheel whose path ends in `/filename` (or is `filename`)."""
  matches = [n for n in archive.namelist() if n == filename or n.endswith("/" + filename)]
  if len(matches) != 1:
    raise AssetError(f"{wheel}: expected exactly one member named {filename}, found {matches}")
  return matches[0]
