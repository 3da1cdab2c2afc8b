"""Item features for stage 2: combining raw modalities, and random features for graph-only data."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def l2_normalize_rows(x: np.ndarray) -> np.ndarray:
  """Scales each row to unit L2 norm; a zero row stays zero (no NaN).

  Args:
    x: [n, d] array.

  Returns:
    float32 [n, d] array.
  """
  # The norm is taken in float64: raw audio rows (norm ~1.5e3) square to ~2e6 per row, where
  # float32 accumulation loses digits that the normalised values would then carry.
  norms = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
  return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


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
