"""Item arrays: the checked `.npy` loader, stage 2's combined feature F, random features."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from typing import Literal

import numpy as np

from alignrec_jax.errors import DataError
from alignrec_jax.normalize import l2_normalize_rows


def load_item_array(
  path: str | os.PathLike[str], *, kind: Literal["float", "int"], num_items: int | None = None
) -> np.ndarray:
  """A 2-D per-item `.npy` array [rows, dim], row i = item i, checked; writes nothing.

  Args:
    path: the file.
    kind: "float" (converted to float32, every value finite) or "int" (any integer dtype).
    num_items: the rows it must have (None: any).

  Raises:
    DataError: naming the file and, for a bad value, its row and column.
  """
  path = pathlib.Path(path)
  if path.suffix != ".npy":
    raise DataError(f"{path}: item arrays must be .npy files (got suffix {path.suffix!r})")
  if not path.is_file():
    raise DataError(f"{path}: file not found")
  try:
    array = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError) as e:
    raise DataError(f"{path}: not a readable .npy array (truncated or corrupt?): {e}") from e
  if not isinstance(array, np.ndarray):
    raise DataError(f"{path}: expected a single .npy array, got {type(array).__name__}")
  if array.ndim != 2 or array.shape[1] == 0:
    raise DataError(
      f"{path}: expected a 2-D array [items, dim] with dim >= 1, got shape {array.shape}"
    )
  if num_items is not None and array.shape[0] != num_items:
    raise DataError(f"{path}: {array.shape[0]} rows, expected one per item ({num_items})")
  if kind == "int":
    if not np.issubdtype(array.dtype, np.integer):
      raise DataError(f"{path}: expected an integer array, got dtype {array.dtype}")
    return array
  if not np.issubdtype(array.dtype, np.floating):
    raise DataError(f"{path}: expected a floating-point array, got dtype {array.dtype}")
  with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, reported below
    array = np.asarray(array, dtype=np.float32)
  finite = np.isfinite(array)
  if not finite.all():
    row, col = (int(v) for v in np.argwhere(~finite)[0])
    raise DataError(
      f"{path}: row {row} (itemID {row}), column {col}: expected finite values, "
      f"got {array[row, col]} (after conversion to float32)"
    )
  return array


def combine_features(
  features: Mapping[str, np.ndarray], *, normalize: bool = True
) -> tuple[np.ndarray, str]:
  """The stage-2 item feature F: the modalities concatenated row-wise, in mapping order.

  Raw modalities differ in scale by orders of magnitude (lfm2k's VGGish audio rows have norm
  ~1,470, its sentence-embedding text rows norm 1), so by default each modality's rows are
  L2-normalised first; otherwise the concatenation (and the kNN graph built from it) is almost
  entirely the largest-scale modality.

  Args:
    features: modality name -> [num_items, dim_m] array; all with the same number of rows.
    normalize: L2-normalise each modality's rows before concatenating.

  Returns:
    (F, description): F is float32 [num_items, sum_m dim_m]; description is one line for the log,
    e.g. "text_feat (384-d) + audio_feat (128-d), each row L2-normalised, concatenated: 512-d".

  Raises:
    ValueError: no modalities, a modality that is not 2-D, or differing row counts.
  """
  if not features:
    raise ValueError("combine_features needs at least one modality")
  rows = {name: a.shape[0] for name, a in features.items()}
  for name, a in features.items():
    if a.ndim != 2:
      raise ValueError(f"modality {name!r}: expected a 2-D [num_items, dim] array, got {a.shape}")
  if len(set(rows.values())) > 1:
    raise ValueError(f"modalities disagree on the number of items (rows): {rows}")
  parts = [
    l2_normalize_rows(a) if normalize else np.asarray(a, dtype=np.float32)
    for a in features.values()
  ]
  combined = np.concatenate(parts, axis=1)  # always a fresh array, never aliasing the input
  names = " + ".join(f"{name} ({a.shape[1]}-d)" for name, a in features.items())
  how = "each row L2-normalised" if normalize else "raw (not normalised)"
  joined = ", concatenated" if len(parts) > 1 else ""
  return combined, f"{names}, {how}{joined}: {combined.shape[1]}-d"


def synthetic_features(num_items: int, dim: int, seed: int) -> np.ndarray:
  """Deterministic standard-Gaussian item features, for datasets that ship none.

  They carry no information about the items; they exist so graph-only datasets (`baby-graph`,
  `sports-graph`) can exercise the full model at real scale for speed work.

  Args:
    num_items: rows.
    dim: columns.
    seed: the same seed always gives the same array.

  Returns:
    float32 [num_items, dim].
  """
  if num_items < 1 or dim < 1:
    raise ValueError(f"need num_items >= 1 and dim >= 1, got {num_items} and {dim}")
  return np.random.default_rng(seed).standard_normal((num_items, dim), dtype=np.float32)
