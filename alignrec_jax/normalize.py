"""Row normalisation, defined once: L2 (NumPy for host-side data, JAX inside jitted code).

A zero row stays zero (no NaN), as torch.nn.functional.normalize leaves it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

EPS = 1e-12  # torch.nn.functional.normalize's eps


def l2_normalize(x: jax.Array) -> jax.Array:
  """Rows (the last axis) divided by max(norm, 1e-12). [..., dim] -> [..., dim]."""
  norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return x / jnp.maximum(norm, EPS)


def l2_normalize_rows(x: np.ndarray, *, norm_dtype: type = np.float64) -> np.ndarray:
  """Each row of a host array scaled to unit L2 norm: float32 [n, d] -> float32 [n, d].

  Args:
    x: [n, d] array.
    norm_dtype: the precision the norms are taken in. float64 (the default) keeps the digits of
      large-scale rows: raw VGGish audio rows (norm ~1.5e3) square to ~2e6, where float32
      accumulation loses digits the normalised values would then carry. The kNN graph builder
      passes float32: it normalises features that are unit rows already, and a float64 copy of
      an Electronics-sized table (63k x 768) would cost 390 MB.
  """
  norms = np.linalg.norm(np.asarray(x, norm_dtype), axis=1, keepdims=True)
  return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


STANDARDIZE_EPS = 1e-6  # the variance floor of `standardize` and `standardize_rows`


def standardize(x: jax.Array) -> jax.Array:
  """Zero mean and unit variance over the last axis (a parameter-free layer norm)."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.var(x, axis=-1, keepdims=True)
  return (x - mean) / jnp.sqrt(var + STANDARDIZE_EPS)


def standardize_rows(x: np.ndarray) -> np.ndarray:
  """`standardize` of each row of a host array, in float32: [n, d] -> [n, d]."""
  x = np.asarray(x).astype(np.float32)
  mean = x.mean(axis=1, keepdims=True)
  var = x.var(axis=1, keepdims=True)
  return (x - mean) / np.sqrt(var + STANDARDIZE_EPS)
